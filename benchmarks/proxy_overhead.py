"""The LiteLLM proxy with the bridge against the same proxy without it, side by side.

Three real ``litellm`` proxies run at the same time from the proxy tier's interpreter, all on
the shipped example config with LiteLLM's ``mock_response`` model and the ``langfuse``
callback exporting to a local Langfuse test double:

* ``unbridged``   the config without the bridge callback (the baseline, "A");
* ``bridged``     the config as shipped, with ``otel_bridge.litellm.bridge`` ("B");
* ``unbridged-2`` a second, identical baseline ("A'"): B/A is only meaningful next to A'/A;
* ``workaround``  an unbridged proxy whose callers hand-build LiteLLM's Langfuse metadata
  (``existing_trace_id``, ``parent_observation_id``, ``prompt``) in every request body, the
  workaround the bridge replaces ("W"): B/W is what the bridge costs over that, and W/A what
  LiteLLM's Langfuse logging itself spends on a linked generation.

A load generator in its own process sends the same requests to each (OpenAI-SDK-like headers
plus a fresh ``traceparent`` and the prompt ``baggage`` on every request) at each concurrency
level, in short interleaved rounds (A B A', then B A' A, ...; a round is a few seconds), so
whatever else the machine is doing falls on all three alike. Reported per level: throughput
ratio and p50 difference as the median over rounds of the per-round figures (and pooled over
all requests), p99 difference, the proxy's CPU time per request, and the same figures for A'/A
(the noise floor).

    OTEL_BRIDGE_PROXY_PYTHON=.venv-proxy/bin/python python benchmarks/proxy_overhead.py
    ... --quick          # a few hundred requests: checks that it works, not the numbers
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    WORKAROUND_BODY,
    LoadGen,
    bridge_baggage,
    command_line,
    cpu_seconds,
    machine_summary,
    median,
    percentile,
    proxy_target_spec,
    ratio_line,
    running_proxies,
    terminate_on_sigterm,
    verify_bridge,
)

BASE, BRIDGED, TWIN, WORKAROUND = "unbridged", "bridged", "unbridged-2", "workaround"
TARGETS = {"throughput_ratio_min": 0.98, "p50_diff_ms_max": 0.2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run: checks it works")
    parser.add_argument("--requests", type=int, help="per proxy per level (default 3000)")
    parser.add_argument(
        "--round-size",
        type=int,
        help="requests per proxy per round (default max(150, 3 x concurrency))",
    )
    parser.add_argument("--concurrency", default="1,32,128", help="comma-separated levels")
    parser.add_argument("--warmup", type=int, help="untimed requests per proxy per level")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.requests = args.requests or (30 if args.quick else 3000)
    return args


def summarize(rounds: list[dict[str, Any]], cpu_s: float) -> dict[str, Any]:
    latencies = [value for r in rounds for value in r["latencies_us"]]
    requests = sum(r["requests"] for r in rounds)
    elapsed = sum(r["elapsed_s"] for r in rounds)
    return {
        "requests": requests,
        "errors": sum(r["errors"] for r in rounds),
        "reconnects": sum(r.get("reconnects", 0) for r in rounds),
        "statuses": _merge(r["statuses"] for r in rounds),
        "elapsed_s": elapsed,
        "throughput_rps": requests / elapsed,
        "round_throughput_rps": [r["requests"] / r["elapsed_s"] for r in rounds],
        "round_p50_ms": [percentile(r["latencies_us"], 0.5) / 1000 for r in rounds],
        "p50_ms": percentile(latencies, 0.50) / 1000,
        "p99_ms": percentile(latencies, 0.99) / 1000,
        "mean_ms": sum(latencies) / len(latencies) / 1000,
        "cpu_us_per_request": cpu_s / requests * 1e6,
    }


def _merge(counts: Any) -> dict[str, int]:
    merged: dict[str, int] = {}
    for count in counts:
        for status, n in count.items():
            merged[status] = merged.get(status, 0) + n
    return merged


def compare(test: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Pooled figures, and the median of the per-round ones (each round runs the proxies
    back to back, so the median resists bursts of load from other processes)."""
    ratios = [
        t / b
        for t, b in zip(test["round_throughput_rps"], base["round_throughput_rps"], strict=True)
    ]
    p50_diffs = [t - b for t, b in zip(test["round_p50_ms"], base["round_p50_ms"], strict=True)]
    return {
        "throughput_ratio": median(ratios),
        "pooled_throughput_ratio": test["throughput_rps"] / base["throughput_rps"],
        "round_ratio_q1": percentile(ratios, 0.25),
        "round_ratio_q3": percentile(ratios, 0.75),
        "p50_diff_ms": median(p50_diffs),
        "pooled_p50_diff_ms": test["p50_ms"] - base["p50_ms"],
        "p99_diff_ms": test["p99_ms"] - base["p99_ms"],
        # 1/throughput: the proxy's time per request when saturated, comparable at any level.
        "service_diff_us": 1e6 / test["throughput_rps"] - 1e6 / base["throughput_rps"],
        "cpu_diff_us": test["cpu_us_per_request"] - base["cpu_us_per_request"],
    }


def run_level(
    load: LoadGen, pids: dict[str, int], recorder: Any, level: int, args: argparse.Namespace
) -> dict[str, Any]:
    names = [BASE, BRIDGED, TWIN, WORKAROUND]
    per_round = args.round_size or (10 if args.quick else max(150, 3 * level))
    rounds_count = math.ceil(args.requests / per_round)
    default_warmup = 10 if args.quick else max(2 * level, 200)
    warmup = args.warmup if args.warmup is not None else default_warmup
    for name in names:
        load.run(name, level, warmup, latencies=False)
    recorder.clear()
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    cpu_start = {name: cpu_seconds(pids[name]) for name in names}
    for index in range(rounds_count):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            rounds[name].append(load.run(name, level, per_round))
        recorder.clear()  # bounded memory in this process, whatever the run length
    time.sleep(0.5)  # let the last batch of Langfuse exports be counted where they belong
    results = {
        name: summarize(rounds[name], cpu_seconds(pids[name]) - cpu_start[name]) for name in names
    }
    return {
        "concurrency": level,
        "requests_per_proxy": per_round * rounds_count,
        "rounds": rounds_count,
        "warmup": warmup,
        "proxies": results,
        "bridged_vs_unbridged": compare(results[BRIDGED], results[BASE]),
        "noise_floor": compare(results[TWIN], results[BASE]),
        "bridged_vs_workaround": compare(results[BRIDGED], results[WORKAROUND]),
        "workaround_vs_unbridged": compare(results[WORKAROUND], results[BASE]),
    }


def report(level: dict[str, Any]) -> None:
    c = level["concurrency"]
    print(
        f"\nconcurrency {c}: {level['requests_per_proxy']} requests per proxy in "
        f"{level['rounds']} interleaved rounds (+{level['warmup']} warm-up)"
    )
    print(f"  {'proxy':<12} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11} errors")
    for name, r in level["proxies"].items():
        print(
            f"  {name:<12} {r['throughput_rps']:8.1f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
            f"{r['cpu_us_per_request']:11.0f} {r['errors']}"
        )
    for label, key in (
        ("bridged/unbridged", "bridged_vs_unbridged"),
        ("noise A'/A", "noise_floor"),
        ("bridged/workaround", "bridged_vs_workaround"),
        ("workaround/unbridged", "workaround_vs_unbridged"),
    ):
        d = level[key]
        print(
            f"  {label:<18} throughput x{d['throughput_ratio']:.4f} median of rounds "
            f"(IQR {d['round_ratio_q1']:.3f}..{d['round_ratio_q3']:.3f}; "
            f"pooled x{d['pooled_throughput_ratio']:.4f}), "
            f"p50 {d['p50_diff_ms']:+.3f} ms median of rounds "
            f"(pooled {d['pooled_p50_diff_ms']:+.3f}), p99 {d['p99_diff_ms']:+.3f} ms, "
            f"cpu/request {d['cpu_diff_us']:+.0f} us"
        )
    bridged, noise = level["bridged_vs_unbridged"], level["noise_floor"]
    workaround = level["bridged_vs_workaround"]
    print(
        ratio_line(
            f"proxy_c{c}",
            vs_workaround_throughput=workaround["throughput_ratio"],
            vs_workaround_cpu_diff_us=workaround["cpu_diff_us"],
            throughput=bridged["throughput_ratio"],
            noise_throughput=noise["throughput_ratio"],
            pooled_throughput=bridged["pooled_throughput_ratio"],
            noise_pooled_throughput=noise["pooled_throughput_ratio"],
            p50_diff_ms=bridged["p50_diff_ms"],
            noise_p50_diff_ms=noise["p50_diff_ms"],
            p99_diff_ms=bridged["p99_diff_ms"],
            noise_p99_diff_ms=noise["p99_diff_ms"],
            cpu_diff_us=bridged["cpu_diff_us"],
            noise_cpu_diff_us=noise["cpu_diff_us"],
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    terminate_on_sigterm()
    from otel_bridge.recording_server import RecordingServer

    print(f"$ {command_line()}\n{machine_summary()}", flush=True)
    baggage = bridge_baggage()
    bridged = {BASE: False, BRIDGED: True, TWIN: False, WORKAROUND: False}
    linked = {**bridged, WORKAROUND: True}
    bodies = {WORKAROUND: WORKAROUND_BODY}
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="otel-bridge-bench-") as workdir,
        RecordingServer() as recorder,
        running_proxies(bridged, Path(workdir), recorder.url) as proxies,
    ):
        print(f"proxies up after {time.monotonic() - started:.1f}s", flush=True)
        verify_bridge(proxies, linked, recorder, baggage, bodies)
        print(
            "checked: the bridged proxy (headers) and the workaround (metadata) link the "
            "caller's span and prompt, the unbridged ones do not",
            flush=True,
        )
        load = LoadGen()
        try:
            for name, proxy in proxies.items():
                spec = (
                    proxy_target_spec(None, WORKAROUND_BODY)
                    if name == WORKAROUND
                    else proxy_target_spec(baggage)
                )
                load.target(name, proxy.url, **spec)
            pids = {name: proxy.process.pid for name, proxy in proxies.items()}
            for level in args.levels:
                results.append(run_level(load, pids, recorder, level, args))
                report(results[-1])
        finally:
            load.close()
    failures = sum(r["errors"] for level in results for r in level["proxies"].values())
    print("\ntargets (bridged vs unbridged):")
    for level in results:
        d = level["bridged_vs_unbridged"]
        ok_t = d["throughput_ratio"] >= TARGETS["throughput_ratio_min"]
        ok_p = d["p50_diff_ms"] <= TARGETS["p50_diff_ms_max"]
        print(
            f"  c={level['concurrency']:<4} throughput ratio {d['throughput_ratio']:.4f} "
            f"(>= 0.98: {'met' if ok_t else 'NOT met'}), p50 diff {d['p50_diff_ms']:+.3f} ms "
            f"(<= 0.2 ms: {'met' if ok_p else 'NOT met'})"
        )
    print(f"total {time.monotonic() - started:.0f}s")
    if args.json:
        args.json.write_text(
            json.dumps({"command": command_line(), "levels": results}, indent=2) + "\n"
        )
    if failures:
        statuses = [
            (lv["concurrency"], n, r["statuses"])
            for lv in results
            for n, r in lv["proxies"].items()
        ]
        print(f"{failures} request(s) failed; HTTP statuses: {statuses}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
