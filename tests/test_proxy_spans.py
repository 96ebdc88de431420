"""ProxySpanProcessor on a real OpenTelemetry SDK: what the gateway's spans carry when exported.

The end-to-end tests run it inside LiteLLM; these pin down its rules one by one: only spans of
a bridged request are touched, whichever way the request was recognised, and nothing it meets
makes it raise into the request.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterator

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_bridge import BridgeContext, PromptRef, SpanRef
from otel_bridge._proxy import ProxySpanProcessor, current_request

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
PROMPT = PromptRef("test-prompt", 1)
TYPE = "langfuse.observation.type"
PROMPT_NAME = "langfuse.observation.prompt.name"
PROMPT_VERSION = "langfuse.observation.prompt.version"


Exported = tuple[trace.Tracer, InMemorySpanExporter]


def framework_span(span: Span) -> bool:
    # Stands in for LiteLLM's rule: every span not named like a model call is a framework span.
    return not span.name.startswith("chat ")


@pytest.fixture
def exported() -> Iterator[Exported]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(ProxySpanProcessor(framework_span))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("litellm"), exporter
    provider.shutdown()


def remote_parent() -> context.Context:
    parent = SpanContext(TRACE_ID, SPAN_ID, is_remote=True, trace_flags=TraceFlags(1))
    return trace.set_span_in_context(NonRecordingSpan(parent))


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def serve(tracer: trace.Tracer, request: BridgeContext | None, ctx: context.Context | None) -> None:
    """One request as LiteLLM serves it: server span, auth, then the hook, then the model call.

    In a context of its own, as uvicorn runs each request in a task of its own.
    """
    contextvars.Context().run(_serve, tracer, request, ctx)


def _serve(
    tracer: trace.Tracer, request: BridgeContext | None, ctx: context.Context | None
) -> None:
    with tracer.start_as_current_span("POST /v1/chat/completions", context=ctx):
        with tracer.start_as_current_span("auth"):
            pass
        token = current_request.set(request)
        try:
            with (
                tracer.start_as_current_span("chat llama3.2:1b"),
                tracer.start_as_current_span("router"),
            ):
                pass
        finally:
            current_request.reset(token)


def test_a_request_without_context_is_exported_untouched(exported: Exported) -> None:
    tracer, exporter = exported
    serve(tracer, None, context.Context())
    for span in exporter.get_finished_spans():
        assert TYPE not in span.attributes, span.name
        assert PROMPT_NAME not in span.attributes, span.name


def test_a_bridged_request_is_typed_and_linked_from_its_first_span(exported: Exported) -> None:
    tracer, exporter = exported
    request = BridgeContext(
        parent=SpanRef(f"{TRACE_ID:032x}", f"{SPAN_ID:016x}", True), prompt=PROMPT
    )
    serve(tracer, request, remote_parent())
    spans = by_name(exporter)
    # Started before the hook, recognised by their remote parent (server) or bridged parent (auth).
    assert spans["POST /v1/chat/completions"].attributes[TYPE] == "span"
    assert spans["auth"].attributes[TYPE] == "span"
    # The model call stays untyped (Langfuse makes it a generation) and carries the link.
    model_call = spans["chat llama3.2:1b"]
    assert TYPE not in model_call.attributes
    assert model_call.attributes[PROMPT_NAME] == "test-prompt"
    assert type(model_call.attributes[PROMPT_VERSION]) is int
    assert spans["router"].attributes[TYPE] == "span"


def test_a_prompt_only_request_is_recognised_from_its_baggage(exported: Exported) -> None:
    tracer, exporter = exported
    ctx = baggage.set_baggage("langfuse_prompt_name", "test-prompt", context.Context())
    ctx = baggage.set_baggage("langfuse_prompt_version", "1", ctx)
    serve(tracer, BridgeContext(prompt=PROMPT), ctx)
    spans = by_name(exporter)
    assert spans["POST /v1/chat/completions"].attributes[TYPE] == "span"
    assert spans["chat llama3.2:1b"].attributes[PROMPT_NAME] == "test-prompt"


@pytest.mark.parametrize("version", ["0", "x", "99999999999", ""])
def test_an_invalid_prompt_in_baggage_is_not_a_bridged_request(
    exported: Exported, version: str
) -> None:
    tracer, exporter = exported
    ctx = baggage.set_baggage("langfuse_prompt_name", "test-prompt", context.Context())
    ctx = baggage.set_baggage("langfuse_prompt_version", version, ctx)
    serve(tracer, None, ctx)
    assert all(TYPE not in s.attributes for s in exporter.get_finished_spans())


def test_a_bridged_request_does_not_mark_the_next_one(exported: Exported) -> None:
    tracer, exporter = exported
    request = BridgeContext(
        parent=SpanRef(f"{TRACE_ID:032x}", f"{SPAN_ID:016x}", True), prompt=PROMPT
    )
    serve(tracer, request, remote_parent())
    exporter.clear()
    serve(tracer, None, context.Context())
    assert all(TYPE not in s.attributes for s in exporter.get_finished_spans())


def test_concurrent_requests_keep_their_own_prompt(exported: Exported) -> None:
    tracer, exporter = exported

    async def one(number: int) -> None:
        parent = SpanRef(f"{number:032x}", f"{number:016x}", True)
        request = BridgeContext(parent=parent, prompt=PromptRef(f"prompt-{number}", number))
        token = current_request.set(request)
        try:
            ctx = trace.set_span_in_context(
                NonRecordingSpan(
                    SpanContext(number, number, is_remote=True, trace_flags=TraceFlags(1))
                )
            )
            with tracer.start_as_current_span(f"chat {number}", context=ctx):
                await asyncio.sleep(0)
        finally:
            current_request.reset(token)

    async def main() -> None:
        await asyncio.gather(*(one(n) for n in range(1, 51)))

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    assert len(spans) == 50
    for span in spans:
        number = span.context.trace_id
        assert span.attributes[PROMPT_NAME] == f"prompt-{number}"
        assert span.attributes[PROMPT_VERSION] == number


def test_a_failing_predicate_never_reaches_the_request() -> None:
    def broken(span: Span) -> bool:
        raise RuntimeError("boom")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor = ProxySpanProcessor(broken)
    provider.add_span_processor(processor)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("litellm").start_as_current_span("server", context=remote_parent()):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["server"]
    # Counted for the operator, like the hook's rejections.
    assert processor.errors.snapshot() == {"span_processor_error": 1}
    provider.shutdown()
