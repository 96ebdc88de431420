"""What the double records and serves: spans as received, prompts, requests, prompt lookups."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

AttributeValue: TypeAlias = (
    "str | bool | int | float | bytes | list[AttributeValue] | dict[str, AttributeValue] | None"
)
FaultMode: TypeAlias = Literal["error", "slow", "down"]
# LANGFUSE_MIGRATION_V4_WRITE_MODE (web/src/env.mjs, worker/src/env.ts); "dual" is not modelled.
WriteMode: TypeAlias = Literal["events_only", "legacy"]
WRITE_MODES: tuple[WriteMode, ...] = ("events_only", "legacy")


@dataclass(frozen=True)
class RecordedEvent:
    """A span event as received."""

    name: str
    time_unix_nano: int
    attributes: dict[str, AttributeValue]


@dataclass(frozen=True)
class RecordedSpan:
    """One OTLP span as received, attribute types kept as sent.

    Ids are what Langfuse stores (``OtelIngestionProcessor.parseId``): protobuf bytes as
    lower-case hex, OTLP/JSON strings exactly as sent. ``start_time_unix_nano`` and
    ``end_time_unix_nano`` are 0 when the span did not carry them.
    """

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


def _default_prompt_id(name: str, version: int) -> str:
    # Stable across runs so a test can predict it; Langfuse's own ids are cuids.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"recording-prompt:{name}:{version}"))


@dataclass(frozen=True)
class RecordedPrompt:
    """A prompt version stored in the project.

    ``prompt`` is a list of messages for chat, a string for text. ``id`` defaults to a stable
    UUID derived from name and version; it is what a resolved prompt link stores as promptId.
    """

    name: str
    version: int
    type: Literal["chat", "text"]
    prompt: list[dict[str, Any]] | str
    labels: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    commit_message: str | None = None
    id: str = ""

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
        if not isinstance(self.id, str):
            raise ValueError(f"prompt {self.name!r}: id must be a string, got {self.id!r}")
        if not self.id:
            object.__setattr__(self, "id", _default_prompt_id(self.name, self.version))

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
            id=str(data.get("id") or ""),
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
