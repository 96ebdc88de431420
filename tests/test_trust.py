"""Trust boundary of the gateway: who may attach to a trace, and what a caller may not set.

* ``OTEL_BRIDGE_TRUSTED_CALLERS`` (``TrustPolicy``): parsing, matching on LiteLLM's key and
  team identity (unit level: virtual keys need LiteLLM's database), and end to end with
  ``none``: the caller's traceparent is not followed, the prompt link still is.
* Baggage that would let a caller write LiteLLM's own span attributes (OTel V2 stamps
  ``litellm.metadata.*`` and its other promoted keys from inbound baggage on every span) is
  refused by the bridge's proxy propagator.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any
from unittest import mock

import httpx
import pytest
from bridge_loader import bridge_module, call_bridge, litellm_available, make_bridge
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
from hostile_headers import PROMPT_NAME_KEY, PROMPT_VERSION_KEY

from otel_bridge.recording_server import RecordedSpan, RecordingServer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{SPAN}-01"
BAGGAGE = f"{PROMPT_NAME_KEY}=test-prompt,{PROMPT_VERSION_KEY}=1"


def policy(value: str | None) -> Any:
    return bridge_module().TrustPolicy.parse(value)


# ----------------------------------------------------------------------------- parse


@pytest.mark.parametrize("value", [None, "", "all", "ALL", " all ", "All"])
def test_all_is_the_default(value: str | None) -> None:
    parsed = policy(value)
    assert parsed.allow_all
    assert parsed.trusts((None, None), (None, None))


@pytest.mark.parametrize("value", ["none", "NONE", " none\t"])
def test_none_trusts_nobody(value: str) -> None:
    parsed = policy(value)
    assert not parsed.allow_all and not parsed.keys and not parsed.teams
    assert not parsed.trusts(("alias", "hash"), ("team", "team-alias"))


def test_keys_and_teams_are_collected() -> None:
    parsed = policy(" key:ci-bot , team:t-123,key:sk-hash:with:colons,, team:research ")
    assert not parsed.allow_all
    assert parsed.keys == frozenset({"ci-bot", "sk-hash:with:colons"})
    assert parsed.teams == frozenset({"t-123", "research"})


@pytest.mark.parametrize(
    "value",
    [
        "key",
        "key:",
        "team:",
        ":x",
        "user:alice",
        "KEY:ci-bot",
        "all,key:ci-bot",
        "none,team:t",
        "key:ci-bot,bogus",
        "keys:ci-bot",
    ],
)
def test_bad_entries_raise_a_clear_error(value: str) -> None:
    with pytest.raises(ValueError) as raised:
        policy(value)
    message = str(raised.value)
    assert "OTEL_BRIDGE_TRUSTED_CALLERS" in message
    assert "key:" in message and "team:" in message  # says what is expected
    bad = [
        p.strip()
        for p in value.split(",")
        if p.strip() and not p.strip().startswith(("key:", "team:"))
    ]
    bad = bad or [value.strip()]
    assert any(repr(entry) in message for entry in bad), message  # names the bad entry


def test_blank_setting_means_the_default() -> None:
    """``OTEL_BRIDGE_TRUSTED_CALLERS=" "`` (e.g. an empty compose variable with a stray space)
    should mean "unset", as the empty string does, not silently "trust nobody"."""
    assert policy(" ") == policy("")


def test_a_bad_setting_stops_the_hook_from_starting() -> None:
    module = bridge_module()
    with (
        mock.patch.dict(os.environ, {"OTEL_BRIDGE_TRUSTED_CALLERS": "user:alice"}),
        litellm_available(),
        pytest.raises(ValueError, match="user:alice"),
    ):
        module.LiteLLMBridge()


def test_the_hook_reads_its_policy_from_the_environment() -> None:
    module = bridge_module()
    with (
        mock.patch.dict(os.environ, {"OTEL_BRIDGE_TRUSTED_CALLERS": "team:research"}),
        litellm_available(),
    ):
        bridge = module.LiteLLMBridge()
    assert bridge.trust == policy("team:research")


# ----------------------------------------------------------------------------- match


def caller(**fields: object) -> SimpleNamespace:
    """A stand-in for LiteLLM's ``UserAPIKeyAuth``: only the attributes the bridge reads."""
    base: dict[str, object] = {
        "key_alias": None,
        "token": None,
        "team_id": None,
        "team_alias": None,
    }
    return SimpleNamespace(**{**base, **fields})


@pytest.mark.parametrize(
    ("setting", "who", "trusted"),
    [
        ("key:ci-bot", caller(key_alias="ci-bot"), True),
        ("key:ci-bot", caller(key_alias="other", token="ci-bot-not"), False),
        ("key:88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
         caller(token="88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b"), True),
        ("team:t-123", caller(team_id="t-123"), True),
        ("team:research", caller(team_alias="research"), True),
        ("team:research", caller(key_alias="research"), False),  # a key alias is not a team
        ("key:research", caller(team_alias="research"), False),  # nor a team alias a key
        ("key:ci-bot,team:t-123", caller(team_id="t-123"), True),
        ("key:ci-bot", caller(key_alias=["ci-bot"]), False),  # non-str attributes are ignored
        ("key:ci-bot", caller(), False),
        ("key:ci-bot", None, False),  # no key information at all
        ("none", caller(key_alias="ci-bot", team_id="t-123"), False),
        ("all", None, True),
    ],
)  # fmt: skip
def test_policy_matches_key_and_team_identity(setting: str, who: object, trusted: bool) -> None:
    data: dict[str, Any] = {
        "proxy_server_request": {"headers": {"traceparent": TRACEPARENT, "baggage": BAGGAGE}},
        "metadata": {},
    }
    bridge = make_bridge(policy(setting))
    call_bridge(bridge, data, who)
    metadata = data["metadata"]
    # The prompt link applies whoever the caller is.
    assert metadata["prompt"] == {"name": "test-prompt", "version": 1, "prompt": []}
    if trusted:
        assert metadata["existing_trace_id"] == TRACE
        assert metadata["parent_observation_id"] == SPAN
        assert "caller_not_trusted" not in bridge.rejections.snapshot()
    else:
        assert "existing_trace_id" not in metadata and "parent_observation_id" not in metadata
        assert bridge.rejections.snapshot().get("caller_not_trusted") == 1


def test_untrusted_caller_without_traceparent_is_not_a_rejection() -> None:
    bridge = make_bridge(policy("none"))
    data: dict[str, Any] = {
        "proxy_server_request": {"headers": {"baggage": BAGGAGE}},
        "metadata": {},
    }
    call_bridge(bridge, data, caller())
    assert data["metadata"]["prompt"]["name"] == "test-prompt"
    assert bridge.rejections.snapshot() == {}


# ----------------------------------------------------------------------------- end to end


def _langfuse_env(recorder: RecordingServer) -> dict[str, str]:
    return {
        "LANGFUSE_PUBLIC_KEY": recorder.public_key,
        "LANGFUSE_SECRET_KEY": recorder.secret_key,
        "LANGFUSE_HOST": recorder.url,
    }


def _post(proxy: ProxyProcess, headers: dict[str, str], **body: Any) -> None:
    response = httpx.post(
        f"{proxy.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER_KEY}", **headers},
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == UPSTREAM_ANSWER


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def untrusting_proxy(
    recorder: RecordingServer, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    env = {**_langfuse_env(recorder), "OTEL_BRIDGE_TRUSTED_CALLERS": "none"}
    process = start_proxy(
        upstream_config(upstream.api_base), env, tmp_path_factory.mktemp("untrusting")
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.e2e
def test_untrusted_caller_gets_a_fresh_trace_but_keeps_its_prompt_link(
    untrusting_proxy: ProxyProcess, recorder: RecordingServer, upstream: UpstreamServer
) -> None:
    recorder.clear()
    upstream.clear()
    _post(
        untrusting_proxy,
        {"traceparent": TRACEPARENT, "baggage": BAGGAGE},
        metadata={"generation_name": "untrusted"},
    )
    spans = recorder.wait_for_spans(
        lambda spans: any(g.name == "untrusted" for g in proxy_generations(spans)), timeout=30
    )
    (generation,) = [g for g in proxy_generations(spans) if g.name == "untrusted"]
    assert generation.attributes.get(PROMPT_NAME) == "test-prompt"
    assert generation.attributes.get(PROMPT_VERSION) == 1
    assert generation.parent_span_id != SPAN
    assert generation.trace_id != TRACE, (
        "an untrusted caller's generation was logged in the trace its traceparent named"
    )
    lines = [
        line
        for line in untrusting_proxy.log_path.read_text(errors="replace").splitlines()
        if "otel-bridge" in line
    ]
    assert any("reason=caller_not_trusted, 1 so far" in line for line in lines), lines
    assert not any(TRACE in line or SPAN in line for line in lines)
    assert_upstream_got_no_context(
        upstream.requests, expected=1, secrets=[TRACE, SPAN, "test-prompt"]
    )


# LiteLLM OTel V2's LiteLLMBaggageSpanProcessor stamps these inbound baggage keys on every span:
# the `litellm.metadata.` prefix, and its default baggage_promoted_keys.
SPOOFED = {
    "litellm.metadata.spoofed": "yes",
    "litellm.team.id": "spoofed-team",
    "litellm.api_key.hash": "spoofed-hash",
    "gen_ai.request.model": "spoofed-model",
}
SPOOF_TRACE = "0000000000000000000000000000beef"


def _otel_v2_env(recorder: RecordingServer) -> dict[str, str]:
    auth = base64.b64encode(f"{recorder.public_key}:{recorder.secret_key}".encode()).decode()
    return {
        "LITELLM_OTEL_V2": "true",
        "OTEL_EXPORTER": "otlp_http",
        "OTEL_ENDPOINT": recorder.otlp_endpoint,
        "OTEL_HEADERS": f"Authorization=Basic {auth},x-langfuse-ingestion-version=4",
        "OTEL_SERVICE_NAME": "litellm-proxy",
        # Export within a fraction of a second instead of the SDK's default 5 s.
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def _spoof_spans(
    recorder: RecordingServer,
    upstream: UpstreamServer,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    bridge: bool,
) -> list[RecordedSpan]:
    """Spans of one spoofing request through an `otel` (V2) proxy, with or without the bridge.
    Either way, the model provider gets none of the caller's baggage or context."""
    recorder.clear()
    upstream.clear()
    process = start_proxy(
        upstream_config(upstream.api_base, "otel.yaml", bridge=bridge),
        _otel_v2_env(recorder),
        tmp_path_factory.mktemp("otel-v2"),
    )
    try:
        baggage = ",".join(f"{k}={v}" for k, v in SPOOFED.items())
        _post(
            process,
            {"traceparent": f"00-{SPOOF_TRACE}-{SPAN}-01", "baggage": f"{baggage},{BAGGAGE}"},
        )
        assert_upstream_got_no_context(
            upstream.requests,
            expected=1,
            secrets=[SPOOF_TRACE, SPAN, "test-prompt", *SPOOFED.values()],
        )
        # The model call's span and the server span, which ends last: wait for both.
        return recorder.wait_for_spans(
            lambda spans: (
                {"chat", "POST"}
                <= {s.name.split(" ")[0] for s in spans if s.trace_id == SPOOF_TRACE}
            ),
            timeout=30,
        )
    finally:
        process.stop()


@pytest.fixture(scope="module")
def spoof_spans(
    recorder: RecordingServer, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[RecordedSpan]]:
    return {
        "plain": _spoof_spans(recorder, upstream, tmp_path_factory, bridge=False),
        "bridge": _spoof_spans(recorder, upstream, tmp_path_factory, bridge=True),
    }


@pytest.mark.e2e
@pytest.mark.parametrize("key", list(SPOOFED))
def test_caller_baggage_cannot_set_litellm_span_attributes(
    key: str, spoof_spans: dict[str, list[RecordedSpan]]
) -> None:
    mine = [s for s in spoof_spans["bridge"] if s.trace_id == SPOOF_TRACE]
    assert len(mine) >= 3
    spoofed = [s.name for s in mine if s.attributes.get(key) == SPOOFED[key]]
    assert not spoofed, f"caller baggage set {key}={SPOOFED[key]} on proxy spans {spoofed}"


@pytest.mark.e2e
def test_litellm_alone_stamps_caller_baggage(spoof_spans: dict[str, list[RecordedSpan]]) -> None:
    """The control: without the bridge LiteLLM V2 does stamp the caller's values, so the test
    above can tell a refusal from a quiet exporter."""
    plain = [s for s in spoof_spans["plain"] if s.trace_id == SPOOF_TRACE]
    for key, value in SPOOFED.items():
        if key == "litellm.api_key.hash":
            continue  # LiteLLM stamps the real key hash over it on some spans; not a control
        assert any(s.attributes.get(key) == value for s in plain), key
