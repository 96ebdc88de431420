"""Client tier: W3C context on requests to the gateway, and only there.

``traceparent`` flows as OpenTelemetry always sends it. The prompt link travels in ``baggage``
under Langfuse's own keys, and every ``langfuse_*`` member is withheld from any origin that is
not a configured gateway: a propagator cannot see the URL it injects into, so the httpx
request hook (which can) marks the client span of each gateway-bound request, and the
propagator reads that mark from the span that is current while it injects.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from otel_bridge._config import Origin
from otel_bridge._context import (
    LANGFUSE_BAGGAGE_PREFIX,
    PROMPT_NAME_KEY,
    PROMPT_VERSION_KEY,
    PromptRef,
    format_baggage,
    parse_baggage,
    prompt_from_baggage,
    prompt_members,
)
from otel_bridge._propagation import BaggagePropagator

_logger = logging.getLogger(__name__)

GATEWAY_ATTRIBUTE = "otel_bridge.gateway"
_PROMPT_CONTEXT_KEY = otel_context.create_key("otel_bridge.prompt")

PromptSource = Callable[[], PromptRef | None]
"""Finds the prompt of the call being made now, from state the bridge does not own."""

# Spans are weakly held: a span that is gone can never be current again.
_gateway_spans: weakref.WeakSet[trace.Span] = weakref.WeakSet()
# Each gateway origin, with the label its client spans carry.
_gateways: dict[Origin, str] = {}
_prompt_sources: list[PromptSource] = []
# With OTEL_BRIDGE_GATEWAYS unset, the origins the app's own OpenAI clients name are learnt.
_learning = False
_learn_lock = threading.Lock()


@contextmanager
def use_prompt(prompt: object) -> Iterator[PromptRef]:
    """Link gateway calls made inside the block to ``prompt``.

    Accepts a Langfuse prompt client, a ``{"name": ..., "version": ...}`` mapping or a
    :class:`PromptRef`. Works across threads started with a copied context and across
    asyncio tasks, like any OpenTelemetry context value.

        with otel_bridge.use_prompt(langfuse.get_prompt("test-prompt")):
            client.chat.completions.create(...)
    """
    ref = PromptRef.from_prompt(prompt)
    token = otel_context.attach(otel_context.set_value(_PROMPT_CONTEXT_KEY, ref))
    try:
        yield ref
    finally:
        otel_context.detach(token)


def current_prompt(context: Context | None = None) -> PromptRef | None:
    """The prompt a gateway call made now would carry, most specific source first.

    1. a registered source, e.g. the open Langfuse generation of this call;
    2. the innermost :func:`use_prompt`;
    3. ``langfuse_prompt_*`` baggage, as Langfuse's ``propagate_attributes(as_baggage=True)``
       or an upstream service put it there.
    """
    for source in _prompt_sources:
        found = source()
        if found is not None:
            return found
    explicit = otel_context.get_value(_PROMPT_CONTEXT_KEY, context)
    if isinstance(explicit, PromptRef):
        return explicit
    return prompt_from_baggage(otel_baggage.get_all(context))


def origin_of(url: Any) -> Origin | None:
    """The origin of an httpx/httpx2 URL, a transport-API URL tuple or a URL string."""
    # httpx.URL and httpx2.URL expose their parts; the transport API may pass a tuple.
    if isinstance(url, str):
        try:
            return Origin.parse(url)
        except ValueError:
            return None
    if isinstance(url, tuple):
        scheme, host, port = (
            part.decode("ascii", "replace") if isinstance(part, bytes) else part for part in url[:3]
        )
    else:
        try:
            scheme, host, port = url.scheme, url.host, url.port
        except AttributeError:
            return None
    if not isinstance(scheme, str) or not isinstance(host, str):
        return None
    return _cached_origin(scheme, host, port if isinstance(port, int) else None)


# A client talks to a handful of hosts: build each origin once.
_cached_origin = functools.lru_cache(maxsize=256)(Origin.of)


def request_hook(span: trace.Span, request: Any) -> None:
    """httpx/httpx2 request hook: mark the client span of a request bound for a gateway.

    Any other request loses the ``langfuse_*`` members of a ``baggage`` header it already
    carries: httpx builds a redirect's request from the previous hop's headers, so a gateway
    answering 302 to another origin would otherwise hand the prompt link on.
    """
    origin = origin_of(getattr(request, "url", None)) if _gateways else None
    label = _gateways.get(origin) if origin is not None else None
    if label is not None:
        _gateway_spans.add(span)
        if span.is_recording():
            span.set_attribute(GATEWAY_ATTRIBUTE, label)
        return
    _strip_langfuse_baggage(getattr(request, "headers", None))


def _strip_langfuse_baggage(headers: Any) -> None:
    get_list = getattr(headers, "get_list", None)
    if get_list is None:
        return
    values = get_list("baggage")
    if not any(LANGFUSE_BAGGAGE_PREFIX in value for value in values):
        return
    members, _ = parse_baggage(values)
    kept = format_baggage((k, v) for k, v in members if not k.startswith(LANGFUSE_BAGGAGE_PREFIX))
    del headers["baggage"]
    if kept:
        headers["baggage"] = kept


async def async_request_hook(span: trace.Span, request: Any) -> None:
    request_hook(span, request)


def is_gateway_span(span: object) -> bool:
    """Whether ``span`` is the client span of a call to a configured gateway."""
    attributes = getattr(span, "attributes", None)
    return isinstance(attributes, Mapping) and GATEWAY_ATTRIBUTE in attributes


class GatewayBaggagePropagator(BaggagePropagator):
    """W3C baggage, with ``langfuse_*`` members sent to configured gateways only.

    Replaces OpenTelemetry's ``baggage`` propagator: members outside the ``langfuse_``
    prefix flow everywhere as before; the prompt link is added for gateway calls.
    """

    def outbound(
        self, entries: Mapping[str, object], context: Context | None
    ) -> Iterable[tuple[str, str]]:
        if trace.get_current_span(context) not in _gateway_spans:
            return super().outbound(entries, context)
        prompt = current_prompt(context)
        # The bridge's own members go first so the W3C size limit never cuts them.
        members = prompt_members(prompt) if prompt else []
        everywhere = []
        for key, value in entries.items():
            if not key.startswith(LANGFUSE_BAGGAGE_PREFIX):
                if not key.startswith(self.refused_prefixes):
                    everywhere.append((key, str(value)))
            elif key not in (PROMPT_NAME_KEY, PROMPT_VERSION_KEY):
                members.append((key, str(value)))
        members += everywhere
        return members


def configure(
    gateways: Collection[Origin],
    prompt_sources: Iterable[PromptSource] = (),
    *,
    learn: bool = False,
) -> None:
    """Set which origins are gateways and where prompts may come from (process-wide).

    ``learn``: :func:`learn_gateway` may add origins later (OTEL_BRIDGE_GATEWAYS is unset).
    """
    global _gateways, _learning
    _gateways = {origin: str(origin) for origin in gateways}
    _prompt_sources[:] = list(prompt_sources)
    _learning = learn


def learn_gateway(origin: Origin, source: str) -> bool:
    """Count ``origin`` as a gateway because the app named it in ``source``; says so once.

    Does nothing unless :func:`configure` allowed learning, or when ``origin`` already counts.
    """
    global _gateways
    if not _learning:
        return False
    with _learn_lock:
        if origin in _gateways:
            return False
        # A new dict, never a changed one: request hooks on other threads read it unlocked.
        _gateways = {**_gateways, origin: str(origin)}
    _logger.warning(
        "otel-bridge: OTEL_BRIDGE_GATEWAYS is not set, so %s (from %s) counts as a gateway: "
        "calls to it carry the prompt link; set OTEL_BRIDGE_GATEWAYS to name gateways yourself",
        origin,
        source,
    )
    return True


def gateway_origins() -> frozenset[Origin]:
    return frozenset(_gateways)


def reset() -> None:
    global _gateways, _learning
    _gateways = {}
    _learning = False
    _prompt_sources.clear()
