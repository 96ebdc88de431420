"""Langfuse down, slow or failing: neither the gateway nor the app may notice beyond its logs.

* Proxy: 500 bridged requests (concurrency 16) per fault mode, against a healthy run of the
  same size measured in the same test: every request answered, latency unchanged (generous
  noise allowance, but never the injected 5 s).
* Client: the scenario app (launcher, Langfuse SDK 5) against a recording server in each
  fault mode exits 0 in bounded time. The SDK's flush at exit waits for its exporter, which
  gives up after ``LANGFUSE_TIMEOUT`` seconds (5 by default): that delay is measured and
  bounded, and a small ``LANGFUSE_TIMEOUT`` shown to shorten it.
"""

from __future__ import annotations

import asyncio
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
FAULTS = ["down", "slow", "error"]


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
    healthy = load(proxy.url, "healthy")
    assert not healthy.failures, healthy.failures[:5]
    # The healthy run was bridged and exported: its generations are in the callers' traces.
    wanted = set(healthy.trace_ids)
    spans = recorder.wait_for_spans(
        lambda spans: wanted <= {g.trace_id for g in proxy_generations(spans)}, timeout=60
    )
    assert wanted <= {g.trace_id for g in proxy_generations(spans)}

    results = {"healthy": healthy}
    for mode in FAULTS:
        recorder.set_fault(mode, delay_s=FAULT_DELAY_S)
        try:
            results[mode] = load(proxy.url, mode)
        finally:
            recorder.set_fault(None)
    report = "; ".join(f"{name}: {result.describe()}" for name, result in results.items())
    print(f"\nproxy latency under Langfuse faults ({REQUESTS} requests, c={CONCURRENCY}): {report}")

    base50, base95 = healthy.quantile(0.5), healthy.quantile(0.95)
    for mode in FAULTS:
        result = results[mode]
        assert not result.failures, (mode, result.failures[:5])
        assert len(result.latencies) == REQUESTS
        # Generous: 2 cores shared with the recording server and the exporter's retries.
        assert result.quantile(0.5) <= max(3 * base50, base50 + 0.25), (mode, report)
        assert result.quantile(0.95) <= max(3 * base95, base95 + 0.5), (mode, report)
        # And never the injected delay.
        assert result.quantile(0.95) < FAULT_DELAY_S / 2, (mode, report)

    # After the outage, exports resume: a healthy batch arrives again.
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


def _scenario_seconds(env: dict[str, str]) -> tuple[float, list[dict[str, object]]]:
    started = time.monotonic()
    runs = run_scenario(env, timeout=60)  # raises unless the app exits 0
    return time.monotonic() - started, runs


@pytest.fixture(scope="module")
def healthy_app_seconds(proxy: ProxyProcess, client_recorder: RecordingServer) -> float:
    client_recorder.set_fault(None)
    env = client_env(client_recorder.url, proxy.url, SCENARIO_PATH="use_prompt")
    _scenario_seconds(env)  # first run pays for cold imports
    seconds, runs = _scenario_seconds(env)
    assert len(runs) == 1
    return seconds


@pytest.mark.parametrize("mode", FAULTS)
def test_app_exits_cleanly_and_in_bounded_time_when_langfuse_fails(
    mode: str,
    proxy: ProxyProcess,
    client_recorder: RecordingServer,
    healthy_app_seconds: float,
) -> None:
    """Default SDK settings: the app's own call succeeds and it exits 0.

    Measured here (2 cores): a healthy run takes ~2 s; with Langfuse down or answering
    after 5 s, the SDK's flush at exit adds up to its 5 s export timeout.
    """
    client_recorder.set_fault(mode, delay_s=FAULT_DELAY_S)
    try:
        env = client_env(client_recorder.url, proxy.url, SCENARIO_PATH="use_prompt")
        seconds, runs = _scenario_seconds(env)
    finally:
        client_recorder.set_fault(None)
    print(f"\napp with Langfuse {mode}: {seconds:.1f}s (healthy {healthy_app_seconds:.1f}s)")
    assert len(runs) == 1 and runs[0]["prompt_name"] == "test-prompt"
    # The SDK's default export timeout is 5 s; allow it once, plus generous noise.
    assert seconds < healthy_app_seconds + 5 + 5, (mode, seconds, healthy_app_seconds)


@pytest.mark.parametrize("mode", ["down", "slow"])
def test_a_small_langfuse_timeout_bounds_the_exit_delay(
    mode: str,
    proxy: ProxyProcess,
    client_recorder: RecordingServer,
    healthy_app_seconds: float,
) -> None:
    """``LANGFUSE_TIMEOUT=1`` is how an operator bounds the flush at exit during an outage."""
    client_recorder.set_fault(mode, delay_s=FAULT_DELAY_S)
    try:
        env = client_env(
            client_recorder.url, proxy.url, SCENARIO_PATH="use_prompt", LANGFUSE_TIMEOUT="1"
        )
        seconds, runs = _scenario_seconds(env)
    finally:
        client_recorder.set_fault(None)
    print(f"\napp with Langfuse {mode}, LANGFUSE_TIMEOUT=1: {seconds:.1f}s")
    assert len(runs) == 1
    assert seconds < healthy_app_seconds + 1 + 3, (mode, seconds, healthy_app_seconds)
