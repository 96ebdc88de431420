"""End to end: the scenario app, a real LiteLLM proxy with the bridge, and the recording server
standing in for Langfuse. Two processes, two environments: the client runs here (langfuse 5,
OpenAI SDK 3), the proxy in .venv-proxy (langfuse 4, LiteLLM, OpenAI SDK 2).

Every test runs once per gateway logging path that exports straight to Langfuse: LiteLLM's
`langfuse` callback, and its `langfuse_otel` callback, legacy and with LITELLM_OTEL_V2=true.
(The `otel` callback through a collector is covered in test_otel_collector_path.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_assertions import (
    WORKAROUND_METADATA,
    assert_logged_as_without_the_bridge,
    assert_unified,
    is_proxy_span,
    llm_call_spans,
    proxy_generations,
    run_two_prompts,
    run_with_extra_body,
    wait_for_proxy_generations,
)
from harness import (
    CALLS,
    MASTER_KEY,
    MODEL,
    PATHS,
    CaptureServer,
    ProxyProcess,
    client_env,
    mock_config,
    proxy_python,
    run_scenario,
    start_proxy,
)

from otel_bridge import BridgeContext, PromptRef, SpanRef, encode_headers
from otel_bridge.recording_server import RecordingServer

pytestmark = pytest.mark.e2e


# gateway variant -> (example config, extra proxy environment)
VARIANTS = {
    "langfuse": ("langfuse.yaml", {}),
    "langfuse_otel": ("langfuse_otel.yaml", {}),
    "langfuse_otel_v2": ("langfuse_otel.yaml", {"LITELLM_OTEL_V2": "true"}),
}


def proxy_env(recorder: RecordingServer, variant: str) -> dict[str, str]:
    return {
        "LANGFUSE_PUBLIC_KEY": recorder.public_key,
        "LANGFUSE_SECRET_KEY": recorder.secret_key,
        "LANGFUSE_HOST": recorder.url,
        "OTEL_SERVICE_NAME": "litellm-proxy",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # test speed only: LiteLLM's OTel paths batch spans
        **VARIANTS[variant][1],
    }


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" not in metafunc.fixturenames:
        return
    if "launcher" in metafunc.fixturenames:
        # How the client starts the bridge does not depend on the gateway's logging path:
        # both ways run against the `langfuse` callback, the launcher against every path.
        combos = [
            (v, launch) for v in VARIANTS for launch in (True, False) if launch or v == "langfuse"
        ]
        ids = [f"{v}-{'launcher' if launch else 'instrument-call'}" for v, launch in combos]
        metafunc.parametrize(
            ("variant", "launcher"), combos, ids=ids, indirect=["variant"], scope="module"
        )
    else:
        metafunc.parametrize("variant", list(VARIANTS), indirect=True, scope="module")


@pytest.fixture(scope="module")
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def proxy(
    recorder: RecordingServer, variant: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    config = mock_config(VARIANTS[variant][0])
    process = start_proxy(config, proxy_env(recorder, variant), tmp_path_factory.mktemp("proxy"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def plain_proxy(
    recorder: RecordingServer, variant: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """The same proxy without the bridge: what LiteLLM does on its own."""
    config = mock_config(VARIANTS[variant][0], bridge=False)
    process = start_proxy(config, proxy_env(recorder, variant), tmp_path_factory.mktemp("plain"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def other_origin() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture(autouse=True)
def clean_recorder(recorder: RecordingServer) -> None:
    recorder.clear()


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("path", PATHS)
def test_one_trace_one_prompt_link(
    path: str,
    call: str,
    launcher: bool,
    recorder: RecordingServer,
    proxy: ProxyProcess,
    other_origin: CaptureServer,
) -> None:
    env = client_env(
        recorder.url,
        proxy.url,
        SCENARIO_PATH=path,
        SCENARIO_CALL=call,
        SCENARIO_OTHER_URL=other_origin.url,
    )
    started_ns = time.time_ns()
    (run,) = run_scenario(env, launcher=launcher)
    wait_for_proxy_generations(recorder, 1)
    assert_unified(
        recorder, run, prompt=("test-prompt", 1), client_generation=path == "langfuse_openai"
    )
    assert len(proxy_generations(recorder.spans())) == 1
    # 1. Every span either tier exported for the scenario is in the one trace.
    # (The proxy's own start-up may export spans of its own; they start before the scenario.)
    stray = [s for s in recorder.spans() if s.start_time_unix_nano >= started_ns]
    assert [s.name for s in stray if s.trace_id != run["trace_id"]] == []
    # 6. The same context reached another origin (httpx and httpx2) without langfuse_* baggage.
    assert len(other_origin.requests) == 2
    for request in other_origin.requests:
        assert "traceparent" in request
        for value in request.get("baggage", []):
            assert "langfuse_" not in value, value


@pytest.mark.parametrize("call", ["sync", "async"])
@pytest.mark.parametrize("path", PATHS)
def test_two_prompts_one_after_the_other(
    path: str, call: str, recorder: RecordingServer, proxy: ProxyProcess
) -> None:
    run_two_prompts(recorder, proxy, path=path, call=call)


@pytest.mark.parametrize("path", PATHS)
def test_200_concurrent_traces_zero_cross_talk(
    path: str, recorder: RecordingServer, proxy: ProxyProcess
) -> None:
    run_two_prompts(recorder, proxy, path=path, call="async", concurrency=200)


def test_no_context_is_logged_exactly_as_without_the_bridge(
    variant: str, recorder: RecordingServer, proxy: ProxyProcess, plain_proxy: ProxyProcess
) -> None:
    assert_logged_as_without_the_bridge(recorder, proxy, plain_proxy)


def test_legacy_metadata_wins_and_matches_the_old_result(
    variant: str, recorder: RecordingServer, proxy: ProxyProcess, plain_proxy: ProxyProcess
) -> None:
    results = []
    for target in (plain_proxy, proxy):
        run, generation, observations = run_with_extra_body(recorder, target, WORKAROUND_METADATA)
        proxy_obs = observations[generation.span_id]
        parent = observations.get(proxy_obs["parentObservationId"], {})
        results.append(
            (
                generation.trace_id == run["trace_id"],
                parent.get("name"),
                proxy_obs["name"],
                proxy_obs["promptName"],
                proxy_obs["promptVersion"],
            )
        )
    # The caller's own metadata beats the headers: whatever LiteLLM made of it before, the
    # bridged proxy makes of it now.
    assert results[0] == results[1]
    if variant == "langfuse":
        # The callback honours all four keys: parent = run-test, the other prompt, the name.
        assert results[1] == (True, "run-test", "legacy-generation", "second prompt+%", 4)
    else:
        # OTel paths join the trace from traceparent only and never link a metadata prompt.
        assert results[1][0] is True
        assert results[1][3] is None


def test_a_caller_chosen_trace_wins_over_the_traceparent(
    variant: str, recorder: RecordingServer, proxy: ProxyProcess, plain_proxy: ProxyProcess
) -> None:
    """The caller names another trace than its traceparent's: the bridge mixes nothing in."""
    chosen = "c" * 32
    caller = {"metadata": {"existing_trace_id": chosen, "generation_name": "chosen-trace"}}
    results = []
    for target in (plain_proxy, proxy):
        run, generation, observations = run_with_extra_body(recorder, target, caller)
        parent_id = observations[generation.span_id]["parentObservationId"]
        results.append(
            (
                generation.trace_id,
                generation.trace_id == run["trace_id"],
                parent_id == run["span_id"],
                parent_id is None or parent_id in observations,
            )
        )
    # Whatever LiteLLM makes of the caller's choice, the bridged proxy makes the same.
    assert results[0][1:] == results[1][1:]
    if variant == "langfuse":
        assert results[0][0] == chosen
        # The callback honours existing_trace_id, and the header's parent is not mixed into it.
        # (Measured: LiteLLM's callback with only existing_trace_id gives its generation a
        # parent id no span has, with or without the bridge; Langfuse shows it at the root.)
        assert results[1][:3] == (chosen, False, False)
    else:
        # OTel paths ignore the key; both proxies follow the traceparent, the bridge adds nothing.
        assert results[1][1:] == (True, False, True)


def test_tiers_run_from_separate_environments(variant: str) -> None:
    def versions(python: str) -> dict[str, str]:
        code = (
            "import json, importlib.metadata as m;"
            "print(json.dumps({p: m.version(p) for p in ('langfuse', 'openai')}))"
        )
        return json.loads(subprocess.check_output([python, "-c", code], text=True))

    proxy_side = versions(str(proxy_python()))
    client_side = versions(sys.executable)
    proxy_prefix = subprocess.check_output(
        [str(proxy_python()), "-c", "import sys; print(sys.prefix)"], text=True
    ).strip()
    assert Path(proxy_prefix) != Path(sys.prefix)
    assert proxy_side["langfuse"].startswith("4."), proxy_side
    assert int(client_side["langfuse"].split(".")[0]) >= 5, client_side
    assert int(client_side["openai"].split(".")[0]) >= 3, client_side
    assert int(proxy_side["openai"].split(".")[0]) < 3, proxy_side


def test_proxy_spans_are_from_the_proxy_process(
    recorder: RecordingServer, proxy: ProxyProcess
) -> None:
    env = client_env(recorder.url, proxy.url, SCENARIO_PATH="use_prompt")
    (run,) = run_scenario(env)
    (generation,) = wait_for_proxy_generations(recorder, 1)
    assert is_proxy_span(generation)
    assert generation.trace_id == run["trace_id"]


ENDPOINTS = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"input": "hi"},
    "/v1/messages": {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi"},
    "/v1/embeddings": {"input": "hi"},
}


def test_every_llm_endpoint_is_bridged(
    variant: str, recorder: RecordingServer, proxy: ProxyProcess
) -> None:
    # /messages and /responses keep their metadata elsewhere than /chat/completions does.
    endpoints = dict(ENDPOINTS)
    if variant.endswith("_v2"):
        # Measured: with a mock_response model, LiteLLM's V2 logger emits no model-call span for
        # /responses, /messages or /embeddings (only auth and route), bridge or not.
        for path in ("/v1/responses", "/v1/messages", "/v1/embeddings"):
            endpoints.pop(path)
    for number, (path, body) in enumerate(endpoints.items(), start=1):
        parent = SpanRef(f"{number:032x}", f"{number:016x}", sampled=True)
        headers = encode_headers(BridgeContext(parent=parent, prompt=PromptRef("test-prompt", 1)))
        response = httpx.post(
            f"{proxy.url}{path}",
            headers={"Authorization": f"Bearer {MASTER_KEY}", **headers},
            json={"model": MODEL, **body},
            timeout=30,
        )
        assert response.status_code == 200, (path, response.text)
    calls = llm_call_spans(recorder, len(endpoints))
    assert sorted(int(c.trace_id, 16) for c in calls) == list(range(1, len(endpoints) + 1))
    for call in calls:
        spans = {s.span_id: s for s in recorder.spans_for_trace(call.trace_id)}
        top = call
        while top.parent_span_id in spans:
            top = spans[top.parent_span_id]
        assert top.parent_span_id == call.trace_id[16:], call.name  # the caller's span
        assert call.attributes["langfuse.observation.prompt.name"] == "test-prompt", call.name
        assert call.attributes["langfuse.observation.prompt.version"] == 1, call.name
