"""Hostile W3C headers through a real LiteLLM proxy with the bridge (upstream model server,
recording server).

Every request must be answered; what reaches Langfuse must be either correctly linked or
what LiteLLM logs without the bridge (the same corpus is sent to a proxy without the bridge,
for comparison: LiteLLM 1.106 itself takes the trace id of a traceparent it can read, as the
root of a new trace); the operator's log says how many contexts were ignored and why, and
never repeats a header value; and none of it reaches the model provider.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from e2e_assertions import PROMPT_NAME, PROMPT_VERSION, proxy_generations
from harness import (
    MASTER_KEY,
    MODEL,
    UPSTREAM_ANSWER,
    ProxyProcess,
    UpstreamServer,
    assert_upstream_got_no_context,
    start_proxy,
    upstream_config,
)
from hostile_headers import (
    PROMPT_NAME_KEY,
    PROMPT_VERSION_KEY,
    VALID_SPAN,
    VALID_TRACE,
    HeaderSet,
    hostile_header_sets,
    ref_baggage,
    ref_prompt,
    ref_traceparent,
)

from otel_bridge import BridgeContext, PromptRef, SpanRef, decode_headers, encode_headers
from otel_bridge.demo._upstream import UpstreamRequest
from otel_bridge.recording_server import RecordedSpan, RecordingServer

pytestmark = pytest.mark.e2e

LOG_LINE = re.compile(
    r"otel-bridge: ignored part of an incoming trace context \(reason=([a-z_]+), (\d+) so far\)"
)


def proxy_env(recorder: RecordingServer) -> dict[str, str]:
    return {
        "LANGFUSE_PUBLIC_KEY": recorder.public_key,
        "LANGFUSE_SECRET_KEY": recorder.secret_key,
        "LANGFUSE_HOST": recorder.url,
    }


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def proxy(
    recorder: RecordingServer, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    process = start_proxy(
        upstream_config(upstream.api_base), proxy_env(recorder), tmp_path_factory.mktemp("hostile")
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def plain_proxy(
    recorder: RecordingServer, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    """The same proxy without the bridge: what LiteLLM logs on its own."""
    process = start_proxy(
        upstream_config(upstream.api_base, bridge=False),
        proxy_env(recorder),
        tmp_path_factory.mktemp("plain"),
    )
    try:
        yield process
    finally:
        process.stop()


def crafted_sets() -> list[HeaderSet]:
    """One header set per rejection reason a proxy can see, each value carrying a marker."""
    tp = f"00-{VALID_TRACE}-{VALID_SPAN}-01"
    m = "CRAFTEDMARK"
    sets = [
        (f"ff-{VALID_TRACE}-{VALID_SPAN}-01-{m}1", None),
        (f"00-{'0' * 32}-{VALID_SPAN}-01", f"k={m}2"),
        (f"{m}3-garbage", None),
        (tp, f"bad key={m}4,{PROMPT_NAME_KEY}=ok,{PROMPT_VERSION_KEY}=1"),
        (tp, ",".join(f"k{i}={m}5" for i in range(70)) + f",{PROMPT_NAME_KEY}=x"),
        (None, f"{PROMPT_NAME_KEY}={m}6%0Anewline,{PROMPT_VERSION_KEY}=1"),
        (None, f"{PROMPT_NAME_KEY}={m}7,{PROMPT_VERSION_KEY}=0"),
        (tp, f"{PROMPT_NAME_KEY}={m}8"),
        (None, f"{PROMPT_NAME_KEY}={m}9a,{PROMPT_NAME_KEY}={m}9b,{PROMPT_VERSION_KEY}=2"),
    ]
    return [
        HeaderSet(
            None if t is None else t.encode(), None if b is None else b.encode(), note=f"{m}{i + 1}"
        )
        for i, (t, b) in enumerate(sets)
    ]


VALID_PROMPTS = [
    ("test-prompt", 1),
    ("with space+plus", 3),
    ("100% =ok", 12),
    ("ünïcødé 名前", 2147483647),
    ("a=b;c,d", 5),
]


def valid_sets() -> list[HeaderSet]:
    out = []
    for i, (name, version) in enumerate(VALID_PROMPTS):
        trace = f"{i + 1:032x}"
        span = f"{i + 0xABC:016x}"
        headers = encode_headers(
            BridgeContext(parent=SpanRef(trace, span, True), prompt=PromptRef(name, version))
        )
        out.append(
            HeaderSet(headers["traceparent"].encode(), headers["baggage"].encode(), note="valid")
        )
    return out


# Values httpx (h11) must refuse to put on the wire: the test skips them.
REFUSED = [
    HeaderSet(f"00-{VALID_TRACE}-{VALID_SPAN}-01\r\nx-injected: 1".encode(), None, note="crlf"),
    HeaderSet(None, b"k=v\x00", note="nul"),
    HeaderSet(None, b"k=v\nlangfuse_prompt_name=x", note="lf"),
]


@dataclass
class Sent:
    index: int
    headers: HeaderSet
    status: int
    answer: str | None


def _post(client: httpx.Client, name: str, index: int, headers: HeaderSet) -> Sent | None:
    raw = [(b"authorization", f"Bearer {MASTER_KEY}".encode()), *headers.as_list()]
    try:
        response = client.post(
            "/v1/chat/completions",
            headers=raw,
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "hi"}],
                "metadata": {"generation_name": name},
            },
        )
    except httpx.LocalProtocolError:
        return None  # a value httpx refuses to send
    answer = None
    if response.status_code == 200:
        answer = response.json()["choices"][0]["message"]["content"]
    return Sent(index, headers, response.status_code, answer)


@dataclass
class Run:
    sent: list[Sent]
    skipped: list[HeaderSet]
    generations: dict[str, RecordedSpan]
    upstream: list[UpstreamRequest]


@pytest.fixture(scope="module")
def hostile_run(
    proxy: ProxyProcess,
    plain_proxy: ProxyProcess,
    recorder: RecordingServer,
    upstream: UpstreamServer,
) -> Run:
    recorder.clear()
    upstream.clear()
    sets = [*hostile_header_sets(seed=20261123, count=40), *crafted_sets(), *valid_sets(), *REFUSED]
    sent: list[Sent] = []
    skipped: list[HeaderSet] = []
    with (
        httpx.Client(base_url=proxy.url, timeout=30) as client,
        httpx.Client(base_url=plain_proxy.url, timeout=30) as plain,
    ):
        for index, headers in enumerate(sets):
            result = _post(client, f"hostile-{index}", index, headers)
            if result is None:
                skipped.append(headers)
                continue
            sent.append(result)
            baseline = _post(plain, f"plain-{index}", index, headers)
            assert baseline is not None and baseline.status == 200
    names = {f"{kind}-{s.index}" for s in sent if s.status == 200 for kind in ("hostile", "plain")}
    spans = recorder.wait_for_spans(
        lambda spans: names <= {g.name for g in proxy_generations(spans)}, timeout=60
    )
    generations = {g.name: g for g in proxy_generations(spans) if g.name in names}
    return Run(sent, skipped, generations, upstream.requests)


def test_every_request_is_answered(hostile_run: Run) -> None:
    assert [h.note for h in hostile_run.skipped] == [h.note for h in REFUSED]
    assert len(hostile_run.sent) == 40 + len(crafted_sets()) + len(VALID_PROMPTS)
    failures = [(s.index, s.status) for s in hostile_run.sent if s.status != 200]
    assert not failures
    assert {s.answer for s in hostile_run.sent} == {UPSTREAM_ANSWER}


def test_no_header_of_the_corpus_reaches_the_model(hostile_run: Run) -> None:
    """Each answered request, bridged and plain, made one model call, and the provider got no
    trace context: none of the corpus's markers, ids or prompt names."""
    secrets = ["MARK", VALID_TRACE, VALID_SPAN, *(name for name, _ in VALID_PROMPTS)]
    expected = 2 * len(hostile_run.sent)  # the bridged proxy's and the plain one's
    assert_upstream_got_no_context(hostile_run.upstream, expected=expected, secrets=secrets)


def _sent_trace_ids(headers: HeaderSet) -> set[str]:
    text = (headers.traceparent or b"").decode("latin-1")
    return {t.lower() for t in re.findall(r"[0-9a-fA-F]{32}", text)}


PROMPT_KEYS = {PROMPT_NAME, PROMPT_VERSION}


def test_generations_are_linked_correctly_or_logged_as_without_the_bridge(
    hostile_run: Run,
) -> None:
    linked = prompt_linked = unlinked = 0
    for sent in hostile_run.sent:
        generation = hostile_run.generations[f"hostile-{sent.index}"]
        plain = hostile_run.generations[f"plain-{sent.index}"]
        seen = sent.headers.as_seen()
        parent = ref_traceparent(seen.get("traceparent"))
        bag = ref_baggage(seen.get("baggage"))
        where = f"request {sent.index} {seen!r}"
        if parent is not None and parent.sampled:
            assert (generation.trace_id, generation.parent_span_id) == (
                parent.trace_id,
                parent.span_id,
            ), where
            linked += 1
        else:
            # As without the bridge: no parent; the trace id LiteLLM itself takes from the
            # header, or a fresh one; the same attributes but for the prompt link.
            unlinked += 1
            assert generation.parent_span_id is None, where
            assert plain.parent_span_id is None, where
            sent_ids = _sent_trace_ids(sent.headers)
            if plain.trace_id in sent_ids:
                assert generation.trace_id == plain.trace_id, where
            else:
                assert generation.trace_id not in sent_ids, where
            assert set(generation.attributes) - PROMPT_KEYS == set(plain.attributes), where
        assert not PROMPT_KEYS & set(plain.attributes)
        got = (generation.attributes.get(PROMPT_NAME), generation.attributes.get(PROMPT_VERSION))
        wanted = ref_prompt(bag.members)
        if bag.within_limits:
            assert got == (wanted or (None, None)), where
        else:
            # Over the W3C limits whole members may be dropped: the sent prompt or none.
            assert got in ((None, None), wanted), where
        if got != (None, None):
            prompt_linked += 1
            assert type(got[1]) is int, where
    # The corpus exercises every outcome.
    assert linked >= len(VALID_PROMPTS) and prompt_linked >= len(VALID_PROMPTS)
    assert unlinked >= 20


def test_valid_contexts_land_in_the_callers_trace_with_the_prompt(hostile_run: Run) -> None:
    valid = [s for s in hostile_run.sent if s.headers.note == "valid"]
    assert len(valid) == len(VALID_PROMPTS)
    for sent, (name, version) in zip(valid, VALID_PROMPTS, strict=True):
        ctx = decode_headers(sent.headers.as_seen())
        assert ctx.parent is not None
        generation = hostile_run.generations[f"hostile-{sent.index}"]
        assert generation.trace_id == ctx.parent.trace_id
        assert generation.parent_span_id == ctx.parent.span_id
        assert generation.attributes[PROMPT_NAME] == name
        assert generation.attributes[PROMPT_VERSION] == version


def _bridge_lines(proxy: ProxyProcess) -> list[str]:
    text = proxy.log_path.read_text(encoding="utf-8", errors="replace")
    return [line for line in text.splitlines() if "otel-bridge" in line]


def test_rejections_are_counted_by_reason_and_never_echo_values(
    hostile_run: Run, proxy: ProxyProcess
) -> None:
    lines = _bridge_lines(proxy)
    assert not [line for line in lines if "hook failed" in line], "the hook raised"
    logged: dict[str, list[int]] = {}
    for line in lines:
        match = LOG_LINE.search(line)
        if match:
            logged.setdefault(match.group(1), []).append(int(match.group(2)))
    expected_reasons = {
        "traceparent_version_ff",
        "traceparent_invalid_id",
        "traceparent_malformed",
        "baggage_member_malformed",
        "baggage_over_limit",
        "prompt_name_invalid",
        "prompt_version_invalid",
        "prompt_incomplete",
        "prompt_conflicting",
    }
    assert expected_reasons <= set(logged), logged
    # How many, per reason: logged at 1, 2, 4, 8 ... of what this run made the hook record.
    recorded: Counter[str] = Counter()
    for sent in hostile_run.sent:
        recorded.update(r.value for r in decode_headers(sent.headers.as_seen()).rejections)
    for reason, counts in logged.items():
        assert counts == [2**i for i in range(len(counts))], (reason, counts)
        assert counts[-1] <= recorded[reason] < 2 * counts[-1], (reason, counts, recorded)
    # Never a header value: no marker, no id, no sent value, anywhere in the bridge's lines.
    bridge_text = "\n".join(lines)
    assert "MARK" not in bridge_text
    assert VALID_TRACE not in bridge_text and VALID_SPAN not in bridge_text
    for sent in hostile_run.sent:
        for value in sent.headers.as_seen().values():
            for fragment in re.split(r"[,;=\s]+", value):
                if len(fragment) >= 12:
                    assert fragment not in bridge_text, fragment


def _call(proxy: ProxyProcess, headers: list[tuple[str, str]], **body: Any) -> None:
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers=[("authorization", f"Bearer {MASTER_KEY}"), *headers],
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == UPSTREAM_ANSWER


def _generation(recorder: RecordingServer, name: str) -> RecordedSpan:
    spans = recorder.wait_for_spans(
        lambda spans: any(g.name == name for g in proxy_generations(spans)), timeout=30
    )
    (generation,) = [g for g in proxy_generations(spans) if g.name == name]
    return generation


def test_repeated_headers_never_mix_two_contexts(
    hostile_run: Run, proxy: ProxyProcess, recorder: RecordingServer
) -> None:
    """Two traceparent headers, and baggage split over two headers, as a client may send them."""
    first, second = f"{1:032x}", f"{2:032x}"
    _call(
        proxy,
        [
            ("traceparent", f"00-{first}-{VALID_SPAN}-01"),
            ("traceparent", f"00-{second}-{VALID_SPAN}-01"),
            ("baggage", f"{PROMPT_NAME_KEY}=split"),
            ("baggage", f"{PROMPT_VERSION_KEY}=4"),
        ],
        metadata={"generation_name": "repeated-headers"},
    )
    generation = _generation(recorder, "repeated-headers")
    # Either ignored (W3C) or one of the two, whole: never a mix, never a dangling parent.
    if generation.parent_span_id is None:
        assert generation.trace_id not in (first, second)
    else:
        assert generation.trace_id in (first, second)
        assert generation.parent_span_id == VALID_SPAN
    name = generation.attributes.get(PROMPT_NAME)
    assert name in (None, "split")
    if name is not None:
        assert generation.attributes.get(PROMPT_VERSION) == 4


@pytest.mark.parametrize("null_key", ["existing_trace_id", "parent_observation_id"])
def test_caller_null_steering_key_never_yields_a_bogus_parent(
    null_key: str, hostile_run: Run, proxy: ProxyProcess, recorder: RecordingServer
) -> None:
    """``"existing_trace_id": null`` (or ``parent_observation_id``) in the caller's metadata,
    an optional field left empty.

    The generation must be under the caller's span, or have no parent (as without the
    bridge): never a parent id that no exported span has.
    """
    trace = f"{0xDEAD + len(null_key):032x}"
    name = f"null-{null_key}"
    _call(
        proxy,
        [("traceparent", f"00-{trace}-{VALID_SPAN}-01")],
        metadata={"generation_name": name, null_key: None},
    )
    generation = _generation(recorder, name)
    pair = (generation.trace_id, generation.parent_span_id)
    assert pair == (trace, VALID_SPAN) or generation.parent_span_id is None, (
        f"generation in trace {generation.trace_id} parented to {generation.parent_span_id}, "
        f"which is neither the caller's span {VALID_SPAN} nor absent"
    )


# --------------------------------------------------------------- the OpenTelemetry path (V2)
#
# LiteLLM's `langfuse_otel` callback with LITELLM_OTEL_V2=true runs the bridge where the
# `langfuse` callback does not: its baggage propagator extracts every inbound header and its
# span processor sees every span of every request. LiteLLM names no generation after the
# caller there, so the checks are over the whole export.


@pytest.fixture(scope="module")
def v2_proxy(
    recorder: RecordingServer, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    env = {**proxy_env(recorder), "LITELLM_OTEL_V2": "true", "OTEL_BSP_SCHEDULE_DELAY": "200"}
    process = start_proxy(
        upstream_config(upstream.api_base, "langfuse_otel.yaml"),
        env,
        tmp_path_factory.mktemp("hostile-v2"),
    )
    try:
        yield process
    finally:
        process.stop()


OTLP_SPAN_KIND_SERVER, OTLP_SPAN_KIND_CLIENT = 2, 3


def _v2_request_spans(spans: list[RecordedSpan]) -> tuple[list[RecordedSpan], list[RecordedSpan]]:
    """What LiteLLM V2 exports for every chat completion, whatever its headers: FastAPI's
    SERVER span of the request, which ends last, and LiteLLM's CLIENT span of the model call."""
    servers = [
        s
        for s in spans
        if s.kind == OTLP_SPAN_KIND_SERVER and s.name == "POST /v1/chat/completions"
    ]
    calls = [
        s
        for s in spans
        if s.kind == OTLP_SPAN_KIND_CLIENT
        and s.scope_name == "litellm"
        and s.name.startswith("chat")
    ]
    return servers, calls


def test_the_corpus_through_the_otel_v2_path(
    hostile_run: Run, v2_proxy: ProxyProcess, recorder: RecordingServer, upstream: UpstreamServer
) -> None:
    recorder.clear()
    upstream.clear()
    sets = [s.headers for s in hostile_run.sent]
    with httpx.Client(base_url=v2_proxy.url, timeout=30) as client:
        sent = [_post(client, f"v2-{i}", i, headers) for i, headers in enumerate(sets)]
    assert all(s is not None and s.status == 200 and s.answer == UPSTREAM_ANSWER for s in sent), [
        (s.index, s.status) for s in sent if s is not None and s.status != 200
    ]
    secrets = ["MARK", VALID_TRACE, VALID_SPAN, *(name for name, _ in VALID_PROMPTS)]
    assert_upstream_got_no_context(upstream.requests, expected=len(sets), secrets=secrets)
    # Requests whose traceparent is valid: the caller's span per trace id, and its prompt.
    callers: dict[str, set[str]] = {}
    prompts: dict[str, tuple[str, int] | None] = {}
    sent_prompts: set[tuple[str, int]] = set()
    for headers in sets:
        seen = headers.as_seen()
        bag = ref_baggage(seen.get("baggage"))
        prompt = ref_prompt(bag.members) if bag.within_limits else None
        if prompt is not None:
            sent_prompts.add(prompt)
        parent = ref_traceparent(seen.get("traceparent"))
        if parent is not None:
            callers.setdefault(parent.trace_id, set()).add(parent.span_id)
            prompts[parent.trace_id] = prompt
    valid = {
        parent.trace_id
        for s in sent
        if s is not None and s.headers.note == "valid"
        for parent in [ref_traceparent(s.headers.as_seen().get("traceparent"))]
        if parent is not None
    }
    # Every request's own spans, those without a valid context too.
    spans = recorder.wait_for_spans(
        lambda spans: all(len(found) >= len(sets) for found in _v2_request_spans(spans)),
        timeout=60,
    )
    servers, calls = _v2_request_spans(spans)
    assert (len(servers), len(calls)) == (len(sets), len(sets))
    assert valid <= {g.trace_id for g in proxy_generations(spans)}
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        # No dangling parent: exported, or the caller's own span named by a valid traceparent.
        if span.parent_span_id is not None and span.parent_span_id not in by_id:
            assert span.parent_span_id in callers.get(span.trace_id, set()), span.name
        linked = (span.attributes.get(PROMPT_NAME), span.attributes.get(PROMPT_VERSION))
        if linked != (None, None):
            # Only ever a prompt some request really sent, whole, with an integer version.
            assert linked in sent_prompts, (span.name, linked)
            assert type(linked[1]) is int
    for trace_id in valid:
        # One generation per bridged call, with the caller's prompt.
        (generation,) = [g for g in proxy_generations(spans) if g.trace_id == trace_id]
        prompt = prompts[trace_id]
        assert prompt is not None
        assert (generation.attributes[PROMPT_NAME], generation.attributes[PROMPT_VERSION]) == prompt
    lines = _bridge_lines(v2_proxy)
    assert not [line for line in lines if "hook failed" in line or "error" in line], lines
    assert "MARK" not in "\n".join(lines)
