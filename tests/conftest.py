from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from otel_bridge.demo._stack import PORT_RANGE_ENV, parse_port_range
from otel_bridge.recording_server import RecordedPrompt, RecordingServer

# Child processes (proxies, collectors, Phoenix) get ports below Linux's ephemeral range
# (32768-60999), one slice per pytest-xdist worker when the suite runs on several
# (`./dev test -n 2 --dist loadfile`): no two workers may hand the same port to a child that is
# still starting up. A DEMO_PORT_RANGE already set is the range sliced; each worker inherits
# its controller's.
DEFAULT_PORTS = "20000-32767"


def _worker_port_range() -> str:
    low, high = parse_port_range(os.environ.get(PORT_RANGE_ENV) or DEFAULT_PORTS)
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    size = (high - low + 1) // count
    return f"{low + index * size}-{low + (index + 1) * size - 1}"


os.environ[PORT_RANGE_ENV] = _worker_port_range()

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
