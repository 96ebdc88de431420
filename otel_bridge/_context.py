"""The bridge's vocabulary: what crosses the wire between the two tiers, and its codec.

Both tiers speak only W3C headers:

* ``traceparent`` (W3C Trace Context level 1) names the caller's span;
* ``baggage`` (W3C Baggage) carries ``langfuse_prompt_name`` and ``langfuse_prompt_version``,
  the keys Langfuse's own ``propagate_attributes(as_baggage=True)`` uses, so a client that
  already propagates the Langfuse way needs nothing from this package to be understood.

Every W3C rule and size limit the bridge applies lives in this module and nowhere else:
the client side encodes with it, the proxy side decodes with it.

    >>> ctx = decode_headers({
    ...     "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ...     "baggage": "langfuse_prompt_name=test-prompt,langfuse_prompt_version=1",
    ... })
    >>> ctx.parent.trace_id, ctx.prompt
    ('0af7651916cd43dd8448eb211c80319c', PromptRef(name='test-prompt', version=1))
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import quote, unquote_plus

PROMPT_NAME_KEY = "langfuse_prompt_name"
PROMPT_VERSION_KEY = "langfuse_prompt_version"
# Langfuse treats every ``langfuse_*`` baggage member as trace data (trace id, user, session,
# metadata), so the whole prefix is what must stay between the app and its gateways.
LANGFUSE_BAGGAGE_PREFIX = "langfuse_"

# W3C Baggage: a platform must propagate at least 64 members and 8192 bytes, and when it
# cannot propagate everything it drops whole members, never part of one.
MAX_BAGGAGE_MEMBERS = 64
MAX_BAGGAGE_BYTES = 8192
# Langfuse's propagate_attributes drops string values over 200 characters; a longer name
# cannot have come from a Langfuse client, so it is refused rather than truncated.
MAX_PROMPT_NAME_LENGTH = 200
# Langfuse stores prompt versions as a 32-bit signed integer.
MAX_PROMPT_VERSION = 2**31 - 1

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_INVALID_TRACE_ID = "0" * 32
_INVALID_SPAN_ID = "0" * 16
# RFC 7230 token characters, the grammar of a baggage key.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# baggage-octet: printable US-ASCII except space, DQUOTE, comma, semicolon and backslash.
_BAGGAGE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*")
_VERSION = re.compile(r"[1-9][0-9]{0,9}")
_OWS = " \t"


class Rejection(StrEnum):
    """Why part of an incoming context was ignored. Values are safe to log: never header data."""

    TRACEPARENT_MALFORMED = "traceparent_malformed"
    TRACEPARENT_INVALID_ID = "traceparent_invalid_id"
    TRACEPARENT_VERSION_FF = "traceparent_version_ff"
    TRACEPARENT_REPEATED = "traceparent_repeated"
    BAGGAGE_MEMBER_MALFORMED = "baggage_member_malformed"
    BAGGAGE_OVER_LIMIT = "baggage_over_limit"
    PROMPT_NAME_INVALID = "prompt_name_invalid"
    PROMPT_VERSION_INVALID = "prompt_version_invalid"
    PROMPT_INCOMPLETE = "prompt_incomplete"
    PROMPT_CONFLICTING = "prompt_conflicting"


@dataclass(frozen=True, slots=True)
class SpanRef:
    """The caller's span, as named by a valid ``traceparent``."""

    trace_id: str  # 32 lower-case hex digits, never all zero
    span_id: str  # 16 lower-case hex digits, never all zero
    sampled: bool

    def to_traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


@dataclass(frozen=True, slots=True)
class PromptRef:
    """A Langfuse prompt version: what a generation links to."""

    name: str
    version: int

    def __post_init__(self) -> None:
        reason = _prompt_name_problem(self.name)
        if reason:
            raise ValueError(f"invalid prompt name {self.name!r}: {reason}")
        if (
            isinstance(self.version, bool)
            or not isinstance(self.version, int)
            or not 1 <= self.version <= MAX_PROMPT_VERSION
        ):
            raise ValueError(
                f"invalid prompt version {self.version!r}: "
                f"an integer from 1 to {MAX_PROMPT_VERSION} is required"
            )

    @classmethod
    def from_prompt(cls, prompt: object) -> PromptRef:
        """Accept a Langfuse prompt client, a ``{"name", "version"}`` mapping or a PromptRef.

        Raises ``ValueError`` with the reason when the value cannot be linked (a fallback
        prompt has no server-side version, so it is refused too).
        """
        if isinstance(prompt, PromptRef):
            return prompt
        if isinstance(prompt, Mapping):
            name, version = prompt.get("name"), prompt.get("version")
            fallback = bool(prompt.get("is_fallback", False))
        else:
            name, version = getattr(prompt, "name", None), getattr(prompt, "version", None)
            fallback = bool(getattr(prompt, "is_fallback", False))
        if fallback:
            raise ValueError("a fallback prompt has no Langfuse version to link to")
        if not isinstance(name, str):
            raise ValueError(f"prompt name must be a string, got {type(name).__name__}")
        if not isinstance(version, int):
            raise ValueError(f"prompt version must be an integer, got {type(version).__name__}")
        return cls(name, version)


@dataclass(frozen=True, slots=True)
class BridgeContext:
    """What an incoming request tells the bridge. Any part may be absent."""

    parent: SpanRef | None = None
    prompt: PromptRef | None = None
    rejections: tuple[Rejection, ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return self.parent is not None or self.prompt is not None


def _prompt_name_problem(name: object) -> str:
    if not isinstance(name, str) or not name:
        return "a non-empty string is required"
    if len(name) > MAX_PROMPT_NAME_LENGTH:
        return f"longer than {MAX_PROMPT_NAME_LENGTH} characters"
    if not name.isprintable() or "\ufffd" in name:
        return "contains control characters or undecodable bytes"
    return ""


def parse_traceparent(
    values: str | Sequence[str] | None,
) -> tuple[SpanRef | None, Rejection | None]:
    """Parse ``traceparent`` the way W3C Trace Context level 1 tells a receiver to.

    Version ``ff``, all-zero ids, upper-case hex and repeated headers make the header
    ignored; a version above ``00`` is parsed for its first four fields, as the spec allows.
    """
    if values is None:
        return None, None
    if not isinstance(values, str):
        if len(values) == 0:
            return None, None
        if len(values) > 1:
            return None, Rejection.TRACEPARENT_REPEATED
        values = values[0]
    header = values.strip(_OWS)
    if not header:
        return None, None
    match = _TRACEPARENT.match(header)
    if match is None:
        return None, Rejection.TRACEPARENT_MALFORMED
    version, trace_id, span_id, flags = match.groups()
    if version == "ff":
        return None, Rejection.TRACEPARENT_VERSION_FF
    rest = header[match.end() :]
    # Version 00 is exactly four fields; a future version may append "-..." fields.
    if (version == "00" and rest) or (rest and not rest.startswith("-")):
        return None, Rejection.TRACEPARENT_MALFORMED
    if trace_id == _INVALID_TRACE_ID or span_id == _INVALID_SPAN_ID:
        return None, Rejection.TRACEPARENT_INVALID_ID
    return SpanRef(trace_id, span_id, sampled=bool(int(flags, 16) & 0x01)), None


def parse_baggage(
    values: str | Sequence[str] | None,
) -> tuple[list[tuple[str, str]], list[Rejection]]:
    """Decode W3C ``baggage`` header value(s) into ``(key, value)`` members, in order.

    Several headers are one list, as RFC 7230 allows. Malformed members are dropped one by
    one; past 64 members or 8192 bytes, whole members are dropped from the end. Properties
    after ``;`` are not part of the value. Values are percent-decoded with ``+`` read as a
    space, which is how OpenTelemetry Python (and so Langfuse's SDK) encodes them; this
    package itself never emits a bare ``+``.
    """
    if values is None:
        return [], []
    raw = values if isinstance(values, str) else ",".join(values)
    members: list[tuple[str, str]] = []
    rejections: list[Rejection] = []
    size = 0
    for member in raw.split(","):
        member = member.strip(_OWS)
        if not member:
            continue
        encoded_size = len(member.encode("utf-8", "surrogatepass")) + (1 if members else 0)
        if len(members) >= MAX_BAGGAGE_MEMBERS or size + encoded_size > MAX_BAGGAGE_BYTES:
            rejections.append(Rejection.BAGGAGE_OVER_LIMIT)
            break
        decoded = _decode_member(member)
        if decoded is None:
            rejections.append(Rejection.BAGGAGE_MEMBER_MALFORMED)
            continue
        size += encoded_size
        members.append(decoded)
    return members, rejections


def _decode_member(member: str) -> tuple[str, str] | None:
    key, sep, rest = member.partition("=")
    key = key.strip(_OWS)
    if not sep or not _TOKEN.fullmatch(key):
        return None
    value = rest.split(";", 1)[0].strip(_OWS)
    if not _BAGGAGE_VALUE.fullmatch(value):
        return None
    return key, unquote_plus(value, errors="replace")


def format_baggage(members: Iterable[tuple[str, str]]) -> str:
    """Encode members as one W3C ``baggage`` value within the W3C limits.

    Keys that are not RFC 7230 tokens are skipped; members that would pass 64 members or
    8192 bytes are dropped whole. Values are percent-encoded with ``%20`` for space, the
    form every W3C implementation decodes the same way.
    """
    return _format_members(tuple(members))


# A process sends the same few baggage lists over and over: encode each list once.
@functools.lru_cache(maxsize=256)
def _format_members(members: tuple[tuple[str, str], ...]) -> str:
    parts: list[str] = []
    size = 0
    for key, value in members:
        part = _encode_member(key, value)
        if part is None:
            continue
        part_size = len(part) + (1 if parts else 0)
        if len(parts) >= MAX_BAGGAGE_MEMBERS or size + part_size > MAX_BAGGAGE_BYTES:
            continue
        parts.append(part)
        size += part_size
    return ",".join(parts)


# Outbound requests repeat the same few members; encoding each once keeps injection cheap.
@functools.lru_cache(maxsize=1024)
def _encode_member(key: str, value: str) -> str | None:
    if not _TOKEN.fullmatch(key):
        return None
    return f"{key}={quote(value, safe='')}"


def prompt_members(prompt: PromptRef) -> list[tuple[str, str]]:
    """The baggage members that carry a prompt link."""
    return [(PROMPT_NAME_KEY, prompt.name), (PROMPT_VERSION_KEY, str(prompt.version))]


def prompt_from_members(
    members: Iterable[tuple[str, str]],
) -> tuple[PromptRef | None, Rejection | None]:
    """Find the prompt link among baggage members; both keys are needed, and agree if repeated."""
    names = {value for key, value in members if key == PROMPT_NAME_KEY}
    versions = {value for key, value in members if key == PROMPT_VERSION_KEY}
    if not names and not versions:
        return None, None
    if len(names) > 1 or len(versions) > 1:
        return None, Rejection.PROMPT_CONFLICTING
    if not names or not versions:
        return None, Rejection.PROMPT_INCOMPLETE
    (name,), (version,) = names, versions
    return _prompt_from_strings(name, version)


def prompt_from_baggage(entries: Mapping[str, object]) -> PromptRef | None:
    """The valid prompt link in OpenTelemetry baggage entries (``baggage.get_all()``), if any."""
    name, version = entries.get(PROMPT_NAME_KEY), entries.get(PROMPT_VERSION_KEY)
    if not isinstance(name, str) or not isinstance(version, str):
        return None
    return _prompt_from_strings(name, version)[0]


# The same prompt arrives on every request of a deployment: validate each pair once.
@functools.lru_cache(maxsize=1024)
def _prompt_from_strings(name: str, version: str) -> tuple[PromptRef | None, Rejection | None]:
    if _prompt_name_problem(name):
        return None, Rejection.PROMPT_NAME_INVALID
    if not _VERSION.fullmatch(version) or int(version) > MAX_PROMPT_VERSION:
        return None, Rejection.PROMPT_VERSION_INVALID
    return PromptRef(name, int(version)), None


def decode_headers(headers: Mapping[str, object]) -> BridgeContext:
    """Read the bridge context from request headers (keys in any case). Never raises on input.

    Values may be strings or lists of strings (repeated headers); anything else is ignored.
    """
    traceparent: list[str] = []
    baggage: list[str] = []
    for key, value in headers.items():
        if not isinstance(key, str):
            continue
        lowered = key.lower()
        if lowered == "traceparent":
            traceparent.extend(_strings(value))
        elif lowered == "baggage":
            baggage.extend(_strings(value))
    parent, trace_rejection = parse_traceparent(traceparent)
    members, rejections = parse_baggage(baggage)
    prompt, prompt_rejection = prompt_from_members(members)
    if trace_rejection:
        rejections.insert(0, trace_rejection)
    if prompt_rejection:
        rejections.append(prompt_rejection)
    return BridgeContext(parent=parent, prompt=prompt, rejections=tuple(rejections))


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [item for item in value if isinstance(item, str)]
    return []


def encode_headers(context: BridgeContext) -> dict[str, str]:
    """The headers a client sends for ``context`` (for tests, benchmarks, non-OTel callers)."""
    headers: dict[str, str] = {}
    if context.parent is not None:
        headers["traceparent"] = context.parent.to_traceparent()
    if context.prompt is not None:
        headers["baggage"] = format_baggage(prompt_members(context.prompt))
    return headers
