from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from otel_bridge.recording_server import RecordedPrompt, RecordingServer

TEST_PROMPTS = [
    RecordedPrompt(
        name="test-prompt",
        version=1,
        type="chat",
        prompt=[{"role": "user", "content": "Say hello."}],
        labels=["production"],
    ),
    RecordedPrompt(
        name="second prompt+%",
        version=4,
        type="chat",
        prompt=[{"role": "user", "content": "Say goodbye."}],
        labels=["production"],
    ),
]


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingServer]:
    """Stands in for Langfuse v4 in its default write mode: reads go through the v2
    observations API; the v1 trace endpoint answers 404."""
    with RecordingServer(prompts=TEST_PROMPTS, write_mode="events_only") as server:
        yield server


@pytest.fixture(scope="module")
def legacy_recorder() -> Iterator[RecordingServer]:
    """Langfuse in the legacy write mode (v3's behaviour): reads go through the v1 trace."""
    with RecordingServer(prompts=TEST_PROMPTS, write_mode="legacy") as server:
        yield server
