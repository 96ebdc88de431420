"""Langfuse's rules for turning an OTLP span into a stored observation, and for serving it.

Each rule names the Langfuse (server v4.16) file and function it follows:

- Attribute values are read as ``convertValueToPlainJavascript`` does
  (``packages/shared/src/server/otel/OtelIngestionProcessor.ts``): ints and doubles are one
  JavaScript number, so a double 3.0 is the integer 3; kvlists and bytes become JSON strings.
- Observation type: ``ObservationTypeMapperRegistry``
  (``packages/shared/src/server/otel/ObservationTypeMapper.ts``), mappers in priority order, the
  first non-null result wins, else SPAN. ``langfuse.observation.type`` must be one of the
  lower-case names exactly; any other value falls through to the next mapper. Values that make
  the mapper throw in JavaScript (a type named like an ``Object.prototype`` member, a non-string
  ``operation.name``) fail Langfuse's whole queued batch: :class:`LangfuseWorkerError`.
- Prompt attributes: ``OtelIngestionProcessor.createObservationEvent`` / ``processToEvent``:
  ``langfuse.observation.prompt.name`` ?? ``langfuse.prompt.name`` ?? the AI SDK's
  ``ai.telemetry.metadata.langfusePrompt``, the same for the version, and only when the type is
  exactly GENERATION.
- Legacy tables (write mode ``legacy``): the observation event must pass ``CreateGenerationBody``
  (``packages/shared/src/server/ingestion/types.ts``: ``promptName`` a string, ``promptVersion``
  an integer, both set or both unset), else ``otelIngestionQueue.ts`` drops it whole (its
  ``ingestionSchema.safeParse`` filter). The prompt is then looked up by name + version
  (``IngestionService.getPrompt``/``hasPromptInformation``, ``PromptService.findPrompt``) and
  ``mapObservationEventsToRecords`` stores the FOUND prompt's id, name and version, or nulls.
- Events table (write mode ``events_only``): ``IngestionService.createEventRecord`` looks the
  prompt up when name and version are both truthy (a string version through ``parseInt``),
  stores ``prompt_id`` = the found id or "", ``prompt_name`` as sent and ``prompt_version`` =
  ``parseUInt16(version)``; events columns are non-null Strings, so a missing value is "". A
  version or name Prisma cannot query with (non-integer number, boolean, list, beyond Int32)
  makes ``createEventRecord`` throw, and ``otelIngestionQueue.ts`` skips that one event (this
  last rule is inferred from Prisma's type validation, not read in Langfuse's code).
- Serving v2 observations: ``getObservationsV2FromEventsTableForPublicApi``
  (``packages/shared/src/server/repositories/events.ts``), field groups from ``FIELD_SETS``
  (``packages/shared/src/server/queries/clickhouse-sql/event-query-builder.ts``), values from
  ``convertObservationPartial``/``convertEventsObservation``
  (``packages/shared/src/server/repositories/observations_converters.ts``), order and cursor
  from ``orderByForObservationsQuery``/``applyObservationsCursorFilter``:
  ``(start_time, xxHash32(trace_id), span_id)`` descending.

Not modelled (approximations): Langfuse's input/output extraction from foreign conventions
(gen_ai.prompt.*, OpenInference messages), model-parameter and usage normalisation, model price
matching, environment-name validation, and metadata truncation in events_core.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeAlias

from otel_bridge.recording_server._otlp import js_parse_int
from otel_bridge.recording_server._records import AttributeValue, RecordedPrompt, RecordedSpan

__all__ = [
    "FIELD_GROUPS",
    "Cursor",
    "CursorError",
    "LangfuseWorkerError",
    "PromptLookup",
    "events_row",
    "js_number",
    "legacy_observation",
    "observation_type",
    "v1_trace",
    "v2_item",
    "xxhash32",
]

JsValue: TypeAlias = "str | bool | int | float | list[JsValue] | None"
PromptLookup: TypeAlias = Callable[[str, int], RecordedPrompt | None]

PROJECT_ID: Final = "recording-project"
GENERATION: Final = "GENERATION"
STATUS_CODE_ERROR: Final = 2

# OBSERVATION_FIELD_GROUPS_PUBLIC_API (packages/shared/src/domain/observation-field-groups.ts).
FIELD_GROUPS: Final = (
    "core",
    "basic",
    "time",
    "io",
    "metadata",
    "model",
    "usage",
    "prompt",
    "metrics",
    "trace_context",
)
# getObservationsV2FromEventsTableForPublicApi: `opts.fields ?? ["core", "basic"]`.
DEFAULT_FIELDS: Final = ("core", "basic")

_OBJECT_PROTOTYPE_KEYS: Final = frozenset(
    {
        "constructor",
        "__defineGetter__",
        "__defineSetter__",
        "hasOwnProperty",
        "__lookupGetter__",
        "__lookupSetter__",
        "isPrototypeOf",
        "propertyIsEnumerable",
        "toString",
        "valueOf",
        "__proto__",
        "toLocaleString",
    }
)
_DIRECT_TYPES: Final = {
    "span": "SPAN",
    "generation": "GENERATION",
    "event": "EVENT",
    "embedding": "EMBEDDING",
    "agent": "AGENT",
    "tool": "TOOL",
    "chain": "CHAIN",
    "retriever": "RETRIEVER",
    "guardrail": "GUARDRAIL",
    "evaluator": "EVALUATOR",
}
_OPENINFERENCE_TYPES: Final = {
    "CHAIN": "CHAIN",
    "RETRIEVER": "RETRIEVER",
    "LLM": "GENERATION",
    "EMBEDDING": "EMBEDDING",
    "AGENT": "AGENT",
    "TOOL": "TOOL",
    "GUARDRAIL": "GUARDRAIL",
    "EVALUATOR": "EVALUATOR",
}
_GENAI_OPERATION_TYPES: Final = {
    "chat": "GENERATION",
    "completion": "GENERATION",
    "text_completion": "GENERATION",
    "generate_content": "GENERATION",
    "generate": "GENERATION",
    "embeddings": "EMBEDDING",
    "invoke_agent": "AGENT",
    "create_agent": "AGENT",
    "execute_tool": "TOOL",
}
_GENKIT_TYPES: Final = {
    "background-model": "GENERATION",
    "model": "GENERATION",
    "embedder": "EMBEDDING",
    "tool": "TOOL",
    "tool.v2": "TOOL",
    "retriever": "RETRIEVER",
    "evaluator": "EVALUATOR",
}
_PYTHON_SDK_GENERATION_KEYS: Final = (
    "langfuse.observation.model.name",
    "langfuse.observation.cost_details",
    "langfuse.observation.usage_details",
    "langfuse.observation.completion_start_time",
    "langfuse.observation.model.parameters",
    "langfuse.observation.prompt.name",
    "langfuse.observation.prompt.version",
)
_VERCEL_GENERATION_PREFIXES: Final = (
    "ai.generateText.doGenerate",
    "ai.streamText.doStream",
    "ai.generateObject.doGenerate",
    "ai.streamObject.doStream",
)
_VERCEL_EMBEDDING_PREFIXES: Final = ("ai.embedMany.doEmbed", "ai.embed.doEmbed")
_VERCEL_MODEL_KEYS: Final = (
    "langfuse.observation.model.name",
    "ai.model.id",
    "gen_ai.request.model",
    "gen_ai.response.model",
)
_MODEL_BASED_KEYS: Final = (
    "langfuse.observation.model.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "llm.model_name",
    "model",
)
_MODEL_NAME_KEYS: Final = (
    "langfuse.observation.model.name",
    "gen_ai.response.model",
    "ai.model.id",
    "gen_ai.request.model",
    "llm.response.model",
    "llm.model_name",
    "model",
)
_LIVEKIT_DEBUG_SPAN_NAMES: Final = frozenset(
    {
        "user_speaking",
        "eou_detection",
        "llm_request_run",
        "tts_node",
        "tts_request",
        "tts_request_run",
        "tts_stream_adapter",
        "agent_speaking",
        "drain_agent_activity",
        "on_exit",
        "on_enter",
        "llm_fallback_adapter",
        "tts_fallback_adapter",
        "start_agent_activity",
    }
)
_LEVEL_ALIASES: Final = {
    "DEBUG": "DEBUG",
    "TRACE": "DEBUG",
    "VERBOSE": "DEBUG",
    "DEFAULT": "DEFAULT",
    "INFO": "DEFAULT",
    "LOG": "DEFAULT",
    "NOTICE": "DEFAULT",
    "OK": "DEFAULT",
    "SUCCESS": "DEFAULT",
    "WARNING": "WARNING",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "FATAL": "ERROR",
    "CRITICAL": "ERROR",
}
_INT32_MAX: Final = 2**31 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_UINT16_MAX: Final = 65535


class LangfuseWorkerError(ValueError):
    """Langfuse's worker throws on this input, so what it was processing is never stored."""


# --------------------------------------------------------------------------- JavaScript values


def _js(value: AttributeValue) -> JsValue:
    """convertValueToPlainJavascript: what Langfuse's TypeScript sees for an attribute."""
    if isinstance(value, bytes):
        return json.dumps({"bytesValue": base64.b64encode(value).decode("ascii")})
    if isinstance(value, dict):
        return json.dumps({"kvlistValue": _jsonable(value)}, separators=(",", ":"))
    if isinstance(value, list):
        return [_js(item) for item in value]
    return value


def _js_attributes(attributes: Mapping[str, AttributeValue]) -> dict[str, JsValue]:
    return {key: _js(value) for key, value in attributes.items()}


def _js_number_text(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number.is_integer() and abs(number) < 1e21:
        return str(int(number))
    return repr(number)


def _js_string(value: JsValue) -> str:
    """String(value) in JavaScript; also how a value becomes an object property key."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _js_number_text(value)
    if isinstance(value, list):
        return ",".join("" if item is None else _js_string(item) for item in value)
    return value


def _js_truthy(value: JsValue) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False
    return bool(value) or isinstance(value, list)


def _js_is_number(value: JsValue) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _js_is_integer(value: JsValue) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def js_number(text: str) -> float:
    """Number(text) for a string: NaN where JavaScript gives NaN."""
    stripped = text.strip()
    if stripped == "":
        return 0.0
    try:
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", stripped):
            return float(int(stripped, 16))
        if re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?Infinity", stripped):
            return float(stripped.replace("Infinity", "inf"))
    except ValueError:
        pass
    return math.nan


def _json_stringify(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _jsonable(value: AttributeValue) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return _js_number_text(value)
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def _meaningful(value: JsValue) -> bool:
    """hasMeaningfulValue in ObservationTypeMapper.ts."""
    if value is None or value == "":
        return False
    if isinstance(value, list):
        return len(value) > 0
    return True


# --------------------------------------------------------------------------- observation type


def _lookup(mapping: Mapping[str, str], value: JsValue) -> str | None:
    """`mappings[value]` on a JavaScript object literal."""
    key = _js_string(value)
    if key in _OBJECT_PROTOTYPE_KEYS:
        raise LangfuseWorkerError(
            f"ObservationTypeMapper: {key!r} resolves to an Object.prototype member whose "
            ".toUpperCase() throws a TypeError; Langfuse fails the whole batch"
        )
    return mapping.get(key)


def _simple(attributes: Mapping[str, JsValue], key: str, mapping: Mapping[str, str]) -> str | None:
    if key not in attributes or not _meaningful(attributes[key]):
        return None
    return _lookup(mapping, attributes[key])


def _starts_with(value: JsValue, prefix: str) -> bool:
    if not isinstance(value, str):
        raise LangfuseWorkerError(
            f"ObservationTypeMapper: {value!r}.startsWith is not a function; Langfuse fails "
            "the whole batch"
        )
    return value.startswith(prefix)


def _vercel_matches(attributes: Mapping[str, JsValue], prefixes: Sequence[str]) -> bool:
    """matchesVercelAiSdkOperation."""
    operation_name = attributes.get("operation.name")
    if _meaningful(operation_name) and any(_starts_with(operation_name, p) for p in prefixes):
        return True
    operation_id = attributes.get("ai.operationId")
    return _meaningful(operation_id) and operation_id in prefixes


def _python_sdk_v330_override(
    attributes: Mapping[str, JsValue], resource: Mapping[str, JsValue], span: RecordedSpan
) -> str | None:
    if not (
        attributes.get("langfuse.observation.type") == "span"
        and span.scope_name == "langfuse-sdk"
        and resource.get("telemetry.sdk.language") == "python"
    ):
        return None
    if span.scope_version:
        parts = [js_number(part) for part in span.scope_version.split(".")]
        major = parts[0]
        minor = parts[1] if len(parts) > 1 else math.nan  # [major, minor] of a 1-part version
        if major > 3 or (major == 3 and minor > 3):
            return None
    if any(key in attributes for key in _PYTHON_SDK_GENERATION_KEYS):
        return GENERATION
    return None


def _vercel_generation_like(attributes: Mapping[str, JsValue]) -> str | None:
    has_model = any(_meaningful(attributes.get(key)) for key in _VERCEL_MODEL_KEYS)
    # Both operands are evaluated before `&&` in the TypeScript, so the prefix test always runs.
    is_generation_or_embedding = _vercel_matches(
        attributes, _VERCEL_GENERATION_PREFIXES + _VERCEL_EMBEDDING_PREFIXES
    )
    if not (has_model and is_generation_or_embedding):
        return None
    if _vercel_matches(attributes, _VERCEL_GENERATION_PREFIXES):
        return GENERATION
    if _vercel_matches(attributes, _VERCEL_EMBEDDING_PREFIXES):
        return "EMBEDDING"
    return None


def _vercel_span_like(attributes: Mapping[str, JsValue]) -> str | None:
    operation_name = attributes.get("operation.name")
    operation_id = attributes.get("ai.operationId")
    has_ai_operation = (_meaningful(operation_name) and _starts_with(operation_name, "ai.")) or (
        _meaningful(operation_id) and _starts_with(operation_id, "ai.")
    )
    if not has_ai_operation:
        return None
    if _vercel_matches(attributes, _VERCEL_GENERATION_PREFIXES + _VERCEL_EMBEDDING_PREFIXES):
        return None
    return "TOOL" if _vercel_matches(attributes, ("ai.toolCall",)) else None


def _genai_tool(attributes: Mapping[str, JsValue]) -> str | None:
    keys = ("gen_ai.tool.name", "gen_ai.tool.call.id")
    return "TOOL" if any(_meaningful(attributes.get(key)) for key in keys) else None


def _flue(attributes: Mapping[str, JsValue]) -> str | None:
    if any(_meaningful(attributes.get(k)) for k in ("flue.tool.name", "flue.tool.call_id")):
        return "TOOL"
    if any(_meaningful(attributes.get(k)) for k in ("flue.task.id", "flue.task.agent")):
        return "AGENT"
    return None


def _livekit(span: RecordedSpan) -> str | None:
    if span.scope_name != "livekit-agents":
        return None
    if span.name in ("agent_turn", "start_agent_activity"):
        return "AGENT"
    return "TOOL" if span.name == "function_tool" else None


def _model_based(attributes: Mapping[str, JsValue]) -> str | None:
    return GENERATION if any(_meaningful(attributes.get(k)) for k in _MODEL_BASED_KEYS) else None


def _observation_type(
    span: RecordedSpan, attributes: Mapping[str, JsValue], resource: Mapping[str, JsValue]
) -> str:
    mappers: tuple[Callable[[], str | None], ...] = (
        lambda: _python_sdk_v330_override(attributes, resource, span),
        lambda: _simple(attributes, "langfuse.observation.type", _DIRECT_TYPES),
        lambda: _simple(attributes, "openinference.span.kind", _OPENINFERENCE_TYPES),
        lambda: _simple(attributes, "gen_ai.operation.name", _GENAI_OPERATION_TYPES),
        lambda: _simple(attributes, "genkit:metadata:subtype", _GENKIT_TYPES),
        lambda: _vercel_generation_like(attributes),
        lambda: _vercel_span_like(attributes),
        lambda: _genai_tool(attributes),
        lambda: _flue(attributes),
        lambda: _livekit(span),
        lambda: _model_based(attributes),
    )
    for mapper in mappers:
        if (found := mapper()) is not None:
            return found
    return "SPAN"


def observation_type(span: RecordedSpan) -> str:
    """The observation type Langfuse's OTLP ingestion derives for ``span`` (upper case).

    Raises :class:`LangfuseWorkerError` where Langfuse's mapper throws instead.
    """
    return _observation_type(
        span, _js_attributes(span.attributes), _js_attributes(span.resource_attributes)
    )


# --------------------------------------------------------------------------- prompt link


def _ai_sdk_prompt(attributes: Mapping[str, JsValue]) -> Mapping[str, Any] | None:
    """parseLangfusePromptFromAISDK."""
    raw = attributes.get("ai.telemetry.metadata.langfusePrompt")
    if not _js_truthy(raw):
        return None
    try:
        parsed = json.loads(_js_string(raw))
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _coalesce(*values: Callable[[], JsValue]) -> JsValue:
    """JavaScript ``a ?? b ?? c`` with lazy operands."""
    for value in values:
        if (found := value()) is not None:
            return found
    return None


def _prompt_attributes(kind: str, attributes: Mapping[str, JsValue]) -> tuple[JsValue, JsValue]:
    """(promptName, promptVersion) of the observation event: GENERATION only."""
    if kind != GENERATION:
        return None, None
    ai_sdk = _ai_sdk_prompt(attributes)

    def from_ai_sdk(key: str) -> JsValue:
        value = ai_sdk.get(key) if ai_sdk else None
        return value if isinstance(value, str | int | float | bool) else None

    name = _coalesce(
        lambda: attributes.get("langfuse.observation.prompt.name"),
        lambda: attributes.get("langfuse.prompt.name"),
        lambda: from_ai_sdk("name"),
    )
    version = _coalesce(
        lambda: attributes.get("langfuse.observation.prompt.version"),
        lambda: attributes.get("langfuse.prompt.version"),
        lambda: from_ai_sdk("version"),
    )
    return name, version


def legacy_generation_accepted(name: JsValue, version: JsValue) -> bool:
    """CreateGenerationBody: string name, integer version, both set or both unset."""
    if name is not None and not isinstance(name, str):
        return False
    if version is not None and not _js_is_integer(version):
        return False
    return _js_truthy(name) == _js_truthy(version)


def _legacy_prompt(name: JsValue, version: JsValue, lookup: PromptLookup) -> RecordedPrompt | None:
    # hasPromptInformation, then PromptService.findPrompt's `if (version)`.
    if not (isinstance(name, str) and _js_is_number(version) and _js_truthy(version)):
        return None
    assert isinstance(version, int | float)
    return lookup(name, int(version))


@dataclass(frozen=True)
class EventsPrompt:
    """The prompt columns of an events-table row."""

    prompt_id: str
    prompt_name: str
    prompt_version: int | None


def _parse_uint16(version: JsValue) -> int | None:
    if version is None:
        return None
    parsed = js_parse_int(_js_string(version))
    return parsed if parsed is not None and 0 <= parsed <= _UINT16_MAX else None


def _events_prompt(name: JsValue, version: JsValue, lookup: PromptLookup) -> EventsPrompt:
    found: RecordedPrompt | None = None
    if _js_truthy(name) and _js_truthy(version):
        wanted = js_parse_int(version) if isinstance(version, str) else version
        if wanted is not None:  # NaN: findPrompt's `if (version)` is false, no lookup
            if not isinstance(name, str) or not _js_is_integer(wanted):
                raise LangfuseWorkerError(
                    f"prompt lookup with name {name!r} and version {wanted!r}: Prisma refuses "
                    "the query, createEventRecord throws and the event is not written"
                )
            assert isinstance(wanted, int | float)
            if abs(wanted) > _INT32_MAX:
                raise LangfuseWorkerError(f"prompt version {wanted!r} does not fit Prisma's Int")
            if wanted:
                found = lookup(name, int(wanted))
    return EventsPrompt(
        prompt_id=found.id if found else "",
        prompt_name="" if name is None else _js_string(name),
        prompt_version=_parse_uint16(version),
    )


# --------------------------------------------------------------------------- span fields


def _first_truthy_text(attributes: Mapping[str, JsValue], keys: Sequence[str]) -> str | None:
    # The userId/sessionId/modelName extractors: first truthy value, non-strings JSON-encoded.
    for key in keys:
        value = attributes.get(key)
        if _js_truthy(value):
            return value if isinstance(value, str) else _json_stringify(value)
    return None


def _name(span: RecordedSpan, attributes: Mapping[str, JsValue]) -> str:
    """extractName."""
    tool = attributes.get("gen_ai.tool.name")
    if _js_truthy(tool):
        return tool if isinstance(tool, str) else _json_stringify(tool)
    if "genkit:name" in attributes:
        return _js_string(attributes["genkit:name"])
    message = attributes.get("logfire.msg")
    if _js_truthy(message):
        return message if isinstance(message, str) else _json_stringify(message)
    if "ai.toolCall.name" in attributes:
        return _js_string(attributes["ai.toolCall.name"])
    if "ai.operationId" in attributes:
        function_id = attributes.get("ai.telemetry.functionId")
        prefix = _js_string(function_id) + ":" if _js_truthy(function_id) else ""
        return prefix + _js_string(attributes["ai.operationId"])
    return span.name


def _environment(attributes: Mapping[str, JsValue], resource: Mapping[str, JsValue]) -> str:
    """extractEnvironment (environment-name validation not modelled)."""
    for key in ("langfuse.environment", "deployment.environment.name", "deployment.environment"):
        for source in (attributes, resource):
            if _js_truthy(source.get(key)):
                return _js_string(source[key])
    return "default"


def _level(span: RecordedSpan, attributes: Mapping[str, JsValue]) -> str:
    declared = attributes.get("langfuse.observation.level")
    if isinstance(declared, str) and declared.strip().upper() in _LEVEL_ALIASES:
        return _LEVEL_ALIASES[declared.strip().upper()]
    if span.status_code == STATUS_CODE_ERROR:
        return "ERROR"
    if span.scope_name == "livekit-agents" and span.name in _LIVEKIT_DEBUG_SPAN_NAMES:
        return "DEBUG"
    return "DEFAULT"


def _tags(attributes: Mapping[str, JsValue]) -> list[str]:
    """extractTags."""
    value: JsValue = None
    for key in (
        "langfuse.trace.tags",
        "langfuse.tags",
        "langfuse.observation.metadata.langfuse_tags",
        "langfuse.trace.metadata.langfuse_tags",
        "ai.telemetry.metadata.tags",
        "tag.tags",
    ):
        value = attributes.get(key)
        if _js_truthy(value):
            break
    if value is None:
        return []
    if isinstance(value, list):
        return [_js_string(tag) for tag in value]
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [_js_string(tag) for tag in parsed]
    if isinstance(value, str) and "," in value:
        return [tag.strip() for tag in value.split(",")]
    if isinstance(value, str):
        return [value] if value else []
    return []


def _is_true(value: JsValue) -> bool:
    return value is True or value == "true"


def _iso_ms(epoch_ms: int) -> str:
    """Date.prototype.toISOString."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _parse_date_ms(value: Any) -> int | None:
    """`new Date(value)` for the ISO strings SDKs send; None where it is an invalid date."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    match = re.fullmatch(r"(.*T\d{2}:\d{2}:\d{2})(\.\d+)?(.*)", text)
    if match:  # Python accepts at most six fraction digits; JavaScript keeps milliseconds only
        fraction = (match.group(2) or "")[:7]
        text = match.group(1) + fraction + match.group(3)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _completion_start_ms(attributes: Mapping[str, JsValue]) -> int | None:
    """extractCompletionStartTime: an ISO string, or one JSON-encoded once more."""
    value = attributes.get("langfuse.observation.completion_start_time")
    if (found := _parse_date_ms(value)) is not None:
        return found
    if isinstance(value, str):
        try:
            return _parse_date_ms(json.loads(value))
        except ValueError:
            return None
    return None


def _span_times_ms(span: RecordedSpan, now_ms: int) -> tuple[int, int]:
    """resolveSpanTimestamps: a missing edge takes the other one, both missing take now."""
    start = span.start_time_unix_nano // 1_000_000 if span.start_time_unix_nano else None
    end = span.end_time_unix_nano // 1_000_000 if span.end_time_unix_nano else None
    return (
        start if start is not None else end if end is not None else now_ms,
        end if end is not None else start if start is not None else now_ms,
    )


def _maybe_json(value: JsValue) -> Any:
    # The SDKs JSON-encode structured values into string attributes.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _json_object(value: JsValue) -> dict[str, Any]:
    parsed = _maybe_json(value)
    return parsed if isinstance(parsed, dict) else {}


def _usage_details(attributes: Mapping[str, JsValue]) -> dict[str, int]:
    """Langfuse's explicit usage attribute, else the gen_ai.usage.* counters (simplified)."""
    if "langfuse.observation.usage_details" in attributes:
        parsed = _json_object(attributes["langfuse.observation.usage_details"])
        return {
            key: int(value)
            for key, value in parsed.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
        }
    renames = {"prompt_tokens": "input", "input_tokens": "input", "completion_tokens": "output"}
    renames |= {"output_tokens": "output", "total_tokens": "total"}
    usage: dict[str, int] = {}
    for key, value in attributes.items():
        if key.startswith("gen_ai.usage.") and key != "gen_ai.usage.cost" and _js_is_number(value):
            assert isinstance(value, int | float)
            short = key.removeprefix("gen_ai.usage.")
            usage[renames.get(short, short)] = int(value)
    return usage


def _cost_details(attributes: Mapping[str, JsValue]) -> dict[str, float]:
    parsed = _json_object(attributes.get("langfuse.observation.cost_details"))
    return {
        key: float(value)
        for key, value in parsed.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _metadata(span: RecordedSpan, attributes: Mapping[str, JsValue]) -> dict[str, Any]:
    """The observation metadata object (extractMetadata, simplified)."""
    metadata: dict[str, Any] = {}
    if not span.scope_name.startswith("langfuse-sdk"):
        metadata["attributes"] = {
            key: value if isinstance(value, str) else _jsonable(span.attributes[key])
            for key, value in attributes.items()
        }
    metadata["resourceAttributes"] = _jsonable(span.resource_attributes)
    metadata["scope"] = {
        "name": span.scope_name,
        "version": span.scope_version,
        "attributes": _jsonable(span.scope_attributes),
    }
    for prefix in ("langfuse.observation.metadata", "langfuse.metadata"):
        if prefix in attributes:
            metadata.update(_json_object(attributes[prefix]))
        for key, value in attributes.items():
            if key.startswith(prefix + "."):
                metadata[key[len(prefix) + 1 :]] = _maybe_json(value)
    return metadata


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """flattenJsonToPathArrays: the events table keeps metadata as path -> string."""
    flat: dict[str, str] = {}
    for key, item in value.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(item, dict):
            flat.update(_flatten(item, path))
        else:
            flat.setdefault(
                path,
                "" if item is None else item if isinstance(item, str) else (_json_stringify(item)),
            )
    return flat


def _io_text(value: JsValue) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else _json_stringify(value)


# --------------------------------------------------------------------------- stored rows


def events_row(span: RecordedSpan, lookup: PromptLookup, now_ms: int) -> dict[str, Any]:
    """The events-table row ``createEventRecord`` writes for ``span`` (column names).

    Raises :class:`LangfuseWorkerError` where Langfuse writes nothing for it.
    """
    attributes = _js_attributes(span.attributes)
    resource = _js_attributes(span.resource_attributes)
    kind = _observation_type(span, attributes, resource)
    name, version = _prompt_attributes(kind, attributes)
    prompt = _events_prompt(name, version, lookup)
    start_ms, end_ms = _span_times_ms(span, now_ms)
    is_agent = attributes.get("gen_ai.operation.name") in ("invoke_agent", "agent_step")
    model_parameters = attributes.get("langfuse.observation.model.parameters")
    return {
        "project_id": PROJECT_ID,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id or "",
        "start_ms": start_ms,
        "end_ms": end_ms,
        "completion_start_ms": _completion_start_ms(attributes),
        "name": _name(span, attributes),
        "type": kind,
        "environment": _environment(attributes, resource),
        "version": _js_string(
            _coalesce(
                lambda: attributes.get("langfuse.version"),
                lambda: resource.get("service.version"),
                lambda: "",
            )
        ),
        "release": _js_string(
            _coalesce(
                lambda: attributes.get("langfuse.release"),
                lambda: resource.get("langfuse.release"),
                lambda: "",
            )
        ),
        "trace_name": _js_string(
            _coalesce(lambda: attributes.get("langfuse.trace.name"), lambda: "")
        ),
        "user_id": _first_truthy_text(
            attributes,
            (
                "langfuse.user.id",
                "user.id",
                "langfuse.observation.metadata.langfuse_user_id",
                "langfuse.trace.metadata.langfuse_user_id",
                "ai.telemetry.metadata.userId",
            ),
        )
        or "",
        "session_id": _first_truthy_text(
            attributes,
            (
                "langfuse.session.id",
                "session.id",
                "gen_ai.conversation.id",
                "langfuse.observation.metadata.langfuse_session_id",
                "langfuse.trace.metadata.langfuse_session_id",
                "ai.telemetry.metadata.sessionId",
            ),
        )
        or "",
        "tags": _tags(attributes),
        "level": _level(span, attributes),
        "status_message": _js_string(
            _coalesce(
                lambda: attributes.get("langfuse.observation.status_message"),
                lambda: span.status_message,
            )
        ),
        "is_app_root": _is_true(attributes.get("langfuse.internal.is_app_root")),
        "bookmarked": False,
        "public": _is_true(
            _coalesce(
                lambda: attributes.get("langfuse.trace.public"),
                lambda: attributes.get("langfuse.public"),
            )
        ),
        "prompt_id": prompt.prompt_id,
        "prompt_name": prompt.prompt_name,
        "prompt_version": prompt.prompt_version,
        "model_id": "",
        "provided_model_name": ""
        if is_agent
        else _first_truthy_text(attributes, _MODEL_NAME_KEYS) or "",
        "model_parameters": _io_text(model_parameters),
        "usage_details": {} if is_agent else _usage_details(attributes),
        "cost_details": {} if is_agent else _cost_details(attributes),
        "input": _io_text(attributes.get("langfuse.observation.input")),
        "output": _io_text(attributes.get("langfuse.observation.output")),
        "metadata": _flatten(_metadata(span, attributes)),
        "created_ms": now_ms,
        "updated_ms": now_ms,
    }


def legacy_observation(
    span: RecordedSpan, lookup: PromptLookup, now_ms: int
) -> dict[str, Any] | None:
    """The observation as ``GET /api/public/traces/{id}`` serves it from the legacy tables
    (``transformDbToApiObservation``); None when the ingestion schema drops the event."""
    attributes = _js_attributes(span.attributes)
    resource = _js_attributes(span.resource_attributes)
    kind = _observation_type(span, attributes, resource)
    name, version = _prompt_attributes(kind, attributes)
    if kind == GENERATION and not legacy_generation_accepted(name, version):
        return None
    prompt = _legacy_prompt(name, version, lookup)
    start_ms, end_ms = _span_times_ms(span, now_ms)
    completion_ms = _completion_start_ms(attributes)
    usage = _usage_details(attributes)
    cost = _cost_details(attributes)
    reduced_usage = _reduce(usage)
    reduced_cost = _reduce(cost)
    prompt_tokens = int(reduced_usage[0] or 0)
    completion_tokens = int(reduced_usage[1] or 0)
    total_tokens = int(reduced_usage[2] or 0)
    version_attr = _coalesce(
        lambda: attributes.get("langfuse.version"), lambda: resource.get("service.version")
    )
    status = _coalesce(
        lambda: attributes.get("langfuse.observation.status_message"),
        lambda: span.status_message or None,
    )
    parameters = _maybe_json(attributes.get("langfuse.observation.model.parameters"))
    return {
        "id": span.span_id,
        "traceId": span.trace_id,
        "projectId": PROJECT_ID,
        "type": kind,
        "environment": _environment(attributes, resource),
        "parentObservationId": span.parent_span_id,
        "startTime": _iso_ms(start_ms),
        "endTime": _iso_ms(end_ms),
        "name": _name(span, attributes),
        "metadata": _metadata(span, attributes),
        "level": _level(span, attributes),
        "statusMessage": None if status is None else _js_string(status),
        "version": None if version_attr is None else _js_string(version_attr),
        "input": _maybe_json(attributes.get("langfuse.observation.input")),
        "output": _maybe_json(attributes.get("langfuse.observation.output")),
        "model": _first_truthy_text(attributes, _MODEL_NAME_KEYS),
        "internalModelId": None,
        "modelParameters": parameters if isinstance(parameters, dict) else {},
        "completionStartTime": None if completion_ms is None else _iso_ms(completion_ms),
        "promptId": prompt.id if prompt else None,
        "promptName": prompt.name if prompt else None,
        "promptVersion": prompt.version if prompt else None,
        "latency": (end_ms - start_ms) / 1000,
        "timeToFirstToken": None if completion_ms is None else (completion_ms - start_ms) / 1000,
        "usageDetails": usage,
        "costDetails": cost,
        "createdAt": _iso_ms(now_ms),
        "updatedAt": _iso_ms(now_ms),
        "usagePricingTierId": None,
        "usagePricingTierName": None,
        "calculatedInputCost": reduced_cost[0],
        "calculatedOutputCost": reduced_cost[1],
        "calculatedTotalCost": reduced_cost[2],
        "unit": "TOKENS",
        "inputPrice": None,
        "outputPrice": None,
        "totalPrice": None,
        "promptTokens": prompt_tokens,
        "completionTokens": completion_tokens,
        "totalTokens": total_tokens,
        "modelId": None,
        "usage": {
            "unit": "TOKENS",
            "input": prompt_tokens,
            "output": completion_tokens,
            "total": total_tokens,
        },
    }


def _reduce(details: Mapping[str, float]) -> tuple[float | None, float | None, float]:
    """reduceUsageOrCostDetails: sums of the keys containing input / output, and total."""
    inputs = [v for k, v in details.items() if "input" in k]
    outputs = [v for k, v in details.items() if "output" in k]
    return (
        sum(inputs) if inputs else None,
        sum(outputs) if outputs else None,
        float(details.get("total", 0)),
    )


def _is_root(span: RecordedSpan) -> bool:
    # processSpan: no parent, or langfuse.internal.as_root stringifying to "true".
    return span.parent_span_id is None or (
        _js_string(_js(span.attributes.get("langfuse.internal.as_root"))) == "true"
    )


def v1_trace(
    trace_id: str, spans: Sequence[RecordedSpan], observations: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """``GET /api/public/traces/{id}`` in legacy mode: the trace and its observations."""
    ordered = sorted(
        {span.span_id: span for span in spans}.values(),
        key=lambda s: (s.start_time_unix_nano, s.span_id),
    )
    root = next((span for span in ordered if _is_root(span)), None)
    root_observation = next(
        (o for o in observations if root is not None and o["id"] == root.span_id), None
    )

    def trace_attribute(*keys: str) -> JsValue:
        # Trace-level attributes may sit on any span; the latest one that sets them wins.
        for span in reversed(ordered):
            for key in keys:
                value = _js(span.attributes.get(key))
                if value not in (None, ""):
                    return value
        return None

    start = min((s.start_time_unix_nano for s in ordered), default=0) // 1_000_000
    end = max((s.end_time_unix_nano for s in ordered), default=0) // 1_000_000
    trace_input = trace_attribute("langfuse.trace.input")
    trace_output = trace_attribute("langfuse.trace.output")
    tags = _maybe_json(trace_attribute("langfuse.trace.tags"))
    release = trace_attribute("langfuse.release")
    if release is None and root is not None:
        release = _js(root.resource_attributes.get("langfuse.release"))
    environment = "default"
    if ordered:
        first = root or ordered[0]
        environment = _environment(
            _js_attributes(first.attributes), _js_attributes(first.resource_attributes)
        )
    name = trace_attribute("langfuse.trace.name")
    session = trace_attribute("session.id", "langfuse.session.id")
    user = trace_attribute("user.id", "langfuse.user.id")
    version = trace_attribute("langfuse.version")
    return {
        "id": trace_id,
        "projectId": PROJECT_ID,
        "name": _js_string(name) if name is not None else (root.name if root else None),
        "timestamp": _iso_ms(start),
        "input": _maybe_json(trace_input)
        if trace_input is not None
        else (root_observation["input"] if root_observation else None),
        "output": _maybe_json(trace_output)
        if trace_output is not None
        else (root_observation["output"] if root_observation else None),
        "sessionId": None if session is None else _js_string(session),
        "userId": None if user is None else _js_string(user),
        "release": None if release is None else _js_string(release),
        "version": None if version is None else _js_string(version),
        "metadata": _json_object(trace_attribute("langfuse.trace.metadata")),
        "tags": [_js_string(tag) for tag in tags] if isinstance(tags, list) else [],
        "public": _is_true(trace_attribute("langfuse.trace.public")),
        "environment": environment,
        "externalId": None,
        "htmlPath": f"/project/{PROJECT_ID}/traces/{trace_id}",
        "latency": max(end - start, 0) / 1000,
        "totalCost": 0.0,
        "observations": sorted(observations, key=lambda o: (str(o["startTime"]), str(o["id"]))),
        "scores": [],
    }


# --------------------------------------------------------------------------- v2 serving


def _parse_metadata_value(value: str) -> Any:
    # parseJsonPrioritised: JSON where it parses, the string otherwise.
    try:
        return json.loads(value)
    except ValueError:
        return value


def v2_item(
    row: Mapping[str, Any], fields: Sequence[str], *, full_metadata: bool = False
) -> dict[str, Any]:
    """One element of ``GET /api/public/v2/observations``'s ``data`` for the requested groups.

    Metadata comes from events_core, whose values the events_core_mv cuts to 200 characters
    (``leftUTF8(v, 200)``), unless the query joins events_full: ``full_metadata`` (io or
    expandMetadata requested, ``getObservationsV2FromEventsTableForPublicApi``)."""
    start_ms, end_ms = int(row["start_ms"]), row["end_ms"]
    completion_ms = row["completion_start_ms"]
    item: dict[str, Any] = {
        "id": row["span_id"],
        "traceId": row["trace_id"],
        "startTime": _iso_ms(start_ms),
        "endTime": None if end_ms is None else _iso_ms(end_ms),
        "projectId": row["project_id"],
        # The endpoint normalises the empty String column to null (v1 parity).
        "parentObservationId": row["parent_span_id"] or None,
        "type": row["type"],
    }
    if "basic" in fields:
        item |= {
            "name": row["name"],
            "level": row["level"],
            "statusMessage": row["status_message"],
            "version": row["version"],
            "environment": row["environment"],
            "bookmarked": row["bookmarked"],
            "public": row["public"],
            "userId": row["user_id"],
            "sessionId": row["session_id"],
            "isRootObservation": row["parent_span_id"] == "" or bool(row["is_app_root"]),
        }
    if "time" in fields:
        item |= {
            "completionStartTime": None if completion_ms is None else _iso_ms(completion_ms),
            "createdAt": _iso_ms(row["created_ms"]),
            "updatedAt": _iso_ms(row["updated_ms"]),
        }
    if "io" in fields:
        # applyInputOutputRendering without JSON parsing: raw strings, "" as null.
        item |= {"input": row["input"] or None, "output": row["output"] or None}
    if "metadata" in fields:
        item["metadata"] = {
            key: _parse_metadata_value(value if full_metadata else value[:200])
            for key, value in row["metadata"].items()
        }
    if "model" in fields:
        parameters = row["model_parameters"]
        item |= {
            "model": row["provided_model_name"],
            "internalModelId": row["model_id"],
            "modelParameters": _parse_metadata_value(parameters) if parameters else None,
        }
    if "usage" in fields:
        usage, cost = row["usage_details"], row["cost_details"]
        usage_in, usage_out, usage_total = _reduce(usage)
        cost_in, cost_out, cost_total = _reduce(cost)
        item |= {
            "usageDetails": dict(usage),
            "inputUsage": int(usage_in or 0),
            "outputUsage": int(usage_out or 0),
            "totalUsage": int(usage_total),
            "costDetails": dict(cost),
            "inputCost": cost_in,
            "outputCost": cost_out,
            "totalCost": cost_total,
            "usagePricingTierId": None,
            "usagePricingTierName": None,
        }
    if "prompt" in fields:
        item |= {
            "promptId": row["prompt_id"],
            "promptName": row["prompt_name"],
            # `record.prompt_version ? Number(record.prompt_version) : null`
            "promptVersion": row["prompt_version"] or None,
        }
    timed = "time" in fields or "metrics" in fields
    item |= {
        "latency": None if end_ms is None else (end_ms - start_ms) / 1000,
        "timeToFirstToken": (completion_ms - start_ms) / 1000
        if timed and completion_ms is not None
        else None,
    }
    if "trace_context" in fields:
        trace_name = row["trace_name"] or (
            row["name"] if row["parent_span_id"] == "" or row["is_app_root"] else ""
        )
        item |= {
            "traceName": trace_name or None,
            "tags": list(row["tags"]),
            "release": row["release"],
        }
    # Enrichment fields, always present; null unless a Langfuse model matched (never here).
    item |= {"modelId": None, "inputPrice": None, "outputPrice": None, "totalPrice": None}
    return item


def xxhash32(data: bytes, seed: int = 0) -> int:
    """ClickHouse's xxHash32 (XXH32), the second key of the v2 observations order."""
    primes = (2654435761, 2246822519, 3266489917, 668265263, 374761393)
    mask = 0xFFFFFFFF

    def rotl(value: int, bits: int) -> int:
        return ((value << bits) | (value >> (32 - bits))) & mask

    def round_(acc: int, lane: int) -> int:
        return (rotl((acc + lane * primes[1]) & mask, 13) * primes[0]) & mask

    length, index = len(data), 0
    if length >= 16:
        v1 = (seed + primes[0] + primes[1]) & mask
        v2 = (seed + primes[1]) & mask
        v3 = seed & mask
        v4 = (seed - primes[0]) & mask
        while index + 16 <= length:
            v1 = round_(v1, int.from_bytes(data[index : index + 4], "little"))
            v2 = round_(v2, int.from_bytes(data[index + 4 : index + 8], "little"))
            v3 = round_(v3, int.from_bytes(data[index + 8 : index + 12], "little"))
            v4 = round_(v4, int.from_bytes(data[index + 12 : index + 16], "little"))
            index += 16
        acc = (rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18)) & mask
    else:
        acc = (seed + primes[4]) & mask
    acc = (acc + length) & mask
    while index + 4 <= length:
        lane = int.from_bytes(data[index : index + 4], "little")
        acc = (rotl((acc + lane * primes[2]) & mask, 17) * primes[3]) & mask
        index += 4
    while index < length:
        acc = (rotl((acc + data[index] * primes[4]) & mask, 11) * primes[0]) & mask
        index += 1
    acc ^= acc >> 15
    acc = (acc * primes[1]) & mask
    acc ^= acc >> 13
    acc = (acc * primes[2]) & mask
    acc ^= acc >> 16
    return acc


def order_key(start_ms: int, trace_id: str, span_id: str) -> tuple[int, int, bytes]:
    """(start_time, xxHash32(trace_id), span_id): the v2 order, descending."""
    return (start_ms, xxhash32(trace_id.encode()), span_id.encode())


@dataclass(frozen=True)
class Cursor:
    """ObservationsCursorV2: the last served item's position."""

    last_start_ms: int
    last_trace_id: str
    last_id: str

    def encode(self) -> str:
        """encodeCursor: base64 of the JSON object."""
        payload = {
            "lastStartTimeTo": _iso_ms(self.last_start_ms),
            "lastTraceId": self.last_trace_id,
            "lastId": self.last_id,
        }
        return base64.b64encode(_json_stringify(payload).encode()).decode("ascii")

    def admits(self, key: tuple[int, int, bytes]) -> bool:
        """applyObservationsCursorFilter: rows strictly after the cursor in the order."""
        bound = order_key(self.last_start_ms, self.last_trace_id, self.last_id)
        return key[0] <= self.last_start_ms and key < bound


class CursorError(ValueError):
    """An unusable ``cursor``: ``invalid_format`` is Langfuse's InvalidRequestError, otherwise
    the cursor decoded but failed ObservationsCursorV2 (a zod error, ``issues``)."""

    def __init__(self, invalid_format: bool, issues: list[dict[str, Any]]) -> None:
        super().__init__("Invalid cursor format" if invalid_format else "Invalid request data")
        self.invalid_format = invalid_format
        self.issues = issues


def _node_base64(text: str) -> bytes:
    # Buffer.from(text, "base64"): both alphabets, padding optional, other characters skipped.
    cleaned = "".join(c for c in text.split("=", 1)[0] if c.isalnum() or c in "+/-_")
    cleaned = cleaned.replace("-", "+").replace("_", "/")
    cleaned = cleaned[: len(cleaned) - (len(cleaned) % 4 == 1)]
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        return b""


def decode_cursor(text: str) -> Cursor:
    """EncodedObservationsCursorV2."""
    try:
        parsed = json.loads(_node_base64(text).decode("utf-8", errors="replace"))
    except ValueError:
        raise CursorError(True, []) from None
    if not isinstance(parsed, dict):
        issue = {"code": "invalid_type", "expected": "object", "path": ["cursor"]}
        raise CursorError(False, [issue | {"message": "Invalid input: expected object"}])
    issues: list[dict[str, Any]] = []
    raw_start = parsed.get("lastStartTimeTo")
    if isinstance(raw_start, int | float) and not isinstance(raw_start, bool):
        start_ms: int | None = int(raw_start)
    else:
        start_ms = _parse_date_ms(raw_start)
    if start_ms is None:
        issues.append(
            {
                "code": "invalid_type",
                "expected": "date",
                "path": ["cursor", "lastStartTimeTo"],
                "message": "Invalid input: expected date, received Date",
            }
        )
    for key in ("lastTraceId", "lastId"):
        if not isinstance(parsed.get(key), str):
            issues.append(
                {
                    "code": "invalid_type",
                    "expected": "string",
                    "path": ["cursor", key],
                    "message": "Invalid input: expected string",
                }
            )
    if issues or start_ms is None:
        raise CursorError(False, issues)
    return Cursor(start_ms, str(parsed["lastTraceId"]), str(parsed["lastId"]))
