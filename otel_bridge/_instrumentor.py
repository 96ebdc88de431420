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
import importlib.metadata
import importlib.util
import logging
from collections.abc import Collection, Iterable
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider

from otel_bridge import _client, _openai
from otel_bridge._config import (
    OPENAI_BASE_URL,
    gateways_from_env,
    gateways_named,
    openai_base_url,
    parse_gateways,
)
from otel_bridge._propagation import textmap_from_env
from otel_bridge.package import _instruments_any

_logger = logging.getLogger(__name__)

_HTTPX_INSTRUMENTATION = "opentelemetry.instrumentation.httpx"
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
        for reason in unsupported_reasons():
            _logger.warning("otel-bridge: unsupported here: %s", reason)
        prompt_sources: list[_client.PromptSource] = []
        if _langfuse_available() and isinstance(tracer_provider, TracerProvider):
            from otel_bridge import _langfuse

            tracer_provider.add_span_processor(_langfuse.GenerationTracker())
            prompt_sources.append(_langfuse.open_generation_prompt)
        _configure_gateways(gateways, prompt_sources)
        type(self)._previous_textmap = propagate.get_global_textmap()
        propagate.set_global_textmap(textmap_from_env(_client.GatewayBaggagePropagator()))
        for module_name, class_name in _HTTP_INSTRUMENTORS.items():
            if importlib.util.find_spec(module_name) is None or not _has_httpx_instrumentation():
                continue  # unsupported_reasons() said so where that matters
            try:
                module = importlib.import_module(_HTTPX_INSTRUMENTATION)
                instrumentor = getattr(module, class_name)()
            except (ImportError, AttributeError):
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

            try:
                _langfuse.ensure_langfuse_client()
            except Exception:  # the app can still build its own client; never stop it
                _logger.exception("otel-bridge: could not create the Langfuse client")

    def _uninstrument(self, **kwargs: Any) -> None:
        for instrumentor in self._instrumented_http:
            instrumentor.uninstrument()
        type(self)._instrumented_http = ()
        _openai.unwatch()
        if self._previous_textmap is not None:
            propagate.set_global_textmap(self._previous_textmap)
            type(self)._previous_textmap = None
        _client.reset()


def _langfuse_available() -> bool:
    return importlib.util.find_spec("langfuse") is not None


def _configure_gateways(
    gateways: Iterable[str] | str | None, prompt_sources: list[_client.PromptSource]
) -> None:
    """Named gateways, or (OTEL_BRIDGE_GATEWAYS unset) the ones the app names to OpenAI."""
    if gateways is not None or gateways_named():
        named = parse_gateways(gateways) if gateways is not None else gateways_from_env()
        _client.configure(named, prompt_sources)
        if not named:
            _logger.warning(
                "otel-bridge: no gateway is named, so no request will carry a prompt link; "
                "set OTEL_BRIDGE_GATEWAYS to the gateway's base URL, e.g. http://localhost:4000"
            )
        return
    _client.configure((), prompt_sources, learn=True)
    _openai.watch_clients()
    origin, problem = openai_base_url()
    if problem is not None:
        _logger.warning("otel-bridge: %s; it does not count as a gateway", problem)
    elif origin is not None and not _openai.is_openai_host(origin.host):
        _client.learn_gateway(origin, OPENAI_BASE_URL)
        return
    _logger.warning(
        "otel-bridge: OTEL_BRIDGE_GATEWAYS is not set and OPENAI_BASE_URL names no gateway: "
        "a gateway counts once the app builds an OpenAI client with its base_url; until then "
        "no request carries a prompt link (set OTEL_BRIDGE_GATEWAYS, e.g. "
        "http://localhost:4000)"
    )


def _has_httpx_instrumentation() -> bool:
    return importlib.util.find_spec(_HTTPX_INSTRUMENTATION) is not None


def _major(distribution: str) -> int | None:
    try:
        return int(importlib.metadata.version(distribution).split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def unsupported_reasons() -> list[str]:
    """What in this environment the bridge cannot serve, each as one sentence."""
    reasons = []
    if not _has_httpx_instrumentation():
        reasons.append(
            "opentelemetry-instrumentation-httpx is not installed, so gateway calls carry "
            "neither traceparent nor the prompt link; install otel-bridge[client]"
        )
    elif importlib.util.find_spec("httpx2") is not None:
        module = importlib.import_module(_HTTPX_INSTRUMENTATION)
        if not hasattr(module, _HTTP_INSTRUMENTORS["httpx2"]):
            reasons.append(
                "httpx2 (the OpenAI SDK 3's HTTP client) is installed but this "
                "opentelemetry-instrumentation-httpx cannot instrument it; upgrade it to "
                ">= 0.66b2"
            )
    langfuse_major = _major("langfuse")
    if langfuse_major is not None and langfuse_major < 3:
        reasons.append(
            f"langfuse {importlib.metadata.version('langfuse')} does not trace through "
            "OpenTelemetry, so the gateway's generation cannot join the app's trace; "
            "upgrade to langfuse >= 3.15"
        )
    openai_major = _major("openai")
    if openai_major is not None and openai_major < 1:
        reasons.append(
            f"the OpenAI SDK {importlib.metadata.version('openai')} sends through requests, "
            "which the bridge does not instrument; upgrade to openai >= 1"
        )
    return reasons


__all__ = ["BridgeInstrumentor", "_instruments_any"]
