"""Proxy tier: an incoming request's bridge context, turned into Langfuse logging metadata.

The keys written are the ones LiteLLM's ``langfuse`` callback has always honoured
(``existing_trace_id``, ``parent_observation_id``, ``prompt``): the bridge produces exactly
what callers used to hand-build in ``extra_body``, so the callback logs it the way it logged
their metadata, and a caller that still sends that metadata keeps full control of it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Mapping, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanProcessor

from otel_bridge._context import BridgeContext, Rejection, prompt_from_baggage
from otel_bridge._propagation import BaggagePropagator

_logger = logging.getLogger("otel_bridge.proxy")

# Metadata keys through which a caller places a generation in a trace. If the caller set any
# of them, the header-derived parent is not mixed in: a parent from one trace under another
# trace's id would dangle.
_TRACE_STEERING_KEYS = ("existing_trace_id", "parent_observation_id")
# LiteLLM's OTel V2 stamps inbound baggage under these prefixes onto every span it exports
# (its promoted keys: litellm.team.id, litellm.metadata.*, gen_ai.request.model, ...).
DEFAULT_REFUSED_BAGGAGE_PREFIXES = ("litellm.", "gen_ai.")


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """Which callers may attach their generation to an existing trace.

    ``OTEL_BRIDGE_TRUSTED_CALLERS``: ``all`` (default), ``none``, or a comma-separated list
    of ``key:<key alias or hashed token>`` and ``team:<team id or alias>``. An untrusted
    caller's request is still served and logged, as a fresh trace; its prompt link stays.
    """

    allow_all: bool = True
    keys: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value: str | None) -> TrustPolicy:
        text = (value or "").strip() or "all"
        if text.lower() == "all":
            return cls()
        if text.lower() == "none":
            return cls(allow_all=False)
        keys: set[str] = set()
        teams: set[str] = set()
        for item in filter(None, (part.strip() for part in text.split(","))):
            kind, sep, ident = item.partition(":")
            if not sep or not ident or kind not in ("key", "team"):
                raise ValueError(
                    f"OTEL_BRIDGE_TRUSTED_CALLERS entry {item!r}: expected all, none, "
                    "key:<alias or token hash> or team:<id or alias>"
                )
            (keys if kind == "key" else teams).add(ident)
        return cls(allow_all=False, keys=frozenset(keys), teams=frozenset(teams))

    def trusts(self, key_ids: tuple[str | None, ...], team_ids: tuple[str | None, ...]) -> bool:
        if self.allow_all:
            return True
        return any(k in self.keys for k in key_ids if k) or any(
            t in self.teams for t in team_ids if t
        )


class RejectionLog:
    """Counts ignored context parts by reason; logs at 1, 2, 4, 8... so logs stay bounded.

    Header values are never logged: they are caller-controlled and may carry secrets.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, reasons: tuple[Rejection | str, ...]) -> None:
        for reason in reasons:
            key = reason.value if isinstance(reason, Rejection) else reason
            with self._lock:
                self._counts[key] += 1
                count = self._counts[key]
            if count & (count - 1) == 0:
                _logger.warning(
                    "otel-bridge: ignored part of an incoming trace context (reason=%s, %d so far)",
                    key,
                    count,
                )

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def langfuse_metadata(
    context: BridgeContext,
    caller_metadata: Mapping[str, object],
    *,
    may_attach: bool = True,
) -> dict[str, object]:
    """The metadata entries to add for LiteLLM's Langfuse logging; never overrides the caller.

    The parent is used only when the caller sampled its trace: an unsampled caller exports
    nothing, so a generation under its span would point at an observation that never arrives.
    """
    updates: dict[str, object] = {}
    parent = context.parent
    caller_steers = any(caller_metadata.get(key) is not None for key in _TRACE_STEERING_KEYS)
    caller_trace = caller_metadata.get("trace_id")
    if (
        parent is not None
        and parent.sampled
        and may_attach
        and not caller_steers
        and (caller_trace is None or caller_trace == parent.trace_id)
    ):
        updates["existing_trace_id"] = parent.trace_id
        updates["parent_observation_id"] = parent.span_id
    if context.prompt is not None and caller_metadata.get("prompt") is None:
        # LiteLLM links a prompt only from {name, version, prompt}; an empty message list is
        # the smallest "prompt" it accepts, and the bridge never has the template anyway.
        updates["prompt"] = {
            "name": context.prompt.name,
            "version": context.prompt.version,
            "prompt": [],
        }
    return updates


def apply(updates: Mapping[str, object], targets: list[MutableMapping[str, object]]) -> None:
    # An explicit None from the caller is "not set", as langfuse_metadata read it.
    for target in targets:
        for key, value in updates.items():
            if target.get(key) is None:
                target[key] = value


# --- OpenTelemetry paths (LiteLLM's `langfuse_otel` and `otel` callbacks) ---------------------

_OBSERVATION_TYPE = "langfuse.observation.type"
_PROMPT_NAME = "langfuse.observation.prompt.name"
_PROMPT_VERSION = "langfuse.observation.prompt.version"
# The attributes from which Langfuse infers that a span is a generation.
MODEL_ATTRIBUTES = (
    "langfuse.observation.model.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "llm.model_name",
    "model",
)

# Which requests the span processor types so that Langfuse counts one generation per model
# call: "all" (default: every request through a bridged proxy; on an unbridged request the
# only change is `langfuse.observation.type=span` on spans that are not the model call) or
# "bridged" (requests without bridge context are exported exactly as LiteLLM exports them).
OTEL_BRIDGE_SPAN_TYPING = "OTEL_BRIDGE_SPAN_TYPING"
SPAN_TYPING_CHOICES = ("all", "bridged")


def types_unbridged_requests(value: str | None) -> bool:
    """``OTEL_BRIDGE_SPAN_TYPING``'s value -> whether unbridged requests are typed too."""
    text = (value or "").strip().lower() or "all"
    if text not in SPAN_TYPING_CHOICES:
        _logger.warning(
            "otel-bridge: %s=%r is not one of %s; using 'all'",
            OTEL_BRIDGE_SPAN_TYPING,
            value,
            "/".join(SPAN_TYPING_CHOICES),
        )
        return True
    return text == "all"


# The bridge context of the request being served. Set by the hook inside the request's task;
# asyncio tasks and LiteLLM's logging worker copy it, so the spans LiteLLM starts for this
# request see it and no other request's spans can.
current_request: ContextVar[BridgeContext | None] = ContextVar(
    "otel_bridge_current_request", default=None
)


def link_prompt(span: Span, request: BridgeContext) -> None:
    """Stamp the request's prompt on ``span`` (a span of this request that is still open)."""
    if request.prompt is None or not span.is_recording():
        return
    if _PROMPT_NAME in (span.attributes or {}):
        return
    if request.parent is not None and span.context.trace_id != int(request.parent.trace_id, 16):
        return
    span.set_attributes(
        {_PROMPT_NAME: request.prompt.name, _PROMPT_VERSION: request.prompt.version}
    )


class ProxySpanProcessor(SpanProcessor):
    """Makes the gateway's OpenTelemetry spans of a bridged request read right in Langfuse.

    * They carry the caller's prompt link (``langfuse.observation.prompt.name``/``.version``),
      the way Langfuse's own ``propagate_attributes`` stamps child spans; Langfuse applies it
      to generations only.
    * Those for which ``is_not_a_model_call`` holds at start are typed ``span`` explicitly, so
      a model attribute stamped on them later does not make Langfuse count them as
      generations.

    A request without bridge context gets no prompt link; with ``type_unbridged`` its spans are
    typed by the same rule (one generation per model call on every request, see
    :data:`OTEL_BRIDGE_SPAN_TYPING`), without it they are left exactly as LiteLLM exports
    them. Some of a request's spans start before the hook has read its headers (the server
    span, auth), so a span also counts as bridged when it continues a caller's
    ``traceparent`` (its parent is remote), when the request's baggage names a prompt, or when
    its parent was bridged.
    """

    def __init__(
        self,
        is_not_a_model_call: Callable[[Span], bool] = lambda span: False,
        errors: RejectionLog | None = None,
        *,
        type_unbridged: bool = False,
    ):
        self.is_not_a_model_call = is_not_a_model_call
        self.errors = errors or RejectionLog()
        self.type_unbridged = type_unbridged
        # Weakly held: a finished request's spans go when LiteLLM and the exporter drop them.
        self._bridged: weakref.WeakSet[Span] = weakref.WeakSet()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            self._on_start(span, parent_context)
        except Exception:  # a span processor runs inside LiteLLM's request: never fail it
            self.errors.record(("span_processor_error",))
            _logger.debug("otel-bridge: span processor failed", exc_info=True)

    def _on_start(self, span: Span, parent_context: Context | None) -> None:
        request = current_request.get()
        bridged = request is not None or self._continues_bridged_request(span, parent_context)
        if not bridged and not self.type_unbridged:
            return
        attributes = span.attributes or {}
        if _OBSERVATION_TYPE not in attributes and self.is_not_a_model_call(span):
            span.set_attribute(_OBSERVATION_TYPE, "span")
        if not bridged:
            return
        self._bridged.add(span)
        if request is not None:
            link_prompt(span, request)

    def _continues_bridged_request(self, span: Span, parent_context: Context | None) -> bool:
        parent = span.parent
        if parent is not None and parent.is_remote:
            return True
        if prompt_from_baggage(otel_baggage.get_all(parent_context)) is not None:
            return True
        return trace.get_current_span(parent_context) in self._bridged


class ProxyBaggagePropagator(BaggagePropagator):
    """W3C baggage for the gateway: refuses inbound keys that would let a caller write
    LiteLLM's own span attributes, and never forwards ``langfuse_*`` members upstream."""

    def __init__(self, refused_prefixes: tuple[str, ...] = DEFAULT_REFUSED_BAGGAGE_PREFIXES):
        super().__init__(refused_prefixes)
