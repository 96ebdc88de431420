"""The client never sends ``langfuse_*`` baggage outside ``OTEL_BRIDGE_GATEWAYS``.

The app (tests/apps/boundary.py) runs in its own process; two capture servers here record
what reaches each origin: the gateway (the only configured origin) and another loopback port,
a different origin. Redirects go both ways between them; requests are made with httpx and
httpx2, sync and async, from threads with and without a copied context and from asyncio
tasks; the prompt comes from ``use_prompt``, Langfuse's ``propagate_attributes(as_baggage=True)``
or an open Langfuse generation. Gateway-bound requests in the same context must carry the
prompt, or the test proves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from harness import LoopbackServer

from otel_bridge._context import PROMPT_NAME_KEY, PROMPT_VERSION_KEY, parse_baggage
from otel_bridge.recording_server import RecordingServer

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parent / "apps" / "boundary.py"
# A name that needs every escape: space, plus, percent, equals, non-ASCII.
PROMPT = "boundary prompt+%=ü"


@dataclass
class Received:
    server: str
    method: str
    path: str
    case: str
    headers: dict[str, list[str]]

    def baggage(self) -> list[tuple[str, str]]:
        members, _ = parse_baggage(self.headers.get("baggage", []))
        return members

    def langfuse_members(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.baggage() if k.lower().startswith("langfuse")]


class CaptureServer(LoopbackServer):
    """Records every request; ``/redirect?code=N&to=URL`` answers N with Location: URL."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.received: list[Received] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                headers: dict[str, list[str]] = {}
                for key, value in self.headers.items():
                    headers.setdefault(key.lower(), []).append(value)
                with lock:
                    outer.received.append(
                        Received(outer.label, self.command, parts.path, query["case"][0], headers)
                    )
                if parts.path == "/redirect":
                    self.send_response(int(query["code"][0]))
                    self.send_header("location", query["to"][0])
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = b"{}"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


@dataclass
class Outcome:
    prompt: tuple[str, int]
    cases: dict[str, bool | None]
    gateway: list[Received]
    other: list[Received]


def _run_app(recorder: RecordingServer, mode: str, tenant: str | None, prompt_name: str) -> Outcome:
    with CaptureServer("gateway") as gateway, CaptureServer("other") as other:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "LANGFUSE_", "BOUNDARY_"))
        }
        env.update(
            LANGFUSE_PUBLIC_KEY=recorder.public_key,
            LANGFUSE_SECRET_KEY=recorder.secret_key,
            LANGFUSE_BASE_URL=recorder.url,
            LANGFUSE_FLUSH_INTERVAL="0.2",
            OTEL_SERVICE_NAME="boundary-app",
            BOUNDARY_GATEWAY=gateway.url,
            BOUNDARY_OTHER=other.url,
            BOUNDARY_MODE=mode,
            BOUNDARY_PROMPT=prompt_name,
            PYTHONUNBUFFERED="1",
        )
        if tenant is not None:
            env["BOUNDARY_TENANT"] = tenant
        result = subprocess.run(
            [sys.executable, str(APP)], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        (header,) = [line for line in lines if "prompt" in line]
        cases = {line["case"]: line["gateway_prompt"] for line in lines if "case" in line}
        return Outcome(tuple(header["prompt"]), cases, list(gateway.received), list(other.received))


@pytest.fixture(scope="module")
def boundary_recorder() -> Iterator[RecordingServer]:
    from conftest import TEST_PROMPTS

    prompts = [
        *TEST_PROMPTS,
        {"name": PROMPT, "version": 3, "prompt": [{"role": "user", "content": "x"}],
         "labels": ["production"]},
    ]  # fmt: skip
    with RecordingServer(prompts=prompts) as server:
        yield server


RUNS = {
    "use_prompt": ("use_prompt", None, PROMPT),
    "use_prompt+tenant": ("use_prompt", "acme", PROMPT),
    "propagate_attributes": ("propagate_attributes", None, PROMPT),
    "generation": ("generation", None, PROMPT),
}


@pytest.fixture(scope="module")
def outcomes(boundary_recorder: RecordingServer) -> dict[str, Outcome]:
    return {name: _run_app(boundary_recorder, *args) for name, args in RUNS.items()}


@pytest.mark.parametrize("run", list(RUNS))
def test_other_origins_never_receive_langfuse_baggage(
    run: str, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes[run]
    assert len(outcome.other) >= 40
    leaks = [
        f"{r.method} {r.path} case={r.case}: {r.langfuse_members()}"
        for r in outcome.other
        if r.langfuse_members()
    ]
    assert not leaks, "langfuse_* baggage reached another origin:\n" + "\n".join(leaks)
    # OpenTelemetry's own context still flows there.
    assert all("traceparent" in r.headers for r in outcome.other)


@pytest.mark.parametrize("run", list(RUNS))
def test_gateway_requests_in_the_context_carry_the_prompt(
    run: str, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes[run]
    name, version = outcome.prompt
    assert name == PROMPT
    by_case: dict[str, list[Received]] = {}
    for received in outcome.gateway:
        by_case.setdefault(received.case, []).append(received)
    must = [case for case, expect in outcome.cases.items() if expect]
    assert len(must) >= 30
    missing = []
    for case in must:
        hops = [r for r in by_case.get(case, []) if r.path in ("/gw", "/redirect")]
        assert hops, f"case {case} never reached the gateway"
        for hop in hops:
            members = hop.baggage()
            if (PROMPT_NAME_KEY, name) not in members or (
                PROMPT_VERSION_KEY,
                str(version),
            ) not in members:
                missing.append(f"{case} {hop.path}: {members}")
    assert not missing, "gateway requests without the prompt:\n" + "\n".join(missing)


def test_threads_without_a_copied_context_carry_nothing(outcomes: dict[str, Outcome]) -> None:
    """A bare thread sees none of the caller's context: no prompt, and so nothing to leak."""
    outcome = outcomes["use_prompt"]
    bare = [r for r in outcome.gateway if "-thread-bare-" in r.case]
    assert bare
    assert not any(r.langfuse_members() for r in bare)


def test_tenant_baggage_still_flows_everywhere(outcomes: dict[str, Outcome]) -> None:
    """Only the ``langfuse_`` members are withheld: other baggage reaches every origin."""
    outcome = outcomes["use_prompt+tenant"]
    in_context = [r for r in [*outcome.gateway, *outcome.other] if "-thread-bare-" not in r.case]
    assert in_context
    assert all(("tenant", "acme") in r.baggage() for r in in_context)


def test_propagated_trace_attributes_reach_only_the_gateway(outcomes: dict[str, Outcome]) -> None:
    outcome = outcomes["propagate_attributes"]
    gateway_keys = {k for r in outcome.gateway for k, _ in r.langfuse_members()}
    assert {"langfuse_user_id", "langfuse_session_id"} <= gateway_keys
    for received in outcome.other:
        text = json.dumps(received.headers)
        assert "secret-user" not in text and "secret-session" not in text, received.case
