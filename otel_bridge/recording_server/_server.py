"""``RecordingServer``: lifecycle, fault injection, the request log and the test-facing views."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Self, get_args
from urllib.parse import urlsplit

from otel_bridge.recording_server._api import (
    OTLP_TRACES_PATH,
    Api,
    Outcome,
    error_outcome,
)
from otel_bridge.recording_server._http import HttpServer, make_http_server
from otel_bridge.recording_server._mapping import FIELD_GROUPS, v1_trace
from otel_bridge.recording_server._records import (
    WRITE_MODES,
    FaultMode,
    PromptFetch,
    RecordedPrompt,
    RecordedRequest,
    RecordedSpan,
    WriteMode,
)
from otel_bridge.recording_server._store import Store

__all__ = ["RecordingServer"]

RECORDED_HEADERS: Final = (
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "x-langfuse-ingestion-version",
    "x-langfuse-sdk-name",
    "x-langfuse-sdk-version",
    "x-langfuse-public-key",
    "user-agent",
)


class RecordingServer:
    """In-process HTTP double of Langfuse's public API: records OTLP spans, serves prompts and
    answers the read API as a Langfuse v4 server in ``write_mode`` would."""

    def __init__(
        self,
        public_key: str = "pk-lf-test",
        secret_key: str = "sk-lf-test",
        prompts: Iterable[RecordedPrompt | Mapping[str, Any]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body_bytes: int | None = None,
        write_mode: WriteMode = "events_only",
        ingestion_delay: float = 0.0,
    ) -> None:
        if write_mode not in WRITE_MODES:
            raise ValueError(f"write_mode must be one of {WRITE_MODES}, got {write_mode!r}")
        self.public_key = public_key
        self.secret_key = secret_key
        self.host = host
        self._requested_port = port
        self._store = Store(ingestion_delay)
        self._api = Api(self._store, public_key, secret_key, write_mode, max_body_bytes)
        self._lifecycle = threading.Lock()
        self._fault: FaultMode | None = None
        self._fault_delay = 5.0
        self._fault_all_paths = False
        self._stopping = threading.Event()
        self._httpd: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}
        for prompt in prompts:
            self.add_prompt(prompt)

    @property
    def write_mode(self) -> WriteMode:
        """``events_only`` (Langfuse v4's default) or ``legacy``."""
        return self._api.write_mode

    @property
    def ingestion_delay(self) -> float:
        """Seconds between accepting an export and its rows being readable over HTTP."""
        return self._store.ingestion_delay

    # -- lifecycle

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns ``self``. After :meth:`stop`, binds the
        same port again (an outage with the port closed: connections are refused meanwhile)."""
        with self._lifecycle:
            if self._httpd is not None:
                return self
            self._stopping.clear()
            httpd = make_http_server(self.host, self._requested_port, self)
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"recording-server-{httpd.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
            # A server that went down comes back at the same address: clients keep their URL.
            self._requested_port = int(httpd.server_address[1])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the listening socket and all open connections, join the threads."""
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            if httpd is None:
                return
            self._stopping.set()
            httpd.shutdown()
            httpd.server_close()
            deadline = time.monotonic() + timeout
            # Keep-alive clients would otherwise pin handler threads (and the port) until they quit.
            while True:
                with self._store.cond:
                    open_connections = dict(self._connections)
                if not open_connections or time.monotonic() >= deadline:
                    break
                for conn in open_connections:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                for worker in open_connections.values():
                    worker.join(max(0.0, min(0.5, deadline - time.monotonic())))
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
            self._httpd, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        """The bound port; ``RuntimeError`` while the server is not running."""
        httpd = self._httpd
        if httpd is None:
            raise RuntimeError("RecordingServer is not running; call start() first")
        return int(httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to hand to clients, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        """Full URL of the OTLP/HTTP traces endpoint, for exporters configured by endpoint."""
        return self.url + OTLP_TRACES_PATH

    # -- configuration

    def add_prompt(self, prompt: RecordedPrompt | Mapping[str, Any]) -> RecordedPrompt:
        """Store (or replace) one prompt version in the project; returns the stored record."""
        record = prompt if isinstance(prompt, RecordedPrompt) else RecordedPrompt.from_dict(prompt)
        self._store.add_prompt(record)
        return record

    def set_fault(
        self, mode: FaultMode | None, delay_s: float = 5.0, *, all_paths: bool = False
    ) -> None:
        """Inject an outage on the OTLP endpoint (all paths with ``all_paths``); ``None`` clears.

        ``"error"`` answers 500, ``"slow"`` waits ``delay_s`` before answering normally, ``"down"``
        closes the connection without answering.
        """
        if mode is not None and mode not in get_args(FaultMode):
            raise ValueError(f"unknown fault mode {mode!r}")
        with self._store.cond:
            self._fault, self._fault_delay, self._fault_all_paths = mode, delay_s, all_paths

    # -- what was received (immediately, whatever the write mode and delay)

    def spans(self) -> list[RecordedSpan]:
        """Every span received so far, in arrival order (a copy)."""
        return self._store.spans()

    def spans_for_trace(self, trace_id: str) -> list[RecordedSpan]:
        """The received spans of one trace (hex id, any case), in arrival order."""
        wanted = trace_id.lower()
        return [span for span in self._store.spans() if span.trace_id.lower() == wanted]

    def wait_for_spans(
        self, predicate: Callable[[list[RecordedSpan]], bool], timeout: float = 10
    ) -> list[RecordedSpan]:
        """Poll until ``predicate(spans)`` holds; ``TimeoutError`` says what did arrive."""
        return self._store.wait_for_spans(predicate, timeout, self.summary)

    # -- what Langfuse would serve

    def trace(self, trace_id: str) -> dict[str, Any]:
        """The v1 ``GET /api/public/traces/{id}`` body as Langfuse serves it in ``legacy`` mode.

        Built from the legacy-table rules (generations failing ``CreateGenerationBody`` are
        dropped; prompt links resolve against the stored prompts or are null), immediately and
        whatever this server's ``write_mode`` (over HTTP, ``events_only`` answers 404). Raises
        ``KeyError`` if no stored span belongs to the trace.
        """
        found = self._store.legacy_trace(trace_id, include_pending=True)
        if found is None and trace_id != trace_id.lower():
            found = self._store.legacy_trace(trace_id.lower(), include_pending=True)
        if found is None:
            raise KeyError(trace_id)
        spans, observations = found
        return v1_trace(spans[0].trace_id, spans, observations)

    def observations(self, trace_id: str) -> list[dict[str, Any]]:
        """Every observation of the trace exactly as ``GET /api/public/v2/observations?traceId=``
        serves it now with all field groups (all pages): empty in ``legacy`` mode, and without
        what is still inside the ingestion delay."""
        items: list[dict[str, Any]] = []
        params = {"traceId": trace_id, "fields": ",".join(FIELD_GROUPS), "limit": "1000"}
        while True:
            page = self._api.observations_v2(params)
            items.extend(page["data"])
            cursor = page["meta"].get("cursor")
            if not cursor:
                return items
            params = {**params, "cursor": cursor}

    def wait_for_observations(
        self,
        trace_id: str,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 10,
    ) -> list[dict[str, Any]]:
        """Poll :meth:`observations` until ``predicate`` holds, as a reader of Langfuse must."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.observations(trace_id)
            if predicate(found):
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"v2 observations of {trace_id} did not match within {timeout}s: "
                    f"{[(o['name'], o['type']) for o in found]}; {self.summary()}"
                )
            with self._store.cond:
                self._store.cond.wait(0.05)

    @property
    def worker_failures(self) -> list[str]:
        """Why Langfuse's worker would fail whole accepted batches (nothing of them stored)."""
        return self._store.batch_failures()

    # -- logs

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request seen, including rejected, unknown-path and fault-dropped ones."""
        return self._store.requests()

    @property
    def prompt_fetches(self) -> list[PromptFetch]:
        """Every prompt lookup, whatever its outcome, with the name URL-decoded."""
        return self._store.prompt_fetches()

    @property
    def ingestion_events(self) -> list[dict[str, Any]]:
        """Events posted to the legacy batch ingestion endpoint (the v4 SDK sends scores there)."""
        return self._store.ingestion_events()

    def request_counts(self) -> dict[tuple[str, int], int]:
        """Requests seen, keyed by ``(path, status)``."""
        return self._store.counts()

    def count(self, path: str | None = None, status: int | None = None) -> int:
        """How many requests matched ``path`` and ``status`` (``None`` matches any)."""
        return sum(
            n
            for (seen_path, seen_status), n in self._store.counts().items()
            if (path is None or seen_path == path) and (status is None or seen_status == status)
        )

    def clear(self) -> None:
        """Forget received spans, stored rows, requests, fetches and counters; prompts and
        faults stay."""
        self._store.clear()

    def summary(self) -> str:
        """A short human-readable account of what was received, for failure messages."""
        spans = self._store.spans()
        requests = self._store.requests()
        by_trace: dict[str, list[str]] = {}
        for span in spans:
            by_trace.setdefault(span.trace_id, []).append(span.name)
        traces = (
            "; ".join(f"{tid[:8]}…: {names}" for tid, names in list(by_trace.items())[:10])
            or "none"
        )
        recent = ", ".join(
            f"{r.method} {r.path} -> {r.status}" + (f" ({r.reason})" if r.reason else "")
            for r in requests[-8:]
        )
        return (
            f"received {len(spans)} span(s) in {len(by_trace)} trace(s) [{traces}]; "
            f"{len(requests)} request(s), last: {recent or 'none'}"
        )

    # -- transport callbacks (handler threads)

    def track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._store.cond:
            if add:
                self._connections[conn] = threading.current_thread()
            else:
                self._connections.pop(conn, None)

    def _record(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        outcome: Outcome | None,
        reason: str | None = None,
    ) -> None:
        self._store.record_request(
            RecordedRequest(
                method=method,
                path=path,
                query=query,
                status=outcome.status if outcome is not None else 0,
                headers={key: headers[key] for key in RECORDED_HEADERS if key in headers},
                reason=outcome.reason if outcome is not None else reason,
                span_count=outcome.span_count if outcome is not None else 0,
            )
        )

    def record_unreadable(
        self, method: str, raw_path: str, headers: Mapping[str, str], outcome: Outcome
    ) -> None:
        parts = urlsplit(raw_path)
        self._record(method, parts.path, parts.query, headers, outcome)

    def dispatch(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> Outcome | None:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        with self._store.cond:
            fault = self._fault if (self._fault_all_paths or path == OTLP_TRACES_PATH) else None
            delay = self._fault_delay
        if fault == "down":
            self._record(method, path, parts.query, headers, None, reason="injected fault: down")
            return None
        if fault == "slow" and self._stopping.wait(delay):
            self._record(
                method, path, parts.query, headers, None, reason="server stopped during slow fault"
            )
            return None
        if fault == "error":
            outcome = error_outcome(500, "injected fault: error", "InternalServerError")
        else:
            try:
                outcome = self._api.route(method, path, parts.query, headers, body)
            except Exception as exc:
                # A bug in the double must show up in the request log, not as a silent hang-up.
                outcome = error_outcome(
                    500, "Internal Server Error", f"recording server error: {exc!r}"
                )
        self._record(method, path, parts.query, headers, outcome)
        return outcome
