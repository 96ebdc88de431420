"""``python -m otel_bridge.recording_server``: run the double as a child process."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, cast

from otel_bridge.recording_server._records import WRITE_MODES, WriteMode
from otel_bridge.recording_server._server import RecordingServer

__all__ = ["main"]


def _load_prompt_file(path: str) -> list[Mapping[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    prompts = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(prompts, list):
        raise SystemExit(f"{path}: expected a JSON list of prompts or {{'prompts': [...]}}")
    return prompts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; prints ``READY <url>`` once it accepts connections."""
    parser = argparse.ArgumentParser(
        prog="python -m otel_bridge.recording_server",
        description="A recording test double of Langfuse's public API (not Langfuse).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--public-key", default="pk-lf-test")
    parser.add_argument("--secret-key", default="sk-lf-test")
    parser.add_argument(
        "--prompt-file", help="JSON list of prompts (RecordedPrompt fields or the API's shape)"
    )
    parser.add_argument(
        "--write-mode",
        choices=WRITE_MODES,
        default="events_only",
        help="LANGFUSE_MIGRATION_V4_WRITE_MODE to behave like (default: events_only, v4's)",
    )
    parser.add_argument(
        "--ingestion-delay",
        type=float,
        default=0.0,
        help="seconds before an accepted export is readable through the read API",
    )
    args = parser.parse_args(argv)
    if args.ingestion_delay < 0:
        parser.error("--ingestion-delay must be >= 0")
    prompts = _load_prompt_file(args.prompt_file) if args.prompt_file else []
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = RecordingServer(
        args.public_key,
        args.secret_key,
        prompts,
        host=args.host,
        port=args.port,
        write_mode=cast(WriteMode, args.write_mode),
        ingestion_delay=args.ingestion_delay,
    )
    with server:
        print(f"READY {server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0
