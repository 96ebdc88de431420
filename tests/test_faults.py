"""Langfuse down, slow or failing: neither the gateway nor the app may notice beyond its logs.

The outages: ``refused`` (the port closed: connections refused), ``down`` (connections
accepted, then dropped unanswered), ``slow`` (answers after 5 s) and ``error`` (HTTP 500).

* Proxy: 500 bridged requests (concurrency 16) per outage, each run next to a healthy run of
  the same size measured just before it: every request answered with the model's answer, and
  the latency distribution the same within the noise of two runs on two shared cores.
* Client: the scenario app (launcher, Langfuse SDK 5) makes 500 gateway calls per outage,
  against a healthy run: every call succeeds, and the app's own call latency stays that of the
  healthy run (the SDK exports from a background thread: nothing blocks on Langfuse). The app
  exits 0 in bounded time: the SDK's flush at exit waits for its exporter, which gives up after
  ``LANGFUSE_TIMEOUT`` seconds (5 by default); a small ``LANGFUSE_TIMEOUT`` shortens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from conftest import TEST_PROMPTS
from e2e_assertions import proxy_generations
from harness import (
    MASTER_KEY,
    MODEL,
    ProxyProcess,
    client_env,
    mock_config,
    run_scenario,
    start_proxy,
)

from otel_bridge import BridgeContext, PromptRef, SpanRef, encode_headers
from otel_bridge.demo._stack import MOCK_ANSWER
from otel_bridge.recording_server import RecordingServer

pytestmark = pytest.mark.e2e

REQUESTS = 500
CONCURRENCY = 16
FAULT_DELAY_S = 5.0
FAULTS = ["refused", "down", "slow", "error"]
# Latency "unaffected": the outage run's median and p95 within this of the healthy run next to
# it. Two healthy runs on this machine differ by a few ms at the median; an export that blocked
# a request would add the 5 s delay, an exporter retry loop on the request path tens of ms.
P50_TOLERANCE = (1.25, 0.010)  # factor, plus seconds
P95_TOLERANCE = (1.5, 0.030)


def within(value: float, base: float, tolerance: tuple[float, float]) -> bool:
    factor, seconds = tolerance
    return value <= base * factor + seconds


@contextlib.contextmanager
def outage(recorder: RecordingServer, mode: str) -> Iterator[None]:
    if mode == "refused":
        recorder.stop()
    else:
        recorder.set_fault(mode, delay_s=FAULT_DELAY_S)
    try:
        yield
    finally:
        recorder.set_fault(None)
        recorder.start()  # same port: the proxy and the app keep their Langfuse URL


def proxy_env(recorder: RecordingServer) -> dict[str, str]:
    return {
        "LANGFUSE_PUBLIC_KEY": recorder.public_key,
        "LANGFUSE_SECRET_KEY": recorder.secret_key,
        "LANGFUSE_HOST": recorder.url,
    }


@pytest.fixture(scope="module")
def proxy(
    recorder: RecordingServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    process = start_proxy(mock_config(), proxy_env(recorder), tmp_path_factory.mktemp("faults"))
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
                elif response.json()["choices"][0]["message"]["content"] != MOCK_ANSWER:
                    failures.append(f"{index}: unexpected answer {response.text[:200]}")
                else:
                    trace_ids.append(trace)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return Load(latencies, failures, trace_ids)


def load(url: str, run: str, requests: int = REQUESTS) -> Load:
    return asyncio.run(_load(url, run, requests))


def test_proxy_serves_and_keeps_its_latency_while_langfuse_is_down_slow_or_failing(
    proxy: ProxyProcess, recorder: RecordingServer
) -> None:
    recorder.set_fault(None)
    load(proxy.url, "warmup", 48)
    results: dict[str, tuple[Load, Load]] = {}
    for mode in FAULTS:
        recorder.clear()
        healthy = load(proxy.url, f"healthy-{mode}")
        assert not healthy.failures, healthy.failures[:5]
        # The healthy run was bridged and exported: its generations are in the callers' traces.
        wanted = set(healthy.trace_ids)
        recorder.wait_for_spans(
            lambda spans, wanted=wanted: wanted <= {g.trace_id for g in proxy_generations(spans)},
            timeout=60,
        )
        assert len(wanted) == REQUESTS
        with outage(recorder, mode):
            results[mode] = (healthy, load(proxy.url, mode))
    report = "; ".join(
        f"{mode}: {faulty.describe()} (healthy {healthy.describe()})"
        for mode, (healthy, faulty) in results.items()
    )
    print(f"\nproxy latency under Langfuse faults ({REQUESTS} requests, c={CONCURRENCY}): {report}")

    for mode, (healthy, faulty) in results.items():
        assert not faulty.failures, (mode, faulty.failures[:5])
        assert len(faulty.latencies) == len(faulty.trace_ids) == REQUESTS
        assert within(faulty.quantile(0.5), healthy.quantile(0.5), P50_TOLERANCE), (mode, report)
        assert within(faulty.quantile(0.95), healthy.quantile(0.95), P95_TOLERANCE), (mode, report)

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


APP_CALLS = 500


def _scenario_seconds(env: dict[str, str]) -> tuple[float, list[dict[str, object]]]:
    started = time.monotonic()
    runs = run_scenario(env, timeout=120)  # raises unless the app exits 0
    return time.monotonic() - started, runs


def _call_quantiles(runs: list[dict[str, object]]) -> tuple[float, float]:
    seconds = [float(run["call_seconds"]) for run in runs]  # type: ignore[arg-type]
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return cuts[49], cuts[94]


@pytest.fixture(scope="module")
def healthy_app_seconds(proxy: ProxyProcess, client_recorder: RecordingServer) -> float:
    client_recorder.set_fault(None)
    env = client_env(client_recorder.url, proxy.url, SCENARIO_PATH="use_prompt")
    _scenario_seconds(env)  # first run pays for cold imports
    seconds, runs = _scenario_seconds(env)
    assert len(runs) == 1
    return seconds


# Not "refused" for the app: the same server serves its prompts, and an app whose Langfuse is
# unreachable gets no prompt at all (a Langfuse SDK matter, with its fallback prompts).
@pytest.mark.parametrize("mode", [m for m in FAULTS if m != "refused"])
def test_app_calls_never_wait_for_langfuse_and_the_app_exits_in_bounded_time(
    mode: str, proxy: ProxyProcess, client_recorder: RecordingServer
) -> None:
    """Default SDK settings: 500 calls through the gateway, healthy Langfuse, then an outage.

    Measured here (2 cores): call latency p50 ~8 ms in every mode, the same as healthy.
    """
    env = client_env(
        client_recorder.url, proxy.url, SCENARIO_PATH="use_prompt", SCENARIO_REPEAT=str(APP_CALLS)
    )
    client_recorder.set_fault(None)
    healthy_total, healthy_runs = _scenario_seconds(env)
    with outage(client_recorder, mode):
        seconds, runs = _scenario_seconds(env)
    healthy50, healthy95 = _call_quantiles(healthy_runs)
    p50, p95 = _call_quantiles(runs)
    report = (
        f"app with Langfuse {mode}: calls p50={p50 * 1000:.1f}ms p95={p95 * 1000:.1f}ms, "
        f"run {seconds:.1f}s (healthy: p50={healthy50 * 1000:.1f}ms p95={healthy95 * 1000:.1f}ms, "
        f"run {healthy_total:.1f}s)"
    )
    print(f"\n{report}")
    assert len(healthy_runs) == len(runs) == APP_CALLS
    assert all(run["prompt_name"] == "test-prompt" for run in runs)
    assert within(p50, healthy50, P50_TOLERANCE), report
    assert within(p95, healthy95, P95_TOLERANCE), report
    # The app's own langfuse.flush() at the end waits for what is still queued: one export per
    # batch of at most 512 spans (the SDK's flush_at), each giving up after the SDK's default
    # 5 s timeout. 500 calls leave at most 3 batches (measured: +10.8 s slow, +4.3 s down).
    batches = -(-APP_CALLS * 3 // 512)
    assert seconds < healthy_total + 5 * batches + 5, report


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_a_small_langfuse_timeout_bounds_the_exit_delay(
    mode: str,
    proxy: ProxyProcess,
    client_recorder: RecordingServer,
    healthy_app_seconds: float,
) -> None:
    """``LANGFUSE_TIMEOUT=1`` is how an operator bounds the flush at exit during an outage."""
    env = client_env(
        client_recorder.url, proxy.url, SCENARIO_PATH="use_prompt", LANGFUSE_TIMEOUT="1"
    )
    with outage(client_recorder, mode):
        seconds, runs = _scenario_seconds(env)
    print(f"\napp with Langfuse {mode}, LANGFUSE_TIMEOUT=1: {seconds:.1f}s")
    assert len(runs) == 1
    assert seconds < healthy_app_seconds + 1 + 3, (mode, seconds, healthy_app_seconds)
