"""HTTP/1.1 transport: a threading server whose handler reads the body (chunked or not) and
hands the request to the recording server, which answers it or drops the connection."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast

from otel_bridge.recording_server._api import Outcome, error_outcome

__all__ = ["Dispatcher", "HttpServer", "make_http_server"]


class Dispatcher(Protocol):
    """What the transport needs from the recording server."""

    def dispatch(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> Outcome | None: ...

    def record_unreadable(
        self, method: str, raw_path: str, headers: Mapping[str, str], outcome: Outcome
    ) -> None: ...

    def track_connection(self, conn: socket.socket, *, add: bool) -> None: ...


class _BodyError(Exception):
    pass


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    dispatcher: Dispatcher

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-response (or stop() cutting it off) is expected, not a traceback.
        return None


class _HttpServer6(HttpServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def _dispatcher(self) -> Dispatcher:
        return cast(HttpServer, self.server).dispatcher

    def setup(self) -> None:
        super().setup()
        self._dispatcher.track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._dispatcher.track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # the request log is the record; stderr noise would drown test output

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _read_body(self) -> bytes:
        # OpenTelemetry JS sends chunked bodies without Content-Length; Node reads both.
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise _BodyError("malformed chunked body") from exc
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError as exc:
            raise _BodyError("malformed Content-Length") from exc
        if size < 0:
            raise _BodyError("malformed Content-Length")
        return self.rfile.read(size)

    def _serve(self, method: str) -> None:
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            # Langfuse: "Failed to read request body" when the stream errors.
            outcome: Outcome | None = error_outcome(400, f"Failed to read request body: {exc}")
            assert outcome is not None
            self._dispatcher.record_unreadable(method, self.path, headers, outcome)
        else:
            outcome = self._dispatcher.dispatch(method, self.path, headers, body)
        if outcome is None:
            self.close_connection = True
            return
        self.send_response(outcome.status)
        self.send_header("Content-Type", outcome.content_type)
        self.send_header("Content-Length", str(len(outcome.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(outcome.body)


def make_http_server(host: str, port: int, dispatcher: Dispatcher) -> HttpServer:
    server_class: Callable[..., HttpServer] = _HttpServer6 if ":" in host else HttpServer
    httpd = server_class((host, port), _Handler)
    httpd.dispatcher = dispatcher
    return httpd
