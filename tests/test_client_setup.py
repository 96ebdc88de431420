"""How the client tier switches on and off: instrument(), the launcher, settings errors.

Each case runs in its own interpreter: OpenTelemetry's global provider and propagator can be
set once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from harness import CaptureServer


@pytest.fixture
def gateway() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def _run(
    code: str, env: dict[str, str], launcher: bool = False
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE_"))}
    command = [sys.executable, "-c", textwrap.dedent(code)]
    if launcher:
        base.update(OTEL_PYTHON_DISTRO="otel_bridge", OTEL_PYTHON_CONFIGURATOR="otel_bridge")
        command = [
            os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument"),
            *command,
        ]
    return subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=60)


CALL_GATEWAY = """
import httpx, httpx2, otel_bridge
{setup}
with otel_bridge.use_prompt({{"name": "p", "version": 2}}):
    httpx.get(URL)
    httpx2.get(URL)
"""


def _origin(server: CaptureServer) -> str:
    return server.url.rsplit("/", 1)[0]


def _baggage(server: CaptureServer) -> list[str]:
    return [",".join(r.get("baggage", [])) for r in server.requests]


@pytest.mark.parametrize("launcher", [True, False], ids=["launcher", "instrument-call"])
def test_prompt_reaches_the_gateway(gateway: CaptureServer, launcher: bool) -> None:
    setup = "" if launcher else "otel_bridge.instrument()"
    code = f"URL = {gateway.url!r}\n" + CALL_GATEWAY.format(setup=setup)
    result = _run(code, {"OTEL_BRIDGE_GATEWAYS": _origin(gateway)}, launcher=launcher)
    assert result.returncode == 0, result.stderr
    assert _baggage(gateway) == ["langfuse_prompt_name=p,langfuse_prompt_version=2"] * 2
    assert all("traceparent" in r for r in gateway.requests)


def test_disabled_bridge_sends_no_prompt(gateway: CaptureServer) -> None:
    code = f"URL = {gateway.url!r}\n" + CALL_GATEWAY.format(setup="")
    env = {"OTEL_BRIDGE_GATEWAYS": _origin(gateway), "OTEL_BRIDGE_DISABLED": "true"}
    result = _run(code, env, launcher=True)
    assert result.returncode == 0, result.stderr
    assert len(gateway.requests) == 2
    assert _baggage(gateway) == ["", ""]


def test_bad_gateway_setting_under_the_launcher_logs_and_leaves_the_app_running(
    gateway: CaptureServer,
) -> None:
    code = f"URL = {gateway.url!r}\n" + CALL_GATEWAY.format(setup="")
    result = _run(code, {"OTEL_BRIDGE_GATEWAYS": "ftp://nowhere"}, launcher=True)
    assert result.returncode == 0, result.stderr
    assert "otel-bridge: not started" in result.stderr
    assert "scheme must be http or https" in result.stderr
    assert _baggage(gateway) == ["", ""]


def test_bad_gateway_setting_in_instrument_raises_a_clear_error() -> None:
    result = _run(
        "import otel_bridge; otel_bridge.instrument(gateways='http://ok:1,localhost:99999')", {}
    )
    assert result.returncode == 1
    assert "ValueError: gateway 'localhost:99999'" in result.stderr


def test_uninstrument_restores_plain_opentelemetry(gateway: CaptureServer) -> None:
    code = f"""
    import httpx, otel_bridge
    from opentelemetry import propagate
    before = type(propagate.get_global_textmap()).__name__
    otel_bridge.instrument(gateways=[{_origin(gateway)!r}])
    with otel_bridge.use_prompt({{"name": "p", "version": 2}}):
        httpx.get({gateway.url!r})
    otel_bridge.uninstrument()
    with otel_bridge.use_prompt({{"name": "p", "version": 2}}):
        httpx.get({gateway.url!r})
    """
    result = _run(code, {})
    assert result.returncode == 0, result.stderr
    first, second = gateway.requests
    assert first.get("baggage") == ["langfuse_prompt_name=p,langfuse_prompt_version=2"]
    # Uninstrumented: no client span, no traceparent, no bridge baggage.
    assert "traceparent" not in second and "baggage" not in second


def test_distro_defaults_and_what_the_user_set_wins() -> None:
    code = """
    import json, os
    from otel_bridge.distro import apply_defaults
    apply_defaults()
    names = ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_TRACES_EXPORTER",
             "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")
    print(json.dumps({k: os.environ.get(k) for k in names}))
    """
    plain = json.loads(_run(code, {}).stdout)
    assert plain == {
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    aimed = json.loads(
        _run(code, {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:1/v1/traces"}).stdout
    )
    assert aimed["OTEL_TRACES_EXPORTER"] == "otlp"
    mine = json.loads(_run(code, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}).stdout)
    assert mine["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/json"


def test_instrument_without_the_client_extra_says_so_and_the_app_runs() -> None:
    # The project installed without its `client` extra: no opentelemetry-instrumentation.
    code = """
    import sys
    sys.modules["opentelemetry.instrumentation"] = None
    import otel_bridge
    otel_bridge.instrument()
    print("app ran")
    """
    result = _run(code, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "app ran"
    (line,) = [line for line in result.stderr.splitlines() if "otel-bridge" in line]
    assert "not started" in line and "opentelemetry.instrumentation" in line
    assert "otel-bridge[client]" in line


def test_what_cannot_be_served_is_said_at_start_up_in_one_line_each(
    gateway: CaptureServer,
) -> None:
    # This environment, made to look like langfuse 2, the OpenAI SDK 0.x and no httpx
    # instrumentation: the bridge starts, says why each cannot work, and the app runs.
    code = f"""
    import importlib.metadata, importlib.util
    real_version, real_find_spec = importlib.metadata.version, importlib.util.find_spec
    fake = {{"langfuse": "2.60.10", "openai": "0.28.1"}}
    importlib.metadata.version = lambda name: fake.get(name) or real_version(name)
    importlib.util.find_spec = lambda name, *a: (
        None if name == "opentelemetry.instrumentation.httpx" else real_find_spec(name, *a)
    )
    import httpx, otel_bridge
    otel_bridge.instrument(gateways=[{_origin(gateway)!r}])
    with otel_bridge.use_prompt({{"name": "p", "version": 2}}):
        httpx.get({gateway.url!r})
    print("app ran")
    """
    result = _run(code, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "app ran"
    said = [line for line in result.stderr.splitlines() if "unsupported here" in line]
    assert len(said) == 3, result.stderr
    assert "opentelemetry-instrumentation-httpx is not installed" in said[0]
    assert "langfuse 2.60.10 does not trace through OpenTelemetry" in said[1]
    assert "OpenAI SDK 0.28.1" in said[2]
    # httpx was left uninstrumented: the request went out without any bridge context.
    (request,) = gateway.requests
    assert "traceparent" not in request and "baggage" not in request


def test_a_supported_environment_says_nothing_unsupported(gateway: CaptureServer) -> None:
    code = f"URL = {gateway.url!r}\n" + CALL_GATEWAY.format(setup="otel_bridge.instrument()")
    result = _run(code, {"OTEL_BRIDGE_GATEWAYS": _origin(gateway)})
    assert result.returncode == 0, result.stderr
    assert "otel-bridge" not in result.stderr
