"""End to end: the scenario app, a real LiteLLM proxy with the bridge, and the recording server
standing in for Langfuse. Two processes, two environments: the client runs here (langfuse 5,
OpenAI SDK 3), the proxy in .venv-proxy (langfuse 4, LiteLLM, OpenAI SDK 2).

Every test runs once per gateway logging path that exports straight to Langfuse: LiteLLM's
`langfuse` callback, and its `langfuse_otel` callback, legacy and with LITELLM_OTEL_V2=true.
(The `otel` callback through a collector is covered in test_otel_collector_path.py.)

Behind the proxy is a real model server (otel_bridge/demo/_upstream.py, OpenAI-compatible, on
loopback): LiteLLM's `openai` provider path runs, and every test checks what reached it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import TEST_PROMPTS
from e2e_assertions import (
    SENTINEL_ROUNDS,
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
    UpstreamServer,
    assert_upstream_got_no_context,
    client_env,
    proxy_python,
    run_scenario,
    start_proxy,
    upstream_config,
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


def _launch_combos() -> list[tuple[str, bool]]:
    # How the client starts the bridge does not depend on the gateway's logging path: both
    # ways run against the `langfuse` callback, the launcher against every path.
    return [(v, launch) for v in VARIANTS for launch in (True, False) if launch or v == "langfuse"]


def _launch_id(launcher: bool) -> str:
    return "launcher" if launcher else "instrument-call"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "variant" not in metafunc.fixturenames:
        return
    if "launcher" in metafunc.fixturenames:
        combos = _launch_combos()
        ids = [f"{v}-{_launch_id(launch)}" for v, launch in combos]
        metafunc.parametrize(
            ("variant", "launcher"), combos, ids=ids, indirect=["variant"], scope="module"
        )
    else:
        metafunc.parametrize("variant", list(VARIANTS), indirect=True, scope="module")


@pytest.fixture(scope="module")
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    recorder: RecordingServer,
    upstream: UpstreamServer,
    variant: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:
    config = upstream_config(upstream.api_base, VARIANTS[variant][0])
    process = start_proxy(config, proxy_env(recorder, variant), tmp_path_factory.mktemp("proxy"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def plain_proxy(
    recorder: RecordingServer,
    upstream: UpstreamServer,
    variant: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:
    """The same proxy without the bridge: what LiteLLM does on its own."""
    config = upstream_config(upstream.api_base, VARIANTS[variant][0], bridge=False)
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
def clean_recorder(recorder: RecordingServer, upstream: UpstreamServer) -> None:
    recorder.clear()
    upstream.clear()


def _prompt_messages(name: str) -> list[dict[str, str]]:
    """What the scenario sends for a prompt: its compiled chat messages, role and content."""
    (prompt,) = [p for p in TEST_PROMPTS if p.name == name]
    return [{"role": m["role"], "content": m["content"]} for m in prompt.prompt]


def assert_runs_reached_the_model_without_context(
    upstream: UpstreamServer, runs: list[dict[str, object]]
) -> None:
    """One chat completion upstream per run, with the run's prompt messages, and none of any
    run's trace context: not its ids, not its prompt name."""
    upstream.wait_for_requests(
        lambda got: sum(r.method == "POST" for r in got) >= len(runs), timeout=30
    )
    secrets = [str(r[k]) for r in runs for k in ("trace_id", "span_id", "prompt_name")]
    assert_upstream_got_no_context(upstream.requests, expected=len(runs), secrets=secrets)
    calls = upstream.model_calls
    assert {r.path for r in calls} == {"/v1/chat/completions"}
    sent = sorted(json.dumps(r.body["messages"]) for r in calls)
    wanted = sorted(json.dumps(_prompt_messages(str(run["prompt_name"]))) for run in runs)
    assert sent == wanted


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("path", PATHS)
def test_one_trace_one_prompt_link(
    path: str,
    call: str,
    launcher: bool,
    recorder: RecordingServer,
    proxy: ProxyProcess,
    upstream: UpstreamServer,
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
    # 7. The model provider got the call, as the app made it, and no trace context at all.
    assert_runs_reached_the_model_without_context(upstream, [run])
    (sent,) = upstream.model_calls
    assert sent.body.get("stream", False) is call.endswith("stream"), sent.body


@pytest.mark.parametrize("call", ["sync", "async"])
@pytest.mark.parametrize("path", PATHS)
def test_two_prompts_one_after_the_other(
    path: str, call: str, recorder: RecordingServer, proxy: ProxyProcess, upstream: UpstreamServer
) -> None:
    runs = run_two_prompts(recorder, proxy, path=path, call=call)
    assert_runs_reached_the_model_without_context(upstream, runs)


# Under concurrency, one prompt source per gateway path, each source on one path: cross-talk is
# a property of the proxy's per-request context, which every path shares.
CONCURRENT_PATH = {
    "langfuse": "langfuse_openai",
    "langfuse_otel": "use_prompt",
    "langfuse_otel_v2": "propagate_attributes",
}


def test_200_concurrent_traces_zero_cross_talk(
    variant: str, recorder: RecordingServer, proxy: ProxyProcess, upstream: UpstreamServer
) -> None:
    path = CONCURRENT_PATH[variant]
    runs = run_two_prompts(recorder, proxy, path=path, call="async", concurrency=200)
    assert_runs_reached_the_model_without_context(upstream, runs)


def test_no_context_is_logged_exactly_as_without_the_bridge(
    variant: str,
    recorder: RecordingServer,
    proxy: ProxyProcess,
    plain_proxy: ProxyProcess,
    upstream: UpstreamServer,
) -> None:
    assert_logged_as_without_the_bridge(recorder, proxy, plain_proxy)
    # Three requests, each followed by its sentinels: the same model request each time, bridge
    # or not.
    assert_upstream_got_no_context(upstream.requests, expected=3 * (1 + SENTINEL_ROUNDS))
    assert len({r.raw_body for r in upstream.model_calls}) == 1


def test_legacy_metadata_wins_and_matches_the_old_result(
    variant: str,
    recorder: RecordingServer,
    proxy: ProxyProcess,
    plain_proxy: ProxyProcess,
    upstream: UpstreamServer,
) -> None:
    results, runs = [], []
    for target in (plain_proxy, proxy):
        run, generation, observations = run_with_extra_body(recorder, target, WORKAROUND_METADATA)
        runs.append(run)
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
    # Neither proxy passes the caller's metadata or context on to the model.
    assert_runs_reached_the_model_without_context(upstream, runs)
    if variant == "langfuse":
        # The callback honours all four keys: parent = run-test, the other prompt, the name.
        assert results[1] == (True, "run-test", "legacy-generation", "second prompt+%", 4)
    else:
        # OTel paths join the trace from traceparent only and never link a metadata prompt.
        assert results[1][0] is True
        assert results[1][3] is None


def test_a_caller_chosen_trace_wins_over_the_traceparent(
    variant: str,
    recorder: RecordingServer,
    proxy: ProxyProcess,
    plain_proxy: ProxyProcess,
    upstream: UpstreamServer,
) -> None:
    """The caller names another trace than its traceparent's: the bridge mixes nothing in."""
    chosen = "c" * 32
    caller = {"metadata": {"existing_trace_id": chosen, "generation_name": "chosen-trace"}}
    results, runs = [], []
    for target in (plain_proxy, proxy):
        run, generation, observations = run_with_extra_body(recorder, target, caller)
        runs.append(run)
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
    assert_runs_reached_the_model_without_context(upstream, runs)
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


# proxy endpoint -> (request body, where LiteLLM 1.106's `openai` provider sends it upstream).
# /v1/messages for an `openai/` model is translated to the Responses API, not chat completions.
ENDPOINTS = {
    "/v1/chat/completions": (
        {"messages": [{"role": "user", "content": "hi"}]},
        "/v1/chat/completions",
    ),
    "/v1/responses": ({"input": "hi"}, "/v1/responses"),
    "/v1/messages": (
        {"max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
        "/v1/responses",
    ),
    "/v1/completions": ({"prompt": "hi"}, "/v1/completions"),
    "/v1/embeddings": ({"input": "hi"}, "/v1/embeddings"),
}


def test_every_llm_endpoint_is_bridged(
    variant: str, recorder: RecordingServer, proxy: ProxyProcess, upstream: UpstreamServer
) -> None:
    # /messages and /responses keep their metadata elsewhere than /chat/completions does.
    for number, (path, (body, upstream_path)) in enumerate(ENDPOINTS.items(), start=1):
        parent = SpanRef(f"{number:032x}", f"{number:016x}", sampled=True)
        headers = encode_headers(BridgeContext(parent=parent, prompt=PromptRef("test-prompt", 1)))
        upstream.clear()
        response = httpx.post(
            f"{proxy.url}{path}",
            headers={"Authorization": f"Bearer {MASTER_KEY}", **headers},
            json={"model": MODEL, **body},
            timeout=30,
        )
        assert response.status_code == 200, (path, response.text)
        # The provider got exactly this call, and none of its trace context.
        (sent,) = upstream.model_calls
        assert (sent.path, sent.body["model"]) == (upstream_path, MODEL)
        assert_upstream_got_no_context(
            upstream.requests, secrets=[parent.trace_id, parent.span_id, "test-prompt"]
        )
    calls = llm_call_spans(recorder, len(ENDPOINTS))
    assert sorted(int(c.trace_id, 16) for c in calls) == list(range(1, len(ENDPOINTS) + 1))
    for call in calls:
        spans = {s.span_id: s for s in recorder.spans_for_trace(call.trace_id)}
        top = call
        while top.parent_span_id in spans:
            top = spans[top.parent_span_id]
        assert top.parent_span_id == call.trace_id[16:], call.name  # the caller's span
        assert call.attributes["langfuse.observation.prompt.name"] == "test-prompt", call.name
        assert call.attributes["langfuse.observation.prompt.version"] == 1, call.name
