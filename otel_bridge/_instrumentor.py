"""The client tier as one OpenTelemetry instrumentor.

Usage::

    from otel_bridge import BridgeInstrumentor

    BridgeInstrumentor().instrument(gateways=["http://localhost:4000"])
    # ... OpenAI / httpx calls to the gateway now carry the prompt link ...
    BridgeInstrumentor().uninstrument()

``instrument()`` installs :class:`GatewayBaggagePropagator` in place of W3C ``baggage``,
instruments ``httpx`` and ``httpx2`` with the bridge's request hooks, and, when the Langfuse
SDK is present, follows its generations and creates its client with the bridge's export
filter. Most applications use ``otel_bridge.instrument()`` or the launcher instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Collection, Iterable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider

from otel_bridge import _client
from otel_bridge._config import gateways_from_env, parse_gateways
from otel_bridge._propagation import textmap_from_env
from otel_bridge.package import _instruments_any

_logger = logging.getLogger(__name__)

_HTTP_INSTRUMENTORS = {
    "httpx": "HTTPXClientInstrumentor",
    "httpx2": "HTTPX2ClientInstrumentor",
}


class BridgeInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Client-tier bridge: prompt-carrying baggage for gateway calls, nothing for others."""

    # BaseInstrumentor is a singleton whose __init__ runs on every call: state lives on the class.
    _previous_textmap: TextMapPropagator | None = None
    _instrumented_http: tuple[Any, ...] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        # Any one of the HTTP libraries will do; each is instrumented only if installed.
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        gateways: Iterable[str] | str | None = kwargs.get("gateways")
        tracer_provider = kwargs.get("tracer_provider") or trace.get_tracer_provider()
        prompt_sources: list[_client.PromptSource] = []
        if _langfuse_available() and isinstance(tracer_provider, TracerProvider):
            from otel_bridge import _langfuse

            tracer_provider.add_span_processor(_langfuse.GenerationTracker())
            prompt_sources.append(_langfuse.open_generation_prompt)
        _client.configure(
            parse_gateways(gateways) if gateways is not None else gateways_from_env(),
            prompt_sources,
        )
        type(self)._previous_textmap = propagate.get_global_textmap()
        propagate.set_global_textmap(textmap_from_env(_client.GatewayBaggagePropagator()))
        for module_name, class_name in _HTTP_INSTRUMENTORS.items():
            try:
                module = importlib.import_module("opentelemetry.instrumentation.httpx")
                instrumentor = getattr(module, class_name)()
            except (ImportError, AttributeError):
                continue
            if importlib.util.find_spec(module_name) is None:
                continue
            if instrumentor.is_instrumented_by_opentelemetry:
                _logger.warning(
                    "otel-bridge: %s was instrumented before the bridge; its requests carry "
                    "no prompt link unless instrumented with otel_bridge's request hooks",
                    module_name,
                )
                continue
            instrumentor.instrument(
                tracer_provider=tracer_provider,
                request_hook=_client.request_hook,
                async_request_hook=_client.async_request_hook,
                skip_dep_check=True,
            )
            type(self)._instrumented_http = (*self._instrumented_http, instrumentor)
        if _langfuse_available():
            from otel_bridge import _langfuse

            _langfuse.ensure_langfuse_client()

    def _uninstrument(self, **kwargs: Any) -> None:
        for instrumentor in self._instrumented_http:
            instrumentor.uninstrument()
        type(self)._instrumented_http = ()
        if self._previous_textmap is not None:
            propagate.set_global_textmap(self._previous_textmap)
            type(self)._previous_textmap = None
        _client.reset()


def _langfuse_available() -> bool:
    return importlib.util.find_spec("langfuse") is not None


__all__ = ["BridgeInstrumentor", "_instruments_any"]
