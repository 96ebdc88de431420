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
    with RecordingServer(prompts=TEST_PROMPTS) as server:
        yield server
