"""A small OpenAI-compatible model server on loopback that records every request it gets.

The demo and the tests point LiteLLM at it (``api_base`` in ``litellm_params`` with an
``openai/<name>`` model), so LiteLLM's real provider path runs: the OpenAI SDK inside the proxy
sends real HTTP requests, and the test can read exactly what the gateway sent upstream.

It answers what LiteLLM's ``openai`` provider calls:

* ``POST /v1/chat/completions``, plain JSON or an SSE stream (``stream: true``), with the usage
  chunk when ``stream_options.include_usage`` is set;
* ``POST /v1/completions``, plain or streamed;
* ``POST /v1/embeddings``, as float lists or base64 (the OpenAI SDK asks for base64 unless the
  caller chose);
* ``POST /v1/responses``, plain or streamed: LiteLLM 1.106 calls it for the proxy's
  ``/v1/responses``, and also for its ``/v1/messages`` when the model is ``openai/<name>``
  (it translates Anthropic messages to the Responses API, not to chat completions).

``GET /v1/models`` lists the models asked for so far: LiteLLM's ``openai`` provider calls it
on its own now and then (model discovery), so it is no model call. Any other path gets a 404 in
OpenAI's error shape. Every request is recorded; :attr:`UpstreamServer.model_calls` are the
POSTs. Stdlib only: it runs in
whichever environment imports it.
"""

from __future__ import annotations

import base64
import json
import struct
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = ["UPSTREAM_ANSWER", "UPSTREAM_API_KEY", "UpstreamRequest", "UpstreamServer"]

UPSTREAM_ANSWER = "Hello from the upstream model."
# What the proxy's config gives LiteLLM as the provider key; the server records, never checks it.
UPSTREAM_API_KEY = "sk-otel-bridge-upstream-0123456789"
EMBEDDING_SIZE = 8
_STREAM_PIECES = 3  # the answer is streamed in this many deltas


@dataclass(frozen=True)
class UpstreamRequest:
    """One request as it arrived: header names lower-cased, every value of a repeated header."""

    method: str
    path: str
    headers: Mapping[str, list[str]]
    body: Any  # the parsed JSON body, or None when there was none or it was not JSON
    raw_body: bytes = field(repr=False)

    def header(self, name: str) -> list[str]:
        return list(self.headers.get(name.lower(), []))


def _usage(prompt_tokens: int = 5, completion_tokens: int = 7) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _pieces(text: str, count: int = _STREAM_PIECES) -> list[str]:
    size = -(-len(text) // count)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _chat(model: str, answer: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(),
    }


def _chat_stream(model: str, answer: str, include_usage: bool) -> Iterator[dict[str, Any]]:
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    for number, piece in enumerate(_pieces(answer)):
        delta = {"role": "assistant", "content": piece} if number == 0 else {"content": piece}
        yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    if include_usage:
        yield {**base, "choices": [], "usage": _usage()}


def _completion(model: str, answer: str) -> dict[str, Any]:
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": answer, "finish_reason": "stop", "logprobs": None}],
        "usage": _usage(),
    }


def _completion_stream(model: str, answer: str, include_usage: bool) -> Iterator[dict[str, Any]]:
    base = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
    }
    for piece in _pieces(answer):
        yield {
            **base,
            "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}],
        }
    yield {**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop", "logprobs": None}]}
    if include_usage:
        yield {**base, "choices": [], "usage": _usage()}


def _embedding_vector(index: int) -> list[float]:
    return [round(0.125 * (index + 1) + 0.0625 * i, 4) for i in range(EMBEDDING_SIZE)]


def _embeddings(model: str, inputs: Any, encoding_format: Any) -> dict[str, Any]:
    count = len(inputs) if isinstance(inputs, list) and inputs and not _is_tokens(inputs) else 1
    data = []
    for index in range(count):
        vector = _embedding_vector(index)
        embedding: Any = vector
        if encoding_format == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {"object": "list", "data": data, "model": model, "usage": _usage(5, 0)}


def _is_tokens(inputs: list[Any]) -> bool:
    """A single input given as token ids (a list of ints), not a list of inputs."""
    return all(isinstance(item, int) for item in inputs)


def _response(model: str, answer: str, *, status: str = "completed") -> dict[str, Any]:
    done = status == "completed"
    message = {
        "type": "message",
        "id": f"msg_{uuid.uuid4().hex}",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": answer, "annotations": []}],
    }
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": [message] if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": (
            {
                "input_tokens": 5,
                "output_tokens": 7,
                "total_tokens": 12,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            }
            if done
            else None
        ),
    }


def _response_stream(model: str, answer: str) -> Iterator[dict[str, Any]]:
    started = _response(model, answer, status="in_progress")
    finished = {**_response(model, answer), "id": started["id"]}
    item = finished["output"][0]
    part = item["content"][0]
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "part": {**part, "text": ""},
        },
    ]
    for piece in _pieces(answer):
        events.append(
            {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
            }
        )
    events += [
        {
            "type": "response.output_text.done",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "text": answer,
        },
        {
            "type": "response.content_part.done",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "part": part,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": finished},
    ]
    for number, event in enumerate(events):
        yield {**event, "sequence_number": number}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real provider: LiteLLM pools connections
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        path = self.path.split("?", 1)[0]
        self.server.upstream._record(UpstreamRequest(self.command, path, headers, body, raw))
        payload = body if isinstance(body, dict) else {}
        model = str(payload.get("model") or "unknown")
        answer = self.server.upstream.answer
        stream = self.command == "POST" and payload.get("stream") is True
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        route = (self.command, path.removeprefix("/v1"))
        if route == ("GET", "/models"):
            self._json(200, self.server.upstream._model_list())
        elif route == ("POST", "/chat/completions"):
            if stream:
                self._sse(_chat_stream(model, answer, include_usage), done_marker=True)
            else:
                self._json(200, _chat(model, answer))
        elif route == ("POST", "/completions"):
            if stream:
                self._sse(_completion_stream(model, answer, include_usage), done_marker=True)
            else:
                self._json(200, _completion(model, answer))
        elif route == ("POST", "/embeddings"):
            self._json(
                200, _embeddings(model, payload.get("input"), payload.get("encoding_format"))
            )
        elif route == ("POST", "/responses"):
            if stream:
                self._sse(_response_stream(model, answer), done_marker=False, named=True)
            else:
                self._json(200, _response(model, answer))
        else:
            error = {"message": f"no route {self.command} {path}", "type": "invalid_request_error"}
            self._json(404, {"error": {**error, "param": None, "code": "not_found"}})

    def _json(self, status: int, document: Mapping[str, Any]) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(
        self, events: Iterator[dict[str, Any]], *, done_marker: bool, named: bool = False
    ) -> None:
        # Chunked transfer encoding keeps the connection reusable after the stream ends.
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for event in events:
            prefix = f"event: {event['type']}\n" if named else ""
            self._chunk(f"{prefix}data: {json.dumps(event)}\n\n".encode())
        if done_marker:
            self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 refuses connections when a proxy opens hundreds at
    # once; LiteLLM then retries, and the retried call is logged twice.
    request_queue_size = 1024
    upstream: UpstreamServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing a kept-alive connection is normal; anything else is worth a trace.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class UpstreamServer:
    """The model provider the proxy calls: answers like OpenAI, records everything it gets.

    ``with UpstreamServer() as upstream:`` then give LiteLLM ``api_base=upstream.api_base``.
    """

    def __init__(self, answer: str = UPSTREAM_ANSWER, host: str = "127.0.0.1") -> None:
        self.answer = answer
        self._host = host
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._requests: list[UpstreamRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = _Server((self._host, 0), _Handler)
        server.upstream = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="upstream-model", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the upstream server is not running")
        return f"http://{self._host}:{self._server.server_address[1]}"

    @property
    def api_base(self) -> str:
        """What LiteLLM's ``api_base`` gets: the OpenAI SDK appends ``/chat/completions`` etc."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> list[UpstreamRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def model_calls(self) -> list[UpstreamRequest]:
        """The requests that asked the model for something (every POST), in arrival order."""
        return [r for r in self.requests if r.method == "POST"]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for_requests(
        self, ready: Callable[[list[UpstreamRequest]], bool], timeout: float = 30.0
    ) -> list[UpstreamRequest]:
        """Block until ``ready(requests)`` holds; raise TimeoutError with what came if not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready(list(self._requests)):
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.method, r.path) for r in self._requests]
                    raise TimeoutError(f"upstream: condition not met after {timeout}s; got {seen}")
                self._changed.wait(left)
            return list(self._requests)

    def _model_list(self) -> dict[str, Any]:
        with self._lock:
            seen = {r.body["model"] for r in self._requests if isinstance(r.body, dict)}
        names = sorted(name for name in seen if isinstance(name, str))
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "otel-bridge"} for n in names
            ],
        }

    def _record(self, request: UpstreamRequest) -> None:
        with self._changed:
            self._requests.append(request)
            self._changed.notify_all()
