"""End to end from a Node app: node/test/e2e/scenario.mjs under
``node --import @otel-bridge/node/register`` (the quickstart's zero-code setup: the real
Langfuse JS SDK, OpenTelemetry JS and the openai Node SDK), a real LiteLLM proxy with the
bridge in front of the loopback upstream model, and the recording server in Langfuse's place.

Every test runs on each gateway logging path: LiteLLM's ``langfuse`` callback, its
``langfuse_otel`` callback, and its ``otel`` callback through the shipped collector pipeline
(rotel standing in for the collector, see test_otel_collector_path.py). Judged on what the
recording server stored and on what reached other origins.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from collector_forwarder import RotelForwarder, collector_forwarder
from e2e_assertions import assert_unified, proxy_generations, wait_for_proxy_generations
from harness import MASTER_KEY, LoopbackServer, client_env, start_proxy

from otel_bridge._context import LANGFUSE_BAGGAGE_PREFIX, parse_baggage, prompt_from_members
from otel_bridge.demo._stack import ProxyProcess, example_config, upstream_config
from otel_bridge.demo._upstream import UpstreamServer
from otel_bridge.recording_server import RecordingServer

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
NODE_DIR = REPO / "node"
SCENARIO = NODE_DIR / "test" / "e2e" / "scenario.mjs"
REGISTER = "@otel-bridge/node/register"
TWO_PROMPTS = [("test-prompt", 1), ("second prompt+%", 4)]
VARIANTS = ["langfuse", "langfuse_otel", "otel_collector"]


# --------------------------------------------------------------------------- the Node side


@pytest.fixture(scope="session")
def node_package() -> Path:
    """The package built from node/src; ``./dev test`` installs node/ with ``npm ci`` first."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not on PATH: install Node.js 20 or newer")
    if not (NODE_DIR / "node_modules" / "@opentelemetry" / "api").is_dir():
        raise RuntimeError("node/node_modules is missing: run ./dev test, or `npm ci` in node/")
    build = subprocess.run(
        ["npm", "run", "build", "--silent"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, f"npm run build failed:\n{build.stdout}\n{build.stderr}"
    return NODE_DIR / "dist" / "register.js"


def run_node_scenario(
    env: Mapping[str, str], node_package: Path, *, timeout: float = 240
) -> list[dict[str, Any]]:
    """Run the scenario app in its own Node process; one record per `run-test` observation."""
    command = ["node", "--import", REGISTER, str(SCENARIO)]
    result = subprocess.run(
        command, cwd=NODE_DIR, env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise AssertionError(
            f"node scenario failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )
    assert "otel-bridge: not started" not in result.stderr, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def node_env(recorder: RecordingServer, proxy: ProxyProcess, **extra: str) -> dict[str, str]:
    env = client_env(recorder.url, proxy.url, **extra)
    env["SCENARIO_API_KEY"] = MASTER_KEY
    return env


# --------------------------------------------------------------------------- origins


@dataclass
class Received:
    path: str
    headers: dict[str, list[str]]

    def langfuse_members(self) -> list[tuple[str, str]]:
        members, _ = parse_baggage(self.headers.get("baggage", []))
        return [(k, v) for k, v in members if k.lower().startswith(LANGFUSE_BAGGAGE_PREFIX)]


class Origin(LoopbackServer):
    """A loopback HTTP origin that records requests; ``/redirect?to=URL`` answers 302 there."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                parts = urlsplit(self.path)
                headers: dict[str, list[str]] = {}
                for key, value in self.headers.items():
                    headers.setdefault(key.lower(), []).append(value)
                with lock:
                    outer.received.append(Received(parts.path, headers))
                if parts.path == "/redirect":
                    self.send_response(302)
                    self.send_header("location", parse_qs(parts.query)["to"][0])
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = _serve

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


# --------------------------------------------------------------------------- the gateway


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# How the client starts does not depend on the gateway's logging path: these run on one.
STARTUP_TESTS = {
    "test_disabled_bridge_sends_no_prompt_and_leaves_the_app_running",
    "test_bad_gateway_setting_is_reported_and_the_app_still_runs",
}
# 200 concurrent calls take minutes per path on a shared 2-core machine: Langfuse's own
# propagateAttributes on every path, usePrompt (the same client code, another source) on one.
# One prompt source per gateway path under concurrency (both sources are covered), to keep CI
# short; each source's own linking runs on every path in the tests above.
CONCURRENT_PATHS = {"langfuse": ["use_prompt"]}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" not in metafunc.fixturenames:
        return
    name = metafunc.function.__name__
    if name in STARTUP_TESTS:
        metafunc.parametrize("variant", ["langfuse"], indirect=True, scope="module")
    elif name == "test_200_concurrent_calls_two_prompts_no_cross_talk":
        combos = [
            (v, p) for v in VARIANTS for p in CONCURRENT_PATHS.get(v, ["propagate_attributes"])
        ]
        metafunc.parametrize(
            ("variant", "path"),
            combos,
            ids=[f"{v}-{p}" for v, p in combos],
            indirect=["variant"],
            scope="module",
        )
    else:
        metafunc.parametrize("variant", VARIANTS, indirect=True, scope="module")


def _collector_env(recorder: RecordingServer) -> dict[str, str]:
    """The collector's environment as collector/README.md documents it."""
    token = f"{recorder.public_key}:{recorder.secret_key}".encode()
    return {
        "LANGFUSE_OTLP_ENDPOINT": f"{recorder.url}/api/public/otel",
        "LANGFUSE_AUTH": base64.b64encode(token).decode("ascii"),
    }


@pytest.fixture(scope="module")
def proxy(
    recorder: RecordingServer,
    upstream: UpstreamServer,
    variant: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp(f"node-{variant}")
    rotel: RotelForwarder | None = None
    if variant == "otel_collector":
        rotel = collector_forwarder(_collector_env(recorder), workdir)
        rotel.start()
        env = dict(example_config("otel.yaml")["environment_variables"])
        env["OTEL_ENDPOINT"] = rotel.traces_url
        config = upstream_config(upstream.api_base, "otel.yaml")
    else:
        env = {
            "LANGFUSE_PUBLIC_KEY": recorder.public_key,
            "LANGFUSE_SECRET_KEY": recorder.secret_key,
            "LANGFUSE_HOST": recorder.url,
            "OTEL_SERVICE_NAME": "litellm-proxy",
        }
        config = upstream_config(upstream.api_base, f"{variant}.yaml")
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"  # test speed only: LiteLLM's OTel paths batch spans
    try:
        process = start_proxy(config, env, workdir)
        try:
            yield process
        finally:
            process.stop()
    finally:
        if rotel is not None:
            rotel.stop()


@pytest.fixture(autouse=True)
def clean_recorder(recorder: RecordingServer) -> None:
    recorder.clear()


# --------------------------------------------------------------------------- assertions


def stored_prompt_id(recorder: RecordingServer, name: str, version: int) -> str:
    response = httpx.get(
        f"{recorder.url}/api/public/v2/prompts/{quote(name, safe='')}",
        params={"version": version},
        auth=(recorder.public_key, recorder.secret_key),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def assert_linked(recorder: RecordingServer, run: Mapping[str, Any]) -> None:
    """One trace per call, a closed parent chain to run-test, and the run's own prompt linked
    on the gateway generation: name, version and the id of the prompt stored in the project
    (read back through the prompts API, not from the recording server's internals)."""
    prompt = (run["prompt_name"], run["prompt_version"])
    generation = assert_unified(recorder, run, prompt=prompt, client_generation=False)
    assert generation["promptId"] == stored_prompt_id(recorder, *prompt)


def assert_no_langfuse_baggage_left_the_gateways(recorder: RecordingServer) -> None:
    """Nothing the app sent to Langfuse itself (prompt fetches, OTLP) carried langfuse_* baggage."""
    for request in recorder.requests:
        assert LANGFUSE_BAGGAGE_PREFIX not in request.headers.get("baggage", ""), request.path


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("call", ["create", "stream"])
@pytest.mark.parametrize("path", ["propagate_attributes", "use_prompt"])
def test_one_trace_per_call_prompt_linked_nothing_leaked(
    path: str,
    call: str,
    variant: str,
    recorder: RecordingServer,
    proxy: ProxyProcess,
    node_package: Path,
) -> None:
    with Origin() as other, Origin() as redirector:
        # The redirector is a configured gateway that sends the app on to another origin.
        env = node_env(
            recorder,
            proxy,
            OTEL_BRIDGE_GATEWAYS=f"{proxy.url},{redirector.url}",
            SCENARIO_PATH=path,
            SCENARIO_CALL=call,
            SCENARIO_OTHER_URL=f"{other.url}/direct",
            SCENARIO_REDIRECT_URL=f"{redirector.url}/redirect?to={other.url}/redirected",
        )
        started_ns = time.time_ns()
        (run,) = run_node_scenario(env, node_package)
        assert run["text"], "the gateway answered nothing"
        wait_for_proxy_generations(recorder, 1)
        assert_linked(recorder, run)
        assert len(proxy_generations(recorder.spans())) == 1
        # Every span either tier exported for the call is in the one trace.
        stray = [s for s in recorder.spans() if s.start_time_unix_nano >= started_ns]
        assert [s.name for s in stray if s.trace_id != run["trace_id"]] == []
        # The gateway-listed redirector got the prompt (so the check below can fail) ...
        (at_redirector,) = redirector.received
        prompt, _ = prompt_from_members(at_redirector.langfuse_members())
        assert prompt is not None and (prompt.name, prompt.version) == ("test-prompt", 1)
        # ... the other origin, called directly and after the redirect, got none of it.
        assert sorted(r.path for r in other.received) == ["/direct", "/redirected"]
        for sent in other.received:
            assert "traceparent" in sent.headers
            assert sent.langfuse_members() == [], sent
    assert_no_langfuse_baggage_left_the_gateways(recorder)


def test_two_prompts_one_after_the_other(
    variant: str, recorder: RecordingServer, proxy: ProxyProcess, node_package: Path
) -> None:
    env = node_env(recorder, proxy, SCENARIO_PROMPTS=",".join(n for n, _ in TWO_PROMPTS))
    runs = run_node_scenario(env, node_package)
    assert [(r["prompt_name"], r["prompt_version"]) for r in runs] == TWO_PROMPTS
    assert len({r["trace_id"] for r in runs}) == 2
    wait_for_proxy_generations(recorder, 2)
    for run in runs:
        assert_linked(recorder, run)


def test_200_concurrent_calls_two_prompts_no_cross_talk(
    path: str, variant: str, recorder: RecordingServer, proxy: ProxyProcess, node_package: Path
) -> None:
    env = node_env(
        recorder,
        proxy,
        SCENARIO_PATH=path,
        SCENARIO_PROMPTS=",".join(n for n, _ in TWO_PROMPTS),
        SCENARIO_CONCURRENCY="200",
    )
    runs = run_node_scenario(env, node_package)
    assert len(runs) == 200
    assert len({r["trace_id"] for r in runs}) == 200
    assert {(r["prompt_name"], r["prompt_version"]) for r in runs} == set(TWO_PROMPTS)
    wait_for_proxy_generations(recorder, 200, timeout=120)
    for run in runs:
        assert_linked(recorder, run)
    assert len(proxy_generations(recorder.spans())) == 200


def test_disabled_bridge_sends_no_prompt_and_leaves_the_app_running(
    variant: str, recorder: RecordingServer, proxy: ProxyProcess, node_package: Path
) -> None:
    """OTEL_BRIDGE_DISABLED=true: the app still answers; no prompt link reaches the gateway."""
    with Origin() as gateway:
        env = node_env(
            recorder,
            proxy,
            OTEL_BRIDGE_DISABLED="true",
            SCENARIO_REDIRECT_URL=f"{gateway.url}/plain",
            OTEL_BRIDGE_GATEWAYS=f"{proxy.url},{gateway.url}",
        )
        (run,) = run_node_scenario(env, node_package)
        assert run["text"]
        (received,) = gateway.received
        assert "traceparent" not in received.headers  # nothing instruments fetch
        assert received.langfuse_members() == []


def test_bad_gateway_setting_is_reported_and_the_app_still_runs(
    variant: str, recorder: RecordingServer, proxy: ProxyProcess, node_package: Path
) -> None:
    env = node_env(recorder, proxy, OTEL_BRIDGE_GATEWAYS="localhost:4000")
    result = subprocess.run(
        ["node", "--import", REGISTER, str(SCENARIO)],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert 'gateway "localhost:4000": scheme must be http or https' in result.stderr
    assert "OTEL_BRIDGE_GATEWAYS" in result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["text"]


def test_demo_node_variant_reports_a_unified_trace(node_package: Path) -> None:
    """`otel-bridge demo --node --local`: the demo scenario from Node, checked by verify."""
    proxy_python = os.environ.get("OTEL_BRIDGE_PROXY_PYTHON", str(REPO / ".venv-proxy/bin/python"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE_"))}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "otel-bridge"),
            "demo",
            "--node",
            "--local",
            "--proxy-python",
            proxy_python,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "running the scenario from Node" in result.stdout
    assert "[ok] prompt linked on the gateway generation: prompt 'test-prompt' version 1" in (
        result.stdout
    )
    assert "UNIFIED: trace" in result.stdout
