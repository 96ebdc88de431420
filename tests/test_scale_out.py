"""Scale-out: the bridge keeps no per-request state between processes.

Two LiteLLM proxy processes with the same config (the `langfuse` callback and the bridge) log
to one recording server. A client app (tests/apps/alternating.py) sends six requests of ONE
trace and ONE prompt alternately to the two, both listed in OTEL_BRIDGE_GATEWAYS. Each proxy
sees only its own three requests, so everything it needs to place and link a generation must
come with the request itself.

Which proxy logged a generation: each process runs with its own LANGFUSE_RELEASE (proxy-a,
proxy-b), which the proxy's Langfuse SDK stamps on its exports as the resource attribute
`langfuse.release`. LiteLLM's `langfuse` callback sets no `service.name`, and its trace tags
(`proxy_base_url`) are dropped once a generation joins an existing trace, so the release is
the process-level marker that survives. It is cross-checked against the wire: the generation's
parent is the client's httpx POST span, whose URL names the port of the proxy it went to.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_assertions import PROMPT_VERSION, is_proxy_span, wait_for_proxy_generations
from harness import (
    ProxyProcess,
    UpstreamServer,
    assert_upstream_got_no_context,
    client_env,
    start_proxy,
    upstream_config,
)

from otel_bridge.recording_server import RecordedSpan, RecordingServer

pytestmark = pytest.mark.e2e

APP = Path(__file__).resolve().parent / "apps" / "alternating.py"
REQUESTS = 6
RELEASE = "langfuse.release"


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    """The one model server both replicas call."""
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def proxies(
    recorder: RecordingServer, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ProxyProcess]]:
    started: dict[str, ProxyProcess] = {}
    try:
        for name in ("proxy-a", "proxy-b"):
            env = {
                "LANGFUSE_PUBLIC_KEY": recorder.public_key,
                "LANGFUSE_SECRET_KEY": recorder.secret_key,
                "LANGFUSE_HOST": recorder.url,
                "LANGFUSE_RELEASE": name,
            }
            # The same config for both: only the process environment tells them apart.
            config = upstream_config(upstream.api_base)
            started[name] = start_proxy(config, env, tmp_path_factory.mktemp(name))
        yield started
    finally:
        for process in started.values():
            process.stop()


def run_alternating(env: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    bindir = Path(sys.executable).parent
    env = {**env, "OTEL_PYTHON_DISTRO": "otel_bridge", "OTEL_PYTHON_CONFIGURATOR": "otel_bridge"}
    result = subprocess.run(
        [str(bindir / "opentelemetry-instrument"), sys.executable, str(APP)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"app failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("{")]
    record: dict[str, Any] = json.loads(line)
    return record


def _url(span: RecordedSpan) -> str:
    for key in ("url.full", "http.url"):
        value = span.attributes.get(key)
        if isinstance(value, str):
            return value
    raise AssertionError(f"{span.name} has no URL attribute: {span.attributes}")


def test_one_trace_alternating_over_two_proxies(
    recorder: RecordingServer, proxies: dict[str, ProxyProcess], upstream: UpstreamServer
) -> None:
    recorder.clear()
    upstream.clear()
    urls = [proxies["proxy-a"].url, proxies["proxy-b"].url]
    env = client_env(
        recorder.url,
        ",".join(urls),  # OTEL_BRIDGE_GATEWAYS lists both replicas
        ALTERNATING_BASE_URLS=",".join(urls),
        ALTERNATING_REQUESTS=str(REQUESTS),
    )
    run = run_alternating(env)
    assert run["sent_to"] == [urls[i % 2] for i in range(REQUESTS)]
    assert (run["prompt_name"], run["prompt_version"]) == ("test-prompt", 1)
    # Every request reached the model through its replica, with none of the trace's context.
    assert_upstream_got_no_context(
        upstream.requests,
        expected=REQUESTS,
        secrets=[run["trace_id"], run["span_id"], "test-prompt"],
    )
    generations = wait_for_proxy_generations(recorder, REQUESTS)
    recorder.wait_for_spans(
        lambda spans: any(s.span_id == run["span_id"] for s in spans), timeout=30
    )

    # All six proxy generations are in the caller's trace (and there are no others).
    assert len(generations) == REQUESTS, recorder.summary()
    assert {g.trace_id for g in generations} == {run["trace_id"]}
    trace = recorder.trace(run["trace_id"])
    observations = {o["id"]: o for o in trace["observations"]}
    spans = {s.span_id: s for s in recorder.spans_for_trace(run["trace_id"])}

    # No dangling parents in the trace.
    for obs in observations.values():
        parent = obs["parentObservationId"]
        assert parent is None or parent in observations, f"dangling parent of {obs['name']}"

    port_of = {url.rsplit(":", 1)[1]: name for name, url in zip(proxies, urls, strict=True)}
    by_release: Counter[str] = Counter()
    parents: set[str] = set()
    order: list[tuple[int, str]] = []
    for generation in generations:
        observation = observations[generation.span_id]
        # Each with the prompt link, the version an integer on the wire.
        assert observation["type"] == "GENERATION"
        assert (observation["promptName"], observation["promptVersion"]) == ("test-prompt", 1)
        assert type(generation.attributes[PROMPT_VERSION]) is int
        # Each parented to its own httpx POST span of the client ...
        parent = spans[generation.parent_span_id or ""]
        assert not is_proxy_span(parent), parent.name
        assert parent.name.startswith("POST"), parent.name
        parents.add(parent.span_id)
        # ... whose chain reaches run-test.
        node = observations[parent.span_id]
        while node["parentObservationId"] is not None:
            node = observations[node["parentObservationId"]]
        assert node["id"] == run["span_id"]
        # The proxy process that logged it is the one the POST went to.
        release = generation.resource_attributes.get(RELEASE)
        target = _url(parent).split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        assert release == port_of[target], (release, _url(parent))
        by_release[str(release)] += 1
        order.append((parent.start_time_unix_nano, str(release)))
    assert len(parents) == REQUESTS
    assert by_release == {"proxy-a": 3, "proxy-b": 3}
    assert [release for _, release in sorted(order)] == ["proxy-a", "proxy-b"] * (REQUESTS // 2)
