"""End to end against Langfuse in the ``legacy`` write mode, and the unresolved-prompt rule.

The rest of the end-to-end suite runs against the recording server in Langfuse v4's default
``events_only`` mode. Here the same scenario app and a real LiteLLM proxy with the bridge send to
a recorder in ``legacy`` mode (Langfuse v3's behaviour, still selectable in v4 with
LANGFUSE_MIGRATION_V4_WRITE_MODE=legacy): the trace is read with ``GET /api/public/traces/{id}``,
the v2 observations API serves nothing, and a generation's prompt attributes must pass the
legacy ingestion schema. Two of the gateway's logging paths that export straight to Langfuse
are covered: LiteLLM's ``langfuse`` and ``langfuse_otel`` callbacks, sync and streamed calls.

The last test shows the prompt-link rule both modes share: a prompt version the project does not
have is not a link. events_only keeps its name and version with an empty promptId
(IngestionService.createEventRecord); legacy stores nulls (mapObservationEventsToRecords)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import TEST_PROMPTS
from e2e_assertions import (
    assert_unified,
    is_prompt_linked,
    llm_call_spans,
    prompt_id,
    trace_observations,
    wait_for_proxy_generations,
)
from harness import (
    MASTER_KEY,
    MODEL,
    ProxyProcess,
    UpstreamServer,
    client_env,
    run_scenario,
    start_proxy,
    upstream_config,
)

from otel_bridge import BridgeContext, PromptRef, SpanRef, encode_headers
from otel_bridge.recording_server import RecordingServer

pytestmark = pytest.mark.e2e

# gateway variant -> example config
VARIANTS = {"langfuse": "langfuse.yaml", "langfuse_otel": "langfuse_otel.yaml"}
MISSING_VERSION = 7
assert all(p.version != MISSING_VERSION for p in TEST_PROMPTS if p.name == "test-prompt")


def _proxy_env(recorder: RecordingServer) -> dict[str, str]:
    return {
        "LANGFUSE_PUBLIC_KEY": recorder.public_key,
        "LANGFUSE_SECRET_KEY": recorder.secret_key,
        "LANGFUSE_HOST": recorder.url,
        "OTEL_SERVICE_NAME": "litellm-proxy",
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # test speed only: LiteLLM's OTel paths batch spans
    }


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def _start(
    recorder: RecordingServer,
    upstream: UpstreamServer,
    variant: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> ProxyProcess:
    config = upstream_config(upstream.api_base, VARIANTS[variant])
    return start_proxy(config, _proxy_env(recorder), tmp_path_factory.mktemp("proxy"))


@pytest.fixture(scope="module")
def legacy_proxy(
    legacy_recorder: RecordingServer,
    upstream: UpstreamServer,
    variant: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:
    process = _start(legacy_recorder, upstream, variant, tmp_path_factory)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def events_proxy(
    recorder: RecordingServer,
    upstream: UpstreamServer,
    variant: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProxyProcess]:
    process = _start(recorder, upstream, variant, tmp_path_factory)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def clean(
    legacy_recorder: RecordingServer, recorder: RecordingServer, upstream: UpstreamServer
) -> None:
    legacy_recorder.clear()
    recorder.clear()
    upstream.clear()


@pytest.mark.parametrize("call", ["sync", "stream"])
@pytest.mark.parametrize("path", ["langfuse_openai", "use_prompt"])
def test_one_trace_one_prompt_link_in_legacy_mode(
    path: str,
    call: str,
    legacy_recorder: RecordingServer,
    legacy_proxy: ProxyProcess,
    upstream: UpstreamServer,
) -> None:
    env = client_env(legacy_recorder.url, legacy_proxy.url, SCENARIO_PATH=path, SCENARIO_CALL=call)
    (run,) = run_scenario(env)
    wait_for_proxy_generations(legacy_recorder, 1)
    generation = assert_unified(
        legacy_recorder,
        run,
        prompt=("test-prompt", 1),
        client_generation=path == "langfuse_openai",
    )
    # What a reader gets over HTTP from Langfuse in legacy mode: the v1 trace serves the same
    # observations; the v2 API reads the events table, which legacy mode never writes.
    auth = (legacy_recorder.public_key, legacy_recorder.secret_key)
    reply = httpx.get(f"{legacy_recorder.url}/api/public/traces/{run['trace_id']}", auth=auth)
    assert reply.status_code == 200
    served = {o["id"]: o for o in reply.json()["observations"]}
    assert served[generation["id"]]["promptId"] == prompt_id(legacy_recorder, "test-prompt", 1)
    assert run["span_id"] in served
    v2 = httpx.get(
        f"{legacy_recorder.url}/api/public/v2/observations",
        params={"traceId": run["trace_id"]},
        auth=auth,
    )
    assert (v2.status_code, v2.json()) == (200, {"data": [], "meta": {}})
    # The model call (a POST); LiteLLM's own GET /v1/models discovery is no call.
    upstream.wait_for_requests(lambda got: any(r.method == "POST" for r in got), timeout=30)
    (sent,) = upstream.model_calls
    assert sent.body.get("stream", False) is (call == "stream")


def _bridged_call(proxy: ProxyProcess, number: int, version: int) -> str:
    """One chat call through the proxy with a bridge context naming test-prompt v``version``;
    returns the caller's trace id."""
    parent = SpanRef(f"{number:032x}", f"{number:016x}", sampled=True)
    headers = encode_headers(BridgeContext(parent=parent, prompt=PromptRef("test-prompt", version)))
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}", **headers},
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return parent.trace_id


def _gateway_generation(recorder: RecordingServer, trace_id: str) -> dict[str, Any]:
    (call,) = [c for c in llm_call_spans(recorder, 2) if c.trace_id == trace_id]
    # On the wire the proxy names the prompt version the caller asked for, found or not.
    assert call.attributes["langfuse.observation.prompt.name"] == "test-prompt"
    return trace_observations(recorder, trace_id, {call.span_id})[call.span_id]


def test_a_prompt_version_the_project_lacks_is_not_linked(
    recorder: RecordingServer,
    legacy_recorder: RecordingServer,
    events_proxy: ProxyProcess,
    legacy_proxy: ProxyProcess,
) -> None:
    for target, proxy in ((recorder, events_proxy), (legacy_recorder, legacy_proxy)):
        known = _bridged_call(proxy, 1, 1)
        unknown = _bridged_call(proxy, 2, MISSING_VERSION)
        linked = _gateway_generation(target, known)
        unlinked = _gateway_generation(target, unknown)
        assert is_prompt_linked(linked)
        assert linked["promptId"] == prompt_id(target, "test-prompt", 1)
        assert not is_prompt_linked(unlinked)
        observed = (unlinked["promptId"], unlinked["promptName"], unlinked["promptVersion"])
        if target.write_mode == "events_only":
            # createEventRecord: prompt_id = found id || "", name and version as sent.
            assert observed == ("", "test-prompt", MISSING_VERSION)
        else:
            # mapObservationEventsToRecords: the found prompt's fields, or nulls.
            assert observed == (None, None, None)
