"""What a unified trace means, checked on what the recording server captured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    trace = recorder.trace(trace_id)
    observations = {o["id"]: o for o in trace["observations"]}
    assert root_id in observations, "the client's run-test span was not exported"
    # 2. No dangling parents, and the proxy generation's chain reaches run-test.
    for obs in observations.values():
        parent = obs["parentObservationId"]
        assert parent is None or parent in observations, (
            f"dangling parent {parent} of {obs['name']}"
        )
    generation = observations[mine[0].span_id]
    assert generation["type"] == "GENERATION"
    chain, node = [], generation
    while node["parentObservationId"] is not None:
        node = observations[node["parentObservationId"]]
        chain.append(node["name"])
    assert node["id"] == root_id, f"proxy generation's chain {chain} does not reach run-test"
    # 3. The prompt link, with an integer version on the wire.
    if prompt is None:
        assert generation["promptName"] is None
    else:
        assert (generation["promptName"], generation["promptVersion"]) == prompt
        assert type(mine[0].attributes[PROMPT_VERSION]) is int
    if client_generation:
        client_gens = [
            o
            for o in observations.values()
            if o["name"] == "llm-response" and o["type"] == "GENERATION"
        ]
        assert len(client_gens) == 1
        assert (client_gens[0]["promptName"], client_gens[0]["promptVersion"]) == prompt
    return generation
