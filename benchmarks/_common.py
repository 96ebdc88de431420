"""Shared pieces of the benchmark scripts: interpreters, proxies, the load generator, statistics.

The scripts are run directly (``python benchmarks/<name>.py``), so this module is imported
from the script's own directory. Everything started here binds 127.0.0.1 and is stopped by
the script that started it, on success, on error and on SIGTERM.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"

# What the OpenAI SDK sends besides the bridge's context (header count and size matter to
# the hook, which scans every header).
OPENAI_LIKE_HEADERS = {
    "Accept": "application/json",
    "Accept-Encoding": "gzip, deflate",
    "User-Agent": "OpenAI/Python 3.54.0",
    "X-Stainless-Lang": "python",
    "X-Stainless-Package-Version": "3.54.0",
    "X-Stainless-OS": "Linux",
    "X-Stainless-Arch": "x64",
    "X-Stainless-Runtime": "CPython",
    "X-Stainless-Runtime-Version": "3.11.2",
    "X-Stainless-Async": "false",
    "X-Stainless-Retry-Count": "0",
    "X-Stainless-Read-Timeout": "600",
}
PROMPT_NAME = "bench-prompt"
PROMPT_VERSION = 3
MODEL = "llama3.2:1b"
CHAT_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}]},
    separators=(",", ":"),
)


def bridge_baggage() -> str:
    """The ``baggage`` value the client tier sends to a gateway for the benchmark prompt."""
    from otel_bridge import BridgeContext, PromptRef, encode_headers

    return encode_headers(BridgeContext(prompt=PromptRef(PROMPT_NAME, PROMPT_VERSION)))["baggage"]


def proxy_python() -> Path:
    """The proxy tier's interpreter, found as tests/harness.py finds it."""
    configured = os.environ.get("OTEL_BRIDGE_PROXY_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-proxy" / "bin" / "python"
    if not path.exists():
        raise SystemExit(
            f"proxy interpreter {path} not found: set OTEL_BRIDGE_PROXY_PYTHON "
            "(or run ./dev test once, which builds .venv-proxy)"
        )
    return path


def machine_summary() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPU(s), load average at start {load[0]:.2f}"
    )


def command_line() -> str:
    """The command that produced this output, repo-relative, for the docs."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = str(script.relative_to(REPO))
    except ValueError:
        shown = str(script)
    return " ".join(["python", shown, *sys.argv[1:]])


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop every child process."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# ----------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear-interpolated percentile (``fraction`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of y over x; NaN with fewer than two distinct x."""
    if len(points) < 2:
        return math.nan
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    if denominator == 0:
        return math.nan
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / denominator


def ratio_line(name: str, **values: float | str) -> str:
    """One machine-readable result line: ``RATIO <name> key=value ...`` (the smoke test greps)."""
    parts = [
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in values.items()
    ]
    return " ".join(["RATIO", name, *parts])


# ----------------------------------------------------------------------------- processes


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` and all its descendants, in KiB (from /proc)."""
    total = 0
    for member in [pid, *_descendants(pid)]:
        try:
            with open(f"/proc/{member}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and all its descendants, in seconds (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in [pid, *_descendants(pid)]:
        try:
            with open(f"/proc/{member}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


class LoadGen:
    """Driver side of ``_loadgen.py``, which runs in its own process."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(BENCHMARKS / "_loadgen.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _call(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited ({self.process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"load generator: {answer.get('error')}")
        return answer

    def target(self, name: str, url: str, **spec: Any) -> None:
        host, port = url.removeprefix("http://").rstrip("/").split(":")
        self._call(op="target", name=name, host=host, port=int(port), **spec)

    def run(
        self, name: str, concurrency: int, requests: int, *, latencies: bool = True
    ) -> dict[str, Any]:
        return self._call(
            op="run", name=name, concurrency=concurrency, requests=requests, latencies=latencies
        )

    def close(self) -> None:
        if self.process.poll() is None:
            with suppress(RuntimeError, OSError, ValueError):
                self._call(op="close")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


# The workaround the bridge replaces: the caller hand-builds LiteLLM's Langfuse metadata.
WORKAROUND_BODY = json.dumps(
    {
        **json.loads(CHAT_BODY),
        "metadata": {
            "existing_trace_id": "{trace_id}",
            "parent_observation_id": "{span_id}",
            "prompt": {"name": PROMPT_NAME, "version": PROMPT_VERSION, "prompt": []},
        },
    },
    separators=(",", ":"),
)


def proxy_target_spec(baggage: str | None, body: str = CHAT_BODY) -> dict[str, Any]:
    """What the load generator sends: the OpenAI SDK's request, a fresh ``traceparent`` each
    time, ``baggage`` if given; ``body`` may name the traceparent's ids (see _loadgen.py)."""
    from otel_bridge.demo._stack import MASTER_KEY

    return {
        "path": "/chat/completions",
        "headers": {**OPENAI_LIKE_HEADERS, "Authorization": f"Bearer {MASTER_KEY}"},
        "body": body,
        "baggage": baggage,
    }


@contextmanager
def running_proxies(
    specs: dict[str, bool], workdir: Path, recorder_url: str
) -> Iterator[dict[str, Any]]:
    """Start one LiteLLM proxy per ``name: bridged`` entry, side by side; stop them all after.

    Every proxy runs the shipped example config (``examples/litellm/langfuse.yaml``) with the
    model answered by LiteLLM's ``mock_response``; its ``langfuse`` callback exports to the
    recording server. The unbridged ones differ only by the missing bridge callback.
    """
    from otel_bridge.demo._stack import ProxyProcess, mock_config

    python = proxy_python()
    env = {
        "LANGFUSE_PUBLIC_KEY": "pk-lf-test",
        "LANGFUSE_SECRET_KEY": "sk-lf-test",
        "LANGFUSE_HOST": recorder_url,
    }
    proxies = {
        name: ProxyProcess(mock_config(bridge=bridged), env, workdir, python)
        for name, bridged in specs.items()
    }
    errors: list[BaseException] = []

    def start(proxy: ProxyProcess) -> None:
        try:
            proxy.start(timeout=180)
        except BaseException as error:  # reported below, after every thread is back
            errors.append(error)

    threads = [threading.Thread(target=start, args=(p,)) for p in proxies.values()]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        yield proxies
    finally:
        for thread in threads:
            thread.join()
        for proxy in proxies.values():
            proxy.stop()


def verify_bridge(
    proxies: dict[str, Any],
    linked: dict[str, bool],
    recorder: Any,
    baggage: str,
    bodies: dict[str, str] | None = None,
) -> None:
    """Send one request to each proxy (its body from ``bodies``, by default the plain chat
    request) and check, in what it exported, that the generation is linked to the caller's
    span and prompt exactly where expected: otherwise a benchmark could compare two unbridged
    proxies."""
    import httpx

    from otel_bridge.demo._stack import MASTER_KEY

    expected: dict[str, tuple[str, str, bool]] = {}
    for index, (name, proxy) in enumerate(proxies.items()):
        trace_id = f"{0xB0 + index:02x}" + "e1" * 15
        span_id = f"{0xC0 + index:02x}" + "f2" * 7
        headers = {
            "Authorization": f"Bearer {MASTER_KEY}",
            "traceparent": f"00-{trace_id}-{span_id}-01",
            "Content-Type": "application/json",
        }
        body = (bodies or {}).get(name, CHAT_BODY)
        if body == CHAT_BODY:
            headers["baggage"] = baggage
        body = body.replace("{trace_id}", trace_id).replace("{span_id}", span_id)
        response = httpx.post(
            f"{proxy.url}/chat/completions", content=body, headers=headers, timeout=60
        )
        response.raise_for_status()
        expected[name] = (response.json()["id"], span_id, linked[name])

    def generation(response_id: str, spans: list[Any]) -> Any:
        for span in spans:
            if span.attributes.get("langfuse.observation.metadata.response_id") == response_id:
                return span
        return None

    spans = recorder.wait_for_spans(
        lambda spans: all(generation(r, spans) is not None for r, _, _ in expected.values()),
        timeout=60,
    )
    for name, (response_id, span_id, is_linked) in expected.items():
        span = generation(response_id, spans)
        has_prompt = span.attributes.get("langfuse.observation.prompt.name") == PROMPT_NAME
        parented = span.parent_span_id == span_id
        if is_linked != (has_prompt and parented):
            raise SystemExit(
                f"proxy {name}: expected a linked generation: {is_linked}, but it has "
                f"prompt link={has_prompt}, parent=caller span: {parented}"
            )
    recorder.clear()


def timed(label: str) -> Callable[[], None]:
    started = time.monotonic()

    def done() -> None:
        print(f"  ({label}: {time.monotonic() - started:.1f}s)", flush=True)

    return done
