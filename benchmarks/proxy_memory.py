"""Proxy memory over many bridged requests, next to the same proxy without the bridge.

Two real ``litellm`` proxies (shipped example config, ``mock_response`` model, ``langfuse``
callback exporting to a local Langfuse test double), one with the bridge callback and one
without, run at the same time. The load generator (its own process) sends each the same
requests (a fresh ``traceparent`` and the prompt ``baggage`` on every one) at concurrency 64,
in alternating chunks, and the resident set size of each proxy process tree is read from
``/proc/<pid>/status`` (VmRSS) after every chunk and once a second in between.

Reported per proxy: RSS after warm-up, at the end and at its peak, and the growth per 10,000
requests (least-squares slope over all samples, from the first chunk on, and over the second
half alone, once caches and allocator pools have settled); then bridged minus unbridged.

    OTEL_BRIDGE_PROXY_PYTHON=.venv-proxy/bin/python python benchmarks/proxy_memory.py
    ... --quick          # a few hundred requests: checks that it works, not the numbers
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import (
    LoadGen,
    bridge_baggage,
    command_line,
    machine_summary,
    proxy_target_spec,
    ratio_line,
    rss_kib,
    running_proxies,
    slope,
    terminate_on_sigterm,
    verify_bridge,
)

BASE, BRIDGED = "unbridged", "bridged"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run: checks it works")
    parser.add_argument("--requests", type=int, help="per proxy (default 50000)")
    parser.add_argument("--chunk", type=int, help="requests per proxy between samples (2500)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--warmup", type=int, help="untimed requests per proxy (default 2000)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.requests = args.requests or (100 if args.quick else 50_000)
    args.chunk = args.chunk or (50 if args.quick else 2_500)
    args.warmup = args.warmup if args.warmup is not None else (10 if args.quick else 2_000)
    return args


class Sampler:
    """Reads both proxies' RSS once a second in the background, for the peak."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = {name: 0 for name in pids}
        self.timeline: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()

    def sample(self) -> dict[str, int]:
        values = {name: rss_kib(pid) for name, pid in self.pids.items()}
        for name, value in values.items():
            self.peak[name] = max(self.peak[name], value)
        self.timeline.append((round(time.monotonic() - self._started, 1), values))
        return values

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def growth(points: list[tuple[int, int]]) -> dict[str, float]:
    """Per-10k-request growth (KiB) of (requests served, RSS KiB) samples."""
    half = [p for p in points if p[0] >= points[-1][0] / 2]
    settled = points[1:]  # from the first chunk on: the warm-up's last allocations are done
    return {
        "start_mib": points[0][1] / 1024,
        "end_mib": points[-1][1] / 1024,
        "growth_mib": (points[-1][1] - points[0][1]) / 1024,
        "slope_kib_per_10k": slope(points) * 10_000,
        "second_half_slope_kib_per_10k": slope(half) * 10_000,
        "settled_slope_kib_per_10k": slope(settled) * 10_000,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    terminate_on_sigterm()
    from otel_bridge.recording_server import RecordingServer

    print(f"$ {command_line()}\n{machine_summary()}", flush=True)
    baggage = bridge_baggage()
    bridged = {BASE: False, BRIDGED: True}
    started = time.monotonic()
    served = {name: 0 for name in bridged}
    points: dict[str, list[tuple[int, int]]] = {name: [] for name in bridged}
    errors = 0
    elapsed = {name: 0.0 for name in bridged}
    with (
        tempfile.TemporaryDirectory(prefix="otel-bridge-bench-") as workdir,
        RecordingServer() as recorder,
        running_proxies(bridged, Path(workdir), recorder.url) as proxies,
    ):
        print(f"proxies up after {time.monotonic() - started:.1f}s", flush=True)
        verify_bridge(proxies, bridged, recorder, baggage)
        print("checked: only the bridged proxy links the caller's span and prompt", flush=True)
        pids = {name: proxy.process.pid for name, proxy in proxies.items()}
        load = LoadGen()
        try:
            for name, proxy in proxies.items():
                load.target(name, proxy.url, **proxy_target_spec(baggage))
            for name in bridged:
                errors += load.run(name, args.concurrency, args.warmup, latencies=False)["errors"]
            recorder.clear()
            with Sampler(pids) as sampler:
                rss = sampler.sample()
                for name in bridged:
                    points[name].append((0, rss[name]))
                print(
                    f"after {args.warmup} warm-up requests each: "
                    + ", ".join(f"{n} {v / 1024:.1f} MiB" for n, v in rss.items()),
                    flush=True,
                )
                chunk_index = 0
                names = list(bridged)
                while min(served.values()) < args.requests:
                    order = names if chunk_index % 2 == 0 else names[::-1]
                    for name in order:
                        size = min(args.chunk, args.requests - served[name])
                        if size <= 0:
                            continue
                        answer = load.run(name, args.concurrency, size, latencies=False)
                        errors += answer["errors"]
                        if answer["errors"]:
                            print(f"  {name}: {answer['errors']} failed, {answer['statuses']}")
                        elapsed[name] += answer["elapsed_s"]
                        served[name] += size
                    recorder.clear()
                    rss = sampler.sample()
                    for name in bridged:
                        points[name].append((served[name], rss[name]))
                    chunk_index += 1
                    if chunk_index % 4 == 0 or min(served.values()) >= args.requests:
                        print(
                            f"  {min(served.values()):>6} requests each: "
                            + ", ".join(f"{n} {v / 1024:.1f} MiB" for n, v in rss.items())
                            + f"  ({time.monotonic() - started:.0f}s)",
                            flush=True,
                        )
                peak = dict(sampler.peak)
                timeline = list(sampler.timeline)
        finally:
            load.close()

    results = {name: {**growth(points[name]), "peak_mib": peak[name] / 1024} for name in bridged}
    for name in bridged:
        results[name]["requests"] = served[name]
        results[name]["throughput_rps"] = served[name] / elapsed[name]
    print(f"\n{args.requests} requests per proxy at concurrency {args.concurrency}, RSS per proxy:")
    print(
        f"  {'proxy':<10} {'after warm-up':>14} {'end':>9} {'peak':>9} {'growth':>9} "
        f"{'KiB/10k req':>12} {'settled':>8} {'2nd half':>9} {'req/s':>7}"
    )
    for name, r in results.items():
        print(
            f"  {name:<10} {r['start_mib']:10.1f} MiB {r['end_mib']:5.1f} MiB "
            f"{r['peak_mib']:5.1f} MiB {r['growth_mib']:+5.1f} MiB {r['slope_kib_per_10k']:+12.0f} "
            f"{r['settled_slope_kib_per_10k']:+8.0f} {r['second_half_slope_kib_per_10k']:+9.0f} "
            f"{r['throughput_rps']:7.1f}"
        )
    b, a = results[BRIDGED], results[BASE]
    diff = b["slope_kib_per_10k"] - a["slope_kib_per_10k"]
    diff_half = b["second_half_slope_kib_per_10k"] - a["second_half_slope_kib_per_10k"]
    diff_settled = b["settled_slope_kib_per_10k"] - a["settled_slope_kib_per_10k"]
    print(
        f"  bridged - unbridged: {diff:+.0f} KiB per 10k requests ({diff_settled:+.0f} from the "
        f"first chunk on, {diff_half:+.0f} over the second half), "
        f"end RSS {b['end_mib'] - a['end_mib']:+.1f} MiB"
    )
    print(
        ratio_line(
            "memory",
            bridged_kib_per_10k=b["slope_kib_per_10k"],
            unbridged_kib_per_10k=a["slope_kib_per_10k"],
            diff_kib_per_10k=diff,
            diff_settled_kib_per_10k=diff_settled,
            diff_second_half_kib_per_10k=diff_half,
            end_rss_ratio=b["end_mib"] / a["end_mib"],
            requests=args.requests,
        )
    )
    print(f"total {time.monotonic() - started:.0f}s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command_line(),
                    "concurrency": args.concurrency,
                    "results": results,
                    "points": points,
                    "timeline": timeline,
                },
                indent=2,
            )
            + "\n"
        )
    if errors:
        print(f"{errors} request(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
