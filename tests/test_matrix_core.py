"""The support matrix's core, end to end, in one cell (docs/compatibility.md, `./dev matrix`).

A cell is a gateway interpreter (OTEL_BRIDGE_PROXY_PYTHON: one LiteLLM release with the langfuse
major its `langfuse` callback needs, and the proxy tier installed into it) and an app
interpreter (OTEL_BRIDGE_APP_PYTHON: one langfuse x OpenAI SDK combination). The normal suite
runs this file on the pinned pair; `./dev test` also on the oldest and the newest LiteLLM cell,
`./dev matrix` on every cell.

Per gateway logging path the release has (`langfuse`, `langfuse_otel`, `otel` through the
collector, each OTel path legacy and V2) and per call (sync, stream): the scenario app calls
the proxy set up as docs/setup-by-litellm-version.md says for that release (the callback file
next to config.yaml before 1.94), and the recording server must hold one trace with the proxy's
one generation in it, its parent chain closed up to the app's `run-test` span, linked to the
prompt. Where the release lacks a path, the bridge must say so in one start-up log line; the
test checks that line and reports the cell unsupported, with the reason, to the matrix table.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_forwarder import RotelForwarder, collector_forwarder
from e2e_assertions import (
    PROMPT_NAME,
    answered_request_spans,
    assert_unified,
    is_proxy_span,
    proxy_generations,
)
from harness import (
    ProxyProcess,
    UpstreamServer,
    client_env,
    proxy_python,
    run_scenario,
    upstream_config,
)

from otel_bridge._litellm_compat import (
    CALLBACK_FILE_ENTRY,
    PACKAGE_ENTRY,
    Version,
    has_otel_v2,
    needs_callback_file,
    parse_version,
)
from otel_bridge.demo._stack import example_config
from otel_bridge.recording_server import RecordingServer, observation_type

pytestmark = pytest.mark.e2e

PROMPT = ("test-prompt", 1)
# gateway logging path -> (example config, LITELLM_OTEL_V2, through the collector)
GATEWAY_PATHS: dict[str, tuple[str, bool, bool]] = {
    "langfuse": ("langfuse.yaml", False, False),
    "langfuse_otel": ("langfuse_otel.yaml", False, False),
    "langfuse_otel_v2": ("langfuse_otel.yaml", True, False),
    "otel": ("otel.yaml", False, True),
    "otel_v2": ("otel.yaml", True, True),
}
# Extra proxy environment per path: the legacy `otel` logger under a deployment's own tracer
# name (its instrumentation scope), so the bridge must still tell the model call apart.
PATH_ENV: dict[str, dict[str, str]] = {"otel": {"OTEL_TRACER_NAME": "acme-gateway"}}
# CI (`./dev test`) runs the oldest and newest cells on this subset; `./dev matrix` on all.
SMALL_CORE = ("langfuse", "langfuse_otel", "otel")
OTEL_BRIDGE_MATRIX_PATHS = "OTEL_BRIDGE_MATRIX_PATHS"
# Where OTEL_BRIDGE_SPAN_TYPING=bridged is checked: V2 types several spans of a request as
# generations on its own, so the switch shows.
SWITCH_PATH = "langfuse_otel_v2"


def selected_paths() -> list[str]:
    wanted = os.environ.get(OTEL_BRIDGE_MATRIX_PATHS, "").strip()
    if not wanted:
        return list(GATEWAY_PATHS)
    names = SMALL_CORE if wanted == "small" else tuple(n.strip() for n in wanted.split(","))
    unknown = [n for n in names if n not in GATEWAY_PATHS]
    if unknown:
        raise ValueError(f"{OTEL_BRIDGE_MATRIX_PATHS}: unknown paths {unknown}")
    return [n for n in GATEWAY_PATHS if n in names]


MATRIX_CALLS = ["sync", "stream"]
UNSUPPORTED_LINE = "otel-bridge: unsupported here: "
TYPE_ATTRIBUTE = "langfuse.observation.type"


@dataclass(frozen=True)
class Gateway:
    """The gateway interpreter's versions, read from the interpreter itself."""

    python: Path
    litellm: Version
    langfuse: Version | None

    @property
    def label(self) -> str:
        return ".".join(map(str, self.litellm))


def _versions(python: Path) -> dict[str, str | None]:
    code = (
        "import importlib.metadata as m, json\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return None\n"
        "print(json.dumps({n: v(n) for n in ('litellm', 'langfuse', 'openai', 'otel-bridge')}))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    versions: dict[str, str | None] = json.loads(out.stdout)
    return versions


@pytest.fixture(scope="module")
def gateway(record_testsuite_property: Callable[[str, object], None]) -> Gateway:
    python = proxy_python()
    versions = _versions(python)
    # For docs/compatibility.md: what this cell is made of, on both tiers.
    app = _versions(Path(os.environ.get("OTEL_BRIDGE_APP_PYTHON") or sys.executable))
    record_testsuite_property(
        "cell",
        json.dumps(
            {
                "name": os.environ.get("OTEL_BRIDGE_MATRIX_CELL", "pinned"),
                "gateway": {k: versions[k] for k in ("litellm", "langfuse")},
                "app": {k: app[k] for k in ("langfuse", "openai")},
                "paths": selected_paths(),
            }
        ),
    )
    litellm = parse_version(versions["litellm"])
    assert litellm is not None, f"{python} has no LiteLLM: {versions}"
    assert versions["otel-bridge"], f"{python} has no otel-bridge: {versions}"
    return Gateway(python, litellm, parse_version(versions["langfuse"]))


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def rotel(
    recorder: RecordingServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RotelForwarder]:
    token = f"{recorder.public_key}:{recorder.secret_key}".encode()
    env = {
        "LANGFUSE_OTLP_ENDPOINT": f"{recorder.url}/api/public/otel",
        "LANGFUSE_AUTH": base64.b64encode(token).decode("ascii"),
    }
    forwarder = collector_forwarder(env, tmp_path_factory.mktemp("rotel"))
    forwarder.start()
    try:
        yield forwarder
    finally:
        forwarder.stop()


def documented_setup(
    config: dict[str, Any], workdir: Path, port: int, gateway: Gateway
) -> dict[str, Any]:
    """The set-up docs/setup-by-litellm-version.md gives for this release: before 1.94 the
    `callbacks:` entry names the file that `otel-bridge litellm-callback-file` writes next to
    config.yaml (run here from the gateway's own environment, as an operator would)."""
    if not needs_callback_file(gateway.litellm):
        return config
    settings = config["litellm_settings"]
    settings["callbacks"] = [
        CALLBACK_FILE_ENTRY if c == PACKAGE_ENTRY else c for c in settings["callbacks"]
    ]
    # Where ProxyProcess will write the config; written now so the command can check it.
    config_path = workdir / f"litellm-{port}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [str(gateway.python.parent / "otel-bridge"), "litellm-callback-file"]
    result = subprocess.run([*command, str(config_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (workdir / "otel_bridge_callback.py").is_file()
    return config


def proxy_env(
    recorder: RecordingServer, rotel: Callable[[], RotelForwarder], path: str
) -> dict[str, str]:
    name, v2, collector = GATEWAY_PATHS[path]
    env = {
        "OTEL_SERVICE_NAME": "litellm-proxy",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # test speed only: LiteLLM's OTel paths batch spans
    }
    if collector:
        env.update(example_config(name)["environment_variables"])
        env["OTEL_ENDPOINT"] = rotel().traces_url
        env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    else:
        env.update(
            LANGFUSE_PUBLIC_KEY=recorder.public_key,
            LANGFUSE_SECRET_KEY=recorder.secret_key,
            LANGFUSE_HOST=recorder.url,
        )
    if v2:
        env["LITELLM_OTEL_V2"] = "true"
    env.update(PATH_ENV.get(path, {}))
    return env


@pytest.fixture(scope="module", params=selected_paths())
def proxy(
    request: pytest.FixtureRequest,
    gateway: Gateway,
    recorder: RecordingServer,
    upstream: UpstreamServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, ProxyProcess]]:
    path: str = request.param
    workdir = tmp_path_factory.mktemp(f"proxy-{path}")
    env = proxy_env(recorder, lambda: request.getfixturevalue("rotel"), path)
    process = ProxyProcess({}, env, workdir, gateway.python)
    process.config = documented_setup(
        upstream_config(upstream.api_base, GATEWAY_PATHS[path][0]), workdir, process.port, gateway
    )
    process.start()
    try:
        yield path, process
    finally:
        process.stop()


def unsupported_reason(path: str, gateway: Gateway) -> str | None:
    if GATEWAY_PATHS[path][1] and not has_otel_v2(gateway.litellm):
        return f"LiteLLM {gateway.label} has no OTel V2 (LITELLM_OTEL_V2 is ignored)"
    return None


def bridge_log_lines(process: ProxyProcess) -> list[str]:
    text = process.log_path.read_text(errors="replace")
    return [line for line in text.splitlines() if UNSUPPORTED_LINE in line]


def ingested_generations(recorder: RecordingServer, trace_id: str) -> list[dict[str, Any]]:
    """Generations the langfuse 2.x SDK (LiteLLM's `langfuse` callback up to 1.103) posted to
    the batch ingestion API, for ``trace_id``."""
    return [
        e["body"]
        for e in recorder.ingestion_events
        if e.get("type") == "generation-create" and e.get("body", {}).get("traceId") == trace_id
    ]


def assert_unified_ingested(recorder: RecordingServer, run: dict[str, Any]) -> None:
    """The core on the v2 SDK's wire: one generation in the caller's trace, its parent an
    exported app span whose chain reaches `run-test`, linked to the prompt."""
    trace_id, root_id = run["trace_id"], run["span_id"]
    deadline = time.monotonic() + 30
    while not (found := ingested_generations(recorder, trace_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(found) == 1, f"generations for {trace_id}: {found}; all: {recorder.ingestion_events}"
    (generation,) = found
    assert (generation.get("promptName"), generation.get("promptVersion")) == PROMPT, generation
    app_spans = {s.span_id: s for s in recorder.spans_for_trace(trace_id) if not is_proxy_span(s)}
    node = app_spans.get(generation.get("parentObservationId") or "")
    assert node is not None, f"parent {generation.get('parentObservationId')} was not exported"
    chain = [node.name]
    while node.parent_span_id is not None:
        node = app_spans[node.parent_span_id]
        chain.append(node.name)
    assert node.span_id == root_id, f"the generation's chain {chain} does not reach run-test"


@pytest.fixture(autouse=True)
def clean(recorder: RecordingServer, upstream: UpstreamServer) -> None:
    recorder.clear()
    upstream.clear()


@pytest.mark.parametrize("call", MATRIX_CALLS)
def test_core(
    call: str,
    proxy: tuple[str, ProxyProcess],
    gateway: Gateway,
    recorder: RecordingServer,
    record_property: Callable[[str, object], None],
) -> None:
    path, process = proxy
    cell = {"litellm": gateway.label, "path": path, "call": call}
    reason = unsupported_reason(path, gateway)
    if reason is not None:
        # The bridge names what cannot work, once, at start-up; the requests still go on.
        (line,) = [line for line in bridge_log_lines(process) if "LITELLM_OTEL_V2" in line]
        assert "has no OTel V2" in line
        record_property("matrix", json.dumps({**cell, "status": "unsupported", "reason": reason}))
        return
    assert bridge_log_lines(process) == [], process.log_tail()
    env = client_env(recorder.url, process.url, SCENARIO_PATH="langfuse_openai", SCENARIO_CALL=call)
    (run,) = run_scenario(env)
    if path == "langfuse" and gateway.langfuse is not None and gateway.langfuse < (3, 0, 0):
        assert_unified_ingested(recorder, run)
    else:
        deadline = time.monotonic() + 30
        recorder.wait_for_spans(
            lambda spans: any(s.trace_id == run["trace_id"] for s in proxy_generations(spans)),
            timeout=max(1.0, deadline - time.monotonic()),
        )
        assert_unified(recorder, run, prompt=PROMPT, client_generation=True)
    record_property("matrix", json.dumps({**cell, "status": "supported"}))


def test_unbridged_request_one_generation(
    proxy: tuple[str, ProxyProcess],
    gateway: Gateway,
    recorder: RecordingServer,
    record_property: Callable[[str, object], None],
) -> None:
    """A request with no bridge context through a bridged proxy: one generation per model
    call (OTEL_BRIDGE_SPAN_TYPING=all, the default), no prompt link."""
    path, process = proxy
    if path == "langfuse" or unsupported_reason(path, gateway) is not None:
        pytest.skip(f"{path}: no OTel spans to type on LiteLLM {gateway.label}")
    spans = answered_request_spans(recorder, process)
    generations = [s.name for s in spans if observation_type(s) == "GENERATION"]
    assert len(generations) == 1, generations
    assert not any(PROMPT_NAME in s.attributes for s in spans)
    record_property(
        "matrix",
        json.dumps(
            {"litellm": gateway.label, "path": path, "call": "unbridged", "status": "supported"}
        ),
    )


def test_span_typing_switch_leaves_unbridged_requests_to_litellm(
    gateway: Gateway,
    recorder: RecordingServer,
    upstream: UpstreamServer,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:
    """OTEL_BRIDGE_SPAN_TYPING=bridged: a request without bridge context is exported as LiteLLM
    types it (on V2, more than one generation), without a single attribute of the bridge's."""
    if not has_otel_v2(gateway.litellm):
        pytest.skip(f"LiteLLM {gateway.label} has no OTel V2, whose typing the switch shows")
    workdir = tmp_path_factory.mktemp("proxy-typing-bridged")
    env = {
        **proxy_env(recorder, lambda: request.getfixturevalue("rotel"), SWITCH_PATH),
        "OTEL_BRIDGE_SPAN_TYPING": "bridged",
    }
    process = ProxyProcess({}, env, workdir, gateway.python)
    process.config = documented_setup(
        upstream_config(upstream.api_base, GATEWAY_PATHS[SWITCH_PATH][0]),
        workdir,
        process.port,
        gateway,
    )
    with process:
        recorder.clear()
        spans = answered_request_spans(recorder, process)
    assert [s.name for s in spans if s.attributes.get(TYPE_ATTRIBUTE) == "span"] == []
    assert not any(PROMPT_NAME in s.attributes for s in spans)
    # What the default setting exists for: LiteLLM's own typing counts more than one.
    assert len([s for s in spans if observation_type(s) == "GENERATION"]) > 1
