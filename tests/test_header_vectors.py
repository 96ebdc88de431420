"""The Python codec against tests/vectors/baggage.json, the examples the Node client
(node/test/vectors.test.js) is checked against too: both tiers stay byte-compatible."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otel_bridge._config import parse_gateways
from otel_bridge._context import (
    PromptRef,
    format_baggage,
    parse_baggage,
    prompt_from_members,
    prompt_members,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent / "vectors" / "baggage.json").read_text(encoding="utf-8")
)


def _ids(group: str) -> list[str]:
    return [str(case.get("name", case.get("value"))) for case in VECTORS[group]]


@pytest.mark.parametrize("case", VECTORS["encode"], ids=_ids("encode"))
def test_encode(case: dict[str, Any]) -> None:
    assert format_baggage((k, v) for k, v in case["members"]) == case["header"]


@pytest.mark.parametrize("case", VECTORS["decode"], ids=_ids("decode"))
def test_decode(case: dict[str, Any]) -> None:
    members, _ = parse_baggage(case["header"])
    assert [list(m) for m in members] == case["members"]


@pytest.mark.parametrize("case", VECTORS["prompt_from_baggage"], ids=_ids("prompt_from_baggage"))
def test_prompt_from_baggage(case: dict[str, Any]) -> None:
    prompt, _ = prompt_from_members(parse_baggage(case["header"])[0])
    expected = case["prompt"]
    wanted = None if expected is None else PromptRef(expected["name"], expected["version"])
    assert prompt == wanted


@pytest.mark.parametrize("case", VECTORS["prompt_headers"])
def test_prompt_headers(case: dict[str, Any]) -> None:
    prompt = PromptRef(case["prompt"]["name"], case["prompt"]["version"])
    assert format_baggage(prompt_members(prompt)) == case["header"]
    # What one tier encodes, the other decodes to the same prompt.
    assert prompt_from_members(parse_baggage(case["header"])[0])[0] == prompt


@pytest.mark.parametrize("case", VECTORS["gateways"], ids=_ids("gateways"))
def test_gateways(case: dict[str, Any]) -> None:
    if case.get("error"):
        with pytest.raises(ValueError):
            parse_gateways(case["value"])
        return
    origins = sorted([o.scheme, o.host, o.port] for o in parse_gateways(case["value"]))
    assert origins == case["origins"]


def test_vectors_cover_the_contract() -> None:
    # Guards against an emptied file passing both suites vacuously.
    for group in ("encode", "decode", "prompt_from_baggage", "gateways"):
        assert len(VECTORS[group]) > 5, group
    assert any("%20" in case["header"] for case in VECTORS["encode"])
