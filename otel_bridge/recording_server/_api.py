"""The public HTTP API: routing, auth, and each endpoint's answers, as Langfuse gives them.

- Auth: ``ApiAuthService.verifyAuthHeaderAndReturnScope``
  (``web/src/features/public-api/server/apiAuth.ts``) and ``verifyApiKeyAuth`` in
  ``createAuthedProjectAPIRoute.ts``: 401 ``{"message": ...}``. The key is found by its secret
  (the fast-hash path), so a right secret with another public key is accepted, as Langfuse does
  (it only logs the mismatch). A Bearer public key has the "scores" access level: 403 here.
- ``rejectInEventsOnlyMode`` (``createAuthedProjectAPIRoute``): ``GET /api/public/traces/{id}``
  answers 404 with Langfuse's message in ``events_only``, before auth.
- Errors: ``withMiddlewares.ts``: zod failures 400 ``{"message": "Invalid request data",
  "error": issues}``, Langfuse errors ``{"message", "error": name}``. The issue objects are
  shaped like zod v4's but not guaranteed identical.
- ``GET /api/public/v2/observations``: ``web/src/pages/api/public/v2/observations/index.ts``
  with ``GetObservationsV2Query`` (``web/src/features/public-api/types/observations.ts``).
  It always reads the events table, which ``legacy`` mode never fills: there it answers
  ``{"data": [], "meta": {}}``. Filters ``fromStartTime``/``toStartTime``/``filter`` are not
  modelled and answered 400 so a test cannot silently get unfiltered data.
- ``POST /api/public/otel/v1/traces``: ``_otlp.decode_export``. In ``events_only`` every
  accepted export is written to the events table whatever its headers: the worker's env
  validation forces ``LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR=direct`` there
  (``worker/src/env.ts`` ``validateV4Flags``, ``resolveOtelWritePath`` in
  ``otelIngestionQueue.ts``). ``x-langfuse-ingestion-version: 4`` (or a Python SDK >= 4 /
  JS SDK >= 5 ``x-langfuse-sdk-*`` pair) only matters in ``dual`` mode, not modelled. Deviation:
  Langfuse answers a successful export with the queue job as JSON; the double answers JSON
  ``{}``, or an empty ``ExportTraceServiceResponse`` to protobuf, which exporters parse.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_bridge.recording_server._mapping import (
    DEFAULT_FIELDS,
    FIELD_GROUPS,
    PROJECT_ID,
    Cursor,
    CursorError,
    decode_cursor,
    js_number,
    v1_trace,
    v2_item,
)
from otel_bridge.recording_server._otlp import OtlpRefused, decode_export
from otel_bridge.recording_server._records import PromptFetch, WriteMode
from otel_bridge.recording_server._store import Store

__all__ = [
    "EVENTS_ONLY_MESSAGE",
    "HEALTH_PATH",
    "INGESTION_PATH",
    "OBSERVATIONS_V2_PATH",
    "OTLP_TRACES_PATH",
    "PROJECTS_PATH",
    "PROMPTS_PREFIX",
    "TRACES_PREFIX",
    "Api",
    "Outcome",
]

OTLP_TRACES_PATH: Final = "/api/public/otel/v1/traces"
PROMPTS_PREFIX: Final = "/api/public/v2/prompts/"
TRACES_PREFIX: Final = "/api/public/traces/"
OBSERVATIONS_V2_PATH: Final = "/api/public/v2/observations"
PROJECTS_PATH: Final = "/api/public/projects"
HEALTH_PATH: Final = "/api/public/health"
INGESTION_PATH: Final = "/api/public/ingestion"

PROJECT_NAME: Final = "recording"
SERVER_VERSION: Final = "4.16.0-recording"
DEFAULT_PROMPT_LABEL: Final = "production"
LATEST_LABEL: Final = "latest"
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
PROTOBUF_CONTENT_TYPE: Final = "application/x-protobuf"
MAX_LIMIT: Final = 1000
DEFAULT_LIMIT: Final = 50
EVENTS_ONLY_MESSAGE: Final = (
    "This endpoint is not available on deployments running in Langfuse v4 events_only mode. "
    "Learn more about Langfuse v4 at: https://langfuse.com/docs/v4"
)
_HOST_HINT: Final = ". Confirm that you've configured the correct host."
OBSERVATION_TYPES: Final = (
    "GENERATION",
    "SPAN",
    "EVENT",
    "AGENT",
    "TOOL",
    "CHAIN",
    "RETRIEVER",
    "EVALUATOR",
    "EMBEDDING",
    "GUARDRAIL",
)
LEVELS: Final = ("DEBUG", "DEFAULT", "WARNING", "ERROR")
_UNMODELLED_FILTERS: Final = ("fromStartTime", "toStartTime", "filter")


@dataclass(frozen=True)
class Outcome:
    """An HTTP answer; ``reason`` is for the request log, ``span_count`` for OTLP exports."""

    status: int
    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    reason: str | None = None
    span_count: int = 0


def json_outcome(
    status: int, payload: Any, reason: str | None = None, span_count: int = 0
) -> Outcome:
    return Outcome(status, json.dumps(payload).encode(), JSON_CONTENT_TYPE, reason, span_count)


def error_outcome(status: int, message: str, error: Any = None) -> Outcome:
    """A Langfuse error body: ``{"message"}``, plus ``"error"`` where withMiddlewares adds it."""
    payload: dict[str, Any] = {"message": message}
    if error is not None:
        payload["error"] = error
    return json_outcome(status, payload, reason=message)


def _zod_error(issues: list[dict[str, Any]]) -> Outcome:
    outcome = json_outcome(400, {"message": "Invalid request data", "error": issues})
    return Outcome(outcome.status, outcome.body, reason=f"Invalid request data: {issues}")


class _BadQuery(Exception):
    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.reason)
        self.outcome = outcome


class Api:
    """Answers one request; the transport and the request log live in the server."""

    def __init__(
        self,
        store: Store,
        public_key: str,
        secret_key: str,
        write_mode: WriteMode,
        max_body_bytes: int | None,
    ) -> None:
        self._store = store
        self.public_key = public_key
        self.secret_key = secret_key
        self.write_mode = write_mode
        self._max_body_bytes = max_body_bytes

    def route(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> Outcome:
        if path == HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                return error_outcome(405, "Method not allowed", "MethodNotAllowedError")
            return json_outcome(200, {"status": "OK", "version": SERVER_VERSION})
        routes: dict[str, tuple[str, Callable[[], Outcome]]] = {
            OTLP_TRACES_PATH: ("POST", lambda: self._otlp(headers, body)),
            PROJECTS_PATH: ("GET", self._projects),
            INGESTION_PATH: ("POST", lambda: self._ingestion(body)),
            OBSERVATIONS_V2_PATH: ("GET", lambda: self._observations_v2(query)),
        }
        if path in routes:
            allowed, handler = routes[path]
        elif path.startswith(PROMPTS_PREFIX):
            allowed, handler = "GET", lambda: self._prompt(path, query)
        elif path.startswith(TRACES_PREFIX):
            allowed, handler = "GET", lambda: self._read_trace(path)
        else:
            return error_outcome(404, f"no route for {method} {path}", "NotFound")
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            return error_outcome(405, "Method not allowed", "MethodNotAllowedError")
        if path.startswith(TRACES_PREFIX) and self.write_mode == "events_only":
            # rejectInEventsOnlyMode runs before authentication.
            return json_outcome(404, {"message": EVENTS_ONLY_MESSAGE}, reason=EVENTS_ONLY_MESSAGE)
        if (failure := self.auth_failure(headers.get("authorization"))) is not None:
            status, message = failure
            if path.startswith(PROMPTS_PREFIX):
                self._note_fetch(path, query, status, None)
            return error_outcome(status, message)
        return handler()

    def auth_failure(self, header: str | None) -> tuple[int, str] | None:
        """ApiAuthService.verifyAuthHeaderAndReturnScope + verifyApiKeyAuth for project routes."""
        if not header:
            return 401, "No authorization header"
        if header.startswith("Basic "):
            parts = header.split(" ")
            encoded = parts[1] if len(parts) > 1 else ""
            if not encoded:
                return 401, "Invalid authorization header" + _HOST_HINT
            try:
                decoded = _atob(encoded)
            except ValueError:
                return 401, "The string to be decoded is not correctly encoded." + _HOST_HINT
            fields = decoded.split(":")
            public = fields[0]
            secret = fields[1] if len(fields) > 1 else ""
            if not public or not secret:
                return 401, "Invalid authorization header" + _HOST_HINT
            # The key is looked up by the secret's hash; the public key is not compared.
            if not hmac.compare_digest(secret.encode(), self.secret_key.encode()):
                return 401, "Invalid credentials" + _HOST_HINT
            return None
        if header.startswith("Bearer "):
            if header.replace("Bearer ", "", 1) != self.public_key:
                return 401, "Invalid public key" + _HOST_HINT
            return 403, "Access denied - insufficient permissions for this endpoint"
        return 401, "Invalid authorization header"

    # -- ingestion

    def _otlp(self, headers: Mapping[str, str], body: bytes) -> Outcome:
        if self._max_body_bytes is not None and len(body) > self._max_body_bytes:
            return error_outcome(
                413, f"body of {len(body)} bytes exceeds {self._max_body_bytes}", "PayloadTooLarge"
            )
        try:
            export = decode_export(headers, body)
        except OtlpRefused as refused:
            return json_outcome(refused.status, {"error": refused.message}, reason=refused.message)
        self._store.accept(export.spans, export.worker_failure)
        count = len(export.spans)
        if export.protobuf:
            response = ExportTraceServiceResponse().SerializeToString()
            return Outcome(200, response, PROTOBUF_CONTENT_TYPE, span_count=count)
        return json_outcome(200, {}, span_count=count)

    def _ingestion(self, body: bytes) -> Outcome:
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return error_outcome(400, f"invalid JSON: {exc}", "BadRequest")
        batch = payload.get("batch") if isinstance(payload, dict) else None
        if not isinstance(batch, list):
            return error_outcome(400, "body must be an object with a 'batch' array", "BadRequest")
        successes: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        accepted: list[Mapping[str, Any]] = []
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
        self._store.add_ingestion_events(accepted)
        # Langfuse answers batch ingestion with 207 Multi-Status, per-event results in the body.
        return json_outcome(207, {"successes": successes, "errors": errors})

    # -- reads

    def _projects(self) -> Outcome:
        project = {
            "id": PROJECT_ID,
            "name": PROJECT_NAME,
            "organization": {"id": "recording-org", "name": "recording"},
            "metadata": {},
        }
        return json_outcome(200, {"data": [project]})

    def _read_trace(self, path: str) -> Outcome:
        trace_id = unquote(path[len(TRACES_PREFIX) :])
        found = self._store.legacy_trace(trace_id)
        if found is None:
            message = f"Trace {trace_id} not found within authorized project"
            return error_outcome(404, message, "LangfuseNotFoundError")
        spans, observations = found
        return json_outcome(200, v1_trace(trace_id, spans, observations))

    def observations_v2(
        self, params: Mapping[str, str], *, include_pending: bool = False
    ) -> dict[str, Any]:
        """The v2 body for validated ``params`` (the in-process view calls this directly)."""
        fields = _fields(params.get("fields"))
        limit = _limit(params.get("limit"))
        cursor = None
        if params.get("cursor") is not None:
            try:
                cursor = decode_cursor(params["cursor"])
            except CursorError as bad:
                if bad.invalid_format:
                    raise _BadQuery(
                        error_outcome(400, "Invalid cursor format", "InvalidRequestError")
                    ) from None
                raise _BadQuery(_zod_error(bad.issues)) from None
        rows = (
            self._store.events_rows(include_pending=include_pending)
            if self.write_mode == "events_only"
            else []
        )
        selected = [row for row in rows if _matches(row, params)]
        if cursor is not None:
            selected = [row for row in selected if cursor.admits(row["order_key"])]
        selected.sort(key=lambda row: row["order_key"], reverse=True)
        page = selected[:limit]
        meta: dict[str, Any] = {}
        if len(selected) > limit and page:
            last = page[-1]
            meta["cursor"] = _cursor_for(last)
        full_metadata = "io" in fields or bool((params.get("expandMetadata") or "").strip(", "))
        items = [v2_item(row, fields, full_metadata=full_metadata) for row in page]
        return {"data": items, "meta": meta}

    def _observations_v2(self, query: str) -> Outcome:
        try:
            params = _single_params(query)
            return json_outcome(200, self.observations_v2(params))
        except _BadQuery as bad:
            return bad.outcome

    def _note_fetch(self, path: str, query: str, status: int, served: int | None) -> None:
        params = parse_qs(query, keep_blank_values=True)
        raw_version = params.get("version", [None])[0]
        try:
            version = int(raw_version) if raw_version is not None else None
        except ValueError:
            version = None
        self._store.note_fetch(
            PromptFetch(
                name=unquote(path[len(PROMPTS_PREFIX) :]),
                version=version,
                label=params.get("label", [None])[0],
                status=status,
                served_version=served,
            )
        )

    def _prompt(self, path: str, query: str) -> Outcome:
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
                return error_outcome(
                    400, f"version must be an integer, got {raw_version!r}", "InvalidRequestError"
                )
        if version is not None and label is not None:
            self._note_fetch(path, query, 400, None)
            return error_outcome(
                400, "Cannot specify both version and label", "InvalidRequestError"
            )
        versions = self._store.prompt_versions(name)
        newest = max(versions) if versions else None
        chosen: int | None
        # promptNameHandler.ts: the not-found message names the version, else the label.
        if version is not None:
            chosen = version if version in versions else None
            wanted = f"version {version}"
        else:
            effective = label or DEFAULT_PROMPT_LABEL
            wanted = f"label '{effective}'"
            carrying = [v for v, (p, _) in versions.items() if effective in p.labels]
            if effective == LATEST_LABEL and newest is not None:
                carrying.append(newest)
            chosen = max(carrying) if carrying else None
        if chosen is None:
            self._note_fetch(path, query, 404, None)
            return json_outcome(
                404,
                {
                    "error": "LangfuseNotFoundError",
                    "message": f"Prompt not found: '{name}' with {wanted}",
                },
                reason=f"prompt '{name}' with {wanted} not found",
            )
        record, created = versions[chosen]
        labels = list(record.labels)
        # Langfuse keeps a "latest" label on the newest version of every prompt.
        if chosen == newest and LATEST_LABEL not in labels:
            labels.append(LATEST_LABEL)
        self._note_fetch(path, query, 200, chosen)
        return json_outcome(
            200,
            {
                "id": record.id,
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
                "isActive": DEFAULT_PROMPT_LABEL in record.labels,
            },
        )


# --------------------------------------------------------------------------- query parsing


def _atob(encoded: str) -> str:
    # atob: whitespace ignored, padding optional, anything else outside the alphabet throws.
    cleaned = "".join(encoded.split())
    if len(cleaned) % 4 == 1 or cleaned.rstrip("=") != cleaned.rstrip("=").strip("="):
        raise ValueError("not base64")
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64") from exc
    return raw.decode("latin-1")


def _single_params(query: str) -> dict[str, str]:
    """Query params; a repeated one arrives as an array, which these string schemas refuse."""
    parsed = parse_qs(query, keep_blank_values=True)
    repeated = [key for key, values in parsed.items() if len(values) > 1 and key != "environment"]
    if repeated:
        raise _BadQuery(
            _zod_error(
                [
                    {
                        "code": "invalid_type",
                        "expected": "string",
                        "path": [key],
                        "message": "Invalid input: expected string, received array",
                    }
                    for key in repeated
                ]
            )
        )
    params = {key: values[-1] for key, values in parsed.items()}
    if "environment" in parsed:
        params["environment"] = "\n".join(parsed["environment"])
    for name in _UNMODELLED_FILTERS:
        if name in params:
            raise _BadQuery(
                error_outcome(
                    400,
                    f"the recording server does not model the {name!r} parameter of "
                    "GET /api/public/v2/observations",
                    "NotModelledByTheRecordingServer",
                )
            )
    if params.get("parseIoAsJson") == "true":
        raise _BadQuery(
            _zod_error(
                [
                    {
                        "code": "custom",
                        "path": ["parseIoAsJson"],
                        "message": "parseIoAsJson=true is no longer supported on the v2 "
                        "observations endpoint. Input/output fields are always returned as raw "
                        "strings. Remove the parseIoAsJson parameter or set it to false.",
                    }
                ]
            )
        )
    for key, allowed in (
        ("parseIoAsJson", ("true", "false")),
        ("isRootObservation", ("true", "false")),
        ("type", OBSERVATION_TYPES),
        ("level", LEVELS),
    ):
        if key in params and params[key] not in allowed:
            raise _BadQuery(
                _zod_error(
                    [
                        {
                            "code": "invalid_value",
                            "values": list(allowed),
                            "path": [key],
                            "message": "Invalid option: expected one of "
                            + "|".join(f'"{v}"' for v in allowed),
                        }
                    ]
                )
            )
    return params


def _fields(raw: str | None) -> tuple[str, ...]:
    """commaSeparatedEnumArray(..., {unknownValues: "filter"}), then `fields ?? [core, basic]`."""
    if raw is None or raw == "":
        return DEFAULT_FIELDS
    items = [item.strip() for item in raw.split(",") if item.strip()]
    return tuple(item for item in items if item in FIELD_GROUPS)


def _limit(raw: str | None) -> int:
    """z.coerce.number().nonnegative().lte(1000).default(50)."""
    if raw is None:
        return DEFAULT_LIMIT
    text = raw.strip()
    number = js_number(text)
    if math.isnan(number) or math.isinf(number):
        raise _BadQuery(
            _zod_error(
                [
                    {
                        "expected": "number",
                        "code": "invalid_type",
                        "received": "NaN" if math.isnan(number) else "Infinity",
                        "path": ["limit"],
                        "message": "Invalid input: expected number, received NaN",
                    }
                ]
            )
        )
    if number < 0:
        raise _BadQuery(
            _zod_error(
                [
                    {
                        "origin": "number",
                        "code": "too_small",
                        "minimum": 0,
                        "inclusive": True,
                        "path": ["limit"],
                        "message": "Too small: expected number to be >=0",
                    }
                ]
            )
        )
    if number > MAX_LIMIT:
        raise _BadQuery(
            _zod_error(
                [
                    {
                        "origin": "number",
                        "code": "too_big",
                        "maximum": MAX_LIMIT,
                        "inclusive": True,
                        "path": ["limit"],
                        "message": f"Too big: expected number to be <={MAX_LIMIT}",
                    }
                ]
            )
        )
    if not number.is_integer():
        # Zod lets it through; ClickHouse then refuses `LIMIT {limit: Int32}` = limit + 1.
        raise _BadQuery(
            error_outcome(
                500,
                "Internal Server Error",
                f"ClickHouse cannot parse {number + 1} as the Int32 query parameter 'limit'",
            )
        )
    return int(number)


def _matches(row: Mapping[str, Any], params: Mapping[str, str]) -> bool:
    exact = {
        "traceId": "trace_id",
        "name": "name",
        "type": "type",
        "parentObservationId": "parent_span_id",
        "userId": "user_id",
        "sessionId": "session_id",
        "level": "level",
        "version": "version",
    }
    for param, column in exact.items():
        # `query.x ?? undefined`, then an empty value adds no filter.
        wanted = params.get(param)
        if wanted and row[column] != wanted:
            return False
    environments = [e for e in (params.get("environment") or "").split("\n") if e]
    if environments and row["environment"] not in environments:
        return False
    if "isRootObservation" in params:
        is_root = row["parent_span_id"] == "" or bool(row["is_app_root"])
        if is_root != (params["isRootObservation"] == "true"):
            return False
    return True


def _cursor_for(row: Mapping[str, Any]) -> str:
    return Cursor(row["start_ms"], row["trace_id"], row["span_id"]).encode()
