"""The probe ``otel-bridge check`` runs in a child process: one gateway call, as an app makes it.

Instrumented with ``otel_bridge.instrument()``, traced by the Langfuse SDK, the prompt linked
with ``otel_bridge.use_prompt``. Prints one JSON line: the trace id, the id of the app's HTTP
client span of the gateway call, and the marker sent in the message, or the error.

Environment: OTEL_BRIDGE_GATEWAYS (the gateway), LANGFUSE_* (the user's Langfuse),
OTEL_BRIDGE_CHECK_API_KEY, OTEL_BRIDGE_CHECK_MODEL, OTEL_BRIDGE_CHECK_PROMPT_NAME,
OTEL_BRIDGE_CHECK_PROMPT_VERSION, and OTEL_BRIDGE_CHECK_EXPORT_FILTER (``module:function``, the
``should_export_span`` of the user's app: its Langfuse client is built with it before the
bridge starts, as such an app does).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from otel_bridge._client import GATEWAY_ATTRIBUTE


class _GatewaySpanIds(SpanProcessor):
    """Remembers the span ids of the app's client spans of gateway calls."""

    def __init__(self) -> None:
        self.span_ids: list[str] = []

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and (span.attributes or {}).get(GATEWAY_ATTRIBUTE):
            self.span_ids.append(format(span.context.span_id, "016x"))


def _load(reference: str) -> Callable[[Any], bool]:
    module, _, attribute = reference.partition(":")
    target: Callable[[Any], bool] = getattr(importlib.import_module(module), attribute)
    return target


def main() -> int:
    export_filter = os.environ.get("OTEL_BRIDGE_CHECK_EXPORT_FILTER")
    if export_filter:
        from langfuse import Langfuse

        Langfuse(should_export_span=_load(export_filter))
    import otel_bridge

    otel_bridge.instrument()

    import openai
    from langfuse import get_client
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    gateway_spans = _GatewaySpanIds()
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.add_span_processor(gateway_spans)
    langfuse = get_client()
    marker = f"otel-bridge-check-{uuid.uuid4().hex}"
    prompt = {
        "name": os.environ["OTEL_BRIDGE_CHECK_PROMPT_NAME"],
        "version": int(os.environ["OTEL_BRIDGE_CHECK_PROMPT_VERSION"]),
    }
    client = openai.OpenAI(
        api_key=os.environ.get("OTEL_BRIDGE_CHECK_API_KEY") or "none",
        base_url=os.environ["OTEL_BRIDGE_GATEWAYS"],
        max_retries=0,
        timeout=120,
    )
    result: dict[str, Any] = {"marker": marker}
    with langfuse.start_as_current_observation(as_type="span", name="otel-bridge-check") as span:
        result["trace_id"], result["span_id"] = span.trace_id, span.id
        try:
            with otel_bridge.use_prompt(prompt):
                response = client.chat.completions.create(
                    model=os.environ["OTEL_BRIDGE_CHECK_MODEL"],
                    messages=[{"role": "user", "content": f"{marker}: answer with one word."}],
                )
            result["answer"] = response.choices[0].message.content
        except openai.OpenAIError as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
    langfuse.flush()
    result["gateway_span_ids"] = gateway_spans.span_ids
    print(json.dumps(result), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
