"""The W3C codec: every rule the bridge applies to traceparent and baggage."""

from __future__ import annotations

import pytest
from opentelemetry import baggage as otel_baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context

from otel_bridge import BridgeContext, PromptRef, Rejection, SpanRef, decode_headers, encode_headers
from otel_bridge._context import (
    MAX_BAGGAGE_BYTES,
    MAX_BAGGAGE_MEMBERS,
    format_baggage,
    parse_baggage,
    parse_traceparent,
    prompt_from_members,
)

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-{SPAN}-01", SpanRef(TRACE, SPAN, sampled=True)),
        (f"00-{TRACE}-{SPAN}-00", SpanRef(TRACE, SPAN, sampled=False)),
        (f"  00-{TRACE}-{SPAN}-03\t", SpanRef(TRACE, SPAN, sampled=True)),
        # A higher version is parsed for its first four fields; more may follow after "-".
        (f"01-{TRACE}-{SPAN}-01", SpanRef(TRACE, SPAN, sampled=True)),
        (f"cc-{TRACE}-{SPAN}-01-what-the-future-holds", SpanRef(TRACE, SPAN, sampled=True)),
    ],
)
def test_valid_traceparent(header: str, expected: SpanRef) -> None:
    assert parse_traceparent(header) == (expected, None)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (f"ff-{TRACE}-{SPAN}-01", Rejection.TRACEPARENT_VERSION_FF),
        (f"00-{'0' * 32}-{SPAN}-01", Rejection.TRACEPARENT_INVALID_ID),
        (f"00-{TRACE}-{'0' * 16}-01", Rejection.TRACEPARENT_INVALID_ID),
        (f"00-{TRACE.upper()}-{SPAN}-01", Rejection.TRACEPARENT_MALFORMED),
        (f"00-{TRACE}-{SPAN}-01-extra", Rejection.TRACEPARENT_MALFORMED),
        (f"01-{TRACE}-{SPAN}-01x", Rejection.TRACEPARENT_MALFORMED),
        (f"00-{TRACE[:-1]}-{SPAN}-01", Rejection.TRACEPARENT_MALFORMED),
        ("garbage", Rejection.TRACEPARENT_MALFORMED),
        ([f"00-{TRACE}-{SPAN}-01", f"00-{TRACE}-{SPAN}-01"], Rejection.TRACEPARENT_REPEATED),
    ],
)
def test_invalid_traceparent_is_ignored(header: str | list[str], reason: Rejection) -> None:
    assert parse_traceparent(header) == (None, reason)


def test_absent_traceparent_is_not_a_rejection() -> None:
    assert parse_traceparent(None) == (None, None)
    assert parse_traceparent("") == (None, None)


def test_baggage_members_properties_and_whitespace() -> None:
    members, rejections = parse_baggage("a=1 , b = 2;prop=x;flag,  ,c=%20x%2By+z")
    assert members == [("a", "1"), ("b", "2"), ("c", " x+y z")]
    assert rejections == []


def test_malformed_members_are_dropped_one_by_one() -> None:
    members, rejections = parse_baggage('ok=1,no-equals,bad key=2,q="x",after=3')
    assert members == [("ok", "1"), ("after", "3")]
    assert rejections == [Rejection.BAGGAGE_MEMBER_MALFORMED] * 3


def test_several_headers_are_one_list() -> None:
    members, _ = parse_baggage(["a=1", "b=2,c=3"])
    assert members == [("a", "1"), ("b", "2"), ("c", "3")]


def test_member_limit_drops_whole_members() -> None:
    header = ",".join(f"k{i}=v" for i in range(MAX_BAGGAGE_MEMBERS + 10))
    members, rejections = parse_baggage(header)
    assert len(members) == MAX_BAGGAGE_MEMBERS
    assert members[-1] == (f"k{MAX_BAGGAGE_MEMBERS - 1}", "v")
    assert rejections == [Rejection.BAGGAGE_OVER_LIMIT]


def test_byte_limit_never_cuts_a_member() -> None:
    big = "x" * 3000
    header = f"a={big},b={big},c={big},d=small"
    members, rejections = parse_baggage(header)
    assert [key for key, _ in members] == ["a", "b"]
    assert all(value == big for _, value in members)
    assert rejections == [Rejection.BAGGAGE_OVER_LIMIT]


def test_format_respects_limits_and_keeps_members_whole() -> None:
    value = "y" * 1000
    header = format_baggage((f"k{i}", value) for i in range(20))
    assert len(header.encode()) <= MAX_BAGGAGE_BYTES
    assert all(part.endswith(value) for part in header.split(","))
    assert len(format_baggage((f"k{i}", "v") for i in range(100)).split(",")) == MAX_BAGGAGE_MEMBERS


@pytest.mark.parametrize(
    "name",
    ["test-prompt", "with space", "plus+sign", "100% =ok", "ünïcødé 名前", " lead", "a/b,c;d"],
)
def test_prompt_names_round_trip(name: str) -> None:
    ctx = BridgeContext(prompt=PromptRef(name, 7))
    assert decode_headers(encode_headers(ctx)).prompt == PromptRef(name, 7)


@pytest.mark.parametrize("name", ["with space", "plus+sign", "100% =ok", "ünïcødé"])
def test_prompt_names_from_opentelemetry_python_propagator(name: str) -> None:
    # OTel Python encodes a space as "+" (quote_plus); the bridge must read that the same way.
    carrier: dict[str, str] = {}
    ctx = otel_baggage.set_baggage("langfuse_prompt_name", name, Context())
    ctx = otel_baggage.set_baggage("langfuse_prompt_version", "2", ctx)
    W3CBaggagePropagator().inject(carrier, ctx)
    assert decode_headers(carrier).prompt == PromptRef(name, 2)


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("langfuse_prompt_name", "p")], Rejection.PROMPT_INCOMPLETE),
        ([("langfuse_prompt_version", "1")], Rejection.PROMPT_INCOMPLETE),
        (
            [("langfuse_prompt_name", "p"), ("langfuse_prompt_version", "0")],
            Rejection.PROMPT_VERSION_INVALID,
        ),
        (
            [("langfuse_prompt_name", "p"), ("langfuse_prompt_version", "-1")],
            Rejection.PROMPT_VERSION_INVALID,
        ),
        (
            [("langfuse_prompt_name", "p"), ("langfuse_prompt_version", "+1")],
            Rejection.PROMPT_VERSION_INVALID,
        ),
        (
            [("langfuse_prompt_name", "p"), ("langfuse_prompt_version", "01")],
            Rejection.PROMPT_VERSION_INVALID,
        ),
        (
            [("langfuse_prompt_name", "p"), ("langfuse_prompt_version", "1.5")],
            Rejection.PROMPT_VERSION_INVALID,
        ),
        (
            [("langfuse_prompt_name", "p"), ("langfuse_prompt_version", "2147483648")],
            Rejection.PROMPT_VERSION_INVALID,
        ),
        (
            [("langfuse_prompt_name", "p"), ("langfuse_prompt_version", "\u0661")],
            Rejection.PROMPT_VERSION_INVALID,
        ),
        (
            [("langfuse_prompt_name", ""), ("langfuse_prompt_version", "1")],
            Rejection.PROMPT_NAME_INVALID,
        ),
        (
            [("langfuse_prompt_name", "a\nb"), ("langfuse_prompt_version", "1")],
            Rejection.PROMPT_NAME_INVALID,
        ),
        (
            [("langfuse_prompt_name", "x" * 201), ("langfuse_prompt_version", "1")],
            Rejection.PROMPT_NAME_INVALID,
        ),
        (
            [
                ("langfuse_prompt_name", "a"),
                ("langfuse_prompt_name", "b"),
                ("langfuse_prompt_version", "1"),
            ],
            Rejection.PROMPT_CONFLICTING,
        ),
    ],
)
def test_invalid_prompts_are_rejected(members: list[tuple[str, str]], reason: Rejection) -> None:
    assert prompt_from_members(members) == (None, reason)


def test_max_version_and_agreeing_duplicates_are_accepted() -> None:
    members = [("langfuse_prompt_name", "p"), ("langfuse_prompt_version", "2147483647")] * 2
    assert prompt_from_members(members) == (PromptRef("p", 2147483647), None)


def test_decode_headers_is_case_insensitive_and_collects_reasons() -> None:
    ctx = decode_headers(
        {
            "TraceParent": f"ff-{TRACE}-{SPAN}-01",
            "Baggage": "langfuse_prompt_name=p,langfuse_prompt_version=x,other=1",
        }
    )
    assert not ctx
    assert ctx.rejections == (Rejection.TRACEPARENT_VERSION_FF, Rejection.PROMPT_VERSION_INVALID)


def test_prompt_ref_from_prompt_like_values() -> None:
    class FakeClient:
        name = "n"
        version = 3
        is_fallback = False

    assert PromptRef.from_prompt(FakeClient()) == PromptRef("n", 3)
    assert PromptRef.from_prompt({"name": "n", "version": 3}) == PromptRef("n", 3)
    with pytest.raises(ValueError, match="fallback"):
        PromptRef.from_prompt({"name": "n", "version": 3, "is_fallback": True})
    with pytest.raises(ValueError, match="integer"):
        PromptRef.from_prompt({"name": "n", "version": "3"})
    with pytest.raises(ValueError, match="version"):
        PromptRef("n", True)
