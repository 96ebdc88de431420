"""``otel-bridge``: the demo and the trace verifier.

otel-bridge demo                      # everything local: proxy, mock model, recording server
otel-bridge verify --trace-id ID      # read a trace back from Langfuse and judge it
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from otel_bridge._verify import Verdict, render_tree, verify

_REPO = Path(__file__).resolve().parent.parent
_TRACE_LINE = re.compile(r"^trace ([0-9a-f]{32}):", re.MULTILINE)


def _langfuse_settings() -> tuple[str, str, str] | None:
    public, secret = os.environ.get("LANGFUSE_PUBLIC_KEY"), os.environ.get("LANGFUSE_SECRET_KEY")
    base = os.environ.get("LANGFUSE_BASE_URL") or os.environ.get("LANGFUSE_HOST")
    return (base, public, secret) if public and secret and base else None


def _proxy_python(explicit: str | None) -> Path:
    # Absolute, not resolved: a venv's python is a symlink, and the venv's scripts sit next to
    # it; the proxy runs from a temporary directory, so a relative path would not be found.
    candidate = Path(
        os.path.abspath(
            explicit
            or os.environ.get("OTEL_BRIDGE_PROXY_PYTHON")
            or _REPO / ".venv-proxy" / "bin" / "python"
        )
    )
    if not candidate.exists():
        raise SystemExit(
            f"otel-bridge demo: no proxy-tier Python at {candidate}. The gateway needs its own "
            "environment (LiteLLM's langfuse callback requires langfuse<5): run `./dev demo`, "
            "or pass --proxy-python / set OTEL_BRIDGE_PROXY_PYTHON."
        )
    return candidate


def _print_verdict(verdict: Verdict) -> None:
    print(f"\ntrace {verdict.trace_id}")
    print(render_tree(verdict.observations) or "(no observations)")
    print()
    for check in verdict.checks:
        print(f"  [{'ok' if check.ok else 'FAIL'}] {check.name}: {check.detail}")
    print(verdict.summary())


def _run_app(env: dict[str, str]) -> str:
    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    result = subprocess.run(
        [str(launcher), sys.executable, "-m", "otel_bridge.demo.app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    sys.stdout.write(result.stdout)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise SystemExit(f"otel-bridge demo: the app failed with exit code {result.returncode}")
    match = _TRACE_LINE.search(result.stdout)
    if match is None:
        raise SystemExit("otel-bridge demo: the app did not report its trace id")
    return match.group(1)


def demo(args: argparse.Namespace) -> int:
    from otel_bridge.demo._stack import MASTER_KEY, ProxyProcess, mock_config, scrubbed_environ
    from otel_bridge.recording_server import RecordedPrompt, RecordingServer

    real = None if args.local else _langfuse_settings()
    proxy_python = _proxy_python(args.proxy_python)
    with tempfile.TemporaryDirectory(prefix="otel-bridge-demo-") as workdir:
        recorder = None
        if real is None:
            recorder = RecordingServer(
                prompts=[
                    RecordedPrompt(
                        name="test-prompt",
                        version=1,
                        type="chat",
                        prompt=[{"role": "user", "content": "Say hello in one short sentence."}],
                        labels=["production"],
                    )
                ]
            ).start()
            base, public, secret = recorder.url, recorder.public_key, recorder.secret_key
            print(f"recording server (stands in for Langfuse) at {base}")
        else:
            base, public, secret = real
            print(f"sending to the Langfuse at {base}")
        try:
            proxy_env = {
                "LANGFUSE_PUBLIC_KEY": public,
                "LANGFUSE_SECRET_KEY": secret,
                "LANGFUSE_HOST": base,
            }
            print("starting the LiteLLM proxy (examples/litellm/langfuse.yaml, mock model) ...")
            with ProxyProcess(mock_config(), proxy_env, Path(workdir), proxy_python) as proxy:
                print(f"LiteLLM proxy with the bridge hook at {proxy.url}")
                app_env = {
                    **scrubbed_environ(),
                    "OTEL_PYTHON_DISTRO": "otel_bridge",
                    "OTEL_PYTHON_CONFIGURATOR": "otel_bridge",
                    "OTEL_BRIDGE_GATEWAYS": proxy.url,
                    "OTEL_SERVICE_NAME": "otel-bridge-demo-app",
                    "LANGFUSE_PUBLIC_KEY": public,
                    "LANGFUSE_SECRET_KEY": secret,
                    "LANGFUSE_BASE_URL": base,
                    "LITELLM_BASE_URL": proxy.url,
                    "LITELLM_API_KEY": MASTER_KEY,
                    "SEED_TEST_PROMPT": "false" if recorder else "true",
                }
                print("running the scenario under opentelemetry-instrument ...")
                trace_id = _run_app(app_env)
                # The proxy's Langfuse logger exports on its own schedule (every second).
                time.sleep(0.5)
                verdict = verify(base, public, secret, trace_id, wait=args.wait)
        finally:
            if recorder is not None:
                recorder.stop()
    _print_verdict(verdict)
    if real is not None:
        print(f"look at it in Langfuse: {base.rstrip('/')}/trace/{trace_id}")
    return 0 if verdict.ok else 1


def verify_command(args: argparse.Namespace) -> int:
    settings = _langfuse_settings()
    base = args.base_url or (settings[0] if settings else None)
    public = args.public_key or (settings[1] if settings else None)
    secret = args.secret_key or (settings[2] if settings else None)
    if not (base and public and secret):
        raise SystemExit(
            "otel-bridge verify: set LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY and "
            "LANGFUSE_SECRET_KEY (or pass --base-url/--public-key/--secret-key)"
        )
    verdict = verify(base, public, secret, args.trace_id, wait=args.wait)
    _print_verdict(verdict)
    return 0 if verdict.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="otel-bridge", description=__doc__.splitlines()[0] if __doc__ else None
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the scenario through a real LiteLLM proxy")
    demo_parser.add_argument(
        "--local", action="store_true", help="use the recording server even if LANGFUSE_* is set"
    )
    demo_parser.add_argument(
        "--proxy-python", help="Python of the proxy tier (default .venv-proxy/bin/python)"
    )
    demo_parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the trace to be complete"
    )
    demo_parser.set_defaults(func=demo)
    verify_parser = commands.add_parser(
        "verify", help="judge a trace read back from the Langfuse public API"
    )
    verify_parser.add_argument("--trace-id", required=True)
    verify_parser.add_argument("--base-url")
    verify_parser.add_argument("--public-key")
    verify_parser.add_argument("--secret-key")
    verify_parser.add_argument(
        "--wait", type=float, default=0.0, help="seconds to retry while ingestion catches up"
    )
    verify_parser.set_defaults(func=verify_command)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
