"""The recording server driven by real clients: Langfuse SDK v5 and v4, OTLP exporter, raw HTTP."""

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

REPO = Path(__file__).resolve().parent.parent
PROXY_PYTHON = Path(os.environ.get("OTEL_BRIDGE_PROXY_PYTHON", "/tmp/vproxy/bin/python"))

CHAT_V1 = RecordedPrompt(
    name="support/triage",
    version=1,
    type="chat",
    prompt=[{"role": "system", "content": "Triage {{ticket}}"}],
    labels=["production"],
    config={"temperature": 0.1},
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


def _keys() -> tuple[str, str]:
    # The Langfuse SDK keeps one client per public key per process, so each test gets its own.
    suffix = uuid.uuid4().hex[:12]
    return f"pk-lf-{suffix}", f"sk-lf-{suffix}"


@pytest.fixture
def srv() -> Iterator[RecordingServer]:
    public_key, secret_key = _keys()
    with RecordingServer(
        public_key, secret_key, prompts=[CHAT_V1, CHAT_V2, *TEXT_PROMPTS]
    ) as server:
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


def _attrs(values: dict[str, Any]) -> list[dict[str, Any]]:
    def wrap(value: Any) -> dict[str, Any]:
        if isinstance(value, bool):
            return {"boolValue": value}
        if isinstance(value, int):
            return {"intValue": str(value)}
        if isinstance(value, float):
            return {"doubleValue": value}
        if isinstance(value, list):
            return {"arrayValue": {"values": [wrap(v) for v in value]}}
        return {"stringValue": value}

    return [{"key": key, "value": wrap(value)} for key, value in values.items()]


def _span(
    name: str,
    trace_id: str = "5b8efff798038103d269b633813fc60c",
    span_id: str = "eee19b7ec3c1b174",
    parent: str | None = None,
    **attributes: Any,
) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": trace_id,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
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

    trace = srv.trace(root.trace_id)
    assert trace["name"] == "handle-ticket"
    observations = {o["name"]: o for o in trace["observations"]}
    gen = observations["triage-llm"]
    assert gen["type"] == "GENERATION"
    assert gen["model"] == "gpt-test"
    assert gen["promptName"] == "support/triage"
    assert gen["promptVersion"] == 1 and type(gen["promptVersion"]) is int
    assert gen["parentObservationId"] == parent.span_id
    assert gen["usageDetails"] == {"input": 7, "output": 1}
    assert observations["handle-ticket"]["type"] == "SPAN"
    assert observations["handle-ticket"]["promptName"] is None

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
    trace = srv.trace(result["trace_id"])
    gen = next(o for o in trace["observations"] if o["name"] == "v4-llm")
    assert (gen["type"], gen["promptName"], gen["promptVersion"]) == (
        "GENERATION",
        "support/triage",
        1,
    )
    export = next(r for r in srv.requests if r.path == OTLP_TRACES_PATH)
    assert export.headers["x-langfuse-sdk-version"].startswith("4.")
    assert srv.count(path="/api/public/projects", status=200) == 1


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


def test_json_export_with_hex_ids_and_all_value_kinds(srv: RecordingServer) -> None:
    span = _span("json-span", parent="1111111111111111")
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
    span["status"] = {"code": "STATUS_CODE_OK"}
    reply = _post_json(srv, _otlp_json(span))
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json() == {}
    (stored,) = srv.spans()
    assert stored.trace_id == "5b8efff798038103d269b633813fc60c"
    assert stored.span_id == "eee19b7ec3c1b174"
    assert stored.parent_span_id == "1111111111111111"
    assert stored.start_time_unix_nano == 1_700_000_000_000_000_000
    assert stored.attributes["kv"] == {"x": 1}
    assert stored.attributes["raw"] == b"\x00\x01"
    assert stored.attributes["nan"] != stored.attributes["nan"]
    assert stored.attributes["whole"] == 2.0 and type(stored.attributes["whole"]) is float
    assert stored.attributes["empty"] is None
    assert stored.status_code == 1
    assert stored.resource_attributes == {"service.name": "svc"}


def test_json_export_tolerates_base64_ids_and_gzip(srv: RecordingServer) -> None:
    trace_id, span_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c"), b"\x01" * 8
    span = _span(
        "b64",
        trace_id=base64.b64encode(trace_id).decode(),
        span_id=base64.b64encode(span_id).decode(),
    )
    reply = httpx.post(
        srv.otlp_endpoint,
        content=gzip.compress(json.dumps(_otlp_json(span)).encode()),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", **_auth(srv)},
    )
    assert reply.status_code == 200
    (stored,) = srv.spans()
    assert (stored.trace_id, stored.span_id) == (trace_id.hex(), span_id.hex())


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic " + base64.b64encode(b"pk-wrong:sk-wrong").decode(),
        "Bearer whatever",
        "Basic %%%not-base64",
    ],
    ids=["missing", "wrong-keys", "bearer", "malformed"],
)
def test_bad_auth_is_401_and_stores_nothing(
    srv: RecordingServer, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = json.dumps(_otlp_json(_span("x"))).encode()
    assert httpx.post(srv.otlp_endpoint, content=body, headers=headers).status_code == 401
    for path in ("/api/public/v2/prompts/support%2Ftriage", "/api/public/projects"):
        reply = httpx.get(srv.url + path, headers=headers)
        assert reply.status_code == 401
        assert "message" in reply.json()
    assert srv.spans() == []
    assert srv.count(status=401) == 3
    assert httpx.get(srv.url + "/api/public/health").json()["status"] == "OK"


def test_right_public_key_with_wrong_secret_is_401(srv: RecordingServer) -> None:
    token = base64.b64encode(f"{srv.public_key}:nope".encode()).decode()
    reply = httpx.post(
        srv.otlp_endpoint,
        content=json.dumps(_otlp_json(_span("x"))).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
    )
    assert reply.status_code == 401
    assert srv.spans() == []


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"traceId": "0" * 32}, "trace id"),
        ({"traceId": "abcd"}, "trace id"),
        ({"traceId": ""}, "trace id"),
        ({"spanId": "0" * 16}, "span id"),
        ({"spanId": "abcdef"}, "span id"),
        ({"parentSpanId": "0" * 16}, "parent span id"),
        ({"parentSpanId": "abcd"}, "parent span id"),
    ],
)
def test_invalid_ids_reject_the_whole_request(
    srv: RecordingServer, override: dict[str, str], fragment: str
) -> None:
    good = _span("good", span_id="aaaaaaaaaaaaaaaa")
    bad = {**_span("bad"), **override}
    reply = _post_json(srv, _otlp_json(good, bad))
    assert reply.status_code == 400
    assert fragment in reply.json()["message"]
    assert srv.spans() == []
    (logged,) = srv.requests
    assert logged.status == 400 and logged.reason is not None and fragment in logged.reason


def test_media_type_encoding_and_body_errors(srv: RecordingServer) -> None:
    body = json.dumps(_otlp_json(_span("x"))).encode()

    def post(content: bytes, **headers: str) -> int:
        return httpx.post(
            srv.otlp_endpoint, content=content, headers={**_auth(srv), **headers}
        ).status_code

    assert post(body, **{"Content-Type": "text/plain"}) == 415
    assert post(body) == 415
    assert post(body, **{"Content-Type": "application/json", "Content-Encoding": "br"}) == 415
    assert post(body, **{"Content-Type": "application/json", "Content-Encoding": "gzip"}) == 400
    assert post(b"{not json", **{"Content-Type": "application/json"}) == 400
    assert post(b"\xff\xff\xff", **{"Content-Type": "application/x-protobuf"}) == 400
    assert post(b'{"resourceSpans": 5}', **{"Content-Type": "application/json"}) == 400
    too_new = {"Content-Type": "application/json", "x-langfuse-ingestion-version": "5"}
    assert post(body, **too_new) == 400
    assert srv.spans() == []
    assert post(body, **{"Content-Type": "application/json; charset=utf-8"}) == 200
    assert len(srv.spans()) == 1
    assert httpx.get(srv.otlp_endpoint, headers=_auth(srv)).status_code == 405


def test_python_sdk_span_for_another_project_is_forbidden(srv: RecordingServer) -> None:
    payload = _otlp_json(
        _span("foreign"), scope="langfuse-sdk", resource={"telemetry.sdk.language": "python"}
    )
    payload["resourceSpans"][0]["scopeSpans"][0]["scope"]["attributes"] = _attrs(
        {"public_key": "pk-lf-other"}
    )
    reply = _post_json(srv, payload)
    assert reply.status_code == 403
    assert srv.spans() == []


# --------------------------------------------------------------------------- prompts


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
    assert missing.status_code == 404 and "message" in missing.json()
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


# --------------------------------------------------------------------------- read endpoint


def test_read_endpoint_types_and_prompt_links(srv: RecordingServer) -> None:
    trace_id = "abcdefabcdefabcdefabcdefabcdef01"
    spans = [
        _span("root", trace_id, "1000000000000001", **{"langfuse.trace.name": "my-trace"}),
        _span(
            "declared-gen",
            trace_id,
            "1000000000000002",
            parent="1000000000000001",
            **{
                "langfuse.observation.type": "generation",
                "langfuse.observation.prompt.name": "support/triage",
                "langfuse.observation.prompt.version": 2,
            },
        ),
        _span(
            "string-version",
            trace_id,
            "1000000000000003",
            parent="1000000000000001",
            **{
                "gen_ai.request.model": "gpt-x",
                "langfuse.observation.prompt.name": "support/triage",
                "langfuse.observation.prompt.version": "2",
            },
        ),
        _span(
            "span-with-prompt",
            trace_id,
            "1000000000000004",
            parent="1000000000000001",
            **{
                "langfuse.observation.type": "span",
                "model": "m",
                "langfuse.observation.prompt.name": "support/triage",
                "langfuse.observation.prompt.version": 2,
            },
        ),
        _span("tool", trace_id, "1000000000000005", **{"langfuse.observation.type": "TOOL"}),
    ]
    spans[-1]["parentSpanId"] = "1000000000000001"
    assert _post_json(srv, _otlp_json(*spans)).status_code == 200

    reply = httpx.get(f"{srv.url}/api/public/traces/{trace_id}", headers=_auth(srv))
    assert reply.status_code == 200
    trace = reply.json()
    assert trace == srv.trace(trace_id)
    assert trace["id"] == trace_id and trace["name"] == "my-trace"
    observations = {o["name"]: o for o in trace["observations"]}
    assert set(observations["root"]) >= {
        "id", "traceId", "parentObservationId", "type", "name", "startTime", "endTime",
        "model", "promptName", "promptVersion", "metadata",
    }  # fmt: skip
    assert observations["root"]["type"] == "SPAN"
    assert observations["root"]["startTime"] == "2023-11-14T22:13:20.000Z"
    assert observations["declared-gen"]["type"] == "GENERATION"
    assert observations["declared-gen"]["promptVersion"] == 2
    assert observations["declared-gen"]["parentObservationId"] == "1000000000000001"
    assert observations["string-version"]["type"] == "GENERATION"
    assert observations["string-version"]["model"] == "gpt-x"
    assert observations["string-version"]["promptName"] == "support/triage"
    assert observations["string-version"]["promptVersion"] is None
    assert observations["span-with-prompt"]["type"] == "SPAN"
    assert observations["span-with-prompt"]["promptName"] is None
    assert observations["tool"]["type"] == "TOOL"

    unknown = httpx.get(f"{srv.url}/api/public/traces/{'f' * 32}", headers=_auth(srv))
    assert unknown.status_code == 404
    with pytest.raises(KeyError):
        srv.trace("f" * 32)


def test_trace_name_defaults_to_root_span(srv: RecordingServer) -> None:
    trace_id = "abcdefabcdefabcdefabcdefabcdef02"
    child = _span("child", trace_id, "2000000000000002", parent="2000000000000001")
    assert _post_json(srv, _otlp_json(child)).status_code == 200
    assert srv.trace(trace_id)["name"] is None
    assert (
        _post_json(srv, _otlp_json(_span("the-root", trace_id, "2000000000000001"))).status_code
        == 200
    )
    assert srv.trace(trace_id)["name"] == "the-root"


def _recorded(**attributes: Any) -> RecordedSpan:
    return RecordedSpan(
        trace_id="1" * 32,
        span_id="1" * 16,
        parent_span_id=None,
        name="s",
        kind=1,
        start_time_unix_nano=0,
        end_time_unix_nano=0,
        attributes=attributes,
        resource_attributes={},
        scope_name="",
        scope_version="",
        status_code=0,
    )


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ({}, "SPAN"),
        ({"langfuse.observation.type": "event"}, "EVENT"),
        ({"langfuse.observation.type": "embedding"}, "EMBEDDING"),
        ({"langfuse.observation.type": "agent", "model": "m"}, "AGENT"),
        ({"langfuse.observation.type": "made-up"}, "SPAN"),
        ({"langfuse.observation.model.name": "m"}, "GENERATION"),
        ({"gen_ai.response.model": "m"}, "GENERATION"),
        ({"llm.model_name": "m"}, "GENERATION"),
        ({"model": "m"}, "GENERATION"),
        ({"openinference.span.kind": "LLM"}, "GENERATION"),
    ],
)
def test_observation_type_derivation(attributes: dict[str, Any], expected: str) -> None:
    assert observation_type(_recorded(**attributes)) == expected


# --------------------------------------------------------------------------- other endpoints


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
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
