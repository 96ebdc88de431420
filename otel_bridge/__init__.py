"""otel-bridge: one Langfuse trace across an app and its LiteLLM gateway, prompt linked.

Client tier, without the launcher::

    import otel_bridge
    otel_bridge.instrument()            # reads OTEL_BRIDGE_GATEWAYS, LANGFUSE_*
    with otel_bridge.use_prompt(prompt):
        client.chat.completions.create(...)

or with it: ``OTEL_PYTHON_DISTRO=otel_bridge OTEL_PYTHON_CONFIGURATOR=otel_bridge
opentelemetry-instrument python app.py``.

Proxy tier: ``litellm_settings: callbacks: ["otel_bridge.litellm.bridge"]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from otel_bridge._client import (
    GatewayBaggagePropagator,
    current_prompt,
    is_gateway_span,
    use_prompt,
)
from otel_bridge._context import (
    BridgeContext,
    PromptRef,
    Rejection,
    SpanRef,
    decode_headers,
    encode_headers,
)

__version__ = "0.1.0"

_logger = logging.getLogger(__name__)


def instrument(*, gateways: str | Iterable[str] | None = None) -> None:
    """Do what ``opentelemetry-instrument`` with the bridge's distro does, in-process.

    Call it before the app builds its clients. Creates an SDK TracerProvider unless one is
    already set, then starts the client-tier bridge. ``gateways`` defaults to
    ``OTEL_BRIDGE_GATEWAYS``; an invalid entry raises ``ValueError`` naming it. Does nothing
    when ``OTEL_BRIDGE_DISABLED`` is true.
    """
    from otel_bridge._config import is_disabled, parse_gateways

    if is_disabled():
        return
    if gateways is not None:
        parse_gateways(gateways)  # a bad argument is the caller's to fix: raise before anything
    try:
        from otel_bridge.distro import apply_defaults, start_bridge
    except ImportError as error:
        # The project without its `client` extra: say what is missing, and let the app run.
        _logger.error(
            "otel-bridge: not started: cannot import %s; install otel-bridge[client]",
            error.name,
        )
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from otel_bridge.distro import OtelBridgeConfigurator

    apply_defaults()
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        # The SDK configurator honours OTEL_* exporters; the bridge starts after it.
        OtelBridgeConfigurator()._configure_sdk_only()  # type: ignore[no-untyped-call]
    start_bridge(gateways=gateways, raise_bad_setting=True)


def uninstrument() -> None:
    from otel_bridge._instrumentor import BridgeInstrumentor

    BridgeInstrumentor().uninstrument()


def langfuse_export_filter(span: object) -> bool:
    """Langfuse ``should_export_span`` that also keeps the client spans of gateway calls."""
    from otel_bridge._langfuse import langfuse_export_filter as _filter

    return _filter(span)  # type: ignore[arg-type]


__all__ = [
    "BridgeContext",
    "GatewayBaggagePropagator",
    "PromptRef",
    "Rejection",
    "SpanRef",
    "current_prompt",
    "decode_headers",
    "encode_headers",
    "instrument",
    "is_gateway_span",
    "langfuse_export_filter",
    "uninstrument",
    "use_prompt",
]
