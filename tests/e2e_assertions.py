"""What a unified trace means, checked on what the recording server captured."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
from harness import MASTER_KEY, MODEL, ProxyProcess, client_env, run_scenario

from otel_bridge.recording_server import RecordedSpan, RecordingServer, observation_type

PROMPT_NAME = "langfuse.observation.prompt.name"
PROMPT_VERSION = "langfuse.observation.prompt.version"
CLIENT_SERVICE = "scenario-app"


def is_proxy_span(span: RecordedSpan) -> bool:
    return span.resource_attributes.get("service.name") != CLIENT_SERVICE


def proxy_generations(spans: list[RecordedSpan]) -> list[RecordedSpan]:
    return [s for s in spans if is_proxy_span(s) and observation_type(s) == "GENERATION"]


def wait_for_proxy_generations(
    recorder: RecordingServer, count: int, timeout: float = 30
) -> list[RecordedSpan]:
    spans = recorder.wait_for_spans(
        lambda spans: len(proxy_generations(spans)) >= count, timeout=timeout
    )
    return proxy_generations(spans)


def prompt_id(recorder: RecordingServer, name: str, version: int) -> str:
    """The id Langfuse gives the project's prompt ``name`` v``version``, read over its API."""
    response = httpx.get(
        f"{recorder.url}/api/public/v2/prompts/{quote(name, safe='')}",
        params={"version": version},
        auth=(recorder.public_key, recorder.secret_key),
        timeout=10,
    )
    assert response.status_code == 200, (name, version, response.text)
    return str(response.json()["id"])


def is_prompt_linked(observation: Mapping[str, Any]) -> bool:
    """Langfuse links an observation to a prompt only when the prompt resolved in the project:
    ``promptId`` set. In events_only a version the project lacks keeps its name and version but
    gets promptId "" (IngestionService.createEventRecord); in legacy all three are null."""
    return bool(observation.get("promptId"))


def trace_observations(
    recorder: RecordingServer, trace_id: str, wanted: set[str], timeout: float = 30
) -> dict[str, dict[str, Any]]:
    """The trace's observations by id as Langfuse would serve them in the recorder's write mode:
    the v2 observations API in events_only (polled until ``wanted`` ids are readable, as
    ingestion is asynchronous), the v1 trace of the legacy tables in legacy mode."""
    if recorder.write_mode == "events_only":
        found = recorder.wait_for_observations(
            trace_id, lambda obs: wanted <= {o["id"] for o in obs}, timeout=timeout
        )
    else:
        found = recorder.trace(trace_id)["observations"]
    return {o["id"]: o for o in found}


def assert_prompt_link(
    recorder: RecordingServer, observation: Mapping[str, Any], prompt: tuple[str, int] | None
) -> None:
    """``prompt`` None: not linked. Otherwise linked to exactly that stored prompt version."""
    if prompt is None:
        assert not is_prompt_linked(observation), observation
        assert not observation["promptName"], observation
        return
    assert is_prompt_linked(observation), f"prompt {prompt} did not resolve: {observation}"
    assert observation["promptId"] == prompt_id(recorder, *prompt)
    assert (observation["promptName"], observation["promptVersion"]) == prompt


def assert_unified(
    recorder: RecordingServer,
    run: Mapping[str, Any],
    *,
    prompt: tuple[str, int] | None,
    client_generation: bool,
) -> dict[str, Any]:
    """Acceptance points 1-3 for one `run-test` span; returns the proxy generation observation."""
    trace_id, root_id = run["trace_id"], run["span_id"]
    everything = recorder.spans()
    trace_spans = [s for s in everything if s.trace_id == trace_id]
    # 1. The proxy's generation for this call is in the caller's trace, and nowhere else.
    mine = [g for g in proxy_generations(trace_spans)]
    assert len(mine) == 1, f"expected one proxy generation in trace {trace_id}, got {mine}"
    observations = trace_observations(recorder, trace_id, {root_id, mine[0].span_id})
    assert root_id in observations, "the client's run-test span was not exported"
    # 2. No dangling parents, and the proxy generation's chain reaches run-test.
    for obs in observations.values():
        parent = obs["parentObservationId"]
        assert parent is None or parent in observations, (
            f"dangling parent {parent} of {obs['name']}"
        )
    assert mine[0].span_id in observations, f"Langfuse would not store the proxy generation {mine}"
    generation = observations[mine[0].span_id]
    assert generation["type"] == "GENERATION"
    chain, node = [], generation
    while node["parentObservationId"] is not None:
        node = observations[node["parentObservationId"]]
        chain.append(node["name"])
    assert node["id"] == root_id, f"proxy generation's chain {chain} does not reach run-test"
    # 3. The prompt link resolves to the project's prompt, with an integer version on the wire.
    assert_prompt_link(recorder, generation, prompt)
    if prompt is not None:
        assert type(mine[0].attributes[PROMPT_VERSION]) is int
    if client_generation:
        client_gens = [
            o
            for o in observations.values()
            if o["name"] == "llm-response" and o["type"] == "GENERATION"
        ]
        assert len(client_gens) == 1
        assert_prompt_link(recorder, client_gens[0], prompt)
    return generation


def raw_call(proxy: ProxyProcess, **extra: Any) -> None:
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}", **extra.pop("headers", {})},
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra},
        timeout=30,
    )
    assert response.status_code == 200, response.text


# Values that differ between two identical calls through the same proxy (ids, clocks, latency).
# The two proxies differ only in their port, which LiteLLM logs in the request's Host header
# and FastAPI's server span in server.port.
def _stable(span: Any, volatile: set[str], depth: int) -> tuple[Any, ...]:
    attributes = {
        k: "PORT" if k == "server.port" else v
        for k, v in span.attributes.items()
        if k not in volatile
    }
    text = re.sub(
        r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", json.dumps(attributes, sort_keys=True, default=str)
    )
    return (span.name, span.scope_name, span.kind, observation_type(span), depth, text)


def request_complete(spans: list[Any]) -> bool:
    """Whether one trace's proxy spans include the two a request ends with: its root, and its
    model call, a generation that LiteLLM's loggers end in the success callback after the
    response (the Langfuse SDK's, ``litellm_request``, or OTel V2's CLIENT span). FastAPI's
    spans do not count: without the bridge's typing, ``fastapi.dependencies`` is a GENERATION
    in Langfuse's eyes too, and it ends before the response."""
    return any(not s.parent_span_id for s in spans) and any(
        observation_type(s) == "GENERATION" and "fastapi" not in s.scope_name for s in spans
    )


def _send_and_wait(recorder: RecordingServer, target: ProxyProcess, timeout: float) -> str:
    """One request without bridge context through ``target``; the id of its trace, once
    ``request_complete``. A trace already received before the request is not it."""
    known = {s.trace_id for s in recorder.spans()}

    def new_requests(spans: list[Any]) -> list[str]:
        by_trace: dict[str, list[Any]] = {}
        for span in spans:
            if span.trace_id not in known and is_proxy_span(span):
                by_trace.setdefault(span.trace_id, []).append(span)
        return [trace_id for trace_id, group in by_trace.items() if request_complete(group)]

    raw_call(target)
    spans = recorder.wait_for_spans(lambda spans: bool(new_requests(spans)), timeout=timeout)
    (trace_id,) = new_requests(spans)
    return trace_id


SENTINEL_ROUNDS = 2


def answered_request_spans(
    recorder: RecordingServer, target: ProxyProcess, timeout: float = 30
) -> list[Any]:
    """One request without bridge context through ``target``, and every span the proxy exported
    for it.

    "Every" is an event here, not a quiet window: after the request's own root and model call
    have arrived, sentinel requests go through the same proxy, each waited for the same way. A
    proxy exports all its spans through one BatchSpanProcessor: a FIFO queue whose exporter
    waits until each batch is stored. A sentinel's model-call span ends after every span of the
    request (their last one arrived before the sentinel was sent), so it is queued, and
    arrives, after them. The second round is for a forwarder in between (rotel), which can have
    two batches in flight at once: the second sentinel is only sent once the first one's batch
    was stored, after every batch rotel dispatched before it."""
    trace_id = _send_and_wait(recorder, target, timeout)
    for _ in range(SENTINEL_ROUNDS):
        _send_and_wait(recorder, target, timeout)
    return [s for s in recorder.spans_for_trace(trace_id) if is_proxy_span(s)]


def _shape(spans: list[Any], volatile: set[str]) -> list[tuple[Any, ...]]:
    by_id = {s.span_id: s for s in spans}

    def depth(span: Any) -> int:
        return 0 if span.parent_span_id not in by_id else 1 + depth(by_id[span.parent_span_id])

    return sorted(_stable(s, volatile, depth(s)) for s in spans)


def _shape_difference(bridged: list[tuple[Any, ...]], plain: list[tuple[Any, ...]]) -> str:
    only_bridged = [s for s in bridged if s not in plain]
    only_plain = [s for s in plain if s not in bridged]
    return f"only with the bridge: {only_bridged}\nonly without it: {only_plain}"


def _volatile_keys(first: list[Any], second: list[Any]) -> set[str]:
    """Attribute keys whose values differ between two identical requests' spans of one name,
    and the upstream response's ``created`` (LiteLLM's raw span logs it as ``llm.openai.created``):
    a clock in whole seconds, equal in the two requests whenever they fall in one second, so
    comparing it against a third request fails on the second boundary."""
    volatile = {k for s in (*first, *second) for k in s.attributes if k.endswith(".created")}
    for a in first:
        for b in (b for b in second if b.name == a.name):
            keys = set(a.attributes) | set(b.attributes)
            volatile |= {k for k in keys if a.attributes.get(k) != b.attributes.get(k)}
    return volatile


OTLP_SPAN_KIND_CLIENT = 3


def llm_call_spans(recorder: RecordingServer, count: int) -> list[Any]:
    """The proxy's model-call spans, one per call: generations from LiteLLM's own tracer or the
    Langfuse SDK. Without the bridge, V2 also exports FastAPI spans and its INTERNAL ``route``
    span with a model attribute, which Langfuse would type as generations too; of those, the
    model call is the CLIENT span."""

    def calls(spans: list[Any]) -> list[Any]:
        found = [
            s
            for s in spans
            if is_proxy_span(s)
            and s.scope_name in ("litellm", "langfuse-sdk")
            and observation_type(s) == "GENERATION"
        ]
        per_trace: dict[str, list[Any]] = {}
        for span in found:
            per_trace.setdefault(span.trace_id, []).append(span)
        return [
            span
            for group in per_trace.values()
            for span in (
                [s for s in group if s.kind == OTLP_SPAN_KIND_CLIENT] or group
                if len(group) > 1
                else group
            )
        ]

    return calls(recorder.wait_for_spans(lambda spans: len(calls(spans)) >= count, timeout=30))


def assert_logged_as_without_the_bridge(
    recorder: RecordingServer, proxy: ProxyProcess, plain_proxy: ProxyProcess
) -> None:
    """Issue point 5: a request with no bridge context, through the bridged proxy and the same
    proxy without the bridge, exports the same spans: names, scopes, kinds, the tree, and every
    attribute that two identical unbridged requests agree on. The one documented difference
    (OTEL_BRIDGE_SPAN_TYPING=all, the default; docs/setup-by-litellm-version.md):
    ``langfuse.observation.type=span`` on spans that are not the model call, so that Langfuse
    counts exactly one generation."""
    recorder.clear()
    traces = [answered_request_spans(recorder, t) for t in (plain_proxy, plain_proxy, proxy)]
    plain_a, plain_b, bridged = traces
    assert bridged and all(is_proxy_span(s) for s in bridged)
    assert [observation_type(s) for s in bridged].count("GENERATION") == 1
    untyped_in_plain = {s.name for s in plain_a if _TYPE not in s.attributes}
    bridged = [
        dataclasses.replace(s, attributes={k: v for k, v in s.attributes.items() if k != _TYPE})
        if s.attributes.get(_TYPE) == "span" and s.name in untyped_in_plain
        else s
        for s in bridged
    ]
    volatile = _volatile_keys(plain_a, plain_b)
    got, want = _shape(bridged, volatile), _shape(plain_a, volatile)
    assert got == want, _shape_difference(got, want)
    assert not any(PROMPT_NAME in s.attributes for s in bridged)


_TYPE = "langfuse.observation.type"


def run_with_extra_body(
    recorder: RecordingServer, target: ProxyProcess, extra_body: Mapping[str, Any]
) -> tuple[dict[str, Any], RecordedSpan, dict[str, dict[str, Any]]]:
    """The scenario once through ``target`` with caller metadata (``{trace_id}``/``{span_id}``
    name the caller's own ids): its run record, the proxy's model-call span, and that span's
    observations by id as the v1 trace endpoint serves them from the legacy tables
    (``RecordingServer.trace``, whatever the recorder's write mode)."""
    recorder.clear()
    env = client_env(
        recorder.url,
        target.url,
        SCENARIO_PATH="use_prompt",
        SCENARIO_EXTRA_BODY=json.dumps(extra_body),
    )
    (run,) = run_scenario(env)
    (generation,) = llm_call_spans(recorder, 1)
    observations = {o["id"]: o for o in recorder.trace(generation.trace_id)["observations"]}
    return run, generation, observations


TWO_PROMPTS = "test-prompt,second prompt+%"


def run_two_prompts(
    recorder: RecordingServer, proxy: ProxyProcess, *, path: str, call: str, concurrency: int = 1
) -> list[dict[str, Any]]:
    """Issue point 4: the scenario with two prompts, one after the other (``concurrency`` 1) or
    as that many concurrent traces assigned round-robin; every proxy generation must sit in its
    own caller's trace with its own caller's prompt. Returns the runs."""
    env = client_env(
        recorder.url,
        proxy.url,
        SCENARIO_PATH=path,
        SCENARIO_CALL=call,
        SCENARIO_PROMPTS=TWO_PROMPTS,
        SCENARIO_CONCURRENCY=str(concurrency),
    )
    runs = run_scenario(env)
    expected = max(concurrency, 2)
    assert len(runs) == expected
    assert len({r["trace_id"] for r in runs}) == expected
    if concurrency == 1:
        assert [(r["prompt_name"], r["prompt_version"]) for r in runs] == [
            ("test-prompt", 1),
            ("second prompt+%", 4),
        ]
    wait_for_proxy_generations(recorder, expected, timeout=90)
    for run in runs:
        assert_unified(
            recorder,
            run,
            prompt=(run["prompt_name"], run["prompt_version"]),
            client_generation=path == "langfuse_openai",
        )
    assert len(proxy_generations(recorder.spans())) == expected
    return runs


# The seed workaround: the caller hand-builds LiteLLM's Langfuse metadata in extra_body, naming
# its own ids (see run_with_extra_body), with another prompt than the one in its context.
WORKAROUND_METADATA = {
    "metadata": {
        "existing_trace_id": "{trace_id}",
        "parent_observation_id": "{span_id}",
        "generation_name": "legacy-generation",
        "prompt": {"name": "second prompt+%", "version": 4, "prompt": []},
    }
}
