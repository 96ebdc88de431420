"""Real processes on loopback for the demo and the tests: a LiteLLM proxy and the demo app.

The model behind the proxy is :mod:`otel_bridge.demo._upstream`, an OpenAI-compatible server.

Everything binds 127.0.0.1 on a port picked here and is stopped by whoever started it.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from otel_bridge.demo._upstream import UPSTREAM_API_KEY

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "litellm"
MASTER_KEY = "sk-otel-bridge-demo-0123456789"
MOCK_ANSWER = "Hello from the mock model."


# DEMO_PORT_RANGE="LOW-HIGH" is where free_port() picks (no OTEL_ prefix, so children keep it).
# The tests give each parallel worker its own range below the kernel's ephemeral ports: a port
# from bind(0) is free only until somebody's next bind(0) or outgoing connection, and a child
# takes seconds to bind it, so two workers could otherwise meet on one.
PORT_RANGE_ENV = "DEMO_PORT_RANGE"
_recently_picked: deque[int] = deque(maxlen=64)


def free_port() -> int:
    """A loopback port nothing is bound to now, for a child process to bind."""
    spec = os.environ.get(PORT_RANGE_ENV)
    if not spec:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    low, high = parse_port_range(spec)
    candidates = [port for port in range(low, high + 1) if port not in _recently_picked]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        # Remembered because the caller may ask again before its child has bound this one.
        _recently_picked.append(port)
        return port
    raise RuntimeError(f"{PORT_RANGE_ENV}={spec}: no free port left in that range")


def parse_port_range(spec: str) -> tuple[int, int]:
    low, _, high = spec.partition("-")
    try:
        bounds = int(low), int(high)
    except ValueError:
        bounds = (0, -1)
    if not 1024 <= bounds[0] <= bounds[1] <= 65535:
        raise ValueError(f"{PORT_RANGE_ENV}={spec!r}: expected LOW-HIGH within 1024-65535")
    return bounds


def example_config(name: str = "langfuse.yaml") -> dict[str, Any]:
    path = EXAMPLES / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run from a checkout of otel-bridge")
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def upstream_config(
    api_base: str, name: str = "langfuse.yaml", *, bridge: bool = True
) -> dict[str, Any]:
    """A shipped example config with every model served through LiteLLM's ``openai`` provider
    by the OpenAI-compatible server at ``api_base`` (the demo and the tests run
    :class:`~otel_bridge.demo._upstream.UpstreamServer` there), so LiteLLM's real provider
    path runs and what the gateway sends upstream can be checked."""
    return _config_with_models(
        name,
        bridge,
        lambda model: {
            "model": f"openai/{model}",
            "api_key": UPSTREAM_API_KEY,
            "api_base": api_base,
        },
    )


def mock_config(name: str = "langfuse.yaml", *, bridge: bool = True) -> dict[str, Any]:
    """A shipped example config with every model answered by LiteLLM's ``mock_response``: no
    provider call at all. The benchmarks use it to measure the bridge's own cost without a model
    server sharing the machine; the demo and the tests use :func:`upstream_config`."""
    return _config_with_models(
        name,
        bridge,
        lambda model: {
            "model": f"openai/{model}",
            "api_key": "unused",
            "mock_response": MOCK_ANSWER,
        },
    )


def _config_with_models(
    name: str, bridge: bool, params: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    config = example_config(name)
    for entry in config["model_list"]:
        entry["litellm_params"] = params(entry["model_name"])
    config.pop("environment_variables", None)
    settings = config.setdefault("litellm_settings", {})
    if not bridge:
        settings["callbacks"] = [c for c in settings.get("callbacks", []) if "otel_bridge" not in c]
    return config


def scrubbed_environ(*prefixes: str) -> dict[str, str]:
    """This process's environment without variables that would steer a child's telemetry."""
    drop = ("OTEL_", "LANGFUSE_", *prefixes)
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


class ChildProcess:
    """A child process in its own session, logging to a file, stopped with its whole group."""

    name = "process"

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def launch(
        self,
        command: list[str],
        env: Mapping[str, str],
        cwd: Path,
        ready: Callable[[], bool],
        timeout: float,
        interval: float = 0.25,
        append_log: bool = False,
    ) -> None:
        """Start ``command`` and return once ``ready()`` holds; raise with the log tail if not."""
        with self.log_path.open("ab" if append_log else "wb") as log:
            self.process = subprocess.Popen(
                command,
                env=dict(env),
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                if ready():
                    return
            except (OSError, httpx.HTTPError):
                pass
            time.sleep(interval)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=2).status_code == 200


class ProxyProcess(ChildProcess):
    """A real ``litellm`` proxy process on loopback, from the proxy tier's interpreter."""

    name = "litellm"

    def __init__(
        self,
        config: Mapping[str, Any],
        env: Mapping[str, str],
        workdir: Path,
        python: Path,
        port: int | None = None,
    ) -> None:
        self.config, self.env, self.workdir, self.python = config, env, workdir, python
        self.port = port or free_port()
        super().__init__(workdir / f"litellm-{self.port}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> ProxyProcess:
        config_path = self.workdir / f"litellm-{self.port}.yaml"
        config_path.write_text(yaml.safe_dump(dict(self.config)))
        env = {
            **scrubbed_environ(),
            "LITELLM_MASTER_KEY": MASTER_KEY,
            # No network here: LiteLLM's price list comes from the installed package.
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "LANGFUSE_FLUSH_INTERVAL": "1",
            "PYTHONUNBUFFERED": "1",
            # If a native extension crashes the gateway, its log keeps every thread's stack.
            "PYTHONFAULTHANDLER": "1",
            **self.env,
        }
        command = [
            str(self.python.parent / "litellm"),
            "--config", str(config_path),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--num_workers", "1",
        ]  # fmt: skip
        self.launch(command, env, self.workdir, http_ok(f"{self.url}/health/liveliness"), timeout)
        return self

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
