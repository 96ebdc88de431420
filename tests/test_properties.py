"""Property tests: the W3C codec and the proxy hook under arbitrary, hostile header values.

Every generated header is compared with the reference model in ``hostile_headers`` (written
from the W3C specifications, independently of the package's regular expressions). The proxy
hook is ``LiteLLMBridge().bridge_request``, fed dicts shaped like LiteLLM's request data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from bridge_loader import call_bridge, make_bridge
from hostile_headers import (
    HOSTILE_VERSIONS,
    MAX_BYTES,
    MAX_MEMBERS,
    MAX_VERSION,
    PROMPT_NAME_KEY,
    PROMPT_VERSION_KEY,
    SPECIAL_NAMES,
    TCHAR,
    TRACEPARENT_SHAPES,
    VALID_SPAN,
    VALID_TRACE,
    is_subsequence,
    matched_indexes,
    ref_baggage,
    ref_name_ok,
    ref_prompt,
    ref_traceparent,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage as otel_baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context

from otel_bridge import BridgeContext, PromptRef, Rejection, SpanRef, decode_headers, encode_headers
from otel_bridge._context import parse_baggage, parse_traceparent

SETTINGS = settings(
    database=None,  # nothing written into the checkout
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TRACE_KEY_RE = re.compile(r"[0-9a-f]{32}")
SPAN_KEY_RE = re.compile(r"[0-9a-f]{16}")
BRIDGE_KEYS = {"existing_trace_id", "parent_observation_id", "prompt"}
STEERING = ("existing_trace_id", "parent_observation_id")


def bridge_request(data: Any) -> None:
    call_bridge(make_bridge(), data)


# ----------------------------------------------------------------------------- strategies

HEX = "0123456789abcdef"


def hexes(n: int) -> st.SearchStrategy[str]:
    return st.text(HEX, min_size=n, max_size=n)


# Random bytes decoded leniently, as a server might hand them over.
lenient_text = st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60).map(lambda b: b.decode("latin-1")),
    st.binary(max_size=60).map(lambda b: b.decode("utf-8", "replace")),
    st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
ows = st.sampled_from(["", "", "", " ", "\t", " \t "])

structured_traceparent = st.builds(
    lambda lead, v, t, s, f, tail, trail: f"{lead}{v}-{t}-{s}-{f}{tail}{trail}",
    ows,
    st.one_of(
        st.sampled_from(["00", "00", "00", "01", "cc", "fe", "ff", "FF", "0A", "0"]),
        hexes(2),
        st.text(max_size=3),
    ),
    st.one_of(
        hexes(32), hexes(32), st.just("0" * 32), hexes(32).map(str.upper), st.text(HEX, max_size=34)
    ),
    st.one_of(
        hexes(16), hexes(16), st.just("0" * 16), hexes(16).map(str.upper), st.text(HEX, max_size=18)
    ),
    st.one_of(st.sampled_from(["00", "01", "01", "03", "ff", "FF"]), hexes(2), st.text(max_size=3)),
    st.one_of(
        st.just(""), st.just(""), st.just(""), st.text(max_size=12).map(lambda x: "-" + x),
        st.text(max_size=6),
    ),
    ows,
)  # fmt: skip
huge_traceparent = st.builds(
    lambda base, n, ch: base + ch * n,
    st.sampled_from(
        [f"01-{VALID_TRACE}-{VALID_SPAN}-01-", f"00-{VALID_TRACE}-{VALID_SPAN}-01", ""]
    ),
    st.integers(0, 20_000),
    st.sampled_from(["a", "-", " ", ",", "é", "\x00"]),
)
well_formed_traceparent = st.builds(
    lambda v, t, s, f: f"{v}-{t}-{s}-{f}",
    st.sampled_from(["00", "00", "00", "01", "fe"]),
    hexes(32),
    hexes(16),
    st.sampled_from(["00", "01", "01", "03"]),
)
traceparent_value = st.one_of(
    well_formed_traceparent,
    structured_traceparent,
    st.sampled_from(TRACEPARENT_SHAPES),
    lenient_text,
    huge_traceparent,
)
traceparent_header = st.one_of(
    traceparent_value, traceparent_value, st.lists(traceparent_value, max_size=3)
)

_ENCODERS: list[Callable[[str], str]] = [
    lambda v: quote(v, safe=""),
    quote_plus,
    lambda v: v.replace(" ", "%20"),
    lambda v: v,
    lambda v: quote(v, safe="+=%"),
]
name_values = st.one_of(
    st.sampled_from(SPECIAL_NAMES), st.text(max_size=30), st.text(min_size=195, max_size=205)
)
version_values = st.one_of(
    st.sampled_from([*HOSTILE_VERSIONS, "1", "2", "42", str(MAX_VERSION)]),
    st.integers(-10, 2**32).map(str),
    st.text(max_size=5),
)
baggage_keys = st.one_of(
    st.sampled_from(
        [PROMPT_NAME_KEY, PROMPT_VERSION_KEY, "langfuse_user_id", "k", "litellm.metadata.spoofed",
         "Langfuse_prompt_name"]
    ),
    st.text(alphabet=sorted(TCHAR), min_size=1, max_size=12),
    st.text(max_size=6),
)  # fmt: skip
properties = st.sampled_from(["", "", "", ";p", ";p=1", ";a=b;c", "; x = y ", ";=;;"])


def member(keys: st.SearchStrategy[str], values: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda k, o1, o2, enc, v, o3, prop: f"{k}{o1}={o2}{enc(v)}{o3}{prop}",
        keys, ows, ows, st.sampled_from(_ENCODERS), values, ows, properties,
    )  # fmt: skip


baggage_member = st.one_of(
    member(st.just(PROMPT_NAME_KEY), name_values),
    member(st.just(PROMPT_VERSION_KEY), version_values),
    member(baggage_keys, st.text(max_size=20)),
    lenient_text,
)


@st.composite
def big_baggage(draw: st.DrawFn) -> str:
    """Many or large members, with the prompt members somewhere among them."""
    count = draw(st.integers(0, 100))
    size = draw(st.integers(1, 400))
    members = [f"f{i}={'v' * size}" for i in range(count)]
    position = draw(st.integers(0, count))
    prompt = [f"{PROMPT_NAME_KEY}=p{quote(draw(name_values), safe='')}", f"{PROMPT_VERSION_KEY}=5"]
    members[position:position] = prompt
    return ",".join(members)


@st.composite
def prompt_among_noise(draw: st.DrawFn) -> str:
    """A prompt name and version (possibly hostile), among other members, in any order."""
    members = draw(st.lists(baggage_member, max_size=6))
    for prompt_member in (
        draw(member(st.just(PROMPT_NAME_KEY), name_values)),
        draw(member(st.just(PROMPT_VERSION_KEY), version_values)),
    ):
        members.insert(draw(st.integers(0, len(members))), prompt_member)
    return draw(st.sampled_from([",", ", ", " ,\t"])).join(members)


baggage_value = st.one_of(
    prompt_among_noise(),
    st.lists(baggage_member, max_size=12).map(",".join),
    st.lists(baggage_member, max_size=12).map(", ".join),
    big_baggage(),
)
baggage_header = st.one_of(baggage_value, baggage_value, st.lists(baggage_value, max_size=3))


@st.composite
def header_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Headers as LiteLLM hands them over: str keys in any case, str (or list) values."""
    headers: dict[str, Any] = {}
    if draw(st.booleans()):
        headers[draw(st.sampled_from(["traceparent", "Traceparent", "TRACEPARENT"]))] = draw(
            traceparent_header
        )
    if draw(st.booleans()):
        headers[draw(st.sampled_from(["baggage", "Baggage", "BAGGAGE"]))] = draw(baggage_header)
    if draw(st.booleans()):
        headers["tracestate"] = draw(st.one_of(lenient_text, st.lists(lenient_text, max_size=3)))
    if draw(st.booleans()):
        headers[draw(st.text(max_size=8))] = draw(lenient_text)
    return headers


junk = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.binary(max_size=20),
    st.booleans(),
    st.lists(
        st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5)), max_size=3
    ),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    st.tuples(st.text(max_size=3)),
)


@st.composite
def junk_header_dicts(draw: st.DrawFn) -> dict[Any, Any]:
    """Headers with any value type (and any key type) next to well-formed ones."""
    headers: dict[Any, Any] = draw(header_dicts())
    for name in draw(
        st.lists(st.sampled_from(["traceparent", "baggage", "Baggage", "tracestate"]))
    ):
        headers[name] = draw(junk)
    for key in draw(
        st.lists(st.one_of(st.integers(), st.none(), st.binary(max_size=4)), max_size=2)
    ):
        headers[key] = draw(st.one_of(junk, lenient_text))
    return headers


@st.composite
def caller_metadata(draw: st.DrawFn, *, none_values: bool) -> dict[str, Any]:
    """Metadata a caller may send; ``none_values`` allows explicit nulls for the steering keys."""
    metadata: dict[str, Any] = {}
    if draw(st.booleans()):
        metadata["generation_name"] = draw(st.text(max_size=10))
    if draw(st.integers(0, 3)) == 0:
        metadata["trace_id"] = draw(st.sampled_from([VALID_TRACE, "f" * 32, "caller-trace"]))
    for key in (*STEERING, "prompt"):
        if draw(st.integers(0, 4)) == 0:
            choices = [None, "caller-value"] if none_values else ["caller-value"]
            metadata[key] = draw(st.sampled_from(choices))
    return metadata


class _LoggingObj:
    def __init__(self, params: object) -> None:
        self.litellm_params = params


@st.composite
def junk_data(draw: st.DrawFn) -> dict[str, Any]:
    """LiteLLM-shaped request data, with junk wherever a type could be wrong."""
    data: dict[str, Any] = {}
    headers = draw(st.one_of(junk_header_dicts(), header_dicts(), junk, lenient_text))
    shape = draw(st.sampled_from(["request", "request", "metadata", "junk", "missing"]))
    if shape == "request":
        data["proxy_server_request"] = {"headers": headers}
    elif shape == "junk":
        data["proxy_server_request"] = draw(junk)
    metadata = draw(st.one_of(caller_metadata(none_values=True), junk))
    if shape == "metadata" and isinstance(metadata, dict):
        metadata["headers"] = headers
    data["metadata"] = metadata
    if draw(st.booleans()):
        data["litellm_metadata"] = draw(st.one_of(caller_metadata(none_values=True), junk))
    if draw(st.booleans()):
        params = draw(st.one_of(st.just({"metadata": {}}), st.just({"metadata": None}), junk))
        data["litellm_logging_obj"] = _LoggingObj(params)
    return data


# ----------------------------------------------------------------------------- helpers


def header_value(headers: Mapping[str, Any], name: str) -> Any:
    found = [v for k, v in headers.items() if isinstance(k, str) and k.lower() == name]
    return found[-1] if found else None


def expected_prompt(headers: Mapping[str, Any]) -> tuple[str, int] | str | None:
    """The reference prompt, or "limits" when the baggage is over what must be propagated."""
    bag = ref_baggage(header_value(headers, "baggage"))
    return ref_prompt(bag.members) if bag.within_limits else "limits"


def check_bridge_output(
    before: Mapping[str, Any], after: Mapping[str, Any], headers: Mapping[str, Any]
) -> None:
    """What the hook may write into one metadata dict, whatever the input."""
    # Written by the bridge: keys the caller did not set, or set to None ("not set").
    added = {k for k in after if (k not in before or before[k] is None) and after[k] is not None}
    assert added <= BRIDGE_KEYS, added
    for key, value in before.items():  # never overrides a value the caller gave
        if value is None and key in added:
            continue
        assert after[key] is value or after[key] == value, key
    if "existing_trace_id" in added:
        trace = after["existing_trace_id"]
        assert isinstance(trace, str) and TRACE_KEY_RE.fullmatch(trace), trace
        assert trace != "0" * 32
    if "parent_observation_id" in added:
        span = after["parent_observation_id"]
        assert isinstance(span, str) and SPAN_KEY_RE.fullmatch(span), span
        assert span != "0" * 16
    if added & set(STEERING):
        parent = ref_traceparent(header_value(headers, "traceparent"))
        assert parent is not None and parent.sampled, (headers, after)
        # Both halves of the pair, pointing at the caller's span: never half of one.
        assert (after.get("existing_trace_id"), after.get("parent_observation_id")) == (
            parent.trace_id,
            parent.span_id,
        ), f"half a trace link written: {dict(after)} from {before}"
    if "prompt" in added:
        prompt = after["prompt"]
        assert isinstance(prompt, dict) and set(prompt) == {"name", "version", "prompt"}
        assert ref_name_ok(prompt["name"])
        assert type(prompt["version"]) is int and 1 <= prompt["version"] <= MAX_VERSION
        wanted = expected_prompt(headers)
        if wanted != "limits":
            assert (prompt["name"], prompt["version"]) == wanted


# ----------------------------------------------------------------------------- properties


@SETTINGS
@given(data=junk_data())
@example(data={"proxy_server_request": {"headers": {"baggage": None}}, "metadata": {}})
@example(data={"proxy_server_request": {"headers": {"traceparent": 1}}, "metadata": {}})
@example(data={"proxy_server_request": {"headers": {"baggage": [b"k=v"]}}, "metadata": None})
def test_bridge_request_never_raises(data: dict[str, Any]) -> None:
    """Whatever LiteLLM (or a caller) puts in the request, the hook itself does not raise.

    ``async_pre_call_hook`` catches what ``bridge_request`` raises, but then the whole context
    is lost and the operator sees ``internal_error`` instead of the real reason.
    """
    bridge_request(data)


@SETTINGS
@given(
    headers=header_dicts(),
    metadata=caller_metadata(none_values=False),
)
@example(
    headers={
        "traceparent": f"00-{VALID_TRACE}-{VALID_SPAN}-01",
        "baggage": f"{PROMPT_NAME_KEY}=a%20b+c%2B%25%3D,{PROMPT_VERSION_KEY}=7",
    },
    metadata={},
)
def test_bridge_request_matches_the_reference_model(
    headers: dict[str, Any], metadata: dict[str, Any]
) -> None:
    before = dict(metadata)
    data = {"proxy_server_request": {"headers": headers}, "metadata": metadata}
    bridge_request(data)
    after = data["metadata"]
    check_bridge_output(before, after, headers)

    parent = ref_traceparent(header_value(headers, "traceparent"))
    steered = any(before.get(k) is not None for k in STEERING)
    other_trace = before.get("trace_id") not in (None, parent and parent.trace_id)
    if parent is not None and parent.sampled and not steered and not other_trace:
        assert (after.get("existing_trace_id"), after.get("parent_observation_id")) == (
            parent.trace_id,
            parent.span_id,
        )
    else:
        assert not (set(after) - set(before)) & set(STEERING)
    wanted = expected_prompt(headers)
    if wanted not in (None, "limits") and before.get("prompt") is None:
        assert after.get("prompt") == {"name": wanted[0], "version": wanted[1], "prompt": []}
    if wanted is None:
        assert "prompt" not in set(after) - set(before)


@SETTINGS
@given(
    headers=header_dicts(),
    metadata=caller_metadata(none_values=True),
    litellm_metadata=st.one_of(st.none(), caller_metadata(none_values=True)),
)
@example(
    headers={"traceparent": f"00-{VALID_TRACE}-{VALID_SPAN}-01"},
    metadata={"existing_trace_id": None},
    litellm_metadata=None,
)
def test_bridge_never_writes_half_a_trace_link(
    headers: dict[str, Any], metadata: dict[str, Any], litellm_metadata: dict[str, Any] | None
) -> None:
    """Callers that send ``"existing_trace_id": null`` (or only one half) get a whole link or none.

    LiteLLM's Langfuse logger starts a fresh trace when ``existing_trace_id`` is missing or
    null, and still uses ``parent_observation_id``: half a link is a generation parented to a
    span of another trace.
    """
    data: dict[str, Any] = {"proxy_server_request": {"headers": headers}, "metadata": metadata}
    targets = [("metadata", dict(metadata))]
    if litellm_metadata is not None:
        data["litellm_metadata"] = litellm_metadata
        targets.append(("litellm_metadata", dict(litellm_metadata)))
    bridge_request(data)
    for field, before in targets:
        check_bridge_output(before, data[field], headers)


@SETTINGS
@given(values=traceparent_header)
@example(values=f"00-{VALID_TRACE}-{VALID_SPAN}-01")
@example(values=f"ff-{VALID_TRACE}-{VALID_SPAN}-01")
@example(values=f"fe-{VALID_TRACE}-{VALID_SPAN}-01-anything")
@example(values=f"fe-{VALID_TRACE}-{VALID_SPAN}-01anything")
@example(values=f"\t00-{VALID_TRACE}-{VALID_SPAN}-00 ")
def test_traceparent_follows_w3c(values: Any) -> None:
    parent, rejection = parse_traceparent(values)
    ref = ref_traceparent(values)
    if ref is None:
        assert parent is None
        blank = isinstance(values, str) and not values.strip(" \t")
        absent = isinstance(values, list) and (
            len(values) == 0 or (len(values) == 1 and not values[0].strip(" \t"))
        )
        if not blank and not absent:
            assert isinstance(rejection, Rejection) and rejection.value.startswith("traceparent_")
    else:
        assert parent == SpanRef(ref.trace_id, ref.span_id, ref.sampled)
        assert rejection is None


@SETTINGS
@given(values=baggage_header)
def test_baggage_drops_whole_members_only(values: Any) -> None:
    members, rejections = parse_baggage(values)
    ref = ref_baggage(values)
    # Every decoded member is one that was sent, whole, in order.
    assert is_subsequence(members, ref.members), (members, ref.members)
    assert len(members) <= MAX_MEMBERS
    if ref.within_limits:
        # What a W3C platform MUST propagate is never dropped.
        assert members == ref.members
        assert Rejection.BAGGAGE_OVER_LIMIT not in rejections
    else:
        # What was kept fits the limits, measured on the members as they were sent (the
        # earliest in-order match is the smallest such assignment of sizes).
        indexes = matched_indexes(members, ref.members)
        assert indexes is not None
        kept = sum(ref.sizes[j] for j in indexes) + max(0, len(indexes) - 1)
        assert kept <= MAX_BYTES, kept
    if len(members) < len(ref.members):
        assert Rejection.BAGGAGE_OVER_LIMIT in rejections
    assert all(isinstance(r, Rejection) for r in rejections)


@SETTINGS
@given(count=st.integers(0, 200), size=st.integers(1, 600), tail=st.integers(0, 3))
def test_baggage_limits_are_measured_on_the_members_sent(count: int, size: int, tail: int) -> None:
    sent = [(f"m{i}", "v" * size) for i in range(count)]
    header = ",".join(f"{k}={v}" for k, v in sent) + "," * tail
    members, _ = parse_baggage(header)
    assert members == sent[: len(members)]
    assert len(members) <= MAX_MEMBERS
    assert len(",".join(f"{k}={v}" for k, v in members).encode()) <= MAX_BYTES
    # At least what a platform must propagate: 64 members or 8192 bytes, whichever comes first.
    fits = 0
    total = 0
    for k, v in sent:
        step = len(f"{k}={v}") + (1 if fits else 0)
        if fits >= MAX_MEMBERS or total + step > MAX_BYTES:
            break
        fits, total = fits + 1, total + step
    assert len(members) == fits


valid_names = st.one_of(
    st.sampled_from(SPECIAL_NAMES),
    st.text(min_size=1, max_size=200).filter(ref_name_ok),
    st.text(alphabet=" +%=&;,/\\\"'~é名🚀", min_size=1, max_size=40).filter(ref_name_ok),
)


@SETTINGS
@given(name=valid_names, version=st.integers(1, MAX_VERSION))
def test_prompt_names_round_trip_through_the_codec(name: str, version: int) -> None:
    ctx = BridgeContext(prompt=PromptRef(name, version))
    headers = encode_headers(ctx)
    assert headers["baggage"].isascii()
    decoded = decode_headers(headers)
    assert decoded.prompt == PromptRef(name, version)
    assert decoded.rejections == ()


@SETTINGS
@given(name=valid_names, version=st.integers(1, MAX_VERSION), other=st.text(max_size=20))
def test_prompt_names_round_trip_through_opentelemetry_w3c_propagator(
    name: str, version: int, other: str
) -> None:
    ctx = otel_baggage.set_baggage(PROMPT_NAME_KEY, name, Context())
    ctx = otel_baggage.set_baggage(PROMPT_VERSION_KEY, str(version), ctx)
    ctx = otel_baggage.set_baggage("other", other, ctx)
    carrier: dict[str, str] = {}
    W3CBaggagePropagator().inject(carrier, ctx)
    assert decode_headers(carrier).prompt == PromptRef(name, version)


@SETTINGS
@given(version=version_values, name=st.sampled_from(["p", "with space"]))
def test_prompt_version_is_a_positive_int32(version: str, name: str) -> None:
    baggage = f"{PROMPT_NAME_KEY}={quote(name)},{PROMPT_VERSION_KEY}={quote(version, safe='')}"
    ctx = decode_headers({"baggage": baggage})
    text = version
    ok = text.isascii() and text.isdigit() and text[0] != "0" and 1 <= int(text) <= MAX_VERSION
    if ok:
        assert ctx.prompt == PromptRef(name, int(text))
    else:
        assert ctx.prompt is None
        assert Rejection.PROMPT_VERSION_INVALID in ctx.rejections


@SETTINGS
@given(headers=header_dicts())
def test_decode_headers_reasons_never_carry_header_data(headers: dict[str, Any]) -> None:
    ctx = decode_headers(headers)
    assert all(isinstance(r, Rejection) for r in ctx.rejections)
    assert {r.value for r in ctx.rejections} <= {r.value for r in Rejection}


# ----------------------------------------------------------------------------- examples


def test_same_header_under_two_spellings_is_a_repeated_traceparent() -> None:
    """A mapping whose keys differ only in case holds one header twice (keys in any case).

    Two different traceparents must not silently resolve to whichever key came last.
    """
    other = "1" * 32
    ctx = decode_headers(
        {
            "traceparent": f"00-{VALID_TRACE}-{VALID_SPAN}-01",
            "Traceparent": f"00-{other}-{VALID_SPAN}-01",
        }
    )
    assert ctx.parent is None
    assert Rejection.TRACEPARENT_REPEATED in ctx.rejections


@pytest.mark.parametrize(
    "metadata",
    [
        {"existing_trace_id": None},
        {"parent_observation_id": None},
        {"existing_trace_id": None, "parent_observation_id": None},
    ],
    ids=["trace-null", "parent-null", "both-null"],
)
def test_explicit_nulls_from_the_caller_never_yield_half_a_link(metadata: dict[str, Any]) -> None:
    data = {
        "proxy_server_request": {"headers": {"traceparent": f"00-{VALID_TRACE}-{VALID_SPAN}-01"}},
        "metadata": dict(metadata),
    }
    bridge_request(data)
    pair = (
        data["metadata"].get("existing_trace_id"),
        data["metadata"].get("parent_observation_id"),
    )
    assert pair in ((None, None), (VALID_TRACE, VALID_SPAN)), pair


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"baggage": None}, "None"),
        ({"baggage": 7}, "int"),
        ({"baggage": [b"k=v"]}, "bytes in a list"),
        ({"traceparent": 7}, "int"),
        ({"traceparent": [None]}, "None in a list"),
        ({"traceparent": b"00-..."}, "bytes"),
    ],
)
def test_decode_headers_never_raises_on_non_str_values(
    headers: dict[str, Any], reason: str
) -> None:
    """``decode_headers`` promises "Never raises on input"."""
    ctx = decode_headers(headers)
    assert ctx.parent is None and ctx.prompt is None
