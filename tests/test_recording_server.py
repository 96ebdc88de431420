"""The recording server driven by real clients (Langfuse SDK v5 and v4, OTLP exporter, raw HTTP).

Every expected value about Langfuse's behaviour is taken from Langfuse's source (server v4.16.0,
github.com/langfuse/langfuse); each test names the file and function it follows. Expected values
are never read back from the recording server.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_bridge.recording_server import (
    OTLP_TRACES_PATH,
    RecordedPrompt,
    RecordedSpan,
    RecordingServer,
    observation_type,
)
from otel_bridge.recording_server._mapping import xxhash32

REPO = Path(__file__).resolve().parent.parent
PROXY_PYTHON = Path(os.environ.get("OTEL_BRIDGE_PROXY_PYTHON", "/tmp/vproxy/bin/python"))
V2_PATH = "/api/public/v2/observations"

# createAuthedProjectAPIRoute.ts, rejectInEventsOnlyMode.
EVENTS_ONLY_404 = {
    "message": "This endpoint is not available on deployments running in Langfuse v4 "
    "events_only mode. Learn more about Langfuse v4 at: https://langfuse.com/docs/v4"
}
# apiAuth.ts verifyAuthHeaderAndReturnScope: error.message + this suffix.
HOST_HINT = ". Confirm that you've configured the correct host."
# FIELD_SETS in event-query-builder.ts, as convertObservationPartial/convertEventsObservation
# name them, plus what getObservationsV2FromEventsTableForPublicApi and the endpoint always add.
CORE_KEYS = {"id", "traceId", "startTime", "endTime", "projectId", "parentObservationId", "type"}
ALWAYS_KEYS = {"latency", "timeToFirstToken", "modelId", "inputPrice", "outputPrice", "totalPrice"}
GROUP_KEYS = {
    "basic": {
        "name",
        "level",
        "statusMessage",
        "version",
        "environment",
        "bookmarked",
        "public",
        "userId",
        "sessionId",
        "isRootObservation",
    },
    "time": {"completionStartTime", "createdAt", "updatedAt"},
    "io": {"input", "output"},
    "metadata": {"metadata"},
    "model": {"model", "internalModelId", "modelParameters"},
    "usage": {
        "usageDetails",
        "inputUsage",
        "outputUsage",
        "totalUsage",
        "costDetails",
        "inputCost",
        "outputCost",
        "totalCost",
        "usagePricingTierId",
        "usagePricingTierName",
    },
    "prompt": {"promptId", "promptName", "promptVersion"},
    "metrics": set(),
    "trace_context": {"traceName", "tags", "release"},
}

CHAT_V1 = RecordedPrompt(
    name="support/triage",
    version=1,
    type="chat",
    prompt=[{"role": "system", "content": "Triage {{ticket}}"}],
    labels=["production"],
    config={"temperature": 0.1},
    id="cm-prompt-triage-1",
)
CHAT_V2 = RecordedPrompt(
    name="support/triage",
    version=2,
    type="chat",
    prompt=[{"role": "system", "content": "Triage carefully {{ticket}}"}],
    labels=["staging"],
)
TEXT_PROMPTS: list[dict[str, Any]] = [
    {
        "name": "résumé summary",
        "version": 3,
        "prompt": "Summarise {{doc}}",
        "labels": ["production"],
    },
    {"name": "résumé summary", "version": 5, "prompt": "Summarise briefly {{doc}}", "labels": []},
]
TRACE = "5b8efff798038103d269b633813fc60c"


def _keys() -> tuple[str, str]:
    # The Langfuse SDK keeps one client per public key per process, so each test gets its own.
    suffix = uuid.uuid4().hex[:12]
    return f"pk-lf-{suffix}", f"sk-lf-{suffix}"


def _server(**options: Any) -> RecordingServer:
    public_key, secret_key = _keys()
    return RecordingServer(
        public_key, secret_key, prompts=[CHAT_V1, CHAT_V2, *TEXT_PROMPTS], **options
    )


@pytest.fixture
def srv() -> Iterator[RecordingServer]:
    with _server() as server:
        yield server


@pytest.fixture
def legacy_srv() -> Iterator[RecordingServer]:
    with _server(write_mode="legacy") as server:
        yield server


def _auth(server: RecordingServer) -> dict[str, str]:
    token = base64.b64encode(f"{server.public_key}:{server.secret_key}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _otlp_json(
    *spans: dict[str, Any], scope: str = "test-scope", resource: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attrs(resource or {"service.name": "svc"})},
                "scopeSpans": [{"scope": {"name": scope, "version": "1.0"}, "spans": list(spans)}],
            }
        ]
    }


def _wrap(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_wrap(v) for v in value]}}
    return {"stringValue": value}


def _attrs(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _wrap(value)} for key, value in values.items()]


def _span(
    name: str,
    trace_id: str = TRACE,
    span_id: str = "eee19b7ec3c1b174",
    parent: str | None = None,
    start_ns: int = 1_700_000_000_000_000_000,
    **attributes: Any,
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(start_ns + 1_000_000_000),
        "attributes": _attrs(attributes),
    }
    if parent is not None:
        span["parentSpanId"] = parent
    return span


def _post_json(server: RecordingServer, payload: Any, **headers: str) -> httpx.Response:
    return httpx.post(
        server.otlp_endpoint,
        content=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **_auth(server), **headers},
    )


def _v2(server: RecordingServer, **params: Any) -> httpx.Response:
    return httpx.get(server.url + V2_PATH, params=params, headers=_auth(server), timeout=30)


def _recorded(
    attributes: dict[str, Any],
    *,
    name: str = "s",
    scope: str = "test-scope",
    scope_version: str = "1.0",
    resource: dict[str, Any] | None = None,
) -> RecordedSpan:
    return RecordedSpan(
        trace_id=TRACE,
        span_id="eee19b7ec3c1b174",
        parent_span_id=None,
        name=name,
        kind=1,
        start_time_unix_nano=1,
        end_time_unix_nano=2,
        attributes=attributes,
        resource_attributes=resource or {},
        scope_name=scope,
        scope_version=scope_version,
        status_code=0,
    )


# --------------------------------------------------------------------------- real SDK clients


def test_langfuse_v5_sdk_span_generation_and_prompt_link(srv: RecordingServer) -> None:
    from langfuse import Langfuse

    client = Langfuse(
        public_key=srv.public_key,
        secret_key=srv.secret_key,
        base_url=srv.url,
        flush_interval=0.05,
        tracer_provider=TracerProvider(),
    )
    try:
        assert client.auth_check()
        prompt = client.get_prompt("support/triage", type="chat")
        assert prompt.version == 1
        assert prompt.config == {"temperature": 0.1}
        with client.start_as_current_observation(name="handle-ticket") as root:
            generation = client.start_observation(
                name="triage-llm", as_type="generation", model="gpt-test", prompt=prompt
            )
            generation.update(output="urgent", usage_details={"input": 7, "output": 1})
            generation.end()
        client.flush()
    finally:
        client.shutdown()

    spans = srv.wait_for_spans(lambda s: len(s) >= 2, timeout=5)
    by_name = {span.name: span for span in spans}
    parent, child = by_name["handle-ticket"], by_name["triage-llm"]
    assert parent.trace_id == child.trace_id == root.trace_id
    assert parent.parent_span_id is None
    assert child.parent_span_id == parent.span_id
    assert child.attributes["langfuse.observation.prompt.version"] == 1
    assert type(child.attributes["langfuse.observation.prompt.version"]) is int
    assert child.scope_name == "langfuse-sdk"

    # events_only: GET /api/public/v2/observations, all groups (v2/observations/index.ts).
    page = _v2(srv, traceId=root.trace_id, fields="core,basic,prompt,usage,model").json()
    observations = {o["name"]: o for o in page["data"]}
    gen = observations["triage-llm"]
    assert gen["type"] == "GENERATION"
    assert gen["model"] == "gpt-test"
    assert (gen["promptId"], gen["promptName"], gen["promptVersion"]) == (
        "cm-prompt-triage-1",
        "support/triage",
        1,
    )
    assert gen["parentObservationId"] == parent.span_id
    assert gen["usageDetails"] == {"input": 7, "output": 1}
    span = observations["handle-ticket"]
    # A SPAN carries no prompt: prompt_id/prompt_name are "" in the events table's String
    # columns (createEventRecord), prompt_version NULL -> null (convertObservationPartial).
    assert (span["type"], span["promptId"], span["promptName"], span["promptVersion"]) == (
        "SPAN",
        "",
        "",
        None,
    )
    assert span["parentObservationId"] is None and span["isRootObservation"] is True
    assert (
        srv.observations(root.trace_id)
        == _v2(srv, traceId=root.trace_id, fields=",".join(GROUP_KEYS)).json()["data"]
    )

    export = next(r for r in srv.requests if r.path == OTLP_TRACES_PATH)
    assert export.status == 200
    assert export.headers["x-langfuse-ingestion-version"] == "4"
    assert export.headers["x-langfuse-sdk-name"] == "python"
    assert export.headers["x-langfuse-public-key"] == srv.public_key
    assert export.headers["content-encoding"] == "gzip"
    assert export.headers["content-type"] == "application/x-protobuf"
    assert [(f.name, f.served_version) for f in srv.prompt_fetches] == [("support/triage", 1)]


def test_langfuse_v5_sdk_parses_text_prompts_by_version_and_label(srv: RecordingServer) -> None:
    from langfuse import Langfuse

    client = Langfuse(
        public_key=srv.public_key,
        secret_key=srv.secret_key,
        base_url=srv.url,
        tracer_provider=TracerProvider(),
    )
    try:
        default = client.get_prompt("résumé summary")
        pinned = client.get_prompt("résumé summary", version=5)
        latest = client.get_prompt("résumé summary", label="latest")
        staging = client.get_prompt("support/triage", type="chat", label="staging")
    finally:
        client.shutdown()
    assert (default.version, default.prompt) == (3, "Summarise {{doc}}")
    assert (pinned.version, pinned.prompt) == (5, "Summarise briefly {{doc}}")
    assert latest.version == 5 and "latest" in latest.labels
    assert staging.version == 2
    assert staging.compile(ticket="T-1") == [{"role": "system", "content": "Triage carefully T-1"}]
    fetches = [(f.name, f.version, f.label, f.served_version) for f in srv.prompt_fetches]
    assert fetches == [
        ("résumé summary", None, None, 3),
        ("résumé summary", 5, None, 5),
        ("résumé summary", None, "latest", 5),
        ("support/triage", None, "staging", 2),
    ]


V4_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from langfuse import Langfuse

    url, public_key, secret_key = sys.argv[1:4]
    client = Langfuse(
        public_key=public_key, secret_key=secret_key, base_url=url, flush_interval=0.05
    )
    assert client.auth_check()
    chat = client.get_prompt("support/triage", type="chat")
    text = client.get_prompt("résumé summary", version=5)
    with client.start_as_current_observation(name="v4-request") as root:
        generation = client.start_observation(
            name="v4-llm", as_type="generation", model="gpt-v4", prompt=chat
        )
        generation.end()
    client.flush()
    client.shutdown()
    print(json.dumps({"trace_id": root.trace_id, "chat": chat.version, "text": text.prompt}))
    """
)


def test_langfuse_v4_sdk_in_proxy_interpreter(srv: RecordingServer, tmp_path: Path) -> None:
    """The v4 SDK sends no x-langfuse-ingestion-version header; in events_only its spans are
    written to the events table anyway (worker/src/env.ts validateV4Flags forces
    LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR=direct; otelIngestionQueue.ts
    resolveOtelWritePath)."""
    assert PROXY_PYTHON.exists(), f"proxy interpreter {PROXY_PYTHON} (OTEL_BRIDGE_PROXY_PYTHON)"
    script = tmp_path / "v4_client.py"
    script.write_text(V4_SCRIPT)
    done = subprocess.run(
        [str(PROXY_PYTHON), str(script), srv.url, srv.public_key, srv.secret_key],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["chat"] == 1
    assert result["text"] == "Summarise briefly {{doc}}"

    spans = srv.wait_for_spans(lambda s: len(s) >= 2, timeout=5)
    assert {span.trace_id for span in spans} == {result["trace_id"]}
    data = _v2(srv, traceId=result["trace_id"], fields="core,basic,prompt").json()["data"]
    gen = next(o for o in data if o["name"] == "v4-llm")
    assert (gen["type"], gen["promptId"], gen["promptName"], gen["promptVersion"]) == (
        "GENERATION",
        "cm-prompt-triage-1",
        "support/triage",
        1,
    )
    export = next(r for r in srv.requests if r.path == OTLP_TRACES_PATH)
    assert export.headers["x-langfuse-sdk-version"].startswith("4.")
    assert "x-langfuse-ingestion-version" not in export.headers
    assert srv.count(path="/api/public/projects", status=200) == 1


# --------------------------------------------------------------------------- observation type

# ObservationTypeMapper.ts, ObservationTypeMapperRegistry: mappers by priority, first non-null
# wins, "SPAN" otherwise.
TYPE_CASES: list[tuple[dict[str, Any], str]] = [
    ({}, "SPAN"),
    # 1 LangfuseObservationTypeDirectMapping: exact lower-case keys only.
    ({"langfuse.observation.type": "generation"}, "GENERATION"),
    ({"langfuse.observation.type": "guardrail"}, "GUARDRAIL"),
    ({"langfuse.observation.type": "GENERATION"}, "SPAN"),
    ({"langfuse.observation.type": "Generation", "gen_ai.request.model": "m"}, "GENERATION"),
    ({"langfuse.observation.type": "weird", "openinference.span.kind": "TOOL"}, "TOOL"),
    ({"langfuse.observation.type": "span", "gen_ai.request.model": "m"}, "SPAN"),
    ({"langfuse.observation.type": "", "model": "m"}, "GENERATION"),
    # `mappings[value]` with an array value: String(["tool"]) is "tool".
    ({"langfuse.observation.type": ["tool"]}, "TOOL"),
    # 2 OpenInference.
    ({"openinference.span.kind": "LLM"}, "GENERATION"),
    ({"openinference.span.kind": "llm"}, "SPAN"),
    ({"openinference.span.kind": "CHAIN", "gen_ai.operation.name": "chat"}, "CHAIN"),
    # 3 OTel_GenAI_Operation.
    ({"gen_ai.operation.name": "chat"}, "GENERATION"),
    ({"gen_ai.operation.name": "completion"}, "GENERATION"),
    ({"gen_ai.operation.name": "text_completion"}, "GENERATION"),
    ({"gen_ai.operation.name": "generate_content"}, "GENERATION"),
    ({"gen_ai.operation.name": "generate"}, "GENERATION"),
    ({"gen_ai.operation.name": "embeddings"}, "EMBEDDING"),
    ({"gen_ai.operation.name": "invoke_agent"}, "AGENT"),
    ({"gen_ai.operation.name": "create_agent"}, "AGENT"),
    ({"gen_ai.operation.name": "execute_tool"}, "TOOL"),
    ({"gen_ai.operation.name": "Chat"}, "SPAN"),
    ({"gen_ai.operation.name": "rerank", "gen_ai.request.model": "m"}, "GENERATION"),
    # 4 Genkit.
    ({"genkit:metadata:subtype": "embedder"}, "EMBEDDING"),
    # 5/6 Vercel AI SDK.
    ({"operation.name": "ai.generateText.doGenerate fn", "ai.model.id": "m"}, "GENERATION"),
    ({"ai.operationId": "ai.embed.doEmbed", "gen_ai.request.model": "m"}, "EMBEDDING"),
    ({"operation.name": "ai.toolCall my-tool"}, "TOOL"),
    ({"operation.name": "ai.streamText"}, "SPAN"),
    # 7 GenAI_Tool_Call, 8 Flue.
    ({"gen_ai.tool.name": "search"}, "TOOL"),
    ({"gen_ai.tool.call.id": "call-1", "model": "m"}, "TOOL"),
    ({"flue.tool.call_id": "c"}, "TOOL"),
    ({"flue.task.agent": "a"}, "AGENT"),
    # 10 ModelBased: any meaningful model attribute.
    ({"langfuse.observation.model.name": "m"}, "GENERATION"),
    ({"gen_ai.response.model": "m"}, "GENERATION"),
    ({"llm.model_name": "m"}, "GENERATION"),
    ({"model": "m"}, "GENERATION"),
    ({"model": ""}, "SPAN"),
    ({"model": []}, "SPAN"),
    ({"model": 0}, "GENERATION"),
    ({"ai.model.id": "m"}, "SPAN"),
]


@pytest.mark.parametrize(("attributes", "expected"), TYPE_CASES)
def test_observation_type_follows_the_mapper_priority(
    attributes: dict[str, Any], expected: str
) -> None:
    assert observation_type(_recorded(attributes)) == expected


def test_python_sdk_v330_override_and_livekit() -> None:
    """ObservationTypeMapper.ts priority 0 (PythonSDKv330Override) and 9 (LiveKit_SpanName)."""
    python = {"telemetry.sdk.language": "python"}
    declared_span = {"langfuse.observation.type": "span", "langfuse.observation.model.name": "m"}
    old = _recorded(declared_span, scope="langfuse-sdk", scope_version="3.3.0", resource=python)
    new = _recorded(declared_span, scope="langfuse-sdk", scope_version="3.4.0", resource=python)
    other_scope = _recorded(declared_span, scope="langfuse-sdk-x", scope_version="3.0.0")
    assert observation_type(old) == "GENERATION"
    assert observation_type(new) == "SPAN"
    assert observation_type(other_scope) == "SPAN"
    livekit = {"scope": "livekit-agents"}
    assert observation_type(_recorded({}, name="function_tool", **livekit)) == "TOOL"
    assert observation_type(_recorded({}, name="agent_turn", **livekit)) == "AGENT"
    assert observation_type(_recorded({}, name="function_tool")) == "SPAN"


def test_types_over_http_match_the_mapper(srv: RecordingServer) -> None:
    spans = [
        _span(f"s{i}", span_id=f"{i + 1:016x}", **attributes)
        for i, (attributes, _) in enumerate(TYPE_CASES)
    ]
    assert _post_json(srv, _otlp_json(*spans)).status_code == 200
    data = _v2(srv, traceId=TRACE, limit=1000).json()["data"]
    served = {o["id"]: o["type"] for o in data}
    assert served == {f"{i + 1:016x}": expected for i, (_, expected) in enumerate(TYPE_CASES)}
    # extractName: gen_ai.tool.name, then ai.operationId, replace the span name.
    names = {o["id"]: o["name"] for o in data}
    tool_case = TYPE_CASES.index(({"gen_ai.tool.name": "search"}, "TOOL"))
    assert names[f"{tool_case + 1:016x}"] == "search"


def test_attribute_without_value_loses_the_whole_batch(srv: RecordingServer) -> None:
    """convertValueToPlainJavascript(attr.value) reads `.stringValue` of undefined and throws in
    the worker; the route only checked that `attributes` is an array, so it answered 200."""
    good = _span("good", span_id="aaaaaaaaaaaaaaaa")
    bad = _span("bad")
    bad["attributes"].append({"key": "no-value"})
    assert _post_json(srv, _otlp_json(good, bad)).status_code == 200
    assert len(srv.spans()) == 2
    assert _v2(srv, traceId=TRACE).json() == {"data": [], "meta": {}}
    assert len(srv.worker_failures) == 1


@pytest.mark.parametrize(
    "attributes",
    [{"langfuse.observation.type": "constructor"}, {"operation.name": 5}],
    ids=["prototype-key", "non-string-operation-name"],
)
def test_mapper_exceptions_lose_the_whole_batch(
    srv: RecordingServer, attributes: dict[str, Any]
) -> None:
    """`this.mappings["constructor"]` is Object's constructor, whose .toUpperCase() throws;
    `(5).startsWith` throws (matchesVercelAiSdkOperation). processToIngestionEvents then throws
    and otelIngestionQueue.ts fails the job: the route had already answered 200."""
    good = _span("good", span_id="aaaaaaaaaaaaaaaa")
    bad = _span("bad", **attributes)
    assert _post_json(srv, _otlp_json(good, bad)).status_code == 200
    assert {s.name for s in srv.spans()} == {"good", "bad"}
    assert _v2(srv, traceId=TRACE).json() == {"data": [], "meta": {}}
    assert len(srv.worker_failures) == 1


# --------------------------------------------------------------------------- prompt links

PROMPT_NAME = "langfuse.observation.prompt.name"
PROMPT_VERSION = "langfuse.observation.prompt.version"
GEN = {"langfuse.observation.type": "generation"}
ABSENT = "absent"

# IngestionService.createEventRecord: lookup when name && version (a string through parseInt),
# prompt_id = found id || "", prompt_name as sent, prompt_version = parseUInt16(version);
# served by convertObservationPartial (prompt_version falsy -> null).
EVENTS_CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("int", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 1},
     ("cm-prompt-triage-1", "support/triage", 1)),
    ("string", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: "2"},
     (CHAT_V2.id, "support/triage", 2)),
    ("whole-double", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 1.0},
     ("cm-prompt-triage-1", "support/triage", 1)),
    ("missing-version", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 9},
     ("", "support/triage", 9)),
    ("missing-prompt", {**GEN, PROMPT_NAME: "nope", PROMPT_VERSION: 1}, ("", "nope", 1)),
    ("name-only", {**GEN, PROMPT_NAME: "support/triage"}, ("", "support/triage", None)),
    ("version-only", {**GEN, PROMPT_VERSION: 1}, ("", "", 1)),
    ("beyond-uint16", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 70000},
     ("", "support/triage", None)),
    ("not-a-number", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: "v1"},
     ("", "support/triage", None)),
    ("compat-keys", {**GEN, "langfuse.prompt.name": "support/triage",
                     "langfuse.prompt.version": 1}, ("cm-prompt-triage-1", "support/triage", 1)),
    ("on-a-span", {PROMPT_NAME: "support/triage", PROMPT_VERSION: 1}, ("", "", None)),
    ("on-an-embedding", {"langfuse.observation.type": "embedding", PROMPT_NAME: "support/triage",
                         PROMPT_VERSION: 1}, ("", "", None)),
    # Prisma refuses a Float for the Int column: createEventRecord throws, the event is skipped.
    ("fractional", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 1.5}, ABSENT),
]  # fmt: skip


@pytest.mark.parametrize(("case", "attributes", "expected"), EVENTS_CASES)
def test_events_only_prompt_link(
    srv: RecordingServer, case: str, attributes: dict[str, Any], expected: Any
) -> None:
    assert _post_json(srv, _otlp_json(_span(case, **attributes))).status_code == 200
    data = _v2(srv, traceId=TRACE, fields="core,prompt").json()["data"]
    if expected == ABSENT:
        assert data == []
        return
    (item,) = data
    assert (item["promptId"], item["promptName"], item["promptVersion"]) == expected


# Legacy: CreateGenerationBody (ingestion/types.ts) or the event is dropped whole
# (otelIngestionQueue.ts safeParse filter); then IngestionService.getPrompt +
# mapObservationEventsToRecords store the found prompt's id/name/version or nulls.
LEGACY_CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("int", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 1},
     ("cm-prompt-triage-1", "support/triage", 1)),
    ("whole-double", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 2.0},
     (CHAT_V2.id, "support/triage", 2)),
    ("missing-version", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 9},
     (None, None, None)),
    ("no-prompt", GEN, (None, None, None)),
    ("string", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: "1"}, ABSENT),
    ("fractional", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 1.5}, ABSENT),
    ("name-only", {**GEN, PROMPT_NAME: "support/triage"}, ABSENT),
    ("version-only", {**GEN, PROMPT_VERSION: 1}, ABSENT),
    ("zero", {**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 0}, ABSENT),
    ("on-a-span", {PROMPT_NAME: "support/triage", PROMPT_VERSION: "1"}, (None, None, None)),
]  # fmt: skip


@pytest.mark.parametrize(("case", "attributes", "expected"), LEGACY_CASES)
def test_legacy_prompt_link_and_schema_drop(
    legacy_srv: RecordingServer, case: str, attributes: dict[str, Any], expected: Any
) -> None:
    root = _span("root", span_id="aaaaaaaaaaaaaaaa")
    child = _span(case, parent="aaaaaaaaaaaaaaaa", **attributes)
    assert _post_json(legacy_srv, _otlp_json(root, child)).status_code == 200
    reply = httpx.get(f"{legacy_srv.url}/api/public/traces/{TRACE}", headers=_auth(legacy_srv))
    assert reply.status_code == 200
    observations = {o["name"]: o for o in reply.json()["observations"]}
    assert "root" in observations
    if expected == ABSENT:
        assert case not in observations
        return
    item = observations[case]
    assert (item["promptId"], item["promptName"], item["promptVersion"]) == expected
    assert legacy_srv.trace(TRACE)["observations"] == reply.json()["observations"]


def test_prompts_have_stable_ids() -> None:
    """Langfuse serves every prompt with an id (the Prompt row's); a default one is stable."""
    a = RecordedPrompt(name="p", version=1, type="text", prompt="x")
    b = RecordedPrompt(name="p", version=1, type="text", prompt="y")
    c = RecordedPrompt(name="p", version=2, type="text", prompt="x")
    assert a.id and a.id == b.id != c.id
    assert RecordedPrompt.from_dict({"name": "p", "prompt": "x", "id": "given"}).id == "given"


# --------------------------------------------------------------------------- v2 read API


def test_v2_field_groups_and_item_shape(srv: RecordingServer) -> None:
    """GetObservationsV2Query `fields` (commaSeparatedEnumArray, unknown values filtered),
    `opts.fields ?? ["core", "basic"]`, FIELD_SETS, and the endpoint's normalisation."""
    root = _span("root", span_id="aaaaaaaaaaaaaaaa", **{"langfuse.trace.name": "my-trace"})
    child = _span(
        "child",
        parent="aaaaaaaaaaaaaaaa",
        **{
            **GEN,
            "langfuse.observation.input": '{"q": 1}',
            "langfuse.observation.usage_details": '{"input": 3, "output": 4}',
            "langfuse.observation.completion_start_time": "2023-11-14T22:13:20.250Z",
            "gen_ai.request.model": "gpt-x",
            "langfuse.observation.metadata.long": "é" * 300,
        },
    )
    assert _post_json(srv, _otlp_json(root, child)).status_code == 200

    def keys(**params: str) -> set[str]:
        (item,) = _v2(srv, traceId=TRACE, name="child", **params).json()["data"]
        return set(item)

    assert keys() == CORE_KEYS | ALWAYS_KEYS | GROUP_KEYS["basic"]
    assert keys(fields="") == CORE_KEYS | ALWAYS_KEYS | GROUP_KEYS["basic"]
    assert keys(fields="nonsense") == CORE_KEYS | ALWAYS_KEYS
    for group, extra in GROUP_KEYS.items():
        assert keys(fields=f"core,{group}") == CORE_KEYS | ALWAYS_KEYS | extra, group

    data = _v2(srv, traceId=TRACE, fields=",".join(GROUP_KEYS)).json()["data"]
    by_name = {o["name"]: o for o in data}
    item, top = by_name["child"], by_name["root"]
    assert item["parentObservationId"] == "aaaaaaaaaaaaaaaa"
    assert top["parentObservationId"] is None  # "" -> null (v1 parity)
    assert (top["isRootObservation"], item["isRootObservation"]) == (True, False)
    assert item["startTime"] == "2023-11-14T22:13:20.000Z"
    assert item["endTime"] == "2023-11-14T22:13:21.000Z"
    assert item["latency"] == 1.0 and item["timeToFirstToken"] == 0.25
    assert item["input"] == '{"q": 1}'  # raw strings, never parsed (parseIoAsJson retired)
    assert item["output"] is None
    assert item["usageDetails"] == {"input": 3, "output": 4}
    assert (item["inputUsage"], item["outputUsage"], item["totalUsage"]) == (3, 4, 0)
    assert item["model"] == "gpt-x"
    assert item["statusMessage"] == "" and item["version"] == "" and item["userId"] == ""
    assert (item["modelId"], item["inputPrice"], item["outputPrice"], item["totalPrice"]) == (
        None,
        None,
        None,
        None,
    )
    assert (top["traceName"], item["traceName"]) == ("my-trace", None)
    # events_core_mv keeps leftUTF8(metadata value, 200); io or expandMetadata join events_full.
    long_key = "long"
    cut = _v2(srv, traceId=TRACE, name="child", fields="metadata").json()["data"][0]["metadata"]
    full = _v2(srv, traceId=TRACE, name="child", fields="metadata,io").json()["data"][0]
    assert cut[long_key] == "é" * 200
    assert full["metadata"][long_key] == "é" * 300
    assert item["projectId"] == top["projectId"] != ""


def test_v2_filters(srv: RecordingServer) -> None:
    other = "0123456789abcdef0123456789abcdef"
    spans = [
        _span("root", span_id="aaaaaaaaaaaaaaaa"),
        _span("llm", span_id="bbbbbbbbbbbbbbbb", parent="aaaaaaaaaaaaaaaa", **GEN),
        _span("tool", span_id="cccccccccccccccc", parent="bbbbbbbbbbbbbbbb",
              **{"gen_ai.operation.name": "execute_tool"}),
        _span("llm", trace_id=other, span_id="dddddddddddddddd", **GEN),
    ]  # fmt: skip
    assert _post_json(srv, _otlp_json(*spans)).status_code == 200

    def ids(**params: str) -> set[str]:
        reply = _v2(srv, **params)
        assert reply.status_code == 200, reply.text
        return {o["id"] for o in reply.json()["data"]}

    assert ids(traceId=TRACE) == {"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", "cccccccccccccccc"}
    assert ids(type="GENERATION") == {"bbbbbbbbbbbbbbbb", "dddddddddddddddd"}
    assert ids(type="GENERATION", traceId=other) == {"dddddddddddddddd"}
    assert ids(name="llm") == {"bbbbbbbbbbbbbbbb", "dddddddddddddddd"}
    assert ids(parentObservationId="bbbbbbbbbbbbbbbb") == {"cccccccccccccccc"}
    assert ids(traceId="ffffffffffffffffffffffffffffffff") == set()
    bad_type = _v2(srv, type="generation")
    assert bad_type.status_code == 400
    assert bad_type.json()["message"] == "Invalid request data"  # withMiddlewares, ZodError


@pytest.mark.parametrize(
    ("limit", "status"),
    [("1000", 200), ("0", 200), ("1001", 400), ("-1", 400), ("ten", 400), ("2.5", 500)],
)
def test_v2_limit_validation(srv: RecordingServer, limit: str, status: int) -> None:
    """z.coerce.number().nonnegative().lte(1000): a zod failure is 400 "Invalid request data";
    a fractional limit passes zod and ClickHouse refuses `LIMIT {limit: Int32}` (500)."""
    assert _post_json(srv, _otlp_json(_span("x"))).status_code == 200
    reply = _v2(srv, limit=limit)
    assert reply.status_code == status, reply.text
    if status == 400:
        assert reply.json()["message"] == "Invalid request data"
        assert reply.json()["error"][0]["path"] == ["limit"]
    if limit == "0":  # one row fetched (limit + 1), none returned, so no cursor
        assert reply.json() == {"data": [], "meta": {}}


def _proto_export(count: int, trace_ids: list[str]) -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add()
    spans.scope.name = "bulk"
    for index in range(count):
        span = spans.spans.add()
        span.trace_id = bytes.fromhex(trace_ids[index % len(trace_ids)])
        span.span_id = (index + 1).to_bytes(8, "big")
        span.name = f"s{index}"
        # Ten spans share each millisecond, so ties are broken by xxHash32(trace_id), span_id.
        span.start_time_unix_nano = 1_700_000_000_000_000_000 + (index // 10) * 1_000_000
        span.end_time_unix_nano = span.start_time_unix_nano + 5_000_000
    return request.SerializeToString()


def test_v2_cursor_pages_over_more_than_1000(srv: RecordingServer) -> None:
    """Order (start_time, xxHash32(trace_id), span_id) DESC (orderByForObservationsQuery);
    limit + 1 rows fetched, meta.cursor only when more exist (v2/observations/index.ts)."""
    trace_ids = [f"{n:032x}" for n in (0xA1, 0xB2, 0xC3)]
    reply = httpx.post(
        srv.otlp_endpoint,
        content=_proto_export(2205, trace_ids),
        headers={"Content-Type": "application/x-protobuf", **_auth(srv)},
    )
    assert reply.status_code == 200
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, "fields": "core"}
        if cursor:
            params["cursor"] = cursor
        body = _v2(srv, **params).json()
        pages.append(body["data"])
        cursor = body["meta"].get("cursor")
        if cursor is None:
            assert body["meta"] == {}
            break
        json.loads(base64.b64decode(cursor))  # opaque, but base64 JSON underneath
    assert [len(p) for p in pages] == [1000, 1000, 205]
    served = [o["id"] for page in pages for o in page]
    assert len(set(served)) == 2205

    def expected_key(index: int) -> tuple[int, int, bytes]:
        start_ms = 1_700_000_000_000 + index // 10
        trace = trace_ids[index % 3]
        return start_ms, xxhash32(trace.encode()), f"{index + 1:016x}".encode()

    expected = sorted(range(2205), key=expected_key, reverse=True)
    assert served == [f"{i + 1:016x}" for i in expected]


def test_v2_exactly_limit_rows_has_no_cursor_and_bad_cursors_are_400(
    srv: RecordingServer,
) -> None:
    reply = httpx.post(
        srv.otlp_endpoint,
        content=_proto_export(3, [TRACE]),
        headers={"Content-Type": "application/x-protobuf", **_auth(srv)},
    )
    assert reply.status_code == 200
    assert _v2(srv, limit=3).json()["meta"] == {}
    assert "cursor" in _v2(srv, limit=2).json()["meta"]
    # EncodedObservationsCursorV2: JSON.parse failure -> InvalidRequestError (withMiddlewares).
    garbage = _v2(srv, cursor="not-a-cursor")
    assert garbage.status_code == 400
    assert garbage.json() == {"message": "Invalid cursor format", "error": "InvalidRequestError"}
    wrong_shape = _v2(srv, cursor=base64.b64encode(b'{"lastId": 5}').decode())
    assert wrong_shape.status_code == 400
    assert wrong_shape.json()["message"] == "Invalid request data"


def test_xxhash32_matches_the_reference_vectors() -> None:
    """ClickHouse's xxHash32 is XXH32 with seed 0; vectors from the xxHash reference."""
    assert xxhash32(b"") == 0x02CC5D05
    assert xxhash32(b"a") == 0x550D7456
    assert xxhash32(b"abc") == 0x32D153FF
    assert xxhash32(b"Nobody inspects the spammish repetition") == 0xE2293B2F


def test_trace_endpoint_by_write_mode(srv: RecordingServer, legacy_srv: RecordingServer) -> None:
    """createAuthedProjectAPIRoute rejectInEventsOnlyMode (404 before auth); in legacy the route
    works and a missing trace is LangfuseNotFoundError (traces/[traceId].ts)."""
    for server in (srv, legacy_srv):
        assert _post_json(server, _otlp_json(_span("root"))).status_code == 200
    url = f"/api/public/traces/{TRACE}"
    for headers in ({}, _auth(srv)):
        reply = httpx.get(srv.url + url, headers=headers)
        assert (reply.status_code, reply.json()) == (404, EVENTS_ONLY_404)
    assert httpx.get(legacy_srv.url + url).status_code == 401
    found = httpx.get(legacy_srv.url + url, headers=_auth(legacy_srv))
    assert found.status_code == 200
    assert [o["name"] for o in found.json()["observations"]] == ["root"]
    missing = httpx.get(legacy_srv.url + "/api/public/traces/abc", headers=_auth(legacy_srv))
    assert (missing.status_code, missing.json()) == (
        404,
        {
            "message": "Trace abc not found within authorized project",
            "error": "LangfuseNotFoundError",
        },
    )
    # The v2 endpoint reads only the events table, which legacy mode never writes.
    assert _v2(legacy_srv, traceId=TRACE).json() == {"data": [], "meta": {}}
    assert legacy_srv.observations(TRACE) == []
    assert [o["name"] for o in _v2(srv, traceId=TRACE).json()["data"]] == ["root"]


def test_ingestion_delay_and_polling() -> None:
    """Langfuse ingests through a queue: spans are readable only after the worker ran."""
    delay = 1.5
    with _server(ingestion_delay=delay) as server:
        sent = time.monotonic()
        assert _post_json(server, _otlp_json(_span("late"))).status_code == 200
        assert [s.name for s in server.spans()] == ["late"]  # the wire record is immediate
        early = _v2(server, traceId=TRACE).json()["data"]
        if time.monotonic() - sent < delay:
            assert early == [] and server.observations(TRACE) == []
        found = server.wait_for_observations(TRACE, lambda o: len(o) == 1, timeout=10)
        assert time.monotonic() - sent >= delay
        assert found[0]["name"] == "late"
        assert [o["name"] for o in _v2(server, traceId=TRACE).json()["data"]] == ["late"]
        with pytest.raises(TimeoutError):
            server.wait_for_observations(TRACE, lambda o: len(o) == 2, timeout=0.3)
    with pytest.raises(ValueError):
        RecordingServer(ingestion_delay=-1)
    with pytest.raises(ValueError):
        RecordingServer(write_mode="dual")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- raw OTLP


def test_otlp_exporter_protobuf_gzip_keeps_attribute_types(srv: RecordingServer) -> None:
    exporter = OTLPSpanExporter(
        endpoint=srv.otlp_endpoint, headers=_auth(srv), compression=Compression.Gzip, timeout=5
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "exporter-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("my.scope", "9.9")
    with (
        tracer.start_as_current_span("outer", kind=SpanKind.SERVER) as outer,
        tracer.start_as_current_span("inner") as inner,
    ):
        inner.set_attributes(
            {
                "an.int": 42,
                "a.float": 1.5,
                "a.bool": True,
                "a.str": "42",
                "ints": [1, 2],
                "strs": ["a", "b"],
            }
        )
        inner.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()

    spans = srv.wait_for_spans(lambda s: len(s) == 2, timeout=5)
    inner_span = next(s for s in spans if s.name == "inner")
    outer_span = next(s for s in spans if s.name == "outer")
    assert inner_span.parent_span_id == outer_span.span_id
    assert inner_span.trace_id == format(outer.get_span_context().trace_id, "032x")
    attributes = inner_span.attributes
    assert attributes["an.int"] == 42 and type(attributes["an.int"]) is int
    assert attributes["a.float"] == 1.5 and type(attributes["a.float"]) is float
    assert attributes["a.bool"] is True
    assert attributes["a.str"] == "42"
    assert attributes["ints"] == [1, 2]
    assert attributes["strs"] == ["a", "b"]
    assert inner_span.status_code == 2 and inner_span.status_message == "boom"
    assert outer_span.kind == SpanKind.SERVER.value + 1  # OTLP kinds are the API's offset by one
    assert (outer_span.scope_name, outer_span.scope_version) == ("my.scope", "9.9")
    assert outer_span.resource_attributes["service.name"] == "exporter-test"
    assert inner_span.end_time_unix_nano >= inner_span.start_time_unix_nano > 0
    assert {r.headers.get("content-encoding") for r in srv.requests} == {"gzip"}


def test_protobuf_reply_is_an_export_response(srv: RecordingServer) -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    span.span_id = bytes.fromhex("b7ad6b7169203331")
    span.name = "proto"
    attribute = span.attributes.add()
    attribute.key = "langfuse.observation.prompt.version"
    attribute.value.int_value = 3
    reply = httpx.post(
        srv.otlp_endpoint,
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf", **_auth(srv)},
    )
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/x-protobuf"
    ExportTraceServiceResponse.FromString(reply.content)
    (stored,) = srv.spans()
    assert stored.attributes["langfuse.observation.prompt.version"] == 3
    assert stored.trace_id == "0af7651916cd43dd8448eb211c80319c"


def test_json_export_ids_as_sent_and_all_value_kinds(srv: RecordingServer) -> None:
    """OtelIngestionProcessor.parseId keeps OTLP/JSON id strings as they are."""
    upper = "5B8EFFF798038103D269B633813FC60C"
    span = _span("json-span", trace_id=upper, parent="1111111111111111")
    span["attributes"] += [
        {
            "key": "kv",
            "value": {"kvlistValue": {"values": [{"key": "x", "value": {"intValue": 1}}]}},
        },
        {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\x01").decode()}},
        {"key": "nan", "value": {"doubleValue": "NaN"}},
        {"key": "whole", "value": {"doubleValue": 2}},
        {"key": "empty", "value": {}},
    ]
    span["status"] = {"code": 1}
    reply = _post_json(srv, _otlp_json(span))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    (stored,) = srv.spans()
    assert stored.trace_id == upper
    assert stored.span_id == "eee19b7ec3c1b174"
    assert stored.parent_span_id == "1111111111111111"
    assert stored.start_time_unix_nano == 1_700_000_000_000_000_000
    assert stored.attributes["kv"] == {"x": 1}
    assert stored.attributes["raw"] == b"\x00\x01"
    assert stored.attributes["nan"] != stored.attributes["nan"]
    assert stored.attributes["whole"] == 2.0 and type(stored.attributes["whole"]) is float
    assert stored.attributes["empty"] is None
    assert stored.status_code == 1
    assert [o["traceId"] for o in _v2(srv, traceId=upper).json()["data"]] == [upper]
    assert _v2(srv, traceId=upper.lower()).json()["data"] == []


def test_json_base64_ids_stay_strings_and_gzip(srv: RecordingServer) -> None:
    """parseId returns strings unchanged: a base64 id is stored as that string."""
    trace_b64 = base64.b64encode(bytes.fromhex("0af7651916cd43dd8448eb211c80319c")).decode()
    span = _span("b64", trace_id=trace_b64, span_id=base64.b64encode(b"\x01" * 8).decode())
    reply = httpx.post(
        srv.otlp_endpoint,
        content=gzip.compress(json.dumps(_otlp_json(span)).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", **_auth(srv)},
    )
    assert reply.status_code == 200
    (stored,) = srv.spans()
    assert stored.trace_id == trace_b64


def test_chunked_body_without_content_length(srv: RecordingServer) -> None:
    """OpenTelemetry JS's exporter streams with Transfer-Encoding: chunked."""
    body = json.dumps(_otlp_json(_span("chunked"))).encode()

    def chunks() -> Iterator[bytes]:
        yield body[:10]
        yield body[10:]

    reply = httpx.post(
        srv.otlp_endpoint,
        content=chunks(),
        headers={"Content-Type": "application/json", **_auth(srv)},
    )
    assert reply.status_code == 200
    (request,) = srv.requests
    assert request.headers.get("transfer-encoding") == "chunked"
    assert [s.name for s in srv.spans()] == ["chunked"]


def _raw_post(server: RecordingServer, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(server.otlp_endpoint, content=content, headers={**_auth(server), **headers})


def test_route_answers_like_langfuse(srv: RecordingServer) -> None:
    """web/src/pages/api/public/otel/v1/traces/index.ts: substring content-type match,
    `{error}` bodies, empty exports answered {} before the ingestion-version check."""
    body = json.dumps(_otlp_json(_span("x"))).encode()
    as_json = {"Content-Type": "application/json"}

    def answer(content: bytes, **headers: str) -> tuple[int, Any]:
        reply = _raw_post(srv, content, **headers)
        return reply.status_code, reply.json()

    assert answer(body, **{"Content-Type": "text/plain"}) == (
        400,
        {"error": "Invalid content type"},
    )
    assert answer(body) == (400, {"error": "Invalid content type"})
    assert answer(body, **as_json, **{"Content-Encoding": "gzip"}) == (
        400,
        {"error": "Failed to decompress request body"},
    )
    assert answer(b"{not json", **as_json) == (400, {"error": "Failed to parse OTel JSON Trace"})
    assert answer(b"\xff\xff\xff", **{"Content-Type": "application/x-protobuf"}) == (
        400,
        {"error": "Failed to parse OTel Protobuf Trace"},
    )
    too_new = {**as_json, "x-langfuse-ingestion-version": "5"}
    assert answer(body, **too_new) == (
        400,
        {"error": 'Unsupported x-langfuse-ingestion-version: "5". Maximum supported: "4".'},
    )
    assert answer(body, **as_json, **{"x-langfuse-ingestion-version": "four"})[0] == 400
    assert answer(b'{"resourceSpans": []}', **too_new) == (200, {})
    assert srv.spans() == []
    assert answer(body, **{"Content-Type": "application/json; charset=utf-8"})[0] == 200
    assert answer(body, **as_json, **{"x-langfuse-ingestion-version": "3"})[0] == 200
    assert answer(body, **as_json, **{"Content-Encoding": "br"})[0] == 200  # not gzip: as is
    assert len(srv.spans()) == 3
    assert httpx.get(srv.otlp_endpoint, headers=_auth(srv)).status_code == 405


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"traceId": None}, "traceId:absent"),
        ({"spanId": 7}, "spanId:not_an_id"),
        ({"parentSpanId": True}, "parentSpanId:not_an_id"),
        ({"attributes": {"a": 1}}, "attributes:not_an_array"),
        ({"events": "e"}, "events:not_an_array"),
    ],
)
def test_unprocessable_spans_reject_the_whole_export(
    srv: RecordingServer, override: dict[str, Any], reason: str
) -> None:
    """validateOtelSpanIds (packages/shared/src/server/otel/utils.ts) and the route's message."""
    good = _span("good", span_id="aaaaaaaaaaaaaaaa")
    bad = {**_span("bad"), **override}
    if override.get("traceId", "") is None:
        del bad["traceId"]
    reply = _post_json(srv, _otlp_json(good, bad))
    assert reply.status_code == 400
    message = reply.json()["error"]
    assert message.startswith("Invalid OTLP trace export: 1 of 2 span(s) cannot be processed")
    assert f"({reason})" in message
    assert "The entire export was rejected and no spans were ingested." in message
    assert srv.spans() == []


def test_any_id_string_is_accepted(srv: RecordingServer) -> None:
    """getOtelIdRejectionReason: any string converts, so all-zero or short ids are stored."""
    spans = [_span("zero", trace_id="0" * 32, span_id="0" * 16), _span("short", span_id="ab")]
    assert _post_json(srv, _otlp_json(*spans)).status_code == 200
    assert {(s.trace_id, s.span_id) for s in srv.spans()} == {("0" * 32, "0" * 16), (TRACE, "ab")}


# --------------------------------------------------------------------------- auth


def _basic(public: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{public}:{secret}".encode()).decode()


def test_auth_answers(srv: RecordingServer, legacy_srv: RecordingServer) -> None:
    """apiAuth.ts verifyAuthHeaderAndReturnScope + createAuthedProjectAPIRoute verifyApiKeyAuth.
    The key is resolved by the secret's hash; a mismatching public key is only logged."""
    cases: list[tuple[str | None, int, str | None]] = [
        (None, 401, "No authorization header"),
        (_basic(srv.public_key, "wrong"), 401, "Invalid credentials" + HOST_HINT),
        (_basic("pk-other", srv.secret_key), 200, None),
        ("Basic " + base64.b64encode(b"only-public").decode(), 401,
         "Invalid authorization header" + HOST_HINT),
        (f"Bearer {srv.public_key}", 403,
         "Access denied - insufficient permissions for this endpoint"),
        ("Bearer pk-unknown", 401, "Invalid public key" + HOST_HINT),
        ("basic " + base64.b64encode(b"a:b").decode(), 401, "Invalid authorization header"),
    ]  # fmt: skip
    body = json.dumps(_otlp_json(_span("x"))).encode()
    for authorization, status, message in cases:
        headers = {"Authorization": authorization} if authorization else {}
        replies = [
            httpx.post(
                srv.otlp_endpoint,
                content=body,
                headers={"Content-Type": "application/json", **headers},
            ),
            httpx.get(srv.url + V2_PATH, headers=headers),
            httpx.get(srv.url + "/api/public/v2/prompts/support%2Ftriage", headers=headers),
            httpx.get(f"{legacy_srv.url}/api/public/traces/{TRACE}", headers=headers),
        ]
        for reply in replies[:3]:
            assert reply.status_code == status, (authorization, reply.request.url, reply.text)
            if message is not None:
                assert reply.json() == {"message": message}
        # legacy_srv has other keys: only the keyless and malformed answers are the same.
        if authorization is None:
            assert replies[3].json() == {"message": "No authorization header"}
    assert len(srv.spans()) == 1  # only the accepted export
    assert httpx.get(srv.url + "/api/public/health").json()["status"] == "OK"


def test_prompt_lookups_over_http(srv: RecordingServer) -> None:
    def get(name: str, **params: str) -> httpx.Response:
        # Encode like the SDK: every reserved character, "/" included.
        from urllib.parse import quote

        return httpx.get(
            f"{srv.url}/api/public/v2/prompts/{quote(name, safe='')}",
            params=params,
            headers=_auth(srv),
        )

    production = get("support/triage").json()
    assert production["version"] == 1
    assert production["type"] == "chat"
    assert production["prompt"] == [{"role": "system", "content": "Triage {{ticket}}"}]
    assert production["labels"] == ["production"]
    assert production["config"] == {"temperature": 0.1}
    assert production["tags"] == [] and production["commitMessage"] is None
    assert {"id", "resolutionGraph", "createdAt"} <= production.keys()
    assert get("support/triage", version="2").json()["labels"] == ["staging", "latest"]
    assert get("support/triage", label="staging").json()["version"] == 2
    assert get("support/triage", label="latest").json()["version"] == 2
    assert get("résumé summary").json()["prompt"] == "Summarise {{doc}}"

    # An unencoded "/" reaches the same prompt.
    raw = httpx.get(f"{srv.url}/api/public/v2/prompts/support/triage", headers=_auth(srv))
    assert raw.json()["version"] == 1

    missing = get("nope")
    # promptNameHandler.ts: LangfuseNotFoundError with this message (withMiddlewares body).
    assert (missing.status_code, missing.json()) == (
        404,
        {
            "error": "LangfuseNotFoundError",
            "message": "Prompt not found: 'nope' with label 'production'",
        },
    )
    assert get("support/triage", version="9").json()["message"] == (
        "Prompt not found: 'support/triage' with version 9"
    )
    assert production["isActive"] is True
    assert get("support/triage", version="9").status_code == 404
    assert get("support/triage", label="canary").status_code == 404
    assert get("support/triage", version="1", label="production").status_code == 400
    assert get("support/triage", version="one").status_code == 400

    srv.add_prompt({"name": "support/triage", "version": 3, "prompt": [], "labels": ["production"]})
    assert get("support/triage").json()["version"] == 3
    statuses = [(f.name, f.status, f.served_version) for f in srv.prompt_fetches]
    assert statuses[-1] == ("support/triage", 200, 3)
    assert ("nope", 404, None) in statuses


def test_prompt_from_dict_validates() -> None:
    with pytest.raises(ValueError, match="version"):
        RecordedPrompt.from_dict({"name": "x", "version": "2", "prompt": "t"})
    with pytest.raises(ValueError, match="chat"):
        RecordedPrompt.from_dict({"name": "x", "type": "chat", "prompt": "t"})
    prompt = RecordedPrompt.from_dict({"name": "x", "prompt": "t", "commitMessage": "m"})
    assert (prompt.type, prompt.version, prompt.commit_message) == ("text", 1, "m")


def test_v1_trace_view_shape(srv: RecordingServer) -> None:
    """trace(): the v1 trace body (traces/[traceId].ts) over the legacy rows, in-process."""
    root = _span(
        "root",
        span_id="aaaaaaaaaaaaaaaa",
        **{"langfuse.trace.tags": '["a", "b"]', "session.id": "s-1"},
    )
    child = _span(
        "llm",
        parent="aaaaaaaaaaaaaaaa",
        **{**GEN, PROMPT_NAME: "support/triage", PROMPT_VERSION: 1},
    )
    assert _post_json(srv, _otlp_json(root, child)).status_code == 200
    trace = srv.trace(TRACE)
    assert (trace["id"], trace["name"], trace["sessionId"], trace["tags"]) == (
        TRACE,
        "root",
        "s-1",
        ["a", "b"],
    )
    observations = {o["name"]: o for o in trace["observations"]}
    assert observations["root"]["parentObservationId"] is None
    assert observations["llm"]["promptId"] == "cm-prompt-triage-1"
    with pytest.raises(KeyError):
        srv.trace("f" * 32)


def test_unknown_endpoints_are_404_and_logged(srv: RecordingServer) -> None:
    assert (
        httpx.post(f"{srv.url}/api/public/scores", json={}, headers=_auth(srv)).status_code == 404
    )
    assert httpx.get(f"{srv.url}/nothing/here?x=1", headers=_auth(srv)).status_code == 404
    logged = [(r.method, r.path, r.query, r.status) for r in srv.requests]
    assert logged == [
        ("POST", "/api/public/scores", "", 404),
        ("GET", "/nothing/here", "x=1", 404),
    ]
    assert srv.request_counts() == {("/api/public/scores", 404): 1, ("/nothing/here", 404): 1}


def test_batch_ingestion_answers_207(srv: RecordingServer) -> None:
    batch = {
        "batch": [
            {"id": "e1", "type": "score-create", "timestamp": "2024-01-01T00:00:00Z", "body": {}},
            {"type": "score-create"},
        ]
    }
    reply = httpx.post(f"{srv.url}/api/public/ingestion", json=batch, headers=_auth(srv))
    assert reply.status_code == 207
    assert reply.json()["successes"] == [{"id": "e1", "status": 201}]
    assert len(reply.json()["errors"]) == 1
    assert [event["id"] for event in srv.ingestion_events] == ["e1"]


# --------------------------------------------------------------------------- faults, lifecycle


def test_fault_modes(srv: RecordingServer) -> None:
    body = json.dumps(_otlp_json(_span("f"))).encode()
    headers = {"Content-Type": "application/json", **_auth(srv)}

    srv.set_fault("error")
    assert httpx.post(srv.otlp_endpoint, content=body, headers=headers).status_code == 500
    # Only the export endpoint is affected unless asked otherwise.
    assert httpx.get(f"{srv.url}/api/public/projects", headers=_auth(srv)).status_code == 200

    srv.set_fault("slow", delay_s=0.3)
    started = time.monotonic()
    assert httpx.post(srv.otlp_endpoint, content=body, headers=headers).status_code == 200
    assert time.monotonic() - started >= 0.3

    srv.set_fault("down")
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(srv.otlp_endpoint, content=body, headers=headers)

    srv.set_fault("error", all_paths=True)
    assert httpx.get(f"{srv.url}/api/public/health").status_code == 500

    srv.set_fault(None)
    assert httpx.post(srv.otlp_endpoint, content=body, headers=headers).status_code == 200
    assert len(srv.spans()) == 2
    assert srv.count(path=OTLP_TRACES_PATH, status=500) == 1
    assert srv.count(path=OTLP_TRACES_PATH, status=0) == 1
    assert srv.count(path=OTLP_TRACES_PATH, status=200) == 2
    with pytest.raises(ValueError):
        srv.set_fault("flaky")  # type: ignore[arg-type]


def test_stop_frees_the_port_even_with_keep_alive_clients() -> None:
    server = RecordingServer().start()
    port = server.port
    keep_alive = httpx.Client()
    assert keep_alive.get(f"{server.url}/api/public/health").status_code == 200
    server.set_fault("slow", delay_s=30, all_paths=True)
    outcome: list[object] = []

    def wait_on_slow_request() -> None:
        try:
            outcome.append(httpx.get(f"{server.url}/api/public/health", timeout=10))
        except httpx.HTTPError as error:
            outcome.append(error)

    stuck = threading.Thread(target=wait_on_slow_request, daemon=True)
    stuck.start()
    time.sleep(0.1)

    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    assert not server.running
    assert not [t for t in threading.enumerate() if t.name == f"recording-server-{port}"]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass
    keep_alive.close()
    stuck.join(5)
    # The request caught mid-delay is cut off rather than answered after stop().
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.HTTPError)

    with RecordingServer(port=port) as again:
        assert again.port == port
        assert httpx.get(f"{again.url}/api/public/health").status_code == 200
    server.stop()  # a second stop is harmless


def test_wait_for_spans_times_out_with_a_summary(srv: RecordingServer) -> None:
    assert _post_json(srv, _otlp_json(_span("only-one"))).status_code == 200
    httpx.post(srv.otlp_endpoint, content=b"{}", headers={"Content-Type": "application/json"})
    with pytest.raises(TimeoutError) as caught:
        srv.wait_for_spans(lambda s: len(s) >= 2, timeout=0.3)
    message = str(caught.value)
    assert "only-one" in message and "401" in message


def test_wait_for_spans_wakes_on_arrival(srv: RecordingServer) -> None:
    timer = threading.Timer(0.2, _post_json, args=(srv, _otlp_json(_span("late"))))
    timer.start()
    spans = srv.wait_for_spans(lambda s: any(x.name == "late" for x in s), timeout=5)
    assert [s.name for s in spans] == ["late"]
    timer.join()


def test_concurrent_exports_are_all_recorded(srv: RecordingServer) -> None:
    def export(worker: int) -> None:
        with httpx.Client() as client:
            for i in range(10):
                span = _span("c", span_id=f"{worker + 1:08x}{i + 1:08x}")
                reply = client.post(
                    srv.otlp_endpoint,
                    content=json.dumps(_otlp_json(span)).encode(),
                    headers={"Content-Type": "application/json", **_auth(srv)},
                )
                assert reply.status_code == 200

    workers = [threading.Thread(target=export, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(20)
    assert len({span.span_id for span in srv.spans()}) == 60
    assert srv.count(path=OTLP_TRACES_PATH, status=200) == 60
    srv.clear()
    assert srv.spans() == [] and srv.requests == [] and srv.request_counts() == {}
    assert srv.prompt_fetches == []


def test_cli_prints_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    prompt_file = tmp_path / "prompts.json"
    prompt_file.write_text(
        json.dumps([{"name": "cli", "version": 2, "prompt": "hi", "labels": ["production"]}])
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.Popen(
        [
            sys.executable, "-m", "otel_bridge.recording_server", "--port", "0",
            "--public-key", "pk-cli", "--secret-key", "sk-cli", "--prompt-file", str(prompt_file),
            "--write-mode", "legacy", "--ingestion-delay", "0.1",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        ready = child.stdout.readline().strip()
        assert ready.startswith("READY http://127.0.0.1:")
        url = ready.removeprefix("READY ")
        reply = httpx.get(f"{url}/api/public/v2/prompts/cli", auth=("pk-cli", "sk-cli"))
        assert reply.json()["version"] == 2
        # legacy mode: the v1 trace route is served (404 LangfuseNotFoundError, not events-only).
        missing = httpx.get(f"{url}/api/public/traces/abc", auth=("pk-cli", "sk-cli"))
        assert missing.json()["error"] == "LangfuseNotFoundError"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
