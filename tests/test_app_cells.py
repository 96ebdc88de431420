"""The app tier on each supported langfuse x OpenAI SDK pair (the matrix's app cells).

The scenario app runs under the app interpreter: OTEL_BRIDGE_APP_PYTHON (one cell's venv,
as `./dev matrix` sets it), or this test environment's own interpreter. With
OTEL_BRIDGE_APP_CELLS=all, every cell venv built under .matrix/app-* is run in one session
(the proxies are shared). Cells are pinned in constraints/matrix/app-*.txt.

Per cell: the end-to-end core (one trace, closed parent chain, prompt linked; sync and
streaming; LiteLLM's three Langfuse callback paths), the three ways the app names its prompt,
the `@observe` + `langfuse.openai` app that names its gateway only in OPENAI_BASE_URL, and
`otel_bridge.instrument()`; then, without a proxy, what counts as a gateway when
OTEL_BRIDGE_GATEWAYS is unset, and that start-up says so once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_assertions import assert_unified, wait_for_proxy_generations
from harness import (
    MASTER_KEY,
    REPO,
    CaptureServer,
    ProxyProcess,
    client_env,
    mock_config,
    run_scenario,
    start_proxy,
)

from otel_bridge.recording_server import RecordingServer

pytestmark = pytest.mark.e2e


def _app_pythons() -> list[str]:
    if os.environ.get("OTEL_BRIDGE_APP_CELLS") == "all":
        cells = sorted((REPO / ".matrix").glob("app-*/bin/python"))
        if not cells:
            raise RuntimeError("OTEL_BRIDGE_APP_CELLS=all but no .matrix/app-* venv is built")
        return [str(python) for python in cells]
    return [os.environ.get("OTEL_BRIDGE_APP_PYTHON") or sys.executable]


APP_PYTHONS = _app_pythons()


def _cell_id(python: str) -> str:
    venv = Path(python).parent.parent.name
    return venv.removeprefix("app-") if venv.startswith("app-") else venv


def _versions(python: str) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m;"
        "print(json.dumps({p: m.version(p) for p in ('langfuse', 'openai')}))"
    )
    return dict(json.loads(subprocess.check_output([python, "-c", code], text=True)))


def _major(version: str) -> int:
    return int(version.split(".")[0])


VARIANTS = {
    "langfuse": ("langfuse.yaml", {}),
    "langfuse_otel": ("langfuse_otel.yaml", {}),
    "langfuse_otel_v2": ("langfuse_otel.yaml", {"LITELLM_OTEL_V2": "true"}),
}


EVERY_CALLBACK_PATH = {
    "test_core_langfuse_openai",
    "test_observe_app_named_its_gateway_in_openai_base_url",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" in metafunc.fixturenames:
        # Only the core depends on the callback path; the rest runs against `langfuse`.
        every = metafunc.function.__name__ in EVERY_CALLBACK_PATH
        variants = list(VARIANTS) if every else ["langfuse"]
        metafunc.parametrize("variant", variants, indirect=True, scope="module")


@pytest.fixture(scope="module")
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def proxy(
    recorder: RecordingServer, variant: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    env = {
        "LANGFUSE_PUBLIC_KEY": recorder.public_key,
        "LANGFUSE_SECRET_KEY": recorder.secret_key,
        "LANGFUSE_HOST": recorder.url,
        "OTEL_SERVICE_NAME": "litellm-proxy",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # test speed only: LiteLLM's OTel paths batch spans
        **VARIANTS[variant][1],
    }
    process = start_proxy(mock_config(VARIANTS[variant][0]), env, tmp_path_factory.mktemp("px"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def clean_recorder(recorder: RecordingServer) -> None:
    recorder.clear()


@pytest.fixture(params=APP_PYTHONS, ids=[_cell_id(p) for p in APP_PYTHONS])
def app_python(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _run_linked(
    recorder: RecordingServer,
    proxy: ProxyProcess,
    app_python: str,
    *,
    client_generation: bool,
    launcher: bool = True,
    **scenario: str,
) -> None:
    env = client_env(recorder.url, proxy.url, OTEL_BRIDGE_APP_PYTHON=app_python, **scenario)
    if scenario.get("SCENARIO_SHAPE") == "observe":
        # The app names its gateway the way platform guides teach, and nothing else does.
        for name in ("OTEL_BRIDGE_GATEWAYS", "SCENARIO_BASE_URL", "SCENARIO_API_KEY"):
            env.pop(name)
        env.update(OPENAI_BASE_URL=proxy.url, OPENAI_API_KEY=MASTER_KEY)
    (run,) = run_scenario(env, launcher=launcher)
    wait_for_proxy_generations(recorder, 1)
    assert_unified(recorder, run, prompt=("test-prompt", 1), client_generation=client_generation)


@pytest.mark.parametrize("call", ["sync", "stream"])
def test_core_langfuse_openai(
    call: str, recorder: RecordingServer, proxy: ProxyProcess, app_python: str
) -> None:
    """One trace, closed parent chain, prompt linked, on every callback path."""
    _run_linked(
        recorder,
        proxy,
        app_python,
        client_generation=True,
        SCENARIO_PATH="langfuse_openai",
        SCENARIO_CALL=call,
    )


@pytest.mark.parametrize("call", ["sync", "stream"])
def test_observe_app_named_its_gateway_in_openai_base_url(
    call: str, recorder: RecordingServer, proxy: ProxyProcess, app_python: str
) -> None:
    """Issue 9: `@observe` + langfuse.openai + OPENAI_BASE_URL only, under the launcher."""
    _run_linked(
        recorder,
        proxy,
        app_python,
        client_generation=True,
        SCENARIO_SHAPE="observe",
        SCENARIO_CALL=call,
    )


@pytest.mark.parametrize("call", ["sync", "stream"])
@pytest.mark.parametrize("path", ["use_prompt", "propagate_attributes"])
def test_other_prompt_sources(
    path: str, call: str, recorder: RecordingServer, proxy: ProxyProcess, app_python: str
) -> None:
    if path == "propagate_attributes" and _major(_versions(app_python)["langfuse"]) < 4:
        pytest.skip("unsupported: langfuse 3's propagate_attributes() has no prompt= (4.14+)")
    _run_linked(
        recorder, proxy, app_python, client_generation=False, SCENARIO_PATH=path, SCENARIO_CALL=call
    )


def test_instrument_call_never_crashes_and_links(
    recorder: RecordingServer, proxy: ProxyProcess, app_python: str
) -> None:
    """Issue 9: `otel_bridge.instrument()` on langfuse 3 raised TypeError at start-up."""
    _run_linked(
        recorder,
        proxy,
        app_python,
        client_generation=True,
        launcher=False,
        SCENARIO_PATH="langfuse_openai",
        SCENARIO_CALL="sync",
    )


# Without a proxy: what counts as a gateway, on the wire, and what start-up says.

APP = """
import sys
import httpx, otel_bridge
{setup}
from langfuse.openai import openai
built = [{built}]  # built, never called
called = [{called}]
for client in called:
    with otel_bridge.use_prompt({{"name": "p", "version": 2}}):
        try:
            client.models.list()  # the capture server answers {{}}: only the request matters
        except Exception as error:
            print("answer not parsed:", type(error).__name__, file=sys.stderr)
with otel_bridge.use_prompt({{"name": "p", "version": 2}}):
    httpx.get(OTHER_URL)
"""


def _run_app(
    app_python: str,
    env: dict[str, str],
    *,
    called: str,
    built: str = "",
    launcher: bool = True,
) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE_", "OPENAI_"))
    }
    setup = "" if launcher else "otel_bridge.instrument()"
    code = f"OTHER_URL = {env.pop('OTHER_URL')!r}\n" + APP.format(
        setup=setup, built=built, called=called
    )
    command = [app_python, "-c", textwrap.dedent(code)]
    if launcher:
        base.update(OTEL_PYTHON_DISTRO="otel_bridge", OTEL_PYTHON_CONFIGURATOR="otel_bridge")
        command = [str(Path(app_python).parent / "opentelemetry-instrument"), *command]
    env = {"OPENAI_API_KEY": "sk-test", **env}
    return subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=90)


def _baggage(server: CaptureServer) -> list[str]:
    return [",".join(r.get("baggage", [])) for r in server.requests]


LINKED = "langfuse_prompt_name=p,langfuse_prompt_version=2"


@pytest.fixture
def gateway() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def other() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def _origin(server: CaptureServer) -> str:
    return server.url.rsplit("/", 1)[0]


@pytest.mark.parametrize("launcher", [True, False], ids=["launcher", "instrument-call"])
def test_openai_base_url_is_the_gateway_said_once(
    app_python: str, gateway: CaptureServer, other: CaptureServer, launcher: bool
) -> None:
    base_url = _origin(gateway) + "/v1"
    env = {"OPENAI_BASE_URL": base_url, "OTHER_URL": other.url}
    # One client from the environment, one naming the same base_url itself: one gateway.
    called = f"openai.OpenAI(), openai.OpenAI(base_url={base_url!r})"
    result = _run_app(app_python, env, called=called, launcher=launcher)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert _baggage(gateway) == [LINKED, LINKED]
    assert all("traceparent" in r for r in gateway.requests)
    # Another host in the same context gets the trace context, never the prompt link.
    (request,) = other.requests
    assert "traceparent" in request and "langfuse_" not in ",".join(request.get("baggage", []))
    said = [line for line in result.stderr.splitlines() if "counts as a gateway" in line]
    assert len(said) == 1, result.stderr
    assert f"{_origin(gateway)} (from OPENAI_BASE_URL)" in said[0]


def test_a_client_base_url_is_a_gateway_and_openai_itself_never(
    app_python: str, gateway: CaptureServer, other: CaptureServer
) -> None:
    built = (
        "openai.OpenAI(), openai.OpenAI().with_options(timeout=5), "
        f"openai.AsyncOpenAI(base_url={_origin(gateway)!r})"
    )
    called = f"openai.OpenAI(base_url={_origin(gateway)!r})"
    result = _run_app(app_python, {"OTHER_URL": other.url}, called=called, built=built)
    assert result.returncode == 0, result.stderr
    assert _baggage(gateway) == [LINKED]
    (request,) = other.requests
    assert "langfuse_" not in ",".join(request.get("baggage", []))
    said = [line for line in result.stderr.splitlines() if "counts as a gateway" in line]
    assert said == [
        f"otel-bridge: OTEL_BRIDGE_GATEWAYS is not set, so {_origin(gateway)} (from an OpenAI "
        "client's base_url) counts as a gateway: calls to it carry the prompt link; set "
        "OTEL_BRIDGE_GATEWAYS to name gateways yourself"
    ], result.stderr
    assert "openai.com" not in result.stderr


def test_named_gateways_win_over_openai_base_url(
    app_python: str, gateway: CaptureServer, other: CaptureServer
) -> None:
    env = {
        "OPENAI_BASE_URL": _origin(gateway),
        "OTEL_BRIDGE_GATEWAYS": _origin(other),
        "OTHER_URL": other.url,
    }
    result = _run_app(app_python, env, called=f"openai.OpenAI(base_url={_origin(gateway)!r})")
    assert result.returncode == 0, result.stderr
    assert _baggage(gateway) == [""]
    assert _baggage(other) == [LINKED]
    assert "counts as a gateway" not in result.stderr
