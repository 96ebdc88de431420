"""Langfuse SDK adapter for the client tier (langfuse 3.15+, 4.x, 5.x).

Two gaps between the Langfuse SDK and a traced gateway call are closed here:

* ``langfuse.openai`` starts its generation with ``start_observation``, not as the current
  span, so while the OpenAI SDK sends the request nothing in the OpenTelemetry context says
  which prompt the call uses. :class:`GenerationTracker` remembers the latest Langfuse
  observation started in the running thread or task, and :func:`open_generation_prompt`
  hands its prompt to the bridge while it is still open.
* Langfuse's default export filter drops HTTP client spans, yet the gateway's generation is
  parented to the httpx span of the call. :func:`langfuse_export_filter` keeps Langfuse's
  defaults and adds the client spans of gateway calls, so no parent id dangles. Langfuse 3
  has no such filter (no ``should_export_span``): it exports every span whose scope is not
  blocked, the gateway call's span included, so there is nothing to add.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import os
import weakref
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel_bridge._client import is_gateway_span
from otel_bridge._context import PromptRef

_logger = logging.getLogger(__name__)

_LANGFUSE_SCOPE = "langfuse-sdk"
_OBSERVATION_TYPE = "langfuse.observation.type"
_PROMPT_NAME = "langfuse.observation.prompt.name"
_PROMPT_VERSION = "langfuse.observation.prompt.version"
_PROMPT_LINKED_TYPES = frozenset({"generation", "embedding"})

# A weak reference, so a finished observation is never kept alive by the context.
_latest_observation: contextvars.ContextVar[weakref.ref[Span] | None] = contextvars.ContextVar(
    "otel_bridge_latest_langfuse_observation", default=None
)


class GenerationTracker(SpanProcessor):
    """Remembers the latest Langfuse observation started in this thread or task."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        scope = span.instrumentation_scope
        if scope is not None and scope.name == _LANGFUSE_SCOPE:
            _latest_observation.set(weakref.ref(span))


def open_generation_prompt() -> PromptRef | None:
    """The prompt of the latest Langfuse generation started here, if it is still open."""
    ref = _latest_observation.get()
    span = ref() if ref is not None else None
    if span is None or span.end_time is not None:
        return None
    attributes = span.attributes or {}
    if attributes.get(_OBSERVATION_TYPE) not in _PROMPT_LINKED_TYPES:
        return None
    name, version = attributes.get(_PROMPT_NAME), attributes.get(_PROMPT_VERSION)
    if name is None or version is None:
        return None
    try:
        return PromptRef.from_prompt({"name": name, "version": version})
    except ValueError:
        return None


def langfuse_export_filter(span: ReadableSpan) -> bool:
    """Langfuse's default ``should_export_span``, plus the client spans of gateway calls.

    Pass it when you construct the Langfuse client yourself (langfuse 4 and 5)::

        Langfuse(should_export_span=otel_bridge.langfuse_export_filter)
    """
    if is_gateway_span(span):
        return True
    try:
        from langfuse.span_filter import is_default_export_span
    except ImportError:  # langfuse 3: no filter, it exports every span
        return True
    return bool(is_default_export_span(span))


def has_export_filter() -> bool:
    """Whether this Langfuse SDK filters spans (``should_export_span``, langfuse >= 4)."""
    try:
        from langfuse import Langfuse
    except ImportError:
        return False
    try:
        return "should_export_span" in inspect.signature(Langfuse.__init__).parameters
    except (TypeError, ValueError):
        return False


def ensure_langfuse_client() -> None:
    """Create the process's Langfuse client with the bridge's export filter, if it has none yet.

    ``get_client()`` later returns this client, so application code stays unchanged. When a
    client already exists it keeps its own filter, and the bridge says how to add its own.
    Langfuse 3 exports the gateway call's span as it is, so there the app's client is left to
    the app.
    """
    if not os.environ.get("LANGFUSE_PUBLIC_KEY") or not has_export_filter():
        return
    try:
        from langfuse import Langfuse
        from langfuse._client.resource_manager import LangfuseResourceManager
    except ImportError:
        return
    existing: dict[str, Any] = getattr(LangfuseResourceManager, "_instances", {})
    if existing:
        _logger.warning(
            "otel-bridge: a Langfuse client already existed before the bridge started; "
            "unless it was built with should_export_span=otel_bridge.langfuse_export_filter "
            "the gateway's generations will point at spans Langfuse never receives"
        )
        return
    Langfuse(should_export_span=langfuse_export_filter)
