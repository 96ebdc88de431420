"""free_port() with DEMO_PORT_RANGE: how parallel test workers keep their children's ports apart."""

from __future__ import annotations

import os
import socket

import pytest

from otel_bridge.demo import _stack
from otel_bridge.demo._stack import PORT_RANGE_ENV, free_port, parse_port_range


@pytest.fixture
def port_range(monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Four ports of this worker's own range, nothing remembered from earlier picks."""
    low = int(os.environ[PORT_RANGE_ENV].split("-")[0])
    monkeypatch.setenv(PORT_RANGE_ENV, f"{low}-{low + 3}")
    monkeypatch.setattr(_stack, "_recently_picked", type(_stack._recently_picked)(maxlen=64))
    return low, low + 3


def test_picks_are_in_the_range_and_never_repeat_while_remembered(
    port_range: tuple[int, int],
) -> None:
    picks = [free_port() for _ in range(4)]
    assert sorted(picks) == list(range(port_range[0], port_range[1] + 1))
    with pytest.raises(RuntimeError, match="no free port left"):
        free_port()


def test_a_bound_port_is_skipped(port_range: tuple[int, int]) -> None:
    with socket.socket() as held, socket.socket() as held_too:
        held.bind(("127.0.0.1", port_range[0]))
        held_too.bind(("127.0.0.1", port_range[0] + 1))
        held_too.listen()
        picks = {free_port(), free_port()}
    assert picks == {port_range[0] + 2, port_range[0] + 3}


@pytest.mark.parametrize("spec", ["", "20000", "b-c", "30000-20000", "80-90", "60000-70000"])
def test_a_bad_range_says_what_is_expected(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORT_RANGE_ENV, spec)
    if not spec:  # unset or empty: the kernel picks (bind(0)), the demo's default
        assert 1024 <= free_port() <= 65535
        return
    with pytest.raises(ValueError, match=r"expected LOW-HIGH within 1024-65535"):
        free_port()


@pytest.mark.parametrize("given", [None, "21000-21998"])
def test_each_worker_gets_its_own_slice_below_the_ephemeral_ports(
    given: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import DEFAULT_PORTS, _worker_port_range

    if given is None:
        monkeypatch.delenv(PORT_RANGE_ENV)
    else:
        monkeypatch.setenv(PORT_RANGE_ENV, given)
    low, high = parse_port_range(given or DEFAULT_PORTS)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    slices = []
    for index in range(3):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{index}")
        first, last = parse_port_range(_worker_port_range())
        slices.append(range(first, last + 1))
    assert all(low <= s[0] and s[-1] <= high < 32768 for s in slices)
    assert len(set().union(*slices)) == sum(len(s) for s in slices) >= (high - low + 1) - 2
