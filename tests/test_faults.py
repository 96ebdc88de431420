"""Langfuse down, slow or failing: neither the gateway nor the app may notice beyond its logs.

The outages: ``refused`` (the port closed: connections refused), ``down`` (connections
accepted, then dropped unanswered), ``slow`` (Langfuse holds every export for N seconds before
answering) and ``error`` (HTTP 500).

Pass/fail is on events, never on a latency ratio (latencies are printed, for information):

* Proxy: 200 bridged requests (concurrency 16) per outage, against a real model server. Every
  request is answered with the model's answer; no request takes N seconds or more, which any
  request that waited for an export would (the proxy's exporter is given a timeout above N, so
  a stalled export lasts at least N); and the exporter really did meet the outage during the
  run (Langfuse recorded the dropped, failed or held exports). Afterwards exports resume.
* Client: the scenario app (launcher, Langfuse SDK 5) makes 200 gateway calls per outage:
  every call succeeds, none takes N seconds or more (the SDK's own export timeout is N), its
  exports met the outage, and the app exits 0 on its own: its flush at exit waits for the
  exporter, which gives up after ``LANGFUSE_TIMEOUT`` seconds (5 by default); a small
  ``LANGFUSE_TIMEOUT`` lets it exit while Langfuse still holds its export.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from conftest import TEST_PROMPTS
from e2e_assertions import proxy_generations
from harness import (
    MASTER_KEY,
    MODEL,
    UPSTREAM_ANSWER,
    ProxyProcess,
    UpstreamServer,
    assert_upstream_got_no_context,
    client_env,
    run_scenario,
    start_proxy,
    upstream_config,
)

from otel_bridge import BridgeContext, PromptRef, SpanRef, encode_headers
from otel_bridge.recording_server import OTLP_TRACES_PATH, RecordedRequest, RecordingServer

pytestmark = pytest.mark.e2e

REQUESTS = 200
CONCURRENCY = 16
FAULTS = ["refused", "down", "slow", "error"]
# How long the `slow` fault holds an export. A request or call that waited for an export takes
# at least this long; one that did not takes milliseconds, even on two busy cores.
PROXY_FAULT_DELAY_S = 10.0
# The proxy's Langfuse SDK export timeout: above the delay, so a stalled export lasts N seconds.
PROXY_LANGFUSE_TIMEOUT_S = 30
# The app keeps the SDK's default export timeout (5 s); its fault delay is that timeout, so a
# call that waited for an export would take at least this long either way.
APP_FAULT_DELAY_S = 5.0
# How long Langfuse holds the export of an app that runs with LANGFUSE_TIMEOUT=1: far beyond
# the app's whole run, so the app can only exit before it by giving up on the export.
LONG_HOLD_S = 120.0


@contextlib.contextmanager
def outage(recorder: RecordingServer, mode: str, delay_s: float) -> Iterator[None]:
    if mode == "refused":
        recorder.stop()
    else:
        recorder.set_fault(mode, delay_s=delay_s)
    try:
        yield
    finally:
        recorder.set_fault(None)
        recorder.start()  # same port: the proxy and the app keep their Langfuse URL


def _exports(recorder: RecordingServer) -> list[RecordedRequest]:
    return [r for r in recorder.requests if r.path == OTLP_TRACES_PATH]


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.1)


def assert_exports_met_the_outage(
    recorder: RecordingServer, mode: str, *, held_within: float | None = None
) -> int:
    """Called inside the outage, after the load: the exporter tried and Langfuse recorded the
    fault's outcome (``refused`` leaves nothing to record). Returns how many exports met it.

    ``held_within`` is for a client that still runs (the proxy): it exports on its own schedule,
    and may still be backing off from an export the previous outage failed, so under ``slow``
    none of its exports need have arrived yet when the load ends. Wait up to that long for one
    to be held and answered. An app that has exited sent its last export before it did."""
    if mode == "refused":
        assert not recorder.running
        return 0
    if mode == "slow":
        if held_within is not None:
            _wait_until(
                lambda: bool(_exports(recorder)), held_within, "an export held by the 'slow' fault"
            )
        # Exports still held end now, recorded as such; earlier ones were recorded after N s.
        # Every export since the outage began was held, however it ended.
        recorder.stop()
        met = len(_exports(recorder))
    else:
        wanted = {"down": 0, "error": 500}[mode]

        def met_now() -> int:
            return sum(1 for r in _exports(recorder) if r.status == wanted)

        _wait_until(lambda: met_now() > 0, 60, f"an export answered by the '{mode}' fault")
        met = met_now()
    assert met > 0, f"no export reached Langfuse during the '{mode}' outage"
    return met


def proxy_env(recorder: RecordingServer) -> dict[str, str]:
    return {
        "LANGFUSE_PUBLIC_KEY": recorder.public_key,
        "LANGFUSE_SECRET_KEY": recorder.secret_key,
        "LANGFUSE_HOST": recorder.url,
        "LANGFUSE_TIMEOUT": str(PROXY_LANGFUSE_TIMEOUT_S),
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    recorder: RecordingServer, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    process = start_proxy(
        upstream_config(upstream.api_base), proxy_env(recorder), tmp_path_factory.mktemp("faults")
    )
    try:
        yield process
    finally:
        recorder.set_fault(None)
        process.stop()


@dataclass
class Load:
    latencies: list[float]
    failures: list[str]
    trace_ids: list[str]

    def quantile(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q * 100) - 1]

    def describe(self) -> str:
        return (
            f"p50={self.quantile(0.5) * 1000:.0f}ms p95={self.quantile(0.95) * 1000:.0f}ms "
            f"max={max(self.latencies) * 1000:.0f}ms"
        )


def _headers(run: str, index: int) -> tuple[str, dict[str, str]]:
    trace = f"{hash((run, index)) & (2**120 - 1):030x}{index % 255 + 1:02x}"
    context = BridgeContext(
        parent=SpanRef(trace, f"{index + 1:016x}", True), prompt=PromptRef("test-prompt", 1)
    )
    return trace, {"Authorization": f"Bearer {MASTER_KEY}", **encode_headers(context)}


async def _load(url: str, run: str, requests: int = REQUESTS) -> Load:
    latencies: list[float] = []
    failures: list[str] = []
    trace_ids: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                trace, headers = _headers(run, index)
                body = {"model": MODEL, "messages": [{"role": "user", "content": f"{run} {index}"}]}
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/chat/completions", headers=headers, json=body)
                except httpx.HTTPError as error:
                    failures.append(f"{index}: {error!r}")
                    continue
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures.append(f"{index}: HTTP {response.status_code} {response.text[:200]}")
                elif response.json()["choices"][0]["message"]["content"] != UPSTREAM_ANSWER:
                    failures.append(f"{index}: unexpected answer {response.text[:200]}")
                else:
                    trace_ids.append(trace)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return Load(latencies, failures, trace_ids)


def load(url: str, run: str, requests: int = REQUESTS) -> Load:
    return asyncio.run(_load(url, run, requests))


def test_proxy_answers_every_request_without_waiting_for_langfuse(
    proxy: ProxyProcess, recorder: RecordingServer, upstream: UpstreamServer
) -> None:
    recorder.set_fault(None)
    load(proxy.url, "warmup", 48)
    recorder.clear()
    upstream.clear()
    healthy = load(proxy.url, "healthy")
    assert not healthy.failures, healthy.failures[:5]
    # Every request reached the model, with none of its caller's trace context.
    assert_upstream_got_no_context(upstream.requests, expected=REQUESTS)
    # The healthy run was bridged and exported: its generations are in the callers' traces.
    wanted = set(healthy.trace_ids)
    assert len(wanted) == REQUESTS
    recorder.wait_for_spans(
        lambda spans: wanted <= {g.trace_id for g in proxy_generations(spans)}, timeout=60
    )
    results: dict[str, tuple[Load, int]] = {}
    for mode in FAULTS:
        recorder.clear()
        upstream.clear()
        with outage(recorder, mode, PROXY_FAULT_DELAY_S):
            faulty = load(proxy.url, mode)
            met = assert_exports_met_the_outage(
                recorder, mode, held_within=PROXY_FAULT_DELAY_S + 60
            )
        assert len(upstream.model_calls) == REQUESTS, mode
        results[mode] = (faulty, met)
    report = "; ".join(
        f"{mode}: {faulty.describe()}, {met} exports met it"
        for mode, (faulty, met) in results.items()
    )
    print(
        f"\nproxy latency under Langfuse faults ({REQUESTS} requests, c={CONCURRENCY}): "
        f"healthy {healthy.describe()}; {report}"
    )

    for mode, (faulty, _) in results.items():
        assert not faulty.failures, (mode, faulty.failures[:5])
        assert len(faulty.latencies) == len(faulty.trace_ids) == REQUESTS
        waited = [t for t in faulty.latencies if t >= PROXY_FAULT_DELAY_S]
        assert not waited, (mode, f"{len(waited)} requests waited for an export", report)

    # After the outages, exports resume: a healthy batch arrives again.
    recorder.clear()
    after = load(proxy.url, "after", 32)
    assert not after.failures
    wanted = set(after.trace_ids)
    recorder.wait_for_spans(
        lambda spans: wanted <= {g.trace_id for g in proxy_generations(spans)}, timeout=60
    )


@pytest.fixture(scope="module")
def client_recorder() -> Iterator[RecordingServer]:
    """Where the app exports (the proxy keeps its own, healthy recorder)."""
    with RecordingServer(prompts=TEST_PROMPTS) as server:
        yield server


APP_CALLS = 200
# A deadline for the app's whole run (cold start, 200 calls, flush at exit), not a measure.
APP_DEADLINE_S = 240.0


def _scenario_seconds(
    env: dict[str, str], timeout: float = APP_DEADLINE_S
) -> tuple[float, list[dict[str, object]]]:
    started = time.monotonic()
    runs = run_scenario(env, timeout=timeout)  # raises unless the app exits 0 in time
    return time.monotonic() - started, runs


def _call_seconds(runs: list[dict[str, object]]) -> list[float]:
    return [float(run["call_seconds"]) for run in runs]  # type: ignore[arg-type]


def _describe_calls(seconds: list[float]) -> str:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return (
        f"p50={cuts[49] * 1000:.1f}ms p95={cuts[94] * 1000:.1f}ms max={max(seconds) * 1000:.1f}ms"
    )


# Not "refused" for the app: the same server serves its prompts, and an app whose Langfuse is
# unreachable gets no prompt at all (a Langfuse SDK matter, with its fallback prompts).
@pytest.mark.parametrize("mode", [m for m in FAULTS if m != "refused"])
def test_app_calls_never_wait_for_langfuse_and_the_app_exits_on_its_own(
    mode: str, proxy: ProxyProcess, client_recorder: RecordingServer
) -> None:
    """Default SDK settings: 200 calls through the gateway, healthy Langfuse, then an outage.

    Measured here (2 cores): call latency p50 ~8 ms in every mode, the same as healthy.
    """
    env = client_env(
        client_recorder.url, proxy.url, SCENARIO_PATH="use_prompt", SCENARIO_REPEAT=str(APP_CALLS)
    )
    client_recorder.set_fault(None)
    healthy_total, healthy_runs = _scenario_seconds(env)
    client_recorder.clear()
    with outage(client_recorder, mode, APP_FAULT_DELAY_S):
        seconds, runs = _scenario_seconds(env)
        met = assert_exports_met_the_outage(client_recorder, mode)
    calls = _call_seconds(runs)
    report = (
        f"app with Langfuse {mode}: calls {_describe_calls(calls)}, run {seconds:.1f}s, "
        f"{met} exports met it (healthy: calls {_describe_calls(_call_seconds(healthy_runs))}, "
        f"run {healthy_total:.1f}s)"
    )
    print(f"\n{report}")
    assert len(healthy_runs) == len(runs) == APP_CALLS
    assert all(run["prompt_name"] == "test-prompt" for run in runs)
    # The SDK exports from a background thread: a call that waited for an export would take
    # the fault's delay or the SDK's export timeout, both APP_FAULT_DELAY_S.
    waited = [t for t in calls if t >= APP_FAULT_DELAY_S]
    assert not waited, (f"{len(waited)} calls waited for an export", report)


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_with_a_small_langfuse_timeout_the_app_exits_without_waiting_for_langfuse(
    mode: str, proxy: ProxyProcess, client_recorder: RecordingServer
) -> None:
    """``LANGFUSE_TIMEOUT=1`` is how an operator bounds the flush at exit during an outage:
    the app exits 0 on its own while Langfuse still holds its export (``slow``, held for far
    longer than the app runs) or drops every one (``down``). Its run time is printed."""
    env = client_env(
        client_recorder.url, proxy.url, SCENARIO_PATH="use_prompt", LANGFUSE_TIMEOUT="1"
    )
    client_recorder.clear()
    with outage(client_recorder, mode, LONG_HOLD_S):
        seconds, runs = _scenario_seconds(env, timeout=LONG_HOLD_S / 2)
        assert_exports_met_the_outage(client_recorder, mode)
    print(f"\napp with Langfuse {mode}, LANGFUSE_TIMEOUT=1: run {seconds:.1f}s")
    assert len(runs) == 1
    if mode == "slow":
        # Status 0: still held when Langfuse stopped, i.e. the app had exited without an answer.
        exports = _exports(client_recorder)
        assert any(r.status == 0 for r in exports), [(r.status, r.reason) for r in exports]
