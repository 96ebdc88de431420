"""A minimal keep-alive HTTP/1.1 server on loopback, run as its own process (stdlib only).

Listens on two ports (one plays the gateway, the other any other origin) and answers every
request with 200 and ``{"baggage": <the request's baggage header or null>}``, so a benchmark
can check what each client sent. Prints ``{"ports": [p1, p2]}`` once listening and exits when
its stdin closes, so it never outlives the script that started it.
"""

from __future__ import annotations

import asyncio
import json
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            baggage = None
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                name = key.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"baggage":
                    baggage = value.strip().decode("latin-1")
            if length:
                await reader.readexactly(length)
            body = json.dumps({"baggage": baggage}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main() -> None:
    servers = [await asyncio.start_server(handle, "127.0.0.1", 0) for _ in range(2)]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    print(json.dumps({"ports": ports}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # returns when stdin closes
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(main())
