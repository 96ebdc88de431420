"""Both tiers' spans in a real OTLP backend other than Langfuse: Arize Phoenix.

    scenario app (opentelemetry-instrument + the bridge's distro) --OTLP/HTTP--> Phoenix
        | traceparent + baggage                                                    ^
        v                                                                          |
    LiteLLM proxy (`otel` callback + the bridge) --------------OTLP/HTTP-----------+

The client exports with the OpenTelemetry SDK's OTLP exporter, switched on by
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (otel_bridge.distro.apply_defaults); its Langfuse SDK still
fetches the prompt from (and exports to) the recording server. Phoenix is read back through its
REST API (GET /v1/projects/{project}/spans, arize-phoenix 20.x), and the test asserts one
connected trace: run-test, the httpx POST span and the proxy's spans under one trace id, every
parent present.

Phoenix (~850 MB, its own dependency pins) runs from its own environment:
OTEL_BRIDGE_PHOENIX_PYTHON, default <repo>/.venv-phoenix/bin/python
(`python -m venv .venv-phoenix && .venv-phoenix/bin/pip install arize-phoenix`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import (
    ProxyProcess,
    UpstreamServer,
    assert_upstream_got_no_context,
    client_env,
    free_port,
    run_scenario,
    start_proxy,
    upstream_config,
)

from otel_bridge.demo._stack import ChildProcess, example_config, http_ok, scrubbed_environ
from otel_bridge.recording_server import RecordingServer

pytestmark = [pytest.mark.phoenix, pytest.mark.e2e]

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = Path(__file__).resolve().parent / "apps" / "phoenix_server.py"
PROJECT = "default"  # spans without an openinference.project.name resource attribute
PROMPT_NAME = "langfuse.observation.prompt.name"
PROMPT_VERSION = "langfuse.observation.prompt.version"


def phoenix_python() -> Path:
    configured = os.environ.get("OTEL_BRIDGE_PHOENIX_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-phoenix" / "bin" / "python"
    if not path.exists():
        # Not a skip: CI installs Phoenix and must run this test.
        raise RuntimeError(
            f"Phoenix interpreter {path} not found: `python3 -m venv .venv-phoenix && "
            ".venv-phoenix/bin/pip install arize-phoenix`, or set OTEL_BRIDGE_PHOENIX_PYTHON"
        )
    return path


class PhoenixProcess(ChildProcess):
    """`phoenix serve` on loopback ports picked here, with a throw-away SQLite database."""

    name = "phoenix"

    def __init__(self, python: Path, workdir: Path) -> None:
        super().__init__(workdir / "phoenix.log")
        self.python = python
        self.workdir = workdir
        self.port = free_port()
        self.grpc_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> PhoenixProcess:
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        env = {
            **scrubbed_environ("PHOENIX_"),  # no OTEL_*: Phoenix must not trace itself anywhere
            "HOME": str(self.workdir),
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_WORKING_DIR": str(data),
            "PHOENIX_SQL_DATABASE_URL": f"sqlite:///{data / 'phoenix.db'}",
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
            "PHOENIX_AGENTS_DISABLE_BASH": "true",
            "PHOENIX_DB_LOGGING_LEVEL": "warning",
            "PHOENIX_LOG_MIGRATIONS": "false",
            "PYTHONUNBUFFERED": "1",
        }
        command = [str(self.python), str(LAUNCHER)]
        self.launch(command, env, self.workdir, http_ok(f"{self.url}/healthz"), timeout, 0.5)
        return self

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)

    def spans(self, **query: Any) -> list[dict[str, Any]]:
        """Spans of the project via the REST API, following the pagination cursor."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000, **query}
        while True:
            response = httpx.get(
                f"{self.url}/v1/projects/{PROJECT}/spans", params=params, timeout=10
            )
            if response.status_code == 404:
                return found  # no span yet, so no project yet
            response.raise_for_status()
            body = response.json()
            found.extend(body["data"])
            if not body.get("next_cursor"):
                return found
            params["cursor"] = body["next_cursor"]


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixProcess]:
    process = PhoenixProcess(phoenix_python(), tmp_path_factory.mktemp("phoenix"))
    try:
        yield process.start()
    finally:
        process.stop()
        shutil.rmtree(process.workdir / "data", ignore_errors=True)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(params=["legacy", "v2"])
def otel_proxy(
    request: pytest.FixtureRequest,
    phoenix: PhoenixProcess,
    upstream: UpstreamServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:
    """examples/litellm/otel.yaml, its exporter aimed at Phoenix instead of the collector."""
    env = dict(example_config("otel.yaml")["environment_variables"])
    env["OTEL_ENDPOINT"] = f"{phoenix.url}/v1/traces"
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # test speed only
    if request.param == "v2":
        env["LITELLM_OTEL_V2"] = "true"
    config = upstream_config(upstream.api_base, "otel.yaml")
    process = start_proxy(config, env, tmp_path_factory.mktemp(request.param))
    try:
        yield process
    finally:
        process.stop()


def _attribute(span: dict[str, Any], dotted: str) -> Any:
    """An attribute whether Phoenix returns it flat ("a.b.c") or nested ({"a": {"b": ...}})."""
    attributes = span.get("attributes") or {}
    if dotted in attributes:
        return attributes[dotted]
    node: Any = attributes
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _wait_for_trace(
    phoenix: PhoenixProcess, trace_id: str, ready: Any, timeout: float = 60
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = phoenix.spans(trace_id=[trace_id])
        if ready(spans):
            return spans
        time.sleep(0.5)
    names = [(s["name"], s["context"]["span_id"], s["parent_id"]) for s in spans]
    raise AssertionError(f"trace {trace_id} incomplete in Phoenix after {timeout}s: {names}")


def test_both_tiers_in_one_connected_phoenix_trace(
    recorder: RecordingServer,
    phoenix: PhoenixProcess,
    otel_proxy: ProxyProcess,
    upstream: UpstreamServer,
) -> None:
    upstream.clear()
    env = client_env(
        recorder.url,
        otel_proxy.url,
        SCENARIO_PATH="use_prompt",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"{phoenix.url}/v1/traces",
    )
    (run,) = run_scenario(env)
    trace_id, root_id = run["trace_id"], run["span_id"]
    assert_upstream_got_no_context(
        upstream.requests, expected=1, secrets=[trace_id, root_id, "test-prompt"]
    )

    def parents_of(spans: list[dict[str, Any]]) -> dict[str, str | None]:
        return {s["context"]["span_id"]: s["parent_id"] for s in spans}

    def below(spans: list[dict[str, Any]], ancestor: str) -> list[dict[str, Any]]:
        parents = parents_of(spans)
        found = []
        for span in spans:
            node = span["parent_id"]
            while node is not None and node != ancestor:
                node = parents.get(node)
            if node == ancestor:
                found.append(span)
        return found

    def client_posts(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The client's httpx spans for requests to the gateway (the proxy's server span is
        named `POST /chat/completions` too, but carries no full URL)."""
        return [
            s
            for s in spans
            if s["name"].startswith("POST")
            and otel_proxy.url in str(_attribute(s, "url.full") or _attribute(s, "http.url") or "")
        ]

    def complete(spans: list[dict[str, Any]]) -> bool:
        parents = parents_of(spans)
        posts = client_posts(spans)
        return (
            root_id in parents
            and len(posts) == 1
            and any(
                _attribute(s, PROMPT_NAME) and _attribute(s, "gen_ai.request.model")
                for s in below(spans, posts[0]["context"]["span_id"])
            )
            and all(p is None or p in parents for p in parents.values())
        )

    spans = _wait_for_trace(phoenix, trace_id, complete)
    by_id = {s["context"]["span_id"]: s for s in spans}
    assert {s["context"]["trace_id"] for s in spans} == {trace_id}

    # Every parent id is present: one root, the client's run-test span.
    roots = [s for s in spans if s["parent_id"] is None]
    assert [r["context"]["span_id"] for r in roots] == [root_id], [r["name"] for r in roots]
    assert by_id[root_id]["name"] == "run-test"
    for span in spans:
        assert span["parent_id"] is None or span["parent_id"] in by_id, span["name"]

    # The httpx POST span to the gateway sits under run-test ...
    (post,) = client_posts(spans)
    assert post in below(spans, root_id)
    # ... and the proxy's spans under it, the model call with the caller's prompt link.
    proxy_spans = below(spans, post["context"]["span_id"])
    assert len(proxy_spans) >= 2, [s["name"] for s in proxy_spans]
    model_calls = [s for s in proxy_spans if _attribute(s, "gen_ai.request.model")]
    assert any(
        _attribute(s, PROMPT_NAME) == "test-prompt" and _attribute(s, PROMPT_VERSION) == 1
        for s in model_calls
    ), [(s["name"], s["attributes"]) for s in proxy_spans]
    linked = [s for s in proxy_spans if _attribute(s, PROMPT_NAME) is not None]
    assert all(
        (_attribute(s, PROMPT_NAME), _attribute(s, PROMPT_VERSION)) == ("test-prompt", 1)
        for s in linked
    )

    # No span of the chat call started a trace of its own. The project's other traces are the
    # client's prompt fetch (before run-test) and the harness's readiness probes of the proxy.
    everything = phoenix.spans()
    client_traces = {s["context"]["trace_id"] for s in everything if s["name"] == "run-test"}
    others: dict[str, list[dict[str, Any]]] = {}
    for span in everything:
        if span["context"]["trace_id"] not in client_traces:
            others.setdefault(span["context"]["trace_id"], []).append(span)
    for group in others.values():
        (root,) = [s for s in group if s["parent_id"] is None]
        url = str(_attribute(root, "url.full") or _attribute(root, "http.url") or "")
        route = _attribute(root, "http.route")
        assert "/api/public/v2/prompts/" in url or route == "/health/liveliness", [
            (s["name"], s["attributes"]) for s in group
        ]
