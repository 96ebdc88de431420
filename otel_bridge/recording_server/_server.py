"""A recording test double for the Langfuse-compatible public HTTP API.

``RecordingServer`` answers the endpoints that the Langfuse Python SDK (v4 and
v5), LiteLLM's ``langfuse`` callback and a CLI call during normal operation,
records everything it receives, and rejects what the real service rejects
(bad credentials, malformed OTLP payloads, invalid trace/span ids), so tests
can assert on what actually went over the wire.

Usage::

    from otel_bridge.recording_server import RecordingServer

    prompt = {
        "name": "greeting",
        "version": 3,
        "type": "chat",
        "prompt": [{"role": "system", "content": "Hi {{name}}"}],
        "labels": ["production"],
    }
    with RecordingServer(public_key="pk-lf-1", secret_key="sk-lf-1", prompts=[prompt]) as srv:
        client = SomeClient(base_url=srv.url, public_key="pk-lf-1", secret_key="sk-lf-1")
        ...  # exercise the code under test
        spans = srv.wait_for_spans(lambda spans: len(spans) >= 2, timeout=5)
        observations = srv.trace(spans[0].trace_id)["observations"]
        assert srv.prompt_fetches[0].served_version == 3

        # Simulate outages of the OTLP endpoint:
        srv.set_fault("error")            # 500 on every export
        srv.set_fault("slow", delay_s=2)  # answer after two seconds
        srv.set_fault("down")             # drop the connection without answering
        srv.set_fault(None)               # back to normal

As a child process (prints ``READY <url>`` once it accepts connections)::

    python -m otel_bridge.recording_server --port 0 --public-key pk --secret-key sk \\
        --prompt-file prompts.json
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import gzip
import hmac
import json
import math
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, Literal, Self, TypeAlias, cast
from urllib.parse import parse_qs, unquote, urlsplit

from google.protobuf import json_format  # type: ignore[import-untyped,unused-ignore]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = [
    "AttributeValue",
    "FaultMode",
    "PromptFetch",
    "RecordedEvent",
    "RecordedPrompt",
    "RecordedRequest",
    "RecordedSpan",
    "RecordingServer",
    "main",
    "observation_type",
]

AttributeValue: TypeAlias = (
    "str | bool | int | float | bytes | list[AttributeValue] | dict[str, AttributeValue] | None"
)
FaultMode: TypeAlias = Literal["error", "slow", "down"]

OTLP_TRACES_PATH: Final = "/api/public/otel/v1/traces"
PROMPTS_PREFIX: Final = "/api/public/v2/prompts/"
TRACES_PREFIX: Final = "/api/public/traces/"
PROJECTS_PATH: Final = "/api/public/projects"
HEALTH_PATH: Final = "/api/public/health"
INGESTION_PATH: Final = "/api/public/ingestion"

PROJECT_ID: Final = "recording-project"
PROJECT_NAME: Final = "recording"
SERVER_VERSION: Final = "3.0.0-recording"
DEFAULT_PROMPT_LABEL: Final = "production"
LATEST_LABEL: Final = "latest"

RECORDED_HEADERS: Final = (
    "content-type",
    "content-encoding",
    "x-langfuse-ingestion-version",
    "x-langfuse-sdk-name",
    "x-langfuse-sdk-version",
    "x-langfuse-public-key",
    "user-agent",
)
# The highest ingestion version Langfuse accepts; a higher one is answered with 400.
MAX_INGESTION_VERSION: Final = 4

MODEL_ATTRIBUTE_KEYS: Final = (
    "langfuse.observation.model.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "llm.model_name",
    "model",
)
KNOWN_OBSERVATION_TYPES: Final = frozenset(
    {
        "SPAN",
        "GENERATION",
        "EVENT",
        "EMBEDDING",
        "AGENT",
        "TOOL",
        "CHAIN",
        "RETRIEVER",
        "EVALUATOR",
        "GUARDRAIL",
    }
)
OPENINFERENCE_KINDS: Final = {
    "CHAIN": "CHAIN",
    "RETRIEVER": "RETRIEVER",
    "LLM": "GENERATION",
    "EMBEDDING": "EMBEDDING",
    "AGENT": "AGENT",
    "TOOL": "TOOL",
    "GUARDRAIL": "GUARDRAIL",
    "EVALUATOR": "EVALUATOR",
}
SPAN_KIND_NAMES: Final = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
STATUS_CODE_NAMES: Final = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
STATUS_CODE_ERROR: Final = 2
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
PROTOBUF_CONTENT_TYPE: Final = "application/x-protobuf"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RecordedEvent:
    """A span event as received."""

    name: str
    time_unix_nano: int
    attributes: dict[str, AttributeValue]


@dataclass(frozen=True)
class RecordedSpan:
    """One OTLP span as received, ids as lower-case hex and attribute types kept as sent."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, AttributeValue]
    resource_attributes: dict[str, AttributeValue]
    scope_name: str
    scope_version: str
    status_code: int
    status_message: str = ""
    scope_attributes: dict[str, AttributeValue] = field(default_factory=dict)
    events: tuple[RecordedEvent, ...] = ()


@dataclass(frozen=True)
class RecordedPrompt:
    """A prompt version to serve: ``prompt`` is a list of messages for chat, a string for text."""

    name: str
    version: int
    type: Literal["chat", "text"]
    prompt: list[dict[str, Any]] | str
    labels: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    commit_message: str | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("prompt name must not be empty")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(
                f"prompt {self.name!r}: version must be a positive int, got {self.version!r}"
            )
        if self.type == "chat":
            if not isinstance(self.prompt, list) or not all(
                isinstance(m, dict) for m in self.prompt
            ):
                raise ValueError(f"chat prompt {self.name!r} needs a list of message dicts")
        elif self.type == "text":
            if not isinstance(self.prompt, str):
                raise ValueError(f"text prompt {self.name!r} needs a string")
        else:
            raise ValueError(
                f"prompt {self.name!r}: type must be 'chat' or 'text', got {self.type!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecordedPrompt:
        """Build from the API's JSON shape or the field names; ``type`` defaults from ``prompt``."""
        prompt = data["prompt"]
        inferred: Literal["chat", "text"] = "text" if isinstance(prompt, str) else "chat"
        return cls(
            name=str(data["name"]),
            version=data.get("version", 1),
            type=data.get("type", inferred),
            prompt=prompt,
            labels=list(data.get("labels", [])),
            config=dict(data.get("config") or {}),
            tags=list(data.get("tags", [])),
            commit_message=data.get("commitMessage", data.get("commit_message")),
        )


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server saw it; ``status`` 0 means it was dropped on purpose."""

    method: str
    path: str
    query: str
    status: int
    headers: dict[str, str]
    reason: str | None = None
    span_count: int = 0


@dataclass(frozen=True)
class PromptFetch:
    """One prompt lookup: what was asked for and which version (if any) was served."""

    name: str
    version: int | None
    label: str | None
    status: int
    served_version: int | None


# --------------------------------------------------------------------------- OTLP decoding


class _Rejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _field(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    # OTLP/JSON mandates lowerCamelCase but protobuf JSON parsers accept the proto names too.
    if camel in obj:
        return obj[camel]
    return obj.get(snake)


def _as_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Rejected(400, f"{what} must be an array")
    return value


def _as_object(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Rejected(400, f"{what} must be an object")
    return value


def _as_int(value: Any, what: str) -> int:
    # int64 values travel as decimal strings in OTLP/JSON.
    if isinstance(value, bool):
        raise _Rejected(400, f"{what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise _Rejected(400, f"{what} must be an integer, got {value!r}")


def _as_enum(value: Any, names: Mapping[str, int], what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and value in names:
        return names[value]
    return _as_int(value, what)


def _decode_base64(text: str) -> bytes | None:
    # Accept the URL-safe alphabet and missing padding: encoders differ on both.
    normalized = text.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normalized + "=" * (-len(normalized) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode_id(value: Any, size: int, *, hex_first: bool) -> bytes:
    """Decode an id: OTLP/JSON says hex, but some encoders send protobuf-JSON base64."""
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise _Rejected(400, f"id must be a string, got {value!r}")
    candidates: list[bytes] = []
    if hex_first:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(value))
    decoded = _decode_base64(value)
    if decoded is not None:
        candidates.append(decoded)
    for candidate in candidates:
        if len(candidate) == size:
            return candidate
    if candidates:
        # Neither reading has the right length; report the first so the length check names it.
        return candidates[0]
    raise _Rejected(400, f"id {value!r} is neither hex nor base64")


def _any_value(value: Any) -> AttributeValue:
    if not isinstance(value, dict):
        raise _Rejected(400, f"attribute value must be an AnyValue object, got {value!r}")
    if (text := _field(value, "stringValue", "string_value")) is not None:
        if not isinstance(text, str):
            raise _Rejected(400, "stringValue must be a string")
        return text
    if (flag := _field(value, "boolValue", "bool_value")) is not None:
        if not isinstance(flag, bool):
            raise _Rejected(400, "boolValue must be a boolean")
        return flag
    if (number := _field(value, "intValue", "int_value")) is not None:
        return _as_int(number, "intValue")
    if (real := _field(value, "doubleValue", "double_value")) is not None:
        if isinstance(real, bool):
            raise _Rejected(400, "doubleValue must be a number")
        if isinstance(real, int | float):
            return float(real)
        if isinstance(real, str):
            try:
                return float(real)  # protobuf JSON spells non-finite values as "NaN"/"Infinity"
            except ValueError:
                pass
        raise _Rejected(400, f"doubleValue must be a number, got {real!r}")
    if (array := _field(value, "arrayValue", "array_value")) is not None:
        items = _as_list(_as_object(array, "arrayValue").get("values"), "arrayValue.values")
        return [_any_value(item) for item in items]
    if (kvlist := _field(value, "kvlistValue", "kvlist_value")) is not None:
        pairs = _as_list(_as_object(kvlist, "kvlistValue").get("values"), "kvlistValue.values")
        return _key_values(pairs)
    if (raw := _field(value, "bytesValue", "bytes_value")) is not None:
        if not isinstance(raw, str) or (decoded := _decode_base64(raw)) is None:
            raise _Rejected(400, "bytesValue must be base64")
        return decoded
    return None


def _key_values(pairs: Any) -> dict[str, AttributeValue]:
    result: dict[str, AttributeValue] = {}
    for pair in _as_list(pairs, "attributes"):
        entry = _as_object(pair, "attribute")
        key = entry.get("key")
        if not isinstance(key, str):
            raise _Rejected(400, f"attribute key must be a string, got {key!r}")
        result[key] = _any_value(entry.get("value") or {})
    return result


def _hex_or_none(raw: bytes) -> str | None:
    return raw.hex() if raw else None


def _check_id(raw: bytes, size: int, what: str, span_name: str) -> None:
    if len(raw) != size or not any(raw):
        raise _Rejected(
            400,
            f"span {span_name!r} has an invalid {what} {raw.hex()!r}: "
            f"must be {size} bytes and not all zero",
        )


def _decode_request(payload: Any, *, hex_ids: bool) -> list[RecordedSpan]:
    """Turn an ExportTraceServiceRequest (protobuf-JSON mapping) into spans, all-or-nothing."""
    request = _as_object(payload, "request body")
    spans: list[RecordedSpan] = []
    for resource_span in _as_list(
        _field(request, "resourceSpans", "resource_spans"), "resourceSpans"
    ):
        resource_span = _as_object(resource_span, "resourceSpans[]")
        resource = _as_object(resource_span.get("resource"), "resource")
        resource_attributes = _key_values(resource.get("attributes"))
        scope_spans = _as_list(_field(resource_span, "scopeSpans", "scope_spans"), "scopeSpans")
        for scope_span in scope_spans:
            scope_span = _as_object(scope_span, "scopeSpans[]")
            scope = _as_object(scope_span.get("scope"), "scope")
            scope_name = str(scope.get("name") or "")
            scope_attributes = _key_values(scope.get("attributes"))
            for raw_span in _as_list(scope_span.get("spans"), "spans"):
                spans.append(
                    _decode_span(
                        _as_object(raw_span, "span"),
                        hex_ids=hex_ids,
                        resource_attributes=resource_attributes,
                        scope_name=scope_name,
                        scope_version=str(scope.get("version") or ""),
                        scope_attributes=scope_attributes,
                    )
                )
    return spans


def _decode_span(
    raw: Mapping[str, Any],
    *,
    hex_ids: bool,
    resource_attributes: dict[str, AttributeValue],
    scope_name: str,
    scope_version: str,
    scope_attributes: dict[str, AttributeValue],
) -> RecordedSpan:
    name = raw.get("name") or ""
    if not isinstance(name, str):
        raise _Rejected(400, f"span name must be a string, got {name!r}")
    trace_id = _decode_id(_field(raw, "traceId", "trace_id"), 16, hex_first=hex_ids)
    span_id = _decode_id(_field(raw, "spanId", "span_id"), 8, hex_first=hex_ids)
    parent_id = _decode_id(_field(raw, "parentSpanId", "parent_span_id"), 8, hex_first=hex_ids)
    _check_id(trace_id, 16, "trace id", name)
    _check_id(span_id, 8, "span id", name)
    if parent_id:
        _check_id(parent_id, 8, "parent span id", name)
    status = _as_object(raw.get("status"), "status")
    events = tuple(
        RecordedEvent(
            name=str(event.get("name") or ""),
            time_unix_nano=_as_int(
                _field(event, "timeUnixNano", "time_unix_nano") or 0, "timeUnixNano"
            ),
            attributes=_key_values(event.get("attributes")),
        )
        for event in (_as_object(item, "event") for item in _as_list(raw.get("events"), "events"))
    )
    return RecordedSpan(
        trace_id=trace_id.hex(),
        span_id=span_id.hex(),
        parent_span_id=_hex_or_none(parent_id),
        name=name,
        kind=_as_enum(raw.get("kind"), SPAN_KIND_NAMES, "kind"),
        start_time_unix_nano=_as_int(
            _field(raw, "startTimeUnixNano", "start_time_unix_nano") or 0, "startTimeUnixNano"
        ),
        end_time_unix_nano=_as_int(
            _field(raw, "endTimeUnixNano", "end_time_unix_nano") or 0, "endTimeUnixNano"
        ),
        attributes=_key_values(raw.get("attributes")),
        resource_attributes=resource_attributes,
        scope_name=scope_name,
        scope_version=scope_version,
        status_code=_as_enum(status.get("code"), STATUS_CODE_NAMES, "status.code"),
        status_message=str(status.get("message") or ""),
        scope_attributes=scope_attributes,
        events=events,
    )


# --------------------------------------------------------------------------- read-side derivation


def observation_type(span: RecordedSpan) -> str:
    """The observation type Langfuse's OTLP ingestion derives for ``span`` (upper case)."""
    declared = span.attributes.get("langfuse.observation.type")
    if isinstance(declared, str) and declared:
        upper = declared.upper()
        # Langfuse falls back to a plain span for a type it does not know.
        return upper if upper in KNOWN_OBSERVATION_TYPES else "SPAN"
    openinference = span.attributes.get("openinference.span.kind")
    if isinstance(openinference, str) and openinference in OPENINFERENCE_KINDS:
        return OPENINFERENCE_KINDS[openinference]
    if any(span.attributes.get(key) not in (None, "") for key in MODEL_ATTRIBUTE_KEYS):
        return "GENERATION"
    return "SPAN"


def _jsonable(value: AttributeValue) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def _maybe_json(value: AttributeValue) -> Any:
    # The SDKs JSON-encode structured values into string attributes; the read API parses them.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return _jsonable(value)


def _json_object(value: AttributeValue) -> dict[str, Any]:
    parsed = _maybe_json(value)
    return parsed if isinstance(parsed, dict) else {}


def _iso(unix_nano: int) -> str:
    moment = datetime.fromtimestamp(unix_nano / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _as_text(value: AttributeValue) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else json.dumps(_jsonable(value))


def _first_str(attributes: Mapping[str, AttributeValue], *keys: str) -> str | None:
    for key in keys:
        if (text := _as_text(attributes.get(key))) is not None:
            return text
    return None


def _observation_metadata(span: RecordedSpan) -> dict[str, Any]:
    prefix = "langfuse.observation.metadata"
    metadata: dict[str, Any] = {}
    for key in (prefix, "langfuse.metadata"):
        if key in span.attributes:
            metadata.update(_json_object(span.attributes[key]))
    for key, value in span.attributes.items():
        for candidate in (prefix, "langfuse.metadata"):
            if key.startswith(candidate + "."):
                metadata[key[len(candidate) + 1 :]] = _maybe_json(value)
    if not span.scope_name.startswith("langfuse-sdk"):
        # Like Langfuse, keep foreign instrumentation's raw attributes visible.
        metadata["attributes"] = {
            key: value if isinstance(value, str) else json.dumps(_jsonable(value))
            for key, value in span.attributes.items()
        }
    metadata["resourceAttributes"] = _jsonable(span.resource_attributes)
    metadata["scope"] = {
        "name": span.scope_name,
        "version": span.scope_version,
        "attributes": _jsonable(span.scope_attributes),
    }
    return metadata


def _usage_details(attributes: Mapping[str, AttributeValue]) -> dict[str, int]:
    if "langfuse.observation.usage_details" in attributes:
        parsed = _json_object(attributes["langfuse.observation.usage_details"])
        return {key: int(value) for key, value in parsed.items() if isinstance(value, int | float)}
    renames = {"prompt_tokens": "input", "input_tokens": "input", "completion_tokens": "output"}
    renames |= {"output_tokens": "output", "total_tokens": "total"}
    usage: dict[str, int] = {}
    for key, value in attributes.items():
        if (
            key.startswith("gen_ai.usage.")
            and key != "gen_ai.usage.cost"
            and isinstance(value, int | float)
        ):
            short = key.removeprefix("gen_ai.usage.")
            usage[renames.get(short, short)] = int(value)
    return usage


def _environment(span: RecordedSpan) -> str:
    for key in ("langfuse.environment", "deployment.environment.name", "deployment.environment"):
        for source in (span.resource_attributes, span.attributes):
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return "default"


def _observation(span: RecordedSpan) -> dict[str, Any]:
    attributes = span.attributes
    kind = observation_type(span)
    prompt_name = attributes.get("langfuse.observation.prompt.name")
    prompt_version = attributes.get("langfuse.observation.prompt.version")
    # Langfuse links a prompt only for generations and only from an integer version.
    linked = kind == "GENERATION" and isinstance(prompt_name, str) and prompt_name != ""
    version_ok = isinstance(prompt_version, int) and not isinstance(prompt_version, bool)
    usage = _usage_details(attributes)
    level = attributes.get("langfuse.observation.level")
    return {
        "id": span.span_id,
        "traceId": span.trace_id,
        "parentObservationId": span.parent_span_id,
        "type": kind,
        "name": span.name,
        "startTime": _iso(span.start_time_unix_nano),
        "endTime": _iso(span.end_time_unix_nano) if span.end_time_unix_nano else None,
        "completionStartTime": _maybe_json(
            attributes.get("langfuse.observation.completion_start_time")
        ),
        "model": _first_str(attributes, *MODEL_ATTRIBUTE_KEYS),
        "modelParameters": _json_object(attributes.get("langfuse.observation.model.parameters")),
        "input": _maybe_json(attributes.get("langfuse.observation.input")),
        "output": _maybe_json(attributes.get("langfuse.observation.output")),
        "version": _first_str(attributes, "langfuse.version")
        or _first_str(span.resource_attributes, "service.version"),
        "metadata": _observation_metadata(span),
        "usage": {
            "input": usage.get("input", 0),
            "output": usage.get("output", 0),
            "total": usage.get("total", usage.get("input", 0) + usage.get("output", 0)),
            "unit": "TOKENS",
        },
        "usageDetails": usage,
        "costDetails": _json_object(attributes.get("langfuse.observation.cost_details")),
        "level": level
        if isinstance(level, str) and level
        else ("ERROR" if span.status_code == STATUS_CODE_ERROR else "DEFAULT"),
        "statusMessage": _first_str(attributes, "langfuse.observation.status_message")
        or span.status_message
        or None,
        "promptId": None,
        "promptName": prompt_name if linked else None,
        "promptVersion": prompt_version if linked and version_ok else None,
        "environment": _environment(span),
    }


def _is_root(span: RecordedSpan) -> bool:
    return span.parent_span_id is None or span.attributes.get("langfuse.internal.as_root") in (
        True,
        "true",
    )


def _build_trace(trace_id: str, spans: Sequence[RecordedSpan]) -> dict[str, Any]:
    # Langfuse upserts observations by id, so a re-sent span replaces the earlier copy.
    latest = {span.span_id: span for span in spans}
    ordered = sorted(latest.values(), key=lambda s: (s.start_time_unix_nano, s.span_id))
    observations = [_observation(span) for span in ordered]
    root_index = next((i for i, span in enumerate(ordered) if _is_root(span)), None)
    root = ordered[root_index] if root_index is not None else None
    root_observation = observations[root_index] if root_index is not None else None

    def trace_attribute(*keys: str) -> AttributeValue:
        # Trace-level attributes may sit on any span; the latest one that sets them wins.
        for span in reversed(ordered):
            for key in keys:
                if span.attributes.get(key) not in (None, ""):
                    return span.attributes[key]
        return None

    start = min(span.start_time_unix_nano for span in ordered)
    end = max(span.end_time_unix_nano for span in ordered)
    trace_input = trace_attribute("langfuse.trace.input")
    trace_output = trace_attribute("langfuse.trace.output")
    tags = _maybe_json(trace_attribute("langfuse.trace.tags"))
    public = trace_attribute("langfuse.trace.public")
    release = _as_text(trace_attribute("langfuse.release"))
    if release is None and root is not None:
        release = _first_str(root.resource_attributes, "langfuse.release")
    return {
        "id": trace_id,
        "name": _as_text(trace_attribute("langfuse.trace.name")) or (root.name if root else None),
        "timestamp": _iso(start),
        "input": _maybe_json(trace_input)
        if trace_input is not None
        else (root_observation["input"] if root_observation else None),
        "output": _maybe_json(trace_output)
        if trace_output is not None
        else (root_observation["output"] if root_observation else None),
        "sessionId": _as_text(trace_attribute("session.id", "langfuse.session.id")),
        "userId": _as_text(trace_attribute("user.id", "langfuse.user.id")),
        "release": release,
        "version": _as_text(trace_attribute("langfuse.version")),
        "metadata": _json_object(trace_attribute("langfuse.trace.metadata")),
        "tags": [str(tag) for tag in tags] if isinstance(tags, list) else [],
        "public": public is True or public == "true",
        "environment": _environment(root or ordered[0]),
        "htmlPath": f"/project/{PROJECT_ID}/traces/{trace_id}",
        "latency": max(end - start, 0) / 1e9,
        "totalCost": 0.0,
        "observations": observations,
        "scores": [],
    }


# --------------------------------------------------------------------------- HTTP plumbing


@dataclass(frozen=True)
class _Outcome:
    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    reason: str | None = None
    span_count: int = 0


def _json_outcome(
    status: int, payload: Any, reason: str | None = None, span_count: int = 0
) -> _Outcome:
    return _Outcome(status, json.dumps(payload).encode(), JSON_CONTENT_TYPE, reason, span_count)


def _error(status: int, error: str, message: str) -> _Outcome:
    return _json_outcome(status, {"error": error, "message": message}, reason=message)


class _BodyError(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    recorder: RecordingServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-response (or stop() cutting it off) is expected, not a traceback.
        return None


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def _recorder(self) -> RecordingServer:
        return cast(_Server, self.server).recorder

    def setup(self) -> None:
        super().setup()
        self._recorder._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._recorder._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # the request log is the record; stderr noise would drown test output

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError as exc:
                    raise _BodyError("malformed chunked body") from exc
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            size = int(length)
        except ValueError as exc:
            raise _BodyError("malformed Content-Length") from exc
        if size < 0:
            raise _BodyError("malformed Content-Length")
        return self.rfile.read(size)

    def _serve(self, method: str) -> None:
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            body = self._read_body()
        except _BodyError as exc:
            self.close_connection = True
            rejection = _error(400, "BadRequest", str(exc))
            outcome: _Outcome | None = self._recorder._record_only(
                method, self.path, headers, rejection
            )
        else:
            outcome = self._recorder._handle_request(method, self.path, headers, body)
        if outcome is None:
            self.close_connection = True
            return
        self.send_response(outcome.status)
        self.send_header("Content-Type", outcome.content_type)
        self.send_header("Content-Length", str(len(outcome.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(outcome.body)


# --------------------------------------------------------------------------- the server


class RecordingServer:
    """In-process HTTP server that records OTLP spans, serves prompts and answers the read API."""

    def __init__(
        self,
        public_key: str = "pk-lf-test",
        secret_key: str = "sk-lf-test",
        prompts: Iterable[RecordedPrompt | Mapping[str, Any]] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_body_bytes: int | None = None,
    ) -> None:
        self.public_key = public_key
        self.secret_key = secret_key
        self.host = host
        self._requested_port = port
        self._max_body_bytes = max_body_bytes
        self._cond = threading.Condition()
        self._lifecycle = threading.Lock()
        self._spans: list[RecordedSpan] = []
        self._span_generation = 0
        self._requests: list[RecordedRequest] = []
        self._prompt_fetches: list[PromptFetch] = []
        self._ingestion_events: list[dict[str, Any]] = []
        self._counts: Counter[tuple[str, int]] = Counter()
        self._prompts: dict[str, dict[int, tuple[RecordedPrompt, str]]] = {}
        self._fault: FaultMode | None = None
        self._fault_delay = 5.0
        self._fault_all_paths = False
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}
        for prompt in prompts:
            self.add_prompt(prompt)

    # -- lifecycle

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns ``self``. After :meth:`stop`, binds the
        same port again (an outage with the port closed: connections are refused meanwhile)."""
        with self._lifecycle:
            if self._httpd is not None:
                return self
            self._stopping.clear()
            server_class = _Server6 if ":" in self.host else _Server
            httpd = server_class((self.host, self._requested_port), _Handler)
            httpd.recorder = self
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"recording-server-{httpd.server_address[1]}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
            # A server that went down comes back at the same address: clients keep their URL.
            self._requested_port = int(httpd.server_address[1])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the listening socket and all open connections, join the threads."""
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            if httpd is None:
                return
            self._stopping.set()
            httpd.shutdown()
            httpd.server_close()
            deadline = time.monotonic() + timeout
            # Keep-alive clients would otherwise pin handler threads (and the port) until they quit.
            while True:
                with self._cond:
                    open_connections = dict(self._connections)
                if not open_connections or time.monotonic() >= deadline:
                    break
                for conn in open_connections:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                for worker in open_connections.values():
                    worker.join(max(0.0, min(0.5, deadline - time.monotonic())))
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
            self._httpd, self._thread = None, None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def port(self) -> int:
        """The bound port; ``RuntimeError`` while the server is not running."""
        httpd = self._httpd
        if httpd is None:
            raise RuntimeError("RecordingServer is not running; call start() first")
        return int(httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to hand to clients, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def otlp_endpoint(self) -> str:
        """Full URL of the OTLP/HTTP traces endpoint, for exporters configured by endpoint."""
        return self.url + OTLP_TRACES_PATH

    # -- configuration

    def add_prompt(self, prompt: RecordedPrompt | Mapping[str, Any]) -> RecordedPrompt:
        """Register (or replace) one prompt version; returns the stored record."""
        record = prompt if isinstance(prompt, RecordedPrompt) else RecordedPrompt.from_dict(prompt)
        with self._cond:
            self._prompts.setdefault(record.name, {})[record.version] = (record, _now_iso())
        return record

    def set_fault(
        self, mode: FaultMode | None, delay_s: float = 5.0, *, all_paths: bool = False
    ) -> None:
        """Inject an outage on the OTLP endpoint (all paths with ``all_paths``); ``None`` clears.

        ``"error"`` answers 500, ``"slow"`` waits ``delay_s`` before answering normally, ``"down"``
        closes the connection without answering.
        """
        if mode not in (None, "error", "slow", "down"):
            raise ValueError(f"unknown fault mode {mode!r}")
        with self._cond:
            self._fault, self._fault_delay, self._fault_all_paths = mode, delay_s, all_paths

    # -- queries

    def spans(self) -> list[RecordedSpan]:
        """Every span received so far, in arrival order (a copy)."""
        with self._cond:
            return list(self._spans)

    def spans_for_trace(self, trace_id: str) -> list[RecordedSpan]:
        """The received spans of one trace (hex id, any case), in arrival order."""
        wanted = trace_id.lower()
        with self._cond:
            return [span for span in self._spans if span.trace_id == wanted]

    def trace(self, trace_id: str) -> dict[str, Any]:
        """The trace in the read API's shape; raises ``KeyError`` if no span of it was received."""
        spans = self.spans_for_trace(trace_id)
        if not spans:
            raise KeyError(trace_id)
        return _build_trace(trace_id.lower(), spans)

    def wait_for_spans(
        self, predicate: Callable[[list[RecordedSpan]], bool], timeout: float = 10
    ) -> list[RecordedSpan]:
        """Poll until ``predicate(spans)`` holds; ``TimeoutError`` says what did arrive."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                snapshot = list(self._spans)
                generation = self._span_generation
            if predicate(snapshot):
                return snapshot
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s; {self.summary()}")
            with self._cond:
                if self._span_generation == generation:
                    self._cond.wait(min(remaining, 0.25))

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request seen, including rejected, unknown-path and fault-dropped ones."""
        with self._cond:
            return list(self._requests)

    @property
    def prompt_fetches(self) -> list[PromptFetch]:
        """Every prompt lookup, whatever its outcome, with the name URL-decoded."""
        with self._cond:
            return list(self._prompt_fetches)

    @property
    def ingestion_events(self) -> list[dict[str, Any]]:
        """Events posted to the legacy batch ingestion endpoint (the v4 SDK sends scores there)."""
        with self._cond:
            return list(self._ingestion_events)

    def request_counts(self) -> dict[tuple[str, int], int]:
        """Requests seen, keyed by ``(path, status)``."""
        with self._cond:
            return dict(self._counts)

    def count(self, path: str | None = None, status: int | None = None) -> int:
        """How many requests matched ``path`` and ``status`` (``None`` matches any)."""
        with self._cond:
            return sum(
                n
                for (seen_path, seen_status), n in self._counts.items()
                if (path is None or seen_path == path) and (status is None or seen_status == status)
            )

    def clear(self) -> None:
        """Forget received spans, requests, fetches and counters; prompts and faults stay."""
        with self._cond:
            self._spans.clear()
            self._requests.clear()
            self._prompt_fetches.clear()
            self._ingestion_events.clear()
            self._counts.clear()
            self._span_generation += 1
            self._cond.notify_all()

    def summary(self) -> str:
        """A short human-readable account of what was received, for failure messages."""
        with self._cond:
            spans = list(self._spans)
            requests = list(self._requests)
        by_trace: dict[str, list[str]] = {}
        for span in spans:
            by_trace.setdefault(span.trace_id, []).append(span.name)
        traces = (
            "; ".join(f"{tid[:8]}…: {names}" for tid, names in list(by_trace.items())[:10])
            or "none"
        )
        recent = ", ".join(
            f"{r.method} {r.path} -> {r.status}" + (f" ({r.reason})" if r.reason else "")
            for r in requests[-8:]
        )
        return (
            f"received {len(spans)} span(s) in {len(by_trace)} trace(s) [{traces}]; "
            f"{len(requests)} request(s), last: {recent or 'none'}"
        )

    # -- request handling (called from handler threads)

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._connections[conn] = threading.current_thread()
            else:
                self._connections.pop(conn, None)

    def _record(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        outcome: _Outcome | None,
        reason: str | None = None,
    ) -> None:
        status = outcome.status if outcome is not None else 0
        entry = RecordedRequest(
            method=method,
            path=path,
            query=query,
            status=status,
            headers={key: headers[key] for key in RECORDED_HEADERS if key in headers},
            reason=outcome.reason if outcome is not None else reason,
            span_count=outcome.span_count if outcome is not None else 0,
        )
        with self._cond:
            self._requests.append(entry)
            self._counts[(path, status)] += 1

    def _record_only(
        self, method: str, raw_path: str, headers: Mapping[str, str], outcome: _Outcome
    ) -> _Outcome:
        parts = urlsplit(raw_path)
        self._record(method, parts.path, parts.query, headers, outcome)
        return outcome

    def _handle_request(
        self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> _Outcome | None:
        parts = urlsplit(raw_path)
        path = parts.path.rstrip("/") or "/"
        with self._cond:
            fault = self._fault if (self._fault_all_paths or path == OTLP_TRACES_PATH) else None
            delay = self._fault_delay
        if fault == "down":
            self._record(method, path, parts.query, headers, None, reason="injected fault: down")
            return None
        if fault == "slow" and self._stopping.wait(delay):
            self._record(
                method, path, parts.query, headers, None, reason="server stopped during slow fault"
            )
            return None
        if fault == "error":
            outcome: _Outcome = _error(500, "InternalServerError", "injected fault: error")
        else:
            try:
                outcome = self._route(method, path, parts.query, headers, body)
            except _Rejected as exc:
                names = {400: "BadRequest", 403: "ForbiddenError"}
                outcome = _error(exc.status, names.get(exc.status, "Error"), exc.reason)
            except Exception as exc:
                # A bug in the double must show up in the request log, not as a silent hang-up.
                outcome = _error(500, "InternalServerError", f"recording server error: {exc!r}")
        self._record(method, path, parts.query, headers, outcome)
        return outcome

    def _route(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> _Outcome:
        if path == HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                return _error(405, "MethodNotAllowed", f"{method} not allowed on {path}")
            return _json_outcome(200, {"status": "OK", "version": SERVER_VERSION})
        routes: dict[str, tuple[str, Callable[[], _Outcome]]] = {
            OTLP_TRACES_PATH: ("POST", lambda: self._otlp(headers, body)),
            PROJECTS_PATH: ("GET", self._projects),
            INGESTION_PATH: ("POST", lambda: self._ingestion(body)),
        }
        if path in routes:
            allowed, handler = routes[path]
        elif path.startswith(PROMPTS_PREFIX):
            allowed, handler = "GET", lambda: self._prompt(path, query)
        elif path.startswith(TRACES_PREFIX):
            allowed, handler = "GET", lambda: self._read_trace(path)
        else:
            return _error(404, "NotFound", f"no route for {method} {path}")
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            return _error(405, "MethodNotAllowed", f"{method} not allowed on {path}")
        if (failure := self._auth_failure(headers)) is not None:
            if path.startswith(PROMPTS_PREFIX):
                self._note_fetch(path, query, 401, None)
            return _error(401, "Unauthorized", failure)
        return handler()

    def _auth_failure(self, headers: Mapping[str, str]) -> str | None:
        header = headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if not header:
            return "No authorization header"
        if scheme.lower() != "basic":
            return "Invalid authorization header: Basic auth with public and secret key required"
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return "Invalid authorization header: malformed Basic credentials"
        public, _, secret = decoded.partition(":")
        if not (
            hmac.compare_digest(public, self.public_key)
            and hmac.compare_digest(secret, self.secret_key)
        ):
            return "Invalid credentials"
        return None

    # -- endpoints

    def _otlp(self, headers: Mapping[str, str], body: bytes) -> _Outcome:
        if self._max_body_bytes is not None and len(body) > self._max_body_bytes:
            return _error(
                413, "PayloadTooLarge", f"body of {len(body)} bytes exceeds {self._max_body_bytes}"
            )
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding == "gzip":
            try:
                body = gzip.decompress(body)
            except (OSError, EOFError, zlib.error) as exc:
                return _error(400, "BadRequest", f"Failed to decompress request body: {exc}")
        elif encoding not in ("", "identity"):
            return _error(415, "UnsupportedMediaType", f"unsupported Content-Encoding {encoding!r}")
        content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type == PROTOBUF_CONTENT_TYPE:
            try:
                message = ExportTraceServiceRequest.FromString(body)
            except (DecodeError, ValueError) as exc:
                return _error(400, "BadRequest", f"Failed to parse OTel Protobuf Trace: {exc}")
            payload: Any = json_format.MessageToDict(message, use_integers_for_enums=True)
            hex_ids = False
        elif content_type == "application/json":
            try:
                payload = json.loads(body)
            except ValueError as exc:
                return _error(400, "BadRequest", f"Failed to parse OTel JSON Trace: {exc}")
            hex_ids = True
        else:
            return _error(
                415, "UnsupportedMediaType", f"Invalid content type {content_type or '(none)'!r}"
            )
        ingestion_version = headers.get("x-langfuse-ingestion-version")
        if ingestion_version is not None:
            try:
                too_new = int(ingestion_version.strip()) > MAX_INGESTION_VERSION
            except ValueError:
                too_new = True
            if too_new:
                return _error(
                    400,
                    "BadRequest",
                    f'Unsupported x-langfuse-ingestion-version: "{ingestion_version}". '
                    f'Maximum supported: "{MAX_INGESTION_VERSION}".',
                )
        spans = _decode_request(payload, hex_ids=hex_ids)
        for span in spans:
            self._check_sdk_public_key(span)
        with self._cond:
            self._spans.extend(spans)
            self._span_generation += 1
            self._cond.notify_all()
        if content_type == PROTOBUF_CONTENT_TYPE:
            response = ExportTraceServiceResponse().SerializeToString()
            return _Outcome(200, response, PROTOBUF_CONTENT_TYPE, span_count=len(spans))
        return _json_outcome(200, {}, span_count=len(spans))

    def _check_sdk_public_key(self, span: RecordedSpan) -> None:
        # Langfuse discards Python SDK spans whose tracer was created for another project.
        if (
            span.scope_name.startswith("langfuse-sdk")
            and span.resource_attributes.get("telemetry.sdk.language") == "python"
            and span.scope_attributes.get("public_key") != self.public_key
        ):
            raise _Rejected(
                403,
                "Langfuse OTEL SDK span has different public key "
                f"{span.scope_attributes.get('public_key')!r} "
                f"than used for authentication {self.public_key!r}. Discarding span.",
            )

    def _projects(self) -> _Outcome:
        project = {
            "id": PROJECT_ID,
            "name": PROJECT_NAME,
            "organization": {"id": "recording-org", "name": "recording"},
            "metadata": {},
        }
        return _json_outcome(200, {"data": [project]})

    def _ingestion(self, body: bytes) -> _Outcome:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return _error(400, "BadRequest", f"invalid JSON: {exc}")
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, list):
            return _error(400, "BadRequest", "body must be an object with a 'batch' array")
        successes: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        accepted: list[dict[str, Any]] = []
        for event in batch:
            event_id = event.get("id") if isinstance(event, dict) else None
            if (
                not isinstance(event, dict)
                or not isinstance(event_id, str)
                or not isinstance(event.get("type"), str)
            ):
                errors.append(
                    {"id": str(event_id or ""), "status": 400, "message": "Invalid request data"}
                )
                continue
            accepted.append(event)
            successes.append({"id": event_id, "status": 201})
        with self._cond:
            self._ingestion_events.extend(accepted)
        # Langfuse answers batch ingestion with 207 Multi-Status, per-event results in the body.
        return _json_outcome(207, {"successes": successes, "errors": errors})

    def _note_fetch(self, path: str, query: str, status: int, served: int | None) -> None:
        params = parse_qs(query, keep_blank_values=True)
        raw_version = params.get("version", [None])[0]
        try:
            version = int(raw_version) if raw_version is not None else None
        except ValueError:
            version = None
        fetch = PromptFetch(
            name=unquote(path[len(PROMPTS_PREFIX) :]),
            version=version,
            label=params.get("label", [None])[0],
            status=status,
            served_version=served,
        )
        with self._cond:
            self._prompt_fetches.append(fetch)

    def _prompt(self, path: str, query: str) -> _Outcome:
        name = unquote(path[len(PROMPTS_PREFIX) :])
        params = parse_qs(query, keep_blank_values=True)
        raw_version = params.get("version", [None])[0]
        label = params.get("label", [None])[0]
        version: int | None = None
        if raw_version is not None:
            try:
                version = int(raw_version)
            except ValueError:
                self._note_fetch(path, query, 400, None)
                return _error(
                    400, "InvalidRequestError", f"version must be an integer, got {raw_version!r}"
                )
        if version is not None and label is not None:
            self._note_fetch(path, query, 400, None)
            return _error(400, "InvalidRequestError", "Cannot specify both version and label")
        with self._cond:
            versions = dict(self._prompts.get(name, {}))
        newest = max(versions) if versions else None
        chosen: int | None
        if version is not None:
            chosen = version if version in versions else None
            wanted = f"version {version}"
        else:
            effective = label or DEFAULT_PROMPT_LABEL
            wanted = f"label {effective!r}"
            carrying = [v for v, (p, _) in versions.items() if effective in p.labels]
            if effective == LATEST_LABEL and newest is not None:
                carrying.append(newest)
            chosen = max(carrying) if carrying else None
        if chosen is None:
            self._note_fetch(path, query, 404, None)
            return _json_outcome(
                404,
                {
                    "error": "LangfuseNotFoundError",
                    "message": f"Prompt not found: {name!r} with {wanted}",
                },
                reason=f"prompt {name!r} with {wanted} not found",
            )
        record, created = versions[chosen]
        labels = list(record.labels)
        # Langfuse keeps a "latest" label on the newest version of every prompt.
        if chosen == newest and LATEST_LABEL not in labels:
            labels.append(LATEST_LABEL)
        self._note_fetch(path, query, 200, chosen)
        return _json_outcome(
            200,
            {
                "id": str(
                    uuid.uuid5(
                        uuid.NAMESPACE_URL, f"recording-prompt:{record.name}:{record.version}"
                    )
                ),
                "createdAt": created,
                "updatedAt": created,
                "projectId": PROJECT_ID,
                "createdBy": "API",
                "name": record.name,
                "version": record.version,
                "type": record.type,
                "prompt": record.prompt,
                "config": record.config,
                "labels": labels,
                "tags": list(record.tags),
                "commitMessage": record.commit_message,
                "resolutionGraph": None,
            },
        )

    def _read_trace(self, path: str) -> _Outcome:
        trace_id = unquote(path[len(TRACES_PREFIX) :]).lower()
        spans = self.spans_for_trace(trace_id)
        if not spans:
            return _json_outcome(
                404,
                {
                    "error": "LangfuseNotFoundError",
                    "message": f"Trace {trace_id} not found within authorized project",
                },
                reason=f"trace {trace_id} not found",
            )
        return _json_outcome(200, _build_trace(trace_id, spans))


def _now_iso() -> str:
    return _iso(time.time_ns())


# --------------------------------------------------------------------------- CLI


def _load_prompt_file(path: str) -> list[Mapping[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    prompts = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(prompts, list):
        raise SystemExit(f"{path}: expected a JSON list of prompts or {{'prompts': [...]}}")
    return prompts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT; prints ``READY <url>`` once it accepts connections."""
    parser = argparse.ArgumentParser(
        prog="python -m otel_bridge.recording_server", description=(__doc__ or "").split("\n", 1)[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--public-key", default="pk-lf-test")
    parser.add_argument("--secret-key", default="sk-lf-test")
    parser.add_argument(
        "--prompt-file", help="JSON list of prompts (RecordedPrompt fields or the API's shape)"
    )
    args = parser.parse_args(argv)
    prompts = _load_prompt_file(args.prompt_file) if args.prompt_file else []
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = RecordingServer(
        args.public_key, args.secret_key, prompts, host=args.host, port=args.port
    )
    with server:
        print(f"READY {server.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
