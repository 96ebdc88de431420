"""A small closed-loop HTTP/1.1 load generator, run as its own process (standard library only).

It keeps one keep-alive connection per concurrent worker and sends pre-built requests, so
its own cost per request is a few tens of microseconds: far below the LiteLLM proxy's, and
the two cores stay with the processes being measured.

Protocol: one JSON command per line on stdin, one JSON answer per line on stdout.

    {"op": "target", "name": "A", "host": "127.0.0.1", "port": 4000, "path": "/chat/completions",
     "headers": {...}, "body": "...", "baggage": "..."}       -> {"ok": true}
    {"op": "run", "name": "A", "concurrency": 32, "requests": 500, "latencies": true}
        -> {"ok": true, "requests": 500, "errors": 0, "elapsed_s": 2.1, "latencies_us": [...]}
    {"op": "close"}                                            -> {"ok": true}, then exits

Every request gets its own W3C ``traceparent`` (random ids, sampled) and, when the target has
one, the same ``baggage`` value: what an instrumented client sends to its gateway. A body may
name those ids as ``{trace_id}`` and ``{span_id}`` (the hand-built metadata of the workaround
the bridge replaces). The load generator exits when stdin closes, so it never outlives the
script that started it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# uvicorn closes keep-alive connections idle for 5 s (LiteLLM's proxy keeps that default);
# connections idle longer than this are replaced before the clock starts.
MAX_IDLE_S = 2.0


class Target:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.host: str = spec["host"]
        self.port: int = int(spec["port"])
        self.path: str = spec.get("path", "/")
        self.body: bytes = spec.get("body", "").encode()
        self.templated = b"{trace_id}" in self.body or b"{span_id}" in self.body
        self.baggage: str | None = spec.get("baggage")
        headers = {
            "Host": f"{self.host}:{self.port}",
            "Content-Type": "application/json",
            **spec.get("headers", {}),
        }
        self.head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
        self.idle: list[Connection] = []
        self.last_used = 0.0

    def request(self, rng: random.Random) -> bytes:
        trace_id = rng.getrandbits(128) or 1
        span_id = rng.getrandbits(64) or 1
        context = f"traceparent: 00-{trace_id:032x}-{span_id:016x}-01\r\n"
        if self.baggage:
            context += f"baggage: {self.baggage}\r\n"
        body = self.body
        if self.templated:
            body = body.replace(b"{trace_id}", f"{trace_id:032x}".encode())
            body = body.replace(b"{span_id}", f"{span_id:016x}".encode())
        head = f"POST {self.path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n"
        return f"{head}{context}\r\n".encode() + body

    async def connect(self) -> Connection:
        return await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class StaleConnection(ConnectionError):
    """The server had closed the connection: not a byte of a response came back."""


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns (status, whether the server will close the connection)."""
    try:
        status_line = await reader.readline()
    except ConnectionResetError as error:
        raise StaleConnection(str(error)) from None
    if not status_line:
        raise StaleConnection("connection closed by the server")
    status = int(status_line.split(b" ", 2)[1])
    length = 0
    chunked = close = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"connection":
            close = b"close" in value.lower()
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";", 1)[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            await reader.readexactly(size + 2)
    elif length:
        await reader.readexactly(length)
    return status, close


async def run(target: Target, concurrency: int, total: int, keep_latencies: bool) -> dict[str, Any]:
    rng = random.Random()
    requests = [target.request(rng) for _ in range(total)]
    workers = max(1, min(concurrency, total))
    if time.monotonic() - target.last_used > MAX_IDLE_S:
        target.close()
    while len(target.idle) < workers:  # connect before the clock starts
        target.idle.append(await target.connect())
    connections = [target.idle.pop() for _ in range(workers)]
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    errors = reconnects = 0
    next_index = 0

    async def worker(slot: int) -> None:
        nonlocal next_index, errors, reconnects
        reader, writer = connections[slot]
        while next_index < total:
            index = next_index
            next_index += 1
            start = time.perf_counter_ns()
            try:
                writer.write(requests[index])
                status, close = await read_response(reader)
            except StaleConnection:
                # The server closed this keep-alive connection before reading the request:
                # send it again on a new one, as HTTP clients do (counted, not an error).
                reconnects += 1
                writer.close()
                reader, writer = await target.connect()
                start = time.perf_counter_ns()
                try:
                    writer.write(requests[index])
                    status, close = await read_response(reader)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                    errors += 1
                    writer.close()
                    reader, writer = await target.connect()
                    continue
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                errors += 1
                writer.close()
                reader, writer = await target.connect()
                continue
            latencies.append(time.perf_counter_ns() - start)
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200:
                errors += 1
            if close:
                writer.close()
                reader, writer = await target.connect()
        connections[slot] = (reader, writer)

    started = time.perf_counter()
    await asyncio.gather(*(worker(slot) for slot in range(workers)))
    elapsed = time.perf_counter() - started
    target.idle.extend(connections)
    target.last_used = time.monotonic()
    answer: dict[str, Any] = {
        "ok": True,
        "requests": total,
        "errors": errors,
        "reconnects": reconnects,
        "statuses": {str(k): v for k, v in statuses.items()},
        "elapsed_s": elapsed,
    }
    if keep_latencies:
        answer["latencies_us"] = [round(ns / 1000, 1) for ns in latencies]
    return answer


def main() -> int:
    loop = asyncio.new_event_loop()
    targets: dict[str, Target] = {}
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            command = json.loads(line)
            op = command.get("op")
            try:
                if op == "target":
                    targets[command["name"]] = Target(command)
                    answer: dict[str, Any] = {"ok": True}
                elif op == "run":
                    answer = loop.run_until_complete(
                        run(
                            targets[command["name"]],
                            int(command["concurrency"]),
                            int(command["requests"]),
                            bool(command.get("latencies", True)),
                        )
                    )
                elif op == "close":
                    print(json.dumps({"ok": True}), flush=True)
                    break
                else:
                    answer = {"ok": False, "error": f"unknown op {op!r}"}
            except Exception as error:  # report it to the driver, which decides
                answer = {"ok": False, "error": f"{type(error).__name__}: {error}"}
            print(json.dumps(answer), flush=True)
    finally:
        for target in targets.values():
            target.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
