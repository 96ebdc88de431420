"""Every benchmark script runs in its short mode and prints its result lines.

This checks that the benchmarks work (processes start, requests succeed, the bridge is active
where it should be, ratios get computed), not their numbers: ``--quick`` runs are far too
short for that. The full runs and their results are in docs/performance.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness import REPO, proxy_python

pytestmark = pytest.mark.benchmark_smoke

BENCHMARKS = REPO / "benchmarks"
# One RATIO line per result, with the keys each script promises.
EXPECTED = {
    "client_cost.py": {
        "client_inject": ["gateway_added_us", "other_added_us", "gateway_ratio", "noise_us"],
        "client_httpx": ["gateway_added_us", "other_added_us", "gateway_ratio", "noise_us"],
        "client_httpx2": ["gateway_added_us", "other_added_us", "gateway_ratio", "noise_us"],
    },
    "hook_cost.py": {
        "hook": ["bridged_us", "hook_us", "no_context_us", "noise_us"],
    },
    "proxy_overhead.py": {
        f"proxy_c{c}": [
            "throughput",
            "noise_throughput",
            "vs_workaround_throughput",
            "p50_diff_ms",
            "p99_diff_ms",
        ]
        for c in (1, 32, 128)
    },
    "proxy_memory.py": {
        "memory": ["bridged_kib_per_10k", "unbridged_kib_per_10k", "diff_kib_per_10k"],
    },
}
NUMBER = r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?"


def run_quick(python: Path | str, script: str, timeout: float = 150) -> str:
    env = dict(os.environ)
    if script.startswith("proxy_"):  # they start LiteLLM proxies with the proxy tier's Python
        env["OTEL_BRIDGE_PROXY_PYTHON"] = str(proxy_python())
    process = subprocess.Popen(
        [str(python), str(BENCHMARKS / script), "--quick"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the script turns it into SystemExit and stops the proxies it started.
        process.terminate()
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        pytest.fail(f"{script} --quick took over {timeout:.0f}s:\n{output[-4000:]}")
    assert process.returncode == 0, (
        f"{script} --quick exited {process.returncode}:\n{output[-4000:]}"
    )
    return output


def check_ratio_lines(script: str, output: str) -> None:
    for name, keys in EXPECTED[script].items():
        lines = [line for line in output.splitlines() if line.startswith(f"RATIO {name} ")]
        assert len(lines) == 1, f"{script}: expected one 'RATIO {name}' line:\n{output[-4000:]}"
        for key in keys:
            assert re.search(rf" {key}={NUMBER}( |$)", lines[0]), f"{key} missing: {lines[0]}"


@pytest.mark.parametrize("script", ["client_cost.py", "proxy_overhead.py", "proxy_memory.py"])
def test_client_side_scripts(script: str) -> None:
    """Scripts run by the client tier's interpreter (the proxies get the proxy tier's)."""
    check_ratio_lines(script, run_quick(sys.executable, script))


def test_hook_cost() -> None:
    """The hook benchmark imports LiteLLM, so it runs in the proxy tier's interpreter."""
    check_ratio_lines("hook_cost.py", run_quick(proxy_python(), "hook_cost.py"))
