"""OTLP/HTTP trace export decoding, as Langfuse's ingestion route accepts or refuses it.

Follows ``web/src/pages/api/public/otel/v1/traces/index.ts`` (body handling, content types, the
ingestion-version header, answers) and ``validateOtelSpanIds`` in
``packages/shared/src/server/otel/utils.ts`` (which payloads are refused as a whole). Ids follow
``OtelIngestionProcessor.parseId``: OTLP/JSON id strings are kept exactly as sent, protobuf bytes
become lower-case hex. Attribute values keep the types that went over the wire; the Langfuse
reading of them (``convertValueToPlainJavascript``) lives in ``_mapping``.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from otel_bridge.recording_server._records import AttributeValue, RecordedEvent, RecordedSpan

__all__ = ["MAX_INGESTION_VERSION", "Export", "OtlpRefused", "decode_export"]

# "Reject unsupported future ingestion versions (> 4)" in the route.
MAX_INGESTION_VERSION: Final = 4
SPAN_KIND_NAMES: Final = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
STATUS_CODE_NAMES: Final = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_JS_PARSE_INT: Final = re.compile(r"\s*([+-]?\d+)")


class OtlpRefused(Exception):
    """The route's non-200 answer: Langfuse replies ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Export:
    """An accepted export: its spans, and whether it arrived as protobuf."""

    spans: list[RecordedSpan]
    protobuf: bool
    # Why Langfuse's worker would throw on this export (nothing of it stored), if it would.
    worker_failure: str | None = None


def js_parse_int(text: str) -> int | None:
    """JavaScript ``parseInt(text, 10)``; None where it gives NaN."""
    match = _JS_PARSE_INT.match(text)
    return int(match.group(1)) if match else None


def decode_export(headers: Mapping[str, str], body: bytes) -> Export:
    """Decode one POST body the way the route does; ``OtlpRefused`` carries its 400 answer."""
    if "gzip" in headers.get("content-encoding", ""):
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as exc:
            raise OtlpRefused(400, "Failed to decompress request body") from exc
    # Substring match, as the route does: "text/javascript; charset=utf-8" is refused but any
    # type containing one of the two names is taken.
    content_type = headers.get("content-type", "").lower()
    is_json = "application/json" in content_type
    is_protobuf = "application/x-protobuf" in content_type
    if not (is_json or is_protobuf):
        raise OtlpRefused(400, "Invalid content type")
    resource_spans: Any = None
    proto_message: ExportTraceServiceRequest | None = None
    if is_protobuf:
        try:
            proto_message = ExportTraceServiceRequest.FromString(body)
        except (DecodeError, ValueError) as exc:
            raise OtlpRefused(400, "Failed to parse OTel Protobuf Trace") from exc
        resource_spans = list(proto_message.resource_spans)
    if is_json:
        # When both names appear the route parses both, and the JSON reading wins.
        proto_message = None
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise OtlpRefused(400, "Failed to parse OTel JSON Trace") from exc
        if payload is None:  # null.resourceSpans throws inside the route's try
            raise OtlpRefused(400, "Failed to parse OTel JSON Trace")
        resource_spans = payload.get("resourceSpans") if isinstance(payload, dict) else None
    # `if (!resourceSpans || resourceSpans.length === 0) return {}`: before the header check.
    if not resource_spans:
        return Export(spans=[], protobuf=proto_message is not None)
    spans: list[RecordedSpan] = []
    failure: str | None = None
    if proto_message is not None:
        _validate(_proto_shape(proto_message))
        _check_ingestion_version(headers)
        spans = _proto_spans(proto_message)
    elif isinstance(resource_spans, list):
        _validate(_json_shape(resource_spans))
        _check_ingestion_version(headers)
        spans = _json_spans(resource_spans)
        failure = _unconvertible_attribute(resource_spans)
    else:
        # A non-list passes the route's checks and is queued, but the worker finds no spans.
        _check_ingestion_version(headers)
    return Export(spans=spans, protobuf=proto_message is not None, worker_failure=failure)


def _unconvertible_attribute(resource_spans: list[Any]) -> str | None:
    """An attribute entry whose ``value`` is missing or null: the worker's
    ``convertValueToPlainJavascript(attr.value)`` reads ``.stringValue`` of it and throws, so
    the queued batch fails (the route checked only that ``attributes`` is an array)."""
    lists: list[Any] = []
    for resource_span in resource_spans:
        if not isinstance(resource_span, dict):
            continue
        resource = resource_span.get("resource")
        lists.append(resource.get("attributes") if isinstance(resource, dict) else None)
        for scope_span in resource_span.get("scopeSpans") or []:
            if not isinstance(scope_span, dict):
                continue
            scope = scope_span.get("scope")
            lists.append(scope.get("attributes") if isinstance(scope, dict) else None)
            lists.extend(span.get("attributes") for span in scope_span.get("spans") or [])
    for entries in lists:
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or entry.get("value") is None:
                return f"attribute entry {entry!r} has no value: the worker throws a TypeError"
    return None


def _check_ingestion_version(headers: Mapping[str, str]) -> None:
    value = headers.get("x-langfuse-ingestion-version")
    if not value:
        return
    parsed = js_parse_int(value)
    if parsed is None or parsed > MAX_INGESTION_VERSION:
        raise OtlpRefused(
            400,
            f'Unsupported x-langfuse-ingestion-version: "{value}". '
            f'Maximum supported: "{MAX_INGESTION_VERSION}".',
        )


# --------------------------------------------------------------------------- validation


@dataclass
class _Shape:
    """What ``validateOtelSpanIds`` looks at, for either encoding."""

    total: int = 0
    invalid: int = 0
    malformed: int = 0
    reasons: dict[str, int] | None = None
    scopes: list[str] | None = None

    def reason(self, key: str) -> None:
        if self.reasons is None:
            self.reasons = {}
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def scope(self, name: Any) -> None:
        if self.scopes is None:
            self.scopes = []
        if name and len(self.scopes) < 5 and str(name) not in self.scopes:
            self.scopes.append(str(name))


def _validate(shape: _Shape) -> None:
    if not (shape.invalid or shape.malformed):
        return
    reasons = list(shape.reasons or {})
    problems: list[str] = []
    if shape.invalid:
        problems.append(f"{shape.invalid} of {shape.total} span(s) cannot be processed")
    if shape.malformed:
        problems.append(
            f"{shape.malformed} resource- or scope-level field(s) are present but not arrays"
        )
    hints: list[str] = []
    if any(r.endswith((":absent", ":not_an_id")) for r in reasons):
        hints.append(
            "traceId and spanId are required on every span, and each must be a string or a "
            "byte array."
        )
    if any(r.endswith(":not_an_array") for r in reasons):
        hints.append(
            "scopeSpans, spans, attributes and events must all be arrays — OTLP attributes are a "
            "list of {key, value} entries, not a JSON object."
        )
    raise OtlpRefused(
        400,
        f"Invalid OTLP trace export: {'; '.join(problems)} ({', '.join(reasons)}). "
        f"{' '.join(hints)} The entire export was rejected and no spans were ingested. "
        f"Instrumentation scopes: {', '.join(shape.scopes or []) or 'unknown'}. "
        "This endpoint accepts OpenTelemetry traces only — if you are exporting OpenTelemetry "
        "logs, point your log exporter elsewhere.",
    )


def _malformed_list(value: Any) -> bool:
    return value is not None and not isinstance(value, list)


def _id_rejection(value: Any) -> str | None:
    # getOtelIdRejectionReason: strings and byte arrays convert, everything else does not.
    if value is None:
        return "absent"
    if isinstance(value, str):
        return None
    if isinstance(value, list):
        return None
    if (
        isinstance(value, dict)
        and value.get("type") == "Buffer"
        and isinstance(value.get("data"), list)
    ):
        return None
    return "not_an_id"


def _json_shape(resource_spans: list[Any]) -> _Shape:
    shape = _Shape()
    for resource_span in resource_spans:
        resource = resource_span.get("resource") if isinstance(resource_span, dict) else None
        if isinstance(resource, dict) and _malformed_list(resource.get("attributes")):
            shape.malformed += 1
            shape.reason("resource.attributes:not_an_array")
        scope_spans = resource_span.get("scopeSpans") if isinstance(resource_span, dict) else None
        if not isinstance(scope_spans, list):
            if scope_spans is not None:
                shape.malformed += 1
                shape.reason("scopeSpans:not_an_array")
            continue
        for scope_span in scope_spans:
            scope = scope_span.get("scope") if isinstance(scope_span, dict) else None
            scope_name = scope.get("name") if isinstance(scope, dict) else None
            if isinstance(scope, dict) and _malformed_list(scope.get("attributes")):
                shape.malformed += 1
                shape.reason("scope.attributes:not_an_array")
                shape.scope(scope_name)
            spans = scope_span.get("spans") if isinstance(scope_span, dict) else None
            if not isinstance(spans, list):
                if spans is not None:
                    shape.malformed += 1
                    shape.reason("spans:not_an_array")
                    shape.scope(scope_name)
                continue
            for span in spans:
                shape.total += 1
                found: list[str] = []
                fields = span if isinstance(span, dict) else {}
                for kind in ("traceId", "spanId"):
                    if (why := _id_rejection(fields.get(kind))) is not None:
                        found.append(f"{kind}:{why}")
                if (
                    fields.get("parentSpanId")
                    and (why := _id_rejection(fields["parentSpanId"])) is not None
                ):
                    found.append(f"parentSpanId:{why}")
                if _malformed_list(fields.get("attributes")):
                    found.append("attributes:not_an_array")
                events = fields.get("events")
                if _malformed_list(events):
                    found.append("events:not_an_array")
                elif isinstance(events, list) and any(
                    isinstance(e, dict) and _malformed_list(e.get("attributes")) for e in events
                ):
                    found.append("event.attributes:not_an_array")
                if found:
                    shape.invalid += 1
                    for key in found:
                        shape.reason(key)
                    shape.scope(scope_name)
    return shape


def _proto_shape(message: ExportTraceServiceRequest) -> _Shape:
    # A protobuf decode always yields arrays; only ids can be missing (empty bytes are not sent).
    shape = _Shape()
    for resource_span in message.resource_spans:
        for scope_span in resource_span.scope_spans:
            for span in scope_span.spans:
                shape.total += 1
                found = [
                    f"{kind}:absent"
                    for kind, raw in (("traceId", span.trace_id), ("spanId", span.span_id))
                    if not raw
                ]
                if found:
                    shape.invalid += 1
                    for key in found:
                        shape.reason(key)
                    shape.scope(scope_span.scope.name)
    return shape


# --------------------------------------------------------------------------- protobuf


def _proto_value(value: AnyValue) -> AttributeValue:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "bool_value":
        return bool(value.bool_value)
    if kind == "int_value":
        return int(value.int_value)
    if kind == "double_value":
        return float(value.double_value)
    if kind == "array_value":
        return [_proto_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _proto_attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return bytes(value.bytes_value)
    return None


def _proto_attributes(pairs: Any) -> dict[str, AttributeValue]:
    result: dict[str, AttributeValue] = {}
    for pair in pairs:
        assert isinstance(pair, KeyValue)
        result[str(pair.key)] = _proto_value(pair.value)
    return result


def _proto_spans(message: ExportTraceServiceRequest) -> list[RecordedSpan]:
    spans: list[RecordedSpan] = []
    for resource_span in message.resource_spans:
        resource_attributes = _proto_attributes(resource_span.resource.attributes)
        for scope_span in resource_span.scope_spans:
            scope = scope_span.scope
            scope_attributes = _proto_attributes(scope.attributes)
            for span in scope_span.spans:
                spans.append(
                    RecordedSpan(
                        trace_id=bytes(span.trace_id).hex(),
                        span_id=bytes(span.span_id).hex(),
                        parent_span_id=bytes(span.parent_span_id).hex()
                        if span.parent_span_id
                        else None,
                        name=str(span.name),
                        kind=int(span.kind),
                        start_time_unix_nano=int(span.start_time_unix_nano),
                        end_time_unix_nano=int(span.end_time_unix_nano),
                        attributes=_proto_attributes(span.attributes),
                        resource_attributes=resource_attributes,
                        scope_name=str(scope.name),
                        scope_version=str(scope.version),
                        status_code=int(span.status.code),
                        status_message=str(span.status.message),
                        scope_attributes=scope_attributes,
                        events=tuple(
                            RecordedEvent(
                                name=str(event.name),
                                time_unix_nano=int(event.time_unix_nano),
                                attributes=_proto_attributes(event.attributes),
                            )
                            for event in span.events
                        ),
                    )
                )
    return spans


# --------------------------------------------------------------------------- OTLP/JSON


def _json_id(value: Any) -> str:
    if isinstance(value, str):
        return value
    data = value.get("data") if isinstance(value, dict) else value
    items: list[Any] = data if isinstance(data, list) else []
    # Buffer.from(array) keeps the low byte of each element.
    return bytes(int(item) & 0xFF if isinstance(item, int | float) else 0 for item in items).hex()


def _json_value(value: Any) -> AttributeValue:
    """An AnyValue object as a typed value; never refuses (Langfuse does not validate them)."""
    if not isinstance(value, dict):
        return _plain(value)
    for key in ("stringValue", "boolValue"):
        if key in value:
            return _plain(value[key])
    if "intValue" in value:
        raw = value["intValue"]
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float):
            return int(raw) if raw.is_integer() else raw
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                return raw
        return _plain(raw)
    if "doubleValue" in value:
        raw = value["doubleValue"]
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)  # protobuf JSON spells non-finite values "NaN"/"Infinity"
            except ValueError:
                return raw
        return _plain(raw)
    if isinstance(value.get("arrayValue"), dict):
        items = value["arrayValue"].get("values")
        return [_json_value(item) for item in items] if isinstance(items, list) else []
    if isinstance(value.get("kvlistValue"), dict):
        return _json_attributes(value["kvlistValue"].get("values"))
    if isinstance(raw_bytes := value.get("bytesValue"), str):
        try:
            return base64.b64decode(raw_bytes, validate=True)
        except (binascii.Error, ValueError):
            return raw_bytes
    return None


def _plain(value: Any) -> AttributeValue:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    return str(value)


def _json_attributes(pairs: Any) -> dict[str, AttributeValue]:
    result: dict[str, AttributeValue] = {}
    for pair in pairs if isinstance(pairs, list) else []:
        if isinstance(pair, dict) and isinstance(pair.get("key"), str):
            result[pair["key"]] = _json_value(pair.get("value") or {})
    return result


def _json_nanos(value: Any) -> int:
    # convertNanoTimestampToISO: decimal strings and numbers; anything else counts as missing.
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return 0
    return 0


def _json_enum(value: Any, names: Mapping[str, int]) -> int:
    if isinstance(value, str):
        if value in names:
            return names[value]
        try:
            return int(value)
        except ValueError:
            return 0
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _json_spans(resource_spans: list[Any]) -> list[RecordedSpan]:
    spans: list[RecordedSpan] = []
    for resource_span in resource_spans:
        if not isinstance(resource_span, dict):
            continue
        resource = resource_span.get("resource")
        resource_attributes = _json_attributes(
            resource.get("attributes") if isinstance(resource, dict) else None
        )
        for scope_span in resource_span.get("scopeSpans") or []:
            if not isinstance(scope_span, dict):
                continue
            raw_scope = scope_span.get("scope")
            scope: dict[str, Any] = raw_scope if isinstance(raw_scope, dict) else {}
            scope_attributes = _json_attributes(scope.get("attributes"))
            for span in scope_span.get("spans") or []:
                raw_status = span.get("status")
                status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
                parent = span.get("parentSpanId")
                spans.append(
                    RecordedSpan(
                        trace_id=_json_id(span["traceId"]),
                        span_id=_json_id(span["spanId"]),
                        parent_span_id=_json_id(parent) if parent else None,
                        name=str(span.get("name") or ""),
                        kind=_json_enum(span.get("kind"), SPAN_KIND_NAMES),
                        start_time_unix_nano=_json_nanos(span.get("startTimeUnixNano")),
                        end_time_unix_nano=_json_nanos(span.get("endTimeUnixNano")),
                        attributes=_json_attributes(span.get("attributes")),
                        resource_attributes=resource_attributes,
                        scope_name=str(scope.get("name") or ""),
                        scope_version=str(scope.get("version") or ""),
                        status_code=_json_enum(status.get("code"), STATUS_CODE_NAMES),
                        status_message=str(status.get("message") or ""),
                        scope_attributes=scope_attributes,
                        events=tuple(
                            RecordedEvent(
                                name=str(event.get("name") or ""),
                                time_unix_nano=_json_nanos(event.get("timeUnixNano")),
                                attributes=_json_attributes(event.get("attributes")),
                            )
                            for event in span.get("events") or []
                            if isinstance(event, dict)
                        ),
                    )
                )
    return spans
