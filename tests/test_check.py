"""`otel-bridge check` against real deployments, each with exactly one fault built in.

Every diagnosis comes from a real run: a real LiteLLM proxy (with or without the bridge hook)
calling the loopback upstream model, the check's probe traced by the real bridge and Langfuse
SDK, the recording server as the user's Langfuse (v4 events_only), and for the stripped
baggage a loopback forwarder between the check and the proxy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import httpx
import pytest
from harness import (
    MASTER_KEY,
    LoopbackServer,
    ProxyProcess,
    UpstreamServer,
    start_proxy,
    upstream_config,
)

from otel_bridge.recording_server import RecordedPrompt, RecordingServer

CLI = [sys.executable, "-m", "otel_bridge.cli"]
PROMPT = RecordedPrompt(
    name="check-prompt",
    version=3,
    type="chat",
    prompt=[{"role": "user", "content": "Say hello."}],
    labels=["production"],
)
MODEL = "llama3.2:1b"
# Only the hop-by-hop headers and the length a forwarder recomputes are not passed on.
_NOT_FORWARDED = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}

pytestmark = pytest.mark.e2e


class HeaderStrippingForwarder(LoopbackServer):
    """A reverse proxy on loopback that passes requests on without some headers (`baggage` by
    default), like a load balancer or API gateway that forwards only the headers it knows."""

    def __init__(self, target: str, strip: frozenset[str] = frozenset({"baggage"})) -> None:
        self.target = target.rstrip("/")
        self.seen: list[dict[str, str]] = []  # the headers each request arrived with
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self._forward("POST")

            def do_GET(self) -> None:
                self._forward("GET")

            def _forward(self, method: str) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.seen.append(headers)
                body = self.rfile.read(int(headers.get("content-length") or 0))
                passed = {k: v for k, v in headers.items() if k not in _NOT_FORWARDED | strip}
                answer = httpx.request(
                    method, outer.target + self.path, headers=passed, content=body, timeout=120
                )
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in _NOT_FORWARDED | {"content-encoding"}:
                        self.send_header(key, value)
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RecordingServer, ProxyProcess, ProxyProcess]]:
    """The user's Langfuse, and two gateways logging to it: with and without the bridge hook."""
    with RecordingServer(prompts=[PROMPT]) as recorder, UpstreamServer() as upstream:
        env = {
            "LANGFUSE_PUBLIC_KEY": recorder.public_key,
            "LANGFUSE_SECRET_KEY": recorder.secret_key,
            "LANGFUSE_HOST": recorder.url,
        }
        bridged = start_proxy(
            upstream_config(upstream.api_base), env, tmp_path_factory.mktemp("bridged")
        )
        try:
            plain = start_proxy(
                upstream_config(upstream.api_base, bridge=False),
                env,
                tmp_path_factory.mktemp("plain"),
            )
            try:
                yield recorder, bridged, plain
            finally:
                plain.stop()
        finally:
            bridged.stop()


def run_check(
    recorder: RecordingServer, gateway: str, *extra: str, prompt: str = "check-prompt:3"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OTEL_"))}
    env.update(
        LANGFUSE_BASE_URL=recorder.url,
        LANGFUSE_PUBLIC_KEY=recorder.public_key,
        LANGFUSE_SECRET_KEY=recorder.secret_key,
        LITELLM_API_KEY=MASTER_KEY,
    )
    command = [*CLI, "check", "--gateway", gateway, "--model", MODEL, "--prompt", prompt]
    return subprocess.run(
        [*command, "--wait", "30", *extra], env=env, capture_output=True, text=True, timeout=240
    )


def failed_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.strip().startswith("[FAIL]")]


def test_a_healthy_gateway_passes(
    deployment: tuple[RecordingServer, ProxyProcess, ProxyProcess],
) -> None:
    recorder, bridged, _ = deployment
    result = run_check(recorder, bridged.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert failed_lines(result.stdout) == []
    assert "[ok] gateway generation under the app's call: parent POST" in result.stdout
    assert "[ok] prompt linked on the gateway generation: prompt 'check-prompt' version 3" in (
        result.stdout
    )
    assert "CHECK PASSED" in result.stdout


def test_hook_not_loaded(deployment: tuple[RecordingServer, ProxyProcess, ProxyProcess]) -> None:
    recorder, _, plain = deployment
    result = run_check(recorder, plain.url)
    assert result.returncode == 1, result.stdout + result.stderr
    (placement, prompt) = failed_lines(result.stdout)
    assert placement.startswith(
        "[FAIL] gateway generation under the app's call: hook not loaded: the gateway's "
        "generation is a root of its own"
    ), result.stdout
    assert "otel_bridge.litellm.bridge" in placement
    assert "follows from the hook not loading" in prompt
    assert "CHECK FAILED: hook not loaded" in result.stdout


def test_parent_dangles_when_the_apps_export_filter_drops_the_http_span(
    deployment: tuple[RecordingServer, ProxyProcess, ProxyProcess],
) -> None:
    recorder, bridged, _ = deployment
    # Langfuse's own default filter, as an app gets when it builds its client before the bridge.
    result = run_check(
        recorder, bridged.url, "--export-filter", "langfuse.span_filter:is_default_export_span"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    (placement,) = failed_lines(result.stdout)
    assert placement.startswith(
        "[FAIL] gateway generation under the app's call: parent dangles: the gateway's "
        "generation hangs below the app's HTTP client span"
    ), result.stdout
    assert "should_export_span=otel_bridge.langfuse_export_filter" in placement
    # The fault is what the check says: no POST span of the probe's trace reached Langfuse.
    trace_id = result.stdout.split("reading trace ", 1)[1].split()[0]
    names = {span.name for span in recorder.spans_for_trace(trace_id)}
    assert "otel-bridge-check" in names and "POST" not in names, names


def test_prompt_unknown_in_this_project(
    deployment: tuple[RecordingServer, ProxyProcess, ProxyProcess],
) -> None:
    recorder, bridged, _ = deployment
    result = run_check(recorder, bridged.url, prompt="check-prompt:9")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "prompt 'check-prompt' version 9 is NOT in Langfuse" in result.stdout
    (prompt,) = failed_lines(result.stdout)
    assert prompt.startswith(
        "[FAIL] prompt linked on the gateway generation: prompt unknown in this project: "
        "prompt 'check-prompt' version 9 is not in the Langfuse project"
    ), result.stdout
    assert "CHECK FAILED: prompt unknown in this project" in result.stdout


def test_baggage_stripped_by_a_proxy_in_between(
    deployment: tuple[RecordingServer, ProxyProcess, ProxyProcess],
) -> None:
    recorder, bridged, _ = deployment
    with HeaderStrippingForwarder(bridged.url) as forwarder:
        result = run_check(recorder, forwarder.url)
    assert result.returncode == 1, result.stdout + result.stderr
    # The probe sent both headers to the forwarder; the gateway got only traceparent.
    (call,) = [h for h in forwarder.seen if "traceparent" in h]
    assert "langfuse_prompt_name=check-prompt" in call["baggage"]
    (prompt,) = failed_lines(result.stdout)
    assert prompt.startswith(
        "[FAIL] prompt linked on the gateway generation: baggage stripped: the gateway placed "
        "its generation from the app's traceparent"
    ), result.stdout
    assert "CHECK FAILED: baggage stripped" in result.stdout


def test_the_generation_in_another_trace_is_found_and_named(
    deployment: tuple[RecordingServer, ProxyProcess, ProxyProcess],
) -> None:
    # Nothing of the app's context reaches the gateway, so it logs the call as a trace of its
    # own; the check finds it by the marker the probe put in its message.
    recorder, bridged, _ = deployment
    with HeaderStrippingForwarder(bridged.url, frozenset({"traceparent", "baggage"})) as forwarder:
        result = run_check(recorder, forwarder.url, "--wait", "10")
    assert result.returncode == 1, result.stdout + result.stderr
    (placement,) = failed_lines(result.stdout)
    assert placement.startswith(
        "[FAIL] gateway generation in the app's trace: hook not loaded: the gateway logged the "
        "probe's generation in another trace ("
    ), result.stdout
    other = placement.split("another trace (", 1)[1].split(")", 1)[0]
    app_trace = result.stdout.split("reading trace ", 1)[1].split()[0]
    assert other != app_trace
    assert {s.name for s in recorder.spans_for_trace(other)} >= {"litellm-acompletion"}
    assert "CHECK FAILED: hook not loaded" in result.stdout


def test_a_prompt_missing_without_a_version_stops_the_check(
    deployment: tuple[RecordingServer, ProxyProcess, ProxyProcess],
) -> None:
    recorder, bridged, _ = deployment
    result = run_check(recorder, bridged.url, prompt="no-such-prompt")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "prompt 'no-such-prompt' is not in this Langfuse project" in result.stdout
    assert "NAME:VERSION" in result.stdout


def test_wrong_keys_are_named_before_any_call(
    deployment: tuple[RecordingServer, ProxyProcess, ProxyProcess],
) -> None:
    recorder, bridged, _ = deployment
    result = run_check(recorder, bridged.url, "--secret-key", "sk-lf-wrong")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "wrong keys or project: Langfuse at" in result.stdout and "401" in result.stdout
