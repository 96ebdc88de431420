"""``otel-bridge``: the demo, the trace verifier and the deployment check.

otel-bridge demo                      # everything local: proxy, model server, recording server
otel-bridge verify --trace-id ID      # read a trace back from Langfuse and judge it
otel-bridge check --gateway URL       # probe a running gateway as an instrumented app would
otel-bridge litellm-callback-file CONFIG   # the hook file LiteLLM < 1.94 loads next to config.yaml

Each subcommand is one ``add_<name>`` (its flags) and one ``<name>_command`` (what it does).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from otel_bridge._verify import LangfuseReader, PromptWanted, Verdict, render_tree, verify

_REPO = Path(__file__).resolve().parent.parent
_TRACE_LINE = re.compile(r"^trace ([0-9a-f]{32}):", re.MULTILINE)
_PROMPT_LINE = re.compile(r"^prompt (\S+) version (\d+)$", re.MULTILINE)
# LiteLLM exports its generation in its own batches, after the app's spans; self-hosted
# Langfuse ingests through a queue. A minute covers both with room to spare.
DEFAULT_WAIT = 60.0
DEMO_PROMPT_VERSION_ENV = "OTEL_BRIDGE_DEMO_PROMPT_VERSION"


def _langfuse_settings() -> tuple[str, str, str] | None:
    public, secret = os.environ.get("LANGFUSE_PUBLIC_KEY"), os.environ.get("LANGFUSE_SECRET_KEY")
    base = os.environ.get("LANGFUSE_BASE_URL") or os.environ.get("LANGFUSE_HOST")
    return (base, public, secret) if public and secret and base else None


def _reader_from(args: argparse.Namespace, command: str) -> LangfuseReader:
    settings = _langfuse_settings()
    base = args.base_url or (settings[0] if settings else None)
    public = args.public_key or (settings[1] if settings else None)
    secret = args.secret_key or (settings[2] if settings else None)
    if not (base and public and secret):
        raise SystemExit(
            f"otel-bridge {command}: set LANGFUSE_BASE_URL, LANGFUSE_PUBLIC_KEY and "
            "LANGFUSE_SECRET_KEY (or pass --base-url/--public-key/--secret-key)"
        )
    return LangfuseReader(base, public, secret)


def _add_langfuse_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", help="Langfuse host (default LANGFUSE_BASE_URL/HOST)")
    parser.add_argument("--public-key", help="default LANGFUSE_PUBLIC_KEY")
    parser.add_argument("--secret-key", help="default LANGFUSE_SECRET_KEY")


def _add_wait_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT,
        help=f"seconds to wait for the complete trace (default {DEFAULT_WAIT:.0f})",
    )


def _announce_wait(trace_id: str, base_url: str, wait: float) -> None:
    until = (datetime.now(UTC) + timedelta(seconds=wait)).strftime("%H:%M:%S UTC")
    print(
        f"reading trace {trace_id} from Langfuse at {base_url}; waiting up to {wait:.0f}s "
        f"(until {until}) for the gateway's generation",
        flush=True,
    )


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


def _run_app(
    env: dict[str, str], command: list[str] | None = None
) -> tuple[str, PromptWanted | None]:
    """Run the demo app (``command``, default the Python one); its trace id and prompt."""
    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    result = subprocess.run(
        command or [str(launcher), sys.executable, "-m", "otel_bridge.demo.app"],
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
    prompt = _PROMPT_LINE.search(result.stdout)
    used = PromptWanted(prompt.group(1), int(prompt.group(2))) if prompt else None
    return match.group(1), used


def add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("demo", help="run the scenario through a real LiteLLM proxy")
    parser.add_argument(
        "--local", action="store_true", help="use the recording server even if LANGFUSE_* is set"
    )
    parser.add_argument(
        "--proxy-python", help="Python of the proxy tier (default .venv-proxy/bin/python)"
    )
    parser.add_argument(
        "--prompt-version",
        type=int,
        help="the version of 'test-prompt' the app uses (default: the production one); a "
        "version the project lacks shows how a missing prompt is reported",
    )
    parser.add_argument(
        "--node",
        action="store_true",
        help="run the scenario from a Node app (node/demo/app.mjs, @otel-bridge/node)",
    )
    _add_wait_flag(parser)
    parser.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from otel_bridge.demo._stack import (
        MASTER_KEY,
        ProxyProcess,
        scrubbed_environ,
        upstream_config,
    )
    from otel_bridge.demo._upstream import UpstreamServer
    from otel_bridge.recording_server import RecordedPrompt, RecordingServer

    real = None if args.local else _langfuse_settings()
    proxy_python = _proxy_python(args.proxy_python)
    with (
        tempfile.TemporaryDirectory(prefix="otel-bridge-demo-") as workdir,
        UpstreamServer() as upstream,
    ):
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
            print(
                "starting the LiteLLM proxy (examples/litellm/langfuse.yaml; the model is a "
                f"loopback OpenAI-compatible server at {upstream.url}) ..."
            )
            config = upstream_config(upstream.api_base)
            with ProxyProcess(config, proxy_env, Path(workdir), proxy_python) as proxy:
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
                if args.prompt_version is not None:
                    app_env[DEMO_PROMPT_VERSION_ENV] = str(args.prompt_version)
                if args.node:
                    from otel_bridge.demo._node import node_app_command, node_app_env

                    command = node_app_command()
                    print("running the scenario from Node, under its register entry ...")
                    trace_id, prompt = _run_app(node_app_env(app_env), command)
                else:
                    print("running the scenario under opentelemetry-instrument ...")
                    trace_id, prompt = _run_app(app_env)
                # The proxy exports its generation on its own schedule: poll for it.
                reader = LangfuseReader(base, public, secret)
                _announce_wait(trace_id, base, args.wait)
                verdict = verify(reader, trace_id, wait=args.wait, expected_prompt=prompt)
        finally:
            if recorder is not None:
                recorder.stop()
    _print_verdict(verdict)
    if real is not None:
        print(f"look at it in Langfuse: {base.rstrip('/')}/trace/{trace_id}")
    return 0 if verdict.ok else 1


def add_verify(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "verify", help="judge a trace read back from the Langfuse public API"
    )
    parser.add_argument("--trace-id", required=True)
    parser.add_argument(
        "--prompt",
        help="NAME[:VERSION] the app linked, so a missing prompt is named even where Langfuse "
        "drops the link (v3, legacy write mode)",
    )
    _add_langfuse_flags(parser)
    _add_wait_flag(parser)
    parser.set_defaults(func=verify_command)


def verify_command(args: argparse.Namespace) -> int:
    from otel_bridge._check import CheckError, parse_prompt

    reader = _reader_from(args, "verify")
    try:
        expected = parse_prompt(args.prompt) if args.prompt else None
    except CheckError as exc:
        raise SystemExit(f"otel-bridge verify: {exc}") from None
    _announce_wait(args.trace_id, reader.base_url, args.wait)
    verdict = verify(reader, args.trace_id, wait=args.wait, expected_prompt=expected)
    _print_verdict(verdict)
    return 0 if verdict.ok else 1


def add_check(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check",
        help="send one traced call through a running gateway and say what breaks the trace",
    )
    parser.add_argument("--gateway", required=True, help="the LiteLLM proxy's base URL")
    parser.add_argument(
        "--api-key", help="LiteLLM key for the gateway (default LITELLM_API_KEY, OPENAI_API_KEY)"
    )
    parser.add_argument("--model", help="a model the gateway serves (default LITELLM_MODEL)")
    parser.add_argument(
        "--prompt",
        required=True,
        help="NAME[:VERSION] of a Langfuse prompt to link (default version: production)",
    )
    parser.add_argument(
        "--export-filter",
        help="module:function, the should_export_span your app builds its Langfuse client with "
        "(default: the bridge builds the client)",
    )
    _add_langfuse_flags(parser)
    _add_wait_flag(parser)
    parser.set_defaults(func=check_command)


def check_command(args: argparse.Namespace) -> int:
    from otel_bridge._check import CheckError, check, env_default, parse_prompt

    reader = _reader_from(args, "check")
    api_key = args.api_key or env_default("LITELLM_API_KEY", "OPENAI_API_KEY")
    model = args.model or env_default("LITELLM_MODEL")
    if not api_key or not model:
        raise SystemExit(
            "otel-bridge check: pass --api-key (or set LITELLM_API_KEY/OPENAI_API_KEY) and "
            "--model (or set LITELLM_MODEL): the key and a model name the gateway accepts"
        )
    try:
        prompt = parse_prompt(args.prompt)
    except CheckError as exc:
        raise SystemExit(f"otel-bridge check: {exc}") from None
    return check(
        gateway=args.gateway.rstrip("/"),
        api_key=api_key,
        model=model,
        prompt=prompt,
        reader=reader,
        wait=args.wait,
        export_filter=args.export_filter,
    )


def add_litellm_callback_file(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    parser = commands.add_parser(
        "litellm-callback-file",
        help="write otel_bridge_callback.py next to the proxy's config.yaml (LiteLLM < 1.94)",
    )
    parser.add_argument("config", help="path of the LiteLLM proxy's config.yaml")
    parser.add_argument("--print", action="store_true", help="print the file, write nothing")
    parser.set_defaults(func=litellm_callback_file_command)


def litellm_callback_file_command(args: argparse.Namespace) -> int:
    from otel_bridge._litellm_compat import callback_file_command

    return callback_file_command(args.config, print_only=args.print)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="otel-bridge", description=__doc__.splitlines()[0] if __doc__ else None
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_demo(commands)
    add_verify(commands)
    add_check(commands)
    add_litellm_callback_file(commands)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
