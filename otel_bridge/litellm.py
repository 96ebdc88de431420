"""LiteLLM proxy adapter: the bridge as a LiteLLM callback.

Add it next to the Langfuse callback in the proxy's ``config.yaml``::

    litellm_settings:
      success_callback: ["langfuse"]
      callbacks: ["otel_bridge.litellm.bridge"]

Before each call, :class:`LiteLLMBridge` reads ``traceparent`` and ``baggage`` from the
incoming request and writes ``existing_trace_id``, ``parent_observation_id`` and ``prompt``
into the request's metadata, where LiteLLM's ``langfuse`` callback reads them. For LiteLLM's
OpenTelemetry callbacks (``langfuse_otel``, ``otel``, legacy or V2) it adds
:class:`~otel_bridge._proxy.ProxySpanProcessor` to the providers they export through, and the
request's context reaches it through a context variable. At import it installs the gateway's
baggage propagator. Whatever happens, the request goes on: the hook logs and counts what it
could not use and never raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping, MutableMapping
from dataclasses import replace
from typing import Any

from litellm.integrations.custom_logger import CustomLogger
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import Span, TracerProvider
from opentelemetry.trace import SpanKind

from otel_bridge._config import (
    OTEL_BRIDGE_TRUSTED_CALLERS,
    is_disabled,
    refused_baggage_prefixes,
)
from otel_bridge._context import decode_headers
from otel_bridge._litellm_compat import log_findings
from otel_bridge._propagation import textmap_from_env
from otel_bridge._proxy import (
    DEFAULT_REFUSED_BAGGAGE_PREFIXES,
    MODEL_ATTRIBUTES,
    OTEL_BRIDGE_SPAN_TYPING,
    ProxyBaggagePropagator,
    ProxySpanProcessor,
    RejectionLog,
    TrustPolicy,
    apply,
    current_request,
    langfuse_metadata,
    link_prompt,
    types_unbridged_requests,
)

_logger = logging.getLogger("otel_bridge.proxy")

# /chat/completions keeps caller metadata in "metadata"; /messages and /responses in
# "litellm_metadata", and their logging object already holds a copy of its own.
_METADATA_FIELDS = ("metadata", "litellm_metadata")


def _request_headers(data: Mapping[str, Any]) -> Mapping[str, Any]:
    request = data.get("proxy_server_request")
    headers = request.get("headers") if isinstance(request, Mapping) else None
    if not isinstance(headers, Mapping):
        metadata = data.get("metadata")
        headers = metadata.get("headers") if isinstance(metadata, Mapping) else None
    return headers if isinstance(headers, Mapping) else {}


def _metadata_targets(data: MutableMapping[str, Any]) -> list[MutableMapping[str, object]]:
    targets: list[MutableMapping[str, object]] = [
        value for field in _METADATA_FIELDS if isinstance(value := data.get(field), MutableMapping)
    ]
    params = getattr(data.get("litellm_logging_obj"), "litellm_params", None)
    if isinstance(params, Mapping) and isinstance(params.get("metadata"), MutableMapping):
        targets.append(params["metadata"])
    unique: dict[int, MutableMapping[str, object]] = {id(t): t for t in targets}
    return list(unique.values())


def _caller_ids(user_api_key_dict: object) -> tuple[tuple[str | None, ...], tuple[str | None, ...]]:
    def text(name: str) -> str | None:
        value = getattr(user_api_key_dict, name, None)
        return value if isinstance(value, str) else None

    return (text("key_alias"), text("token")), (text("team_id"), text("team_alias"))


def _litellm_tracer_providers() -> list[TracerProvider]:
    """The SDK tracer providers LiteLLM's OTel callbacks export through.

    ``otel`` (legacy and V2) publishes its provider globally. ``langfuse_otel`` exports through
    providers it builds on first use and caches per credential set; its default one is built
    here ahead of the first request, so no span of that request misses the processor.
    """
    import litellm

    found: list[TracerProvider] = []
    global_provider = trace.get_tracer_provider()
    if isinstance(global_provider, TracerProvider):
        found.append(global_provider)
    for name in _CALLBACK_LISTS:
        for callback in getattr(litellm, name, None) or ():
            if getattr(callback, "callback_name", None) == "langfuse_otel":
                with contextlib.suppress(Exception):
                    callback.get_tracer_to_use_for_request({})
            candidates = [getattr(callback, "_tracer_provider", None)]
            cache = getattr(callback, "_tracer_provider_cache", None)
            if isinstance(cache, Mapping):
                # 1.81.15-1.98.1 cache bare providers, later releases wrap them (`.provider`).
                candidates.extend(
                    entry if isinstance(entry, TracerProvider) else getattr(entry, "provider", None)
                    for entry in list(cache.values())
                )
            for provider in candidates:
                if isinstance(provider, TracerProvider) and all(provider is not p for p in found):
                    found.append(provider)
    return found


def _not_a_model_call(span: Span) -> bool:
    """LiteLLM spans that Langfuse would otherwise count as generations.

    LiteLLM's OTel V2 promotes ``gen_ai.request.model`` through baggage onto every span of a
    request, and Langfuse types any span with a model attribute as a generation. Only
    LiteLLM's own spans are model calls (V2's CLIENT ``chat <model>``, legacy
    ``litellm_request``, which gets its model attributes after it starts), so framework spans
    (FastAPI's) and LiteLLM INTERNAL spans that start with the promoted model (``route``)
    are typed as plain spans.
    """
    scope = span.instrumentation_scope
    if scope is None or scope.name not in _litellm_scopes():
        return True
    attributes = span.attributes or {}
    return span.kind is not SpanKind.CLIENT and any(k in attributes for k in MODEL_ATTRIBUTES)


_LITELLM_SCOPE = "litellm"


def _litellm_scopes() -> tuple[str, str]:
    # The legacy OTel loggers name their tracer OTEL_TRACER_NAME (default "litellm"); V2's is
    # always "litellm".
    return _LITELLM_SCOPE, os.environ.get("OTEL_TRACER_NAME") or _LITELLM_SCOPE


_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "_async_success_callback",
    "failure_callback",
    "_async_failure_callback",
)


def _detach_from_caller_trace(
    data: MutableMapping[str, Any], targets: list[MutableMapping[str, object]], trace_id: str
) -> None:
    """Undo LiteLLM's own copy of the traceparent's trace id, for a caller not trusted to join.

    LiteLLM takes ``litellm_trace_id`` and ``metadata.trace_id`` from ``traceparent`` before any
    hook runs; left alone, the Langfuse callback would log into the caller's trace anyway.
    """
    fresh = uuid.uuid4().hex
    if data.get("litellm_trace_id") == trace_id:
        data["litellm_trace_id"] = fresh
    for target in targets:
        if target.get("trace_id") == trace_id:
            target["trace_id"] = fresh


class _SpanProcessorInstaller:
    """Adds :class:`ProxySpanProcessor` to every tracer provider LiteLLM exports through.

    LiteLLM builds its providers while the proxy starts, after this module is imported, and
    spans of the first request start before any hook runs: a short-lived thread watches for
    them, and hook calls look again at most once a second.
    """

    def __init__(self, errors: RejectionLog, *, type_unbridged: bool = True) -> None:
        self._errors = errors
        self._type_unbridged = type_unbridged
        self._lock = threading.Lock()
        self._installed: list[TracerProvider] = []
        self._next_scan = 0.0

    def scan(self) -> None:
        now = time.monotonic()
        if now < self._next_scan:
            return
        self._next_scan = now + 1.0
        for provider in _litellm_tracer_providers():
            with self._lock:
                if any(provider is done for done in self._installed):
                    continue
                provider.add_span_processor(
                    ProxySpanProcessor(
                        _not_a_model_call, self._errors, type_unbridged=self._type_unbridged
                    )
                )
                self._installed.append(provider)
            _logger.info("otel-bridge: span processor added to %s", type(provider).__name__)

    def watch(self, seconds: float = 120.0, first: float = 0.05, longest: float = 1.0) -> None:
        # LiteLLM sets its providers up within the proxy's first seconds: look often then,
        # rarely after, so the watcher costs the serving proxy nothing measurable.
        def run() -> None:
            deadline, interval = time.monotonic() + seconds, first
            while time.monotonic() < deadline:
                self._next_scan = 0.0
                self.scan()
                time.sleep(interval)
                interval = min(interval * 2, longest)

        threading.Thread(target=run, name="otel-bridge-install", daemon=True).start()


class LiteLLMBridge(CustomLogger):  # type: ignore[misc]
    """Turns W3C context on incoming proxy requests into LiteLLM Langfuse metadata."""

    def __init__(self, trust: TrustPolicy | None = None) -> None:
        super().__init__()
        self.enabled = not is_disabled()
        self.trust = trust or TrustPolicy.parse(os.environ.get(OTEL_BRIDGE_TRUSTED_CALLERS))
        self.rejections = RejectionLog()
        self.span_processor = _SpanProcessorInstaller(
            self.rejections,
            type_unbridged=types_unbridged_requests(os.environ.get(OTEL_BRIDGE_SPAN_TYPING)),
        )

    def start(self) -> None:
        """Process-wide setup: the gateway's baggage rules and the span processor; one log
        line for each thing this LiteLLM release cannot do with the bridge."""
        log_findings()
        prefixes = refused_baggage_prefixes(DEFAULT_REFUSED_BAGGAGE_PREFIXES)
        propagate.set_global_textmap(textmap_from_env(ProxyBaggagePropagator(prefixes)))
        self.span_processor.watch()

    def bridge_request(
        self, data: MutableMapping[str, Any], user_api_key_dict: object = None
    ) -> None:
        """Apply the request's bridge context to its metadata and to its spans."""
        self.span_processor.scan()
        context = decode_headers(_request_headers(data))
        if context.rejections:
            self.rejections.record(context.rejections)
        if not context:
            # Always set, so nothing from an earlier request sharing this context survives.
            current_request.set(None)
            return
        targets = _metadata_targets(data)
        caller: dict[str, object] = {}
        for target in reversed(targets):
            caller.update(target)
        # A prompt the caller put in its own metadata wins over the header's, on every path.
        for_spans = context if caller.get("prompt") is None else replace(context, prompt=None)
        current_request.set(for_spans or None)
        # The legacy OTel loggers start the request's span ("Received Proxy Server Request")
        # during auth, before this hook; up to 1.80 that span is the one that becomes the
        # generation, so it gets the prompt here, while it is still open.
        request_span = getattr(user_api_key_dict, "parent_otel_span", None)
        if isinstance(request_span, Span) and for_spans:
            link_prompt(request_span, for_spans)
        if not targets:
            return
        may_attach = self.trust.trusts(*_caller_ids(user_api_key_dict))
        if context.parent is not None and not may_attach:
            self.rejections.record(("caller_not_trusted",))
            _detach_from_caller_trace(data, targets, context.parent.trace_id)
        apply(langfuse_metadata(context, caller, may_attach=may_attach), targets)

    async def async_pre_call_hook(
        self,
        user_api_key_dict: Any,
        cache: Any,
        data: dict[str, Any],
        call_type: Any,
    ) -> dict[str, Any]:
        if self.enabled:
            try:
                self.bridge_request(data, user_api_key_dict)
            except Exception:  # the request must go on whatever the bridge hits
                self.rejections.record(("internal_error",))
                _logger.exception("otel-bridge: hook failed; the request continues unbridged")
        return data


bridge = LiteLLMBridge()
"""The instance ``config.yaml`` names: ``callbacks: ["otel_bridge.litellm.bridge"]``."""
if bridge.enabled:
    bridge.start()
