"""What the bridge adapts to per LiteLLM release, rule by rule (the matrix runs them end to end).

* the start-up lines for what a deployment cannot do (otel_bridge/_litellm_compat.py);
* the callback file next to config.yaml and the command that writes it;
* the span processor reaching every provider shape LiteLLM's `langfuse_otel` caches;
* LiteLLM's scope under OTEL_TRACER_NAME;
* one generation per model call on unbridged requests too, and the switch that turns it off.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from bridge_loader import bridge_module, call_bridge, litellm_available, make_bridge
from opentelemetry import context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_bridge import cli
from otel_bridge._litellm_compat import (
    CALLBACK_FILE_ENTRY,
    CALLBACK_FILE_NAME,
    CALLBACK_FILE_TEXT,
    findings,
    langfuse_requirement,
    log_findings,
    needs_callback_file,
    parse_version,
    write_callback_file,
)
from otel_bridge._proxy import ProxySpanProcessor, types_unbridged_requests

TYPE = "langfuse.observation.type"


# --------------------------------------------------------------------------- start-up findings


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.74.15", (1, 74, 15)), ("1.74.15.post2", (1, 74, 15)), ("1.106.2", (1, 106, 2)),
     ("2", None), ("", None), (None, None), ("x.y.z", None)],
)  # fmt: skip
def test_parse_version(text: str | None, expected: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == expected


@pytest.mark.parametrize(
    ("litellm", "langfuse", "fits"),
    [((1, 74, 15), (2, 60, 10), True), ((1, 103, 10), (2, 7, 3), True),
     ((1, 103, 10), (4, 18, 0), False), ((1, 74, 15), (3, 15, 0), False),
     ((1, 104, 0), (4, 7, 0), True), ((1, 106, 2), (2, 60, 10), False),
     ((1, 108, 7), (5, 0, 4), False), ((1, 106, 2), (4, 6, 1), False)],
)  # fmt: skip
def test_one_line_when_langfuse_does_not_fit_the_litellm_release(
    litellm: tuple[int, int, int], langfuse: tuple[int, int, int], fits: bool
) -> None:
    found = findings(litellm, langfuse, {})
    if fits:
        assert found == []
        return
    (finding,) = found
    line = finding.line()
    assert line.startswith("otel-bridge: unsupported here: langfuse callback: ")
    assert langfuse_requirement(litellm) in line
    assert "\n" not in line


@pytest.mark.parametrize("value", ["true", "True", "1", "yes"])
def test_v2_asked_of_a_release_without_it(value: str) -> None:
    (finding,) = findings((1, 80, 17), (2, 60, 10), {"LITELLM_OTEL_V2": value})
    assert finding.path == "LITELLM_OTEL_V2"
    assert "1.80.17 has no OTel V2 (added in 1.88.0)" in finding.line()
    assert findings((1, 90, 7), (2, 60, 10), {"LITELLM_OTEL_V2": value}) == []


def test_nothing_to_say_without_litellm_or_on_a_fitting_deployment() -> None:
    assert findings(None, (4, 18, 0), {"LITELLM_OTEL_V2": "true"}) == []
    assert findings((1, 106, 2), (4, 18, 0), {"LITELLM_OTEL_V2": "true"}) == []
    assert findings((1, 106, 2), None, {}) == []  # no langfuse: the callback is not in use


@pytest.mark.parametrize(
    ("version", "needs"), [((1, 74, 15), True), ((1, 81, 1), True), ((1, 81, 3), False)]
)
def test_grpc_exporter_missing_where_litellm_imports_it(
    version: tuple[int, int, int], needs: bool
) -> None:
    # Read from the wheels: before 1.81.3 `_get_span_processor` imports
    # opentelemetry.exporter.otlp.proto.grpc unconditionally.
    found = findings(version, None, {}, has_grpc_exporter=False)
    assert [f.path for f in found] == (["langfuse_otel and otel callbacks"] if needs else [])
    assert findings(version, None, {}, has_grpc_exporter=True) == []


def test_older_than_measured() -> None:
    (finding,) = findings((1, 70, 0), (2, 60, 10), {})
    assert "older than 1.74.0" in finding.line()


def test_log_findings_reads_the_installed_versions(caplog: pytest.LogCaptureFixture) -> None:
    versions = {
        "litellm": "1.74.15",
        "langfuse": "4.18.0",
        "opentelemetry-exporter-otlp-proto-grpc": "1.45.2",
    }
    with (
        mock.patch("otel_bridge._litellm_compat.metadata.version", side_effect=versions.get),
        caplog.at_level(logging.WARNING, logger="otel_bridge.proxy"),
    ):
        found = log_findings({"LITELLM_OTEL_V2": "true"})
    assert [f.path for f in found] == ["LITELLM_OTEL_V2", "langfuse callback"]
    assert [r.getMessage() for r in caplog.records] == [f.line() for f in found]


# --------------------------------------------------------------------------- the callback file


@pytest.mark.parametrize(
    ("version", "needs"),
    [((1, 74, 15), True), ((1, 90, 7), True), ((1, 93, 2), True), ((1, 94, 0), False),
     ((1, 106, 2), False)],
)  # fmt: skip
def test_which_releases_need_the_file(version: tuple[int, int, int], needs: bool) -> None:
    # Bisected on the published wheels: litellm/proxy/types_utils/utils.py get_instance_fn
    # falls back to importing the dotted path from 1.94.0 on.
    assert needs_callback_file(version) is needs


def test_the_file_imports_the_one_bridge_instance(tmp_path: Path) -> None:
    """Loaded the way LiteLLM loads it (spec_from_file_location next to config.yaml), the file
    hands LiteLLM the package's own instance, not a second bridge."""
    import importlib.util

    write_callback_file(tmp_path / "config.yaml")
    spec = importlib.util.spec_from_file_location(
        "otel_bridge_callback", tmp_path / CALLBACK_FILE_NAME
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # The hook module as the proxy has it imported; disabled, so nothing process-wide starts.
    loaded = {"otel_bridge.litellm": bridge_module()}
    with (
        mock.patch.dict(os.environ, {"OTEL_BRIDGE_DISABLED": "1"}),
        litellm_available(),
        mock.patch.dict(sys.modules, loaded),
    ):
        spec.loader.exec_module(module)
    assert module.bridge is bridge_module().bridge


def test_command_writes_the_file_and_checks_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        'litellm_settings:\n  callbacks: ["langfuse_otel", "otel_bridge.litellm.bridge"]\n'
    )
    assert cli.main(["litellm-callback-file", str(config)]) == 1
    out = capsys.readouterr().out
    assert f'callbacks: ["{CALLBACK_FILE_ENTRY}"]' in out
    assert (tmp_path / CALLBACK_FILE_NAME).read_text() == CALLBACK_FILE_TEXT
    # Fixed config: the same command now succeeds and leaves the file as it is.
    config.write_text(
        f"litellm_settings:\n  callbacks:\n    - langfuse_otel\n    - {CALLBACK_FILE_ENTRY}\n"
    )
    assert cli.main(["litellm-callback-file", str(config)]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_command_before_the_config_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "deploy" / "config.yaml"
    assert cli.main(["litellm-callback-file", str(target)]) == 0
    assert (target.parent / CALLBACK_FILE_NAME).is_file()
    assert CALLBACK_FILE_ENTRY in capsys.readouterr().out


def test_command_never_overwrites_someone_elses_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs = tmp_path / CALLBACK_FILE_NAME
    theirs.write_text("custom = 1\n")
    assert cli.main(["litellm-callback-file", str(tmp_path / "config.yaml")]) == 1
    assert theirs.read_text() == "custom = 1\n"
    assert "exists with other content" in capsys.readouterr().out


def test_command_refuses_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["litellm-callback-file", str(tmp_path)]) == 2
    assert not (tmp_path / CALLBACK_FILE_NAME).exists()
    assert "is a directory" in capsys.readouterr().out


def test_print_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["litellm-callback-file", "--print", str(tmp_path / "c.yaml")]) == 0
    assert capsys.readouterr().out == CALLBACK_FILE_TEXT
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- providers and scope


@pytest.fixture
def fake_langfuse_otel() -> Iterator[SimpleNamespace]:
    callback = SimpleNamespace(callback_name="langfuse_otel", _tracer_provider_cache={})
    callback.get_tracer_to_use_for_request = lambda kwargs: None
    with litellm_available():
        litellm = sys.modules["litellm"]
        with mock.patch.object(litellm, "callbacks", [callback], create=True):
            yield callback


def test_bare_providers_in_the_cache_are_found(fake_langfuse_otel: SimpleNamespace) -> None:
    """LiteLLM 1.81.15-1.98.1 cache the `TracerProvider` itself per credential set."""
    bare = TracerProvider()
    fake_langfuse_otel._tracer_provider_cache["creds"] = bare
    assert any(p is bare for p in bridge_module()._litellm_tracer_providers())


def test_wrapped_providers_in_the_cache_are_found(fake_langfuse_otel: SimpleNamespace) -> None:
    """From 1.99 the cache holds entries with a `.provider`."""
    wrapped = TracerProvider()
    fake_langfuse_otel._tracer_provider_cache["creds"] = SimpleNamespace(provider=wrapped)
    assert any(p is wrapped for p in bridge_module()._litellm_tracer_providers())


def _spans_of(tracer_name: str, *, type_unbridged: bool) -> dict[str, ReadableSpan]:
    """An unbridged request as LiteLLM's V2 exports it: a framework span, an INTERNAL routing
    span that starts with the promoted model, and the CLIENT model call."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    predicate = bridge_module()._not_a_model_call
    provider.add_span_processor(ProxySpanProcessor(predicate, type_unbridged=type_unbridged))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    framework = provider.get_tracer("opentelemetry.instrumentation.fastapi")
    litellm = provider.get_tracer(tracer_name)
    model = {"gen_ai.request.model": "llama3.2:1b"}
    root = context.Context()
    with (
        framework.start_as_current_span("POST /v1/chat/completions", context=root),
        litellm.start_as_current_span("route", attributes=model),
        litellm.start_as_current_span("chat llama3.2:1b", kind=SpanKind.CLIENT, attributes=model),
    ):
        pass
    provider.shutdown()
    return {s.name: s for s in exporter.get_finished_spans()}


def test_unbridged_requests_get_one_generation_by_default() -> None:
    spans = _spans_of("litellm", type_unbridged=True)
    assert spans["POST /v1/chat/completions"].attributes[TYPE] == "span"
    assert spans["route"].attributes[TYPE] == "span"
    assert TYPE not in spans["chat llama3.2:1b"].attributes  # the one generation
    assert all("langfuse.observation.prompt.name" not in s.attributes for s in spans.values())


def test_the_switch_leaves_unbridged_requests_as_litellm_exports_them() -> None:
    spans = _spans_of("litellm", type_unbridged=False)
    assert all(TYPE not in s.attributes for s in spans.values())


def test_otel_tracer_name_is_litellms_scope_too() -> None:
    with mock.patch.dict("os.environ", {"OTEL_TRACER_NAME": "my-gateway"}):
        spans = _spans_of("my-gateway", type_unbridged=True)
    # Without the setting read, every span of the renamed scope would count as a framework
    # span and the model call would lose its generation type.
    assert TYPE not in spans["chat llama3.2:1b"].attributes
    assert spans["route"].attributes[TYPE] == "span"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, True), ("", True), ("all", True), (" ALL ", True), ("bridged", False), ("nope", True)],
)
def test_span_typing_setting(value: str | None, expected: bool) -> None:
    assert types_unbridged_requests(value) is expected


# --------------------------------------------------------------------------- the auth-time span


def test_the_request_span_started_before_the_hook_gets_the_prompt() -> None:
    """Legacy OTel loggers start "Received Proxy Server Request" during auth and hand it to the
    hook as `user_api_key_dict.parent_otel_span`; up to 1.80 that span becomes the generation,
    so the hook links the prompt on it. A span of another trace is left alone."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    from otel_bridge import BridgeContext, PromptRef, SpanRef, encode_headers

    trace_id, span_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    caller = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("litellm")
    headers = encode_headers(
        BridgeContext(
            parent=SpanRef(f"{trace_id:032x}", f"{span_id:016x}", True),
            prompt=PromptRef("test-prompt", 3),
        )
    )
    bridge = make_bridge()
    caller_context = set_span_in_context(NonRecordingSpan(caller))
    mine = tracer.start_span("Received Proxy Server Request", context=caller_context)
    other = tracer.start_span("Received Proxy Server Request", context=context.Context())
    for span in (mine, other):
        data = {"proxy_server_request": {"headers": dict(headers)}, "metadata": {}}
        call_bridge(bridge, data, SimpleNamespace(parent_otel_span=span))
        span.end()
    linked, unlinked = exporter.get_finished_spans()
    assert linked.attributes["langfuse.observation.prompt.name"] == "test-prompt"
    assert linked.attributes["langfuse.observation.prompt.version"] == 3
    assert "langfuse.observation.prompt.name" not in unlinked.attributes
    provider.shutdown()
