"""Real processes for the end-to-end tests: a LiteLLM proxy, the scenario app, a capture server.

Every process is started on a loopback port the test picks and is stopped by the fixture
that started it, whatever the test's outcome.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "litellm"
SCENARIO = Path(__file__).resolve().parent / "apps" / "scenario.py"
MASTER_KEY = "sk-otel-bridge-tests-0123456789"
MODEL = "llama3.2:1b"
MOCK_ANSWER = "Hello from the mock model."


def proxy_python() -> Path:
    """The proxy tier's interpreter: a separate environment with langfuse 4.x and LiteLLM."""
    configured = os.environ.get("OTEL_BRIDGE_PROXY_PYTHON")
    path = Path(configured) if configured else REPO / ".venv-proxy" / "bin" / "python"
    if not path.exists():
        raise RuntimeError(
            f"proxy interpreter {path} not found: run `./dev test` (it builds .venv-proxy) "
            "or set OTEL_BRIDGE_PROXY_PYTHON"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mock_config(example: str = "langfuse.yaml", *, bridge: bool = True) -> dict[str, Any]:
    """A shipped example config with the model answered by LiteLLM's mock_response."""
    config = yaml.safe_load((EXAMPLES / example).read_text())
    for entry in config["model_list"]:
        entry["litellm_params"] = {
            "model": f"openai/{entry['model_name']}",
            "api_key": "unused",
            "mock_response": MOCK_ANSWER,
        }
    settings = config.setdefault("litellm_settings", {})
    if not bridge:
        settings["callbacks"] = [c for c in settings.get("callbacks", []) if "otel_bridge" not in c]
    return config


@dataclass
class ProxyProcess:
    """A real `litellm` proxy process on loopback."""

    config: Mapping[str, Any]
    env: Mapping[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"litellm-{self.port}.log"

    def start(self, timeout: float = 90.0) -> ProxyProcess:
        config_path = self.workdir / f"litellm-{self.port}.yaml"
        config_path.write_text(yaml.safe_dump(dict(self.config)))
        python = proxy_python()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE_"))},
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY": "False",
            "OTEL_SERVICE_NAME": "litellm-proxy",
            "LANGFUSE_FLUSH_INTERVAL": "1",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        litellm_cli = python.parent / "litellm"
        self.process = subprocess.Popen(
            [str(litellm_cli), "--config", str(config_path), "--host", "127.0.0.1",
             "--port", str(self.port), "--num_workers", "1"],
            env=env,
            cwd=self.workdir,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"litellm exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health/liveliness", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"litellm did not become ready in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def client_env(recorder_url: str, proxy_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE_", "SCENARIO_"))}
    env.update(
        LANGFUSE_PUBLIC_KEY="pk-lf-test",
        LANGFUSE_SECRET_KEY="sk-lf-test",
        LANGFUSE_BASE_URL=recorder_url,
        LANGFUSE_FLUSH_INTERVAL="0.2",
        OTEL_SERVICE_NAME="scenario-app",
        OTEL_BRIDGE_GATEWAYS=proxy_url,
        SCENARIO_BASE_URL=proxy_url,
        SCENARIO_API_KEY=MASTER_KEY,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_scenario(env: Mapping[str, str], *, launcher: bool = True, timeout: float = 180) -> list[dict[str, Any]]:
    """Run the scenario app in its own process; returns one record per `run-test` span."""
    bindir = Path(sys.executable).parent
    if launcher:
        env = {
            **env,
            "OTEL_PYTHON_DISTRO": "otel_bridge",
            "OTEL_PYTHON_CONFIGURATOR": "otel_bridge",
            "SCENARIO_INSTRUMENT": "launcher",
        }
        command = [str(bindir / "opentelemetry-instrument"), sys.executable, str(SCENARIO)]
    else:
        env = {**env, "SCENARIO_INSTRUMENT": "call"}
        command = [sys.executable, str(SCENARIO)]
    result = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"scenario failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


class CaptureServer:
    """A plain HTTP server on loopback that records request headers (a non-gateway origin)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, list[str]]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers: dict[str, list[str]] = {}
                for key, value in self.headers.items():
                    headers.setdefault(key.lower(), []).append(value)
                with lock:
                    outer.requests.append(headers)
                body = b"{}"
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/other"

    def __enter__(self) -> CaptureServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
