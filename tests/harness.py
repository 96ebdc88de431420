"""Real processes for the end-to-end tests: a LiteLLM proxy, the model server behind it, the
scenario app, a capture server.

Every process is started on a loopback port the test picks and is stopped by the fixture
that started it, whatever the test's outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from otel_bridge.demo._stack import (
    MASTER_KEY,
    ProxyProcess,
    free_port,
    mock_config,
    upstream_config,
)
from otel_bridge.demo._upstream import UPSTREAM_ANSWER, UpstreamRequest, UpstreamServer

__all__ = [
    "MASTER_KEY",
    "UPSTREAM_ANSWER",
    "LoopbackServer",
    "ProxyProcess",
    "UpstreamRequest",
    "UpstreamServer",
    "assert_upstream_got_no_context",
    "free_port",
    "mock_config",
    "start_proxy",
    "upstream_config",
]

REPO = Path(__file__).resolve().parent.parent
SCENARIO = Path(__file__).resolve().parent / "apps" / "scenario.py"
MODEL = "llama3.2:1b"
# How tests/apps/scenario.py puts the prompt into the context, and how it calls the gateway.
PATHS = ["langfuse_openai", "propagate_attributes", "use_prompt"]
CALLS = ["sync", "async", "stream", "astream"]


def proxy_python() -> Path:
    """The proxy tier's interpreter: a separate environment with langfuse 4.x and LiteLLM."""
    configured = os.environ.get("OTEL_BRIDGE_PROXY_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-proxy" / "bin" / "python"
    if not path.exists():
        raise RuntimeError(
            f"proxy interpreter {path} not found: run `./dev test` (it builds .venv-proxy) "
            "or set OTEL_BRIDGE_PROXY_PYTHON"
        )
    return path


def start_proxy(config: Mapping[str, Any], env: Mapping[str, str], workdir: Path) -> ProxyProcess:
    return ProxyProcess(config, env, workdir, proxy_python()).start()


# What a caller's trace context travels in. docs/security.md: the proxy forwards none of it to
# the model provider (LiteLLM 1.106 does not pass traceparent or baggage on, and its
# forward_client_headers_to_llm_api passes only `x-*` and `anthropic-beta`).
CONTEXT_HEADERS = ("traceparent", "tracestate", "baggage")
# The bridge's default OTEL_BRIDGE_REFUSED_BAGGAGE_PREFIXES, and the Langfuse members.
WITHHELD_BAGGAGE_PREFIXES = ("langfuse_", "litellm.", "gen_ai.")


def assert_upstream_got_no_context(
    requests: Sequence[UpstreamRequest], *, expected: int | None = None, secrets: Iterable[str] = ()
) -> None:
    """What the model provider got carries none of the caller's trace context: no
    ``traceparent``/``tracestate``/``baggage`` header, no header naming a ``langfuse_*`` or
    refused baggage key, and none of ``secrets`` (the caller's ids, its prompt name) anywhere
    in a header or the body. ``expected``: how many model calls (POSTs) it must have got;
    LiteLLM's own ``GET /v1/models`` (model discovery, at times of its choosing) is no call,
    but is checked for context too."""
    calls = [r for r in requests if r.method == "POST"]
    if expected is not None:
        assert len(calls) == expected, [(r.method, r.path) for r in requests]
    assert calls, "the upstream model server got no model call"
    markers = [s for s in secrets if s]
    for request in requests:
        where = f"{request.method} {request.path}"
        for name in CONTEXT_HEADERS:
            assert name not in request.headers, (where, name, request.headers[name])
        for name, values in request.headers.items():
            for value in [name, *values]:
                lowered = value.lower()
                assert not any(p in lowered for p in WITHHELD_BAGGAGE_PREFIXES), (where, name)
                assert not any(m in value for m in markers), (where, name, value)
        body = request.raw_body.decode("utf-8", errors="replace")
        for marker in (
            *markers,
            *WITHHELD_BAGGAGE_PREFIXES,
            "existing_trace_id",
            "parent_observation_id",
        ):
            assert marker not in body, (where, marker, body[:500])


def client_env(recorder_url: str, proxy_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE_", "SCENARIO_"))
    }
    env.update(
        LANGFUSE_PUBLIC_KEY="pk-lf-test",
        LANGFUSE_SECRET_KEY="sk-lf-test",
        LANGFUSE_BASE_URL=recorder_url,
        LANGFUSE_FLUSH_INTERVAL="0.2",
        OTEL_SERVICE_NAME="scenario-app",
        OTEL_BRIDGE_GATEWAYS=proxy_url,
        SCENARIO_BASE_URL=proxy_url,
        SCENARIO_API_KEY=MASTER_KEY,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_scenario(
    env: Mapping[str, str], *, launcher: bool = True, timeout: float = 180
) -> list[dict[str, Any]]:
    """Run the scenario app in its own process; returns one record per `run-test` span.

    The app tier's interpreter is OTEL_BRIDGE_APP_PYTHON (from `env`, else this process's
    environment; a matrix cell's venv), or this interpreter."""
    python = env.get("OTEL_BRIDGE_APP_PYTHON") or os.environ.get("OTEL_BRIDGE_APP_PYTHON")
    python = python or sys.executable
    bindir = Path(python).parent
    if launcher:
        env = {
            **env,
            "OTEL_PYTHON_DISTRO": "otel_bridge",
            "OTEL_PYTHON_CONFIGURATOR": "otel_bridge",
            "SCENARIO_INSTRUMENT": "launcher",
        }
        command = [str(bindir / "opentelemetry-instrument"), python, str(SCENARIO)]
    else:
        env = {**env, "SCENARIO_INSTRUMENT": "call"}
        command = [python, str(SCENARIO)]
    result = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"scenario failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


class LoopbackServer:
    """An HTTP server on 127.0.0.1, on a port the OS picks, serving from a thread while the
    context is open; subclasses build the request handler and pass it in."""

    path = ""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class CaptureServer(LoopbackServer):
    """A plain HTTP server on loopback that records request headers (a non-gateway origin)."""

    path = "/other"

    def __init__(self) -> None:
        self.requests: list[dict[str, list[str]]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers: dict[str, list[str]] = {}
                for key, value in self.headers.items():
                    headers.setdefault(key.lower(), []).append(value)
                with lock:
                    outer.requests.append(headers)
                body = b"{}"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)
