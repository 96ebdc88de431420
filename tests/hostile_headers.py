"""Hostile W3C context headers and a reference model of what a receiver must make of them.

The reference model is written from the specifications (W3C Trace Context level 1, W3C
Baggage) and the bridge's documented choices (``+`` read as a space, as OpenTelemetry Python
encodes it; prompt names of 1..200 printable characters; versions 1..2**31-1), deliberately
without the package's regular expressions, so that a test comparing the two compares two
independent readings of the rules.

Used by the property tests (hypothesis strategies) and the end-to-end tests (a seeded,
deterministic generator of header sets, the same ingredients as the strategies).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote, quote_plus, unquote_plus

PROMPT_NAME_KEY = "langfuse_prompt_name"
PROMPT_VERSION_KEY = "langfuse_prompt_version"
MAX_MEMBERS = 64
MAX_BYTES = 8192
MAX_NAME = 200
MAX_VERSION = 2**31 - 1

HEX_LC = frozenset("0123456789abcdef")
OWS = " \t"
# RFC 7230 tchar.
TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# W3C baggage-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E.
BAGGAGE_OCTET = frozenset(chr(c) for c in range(0x21, 0x7F) if chr(c) not in {'"', ",", ";", "\\"})

# ----------------------------------------------------------------------------- reference


@dataclass(frozen=True)
class RefParent:
    trace_id: str
    span_id: str
    sampled: bool


def _is_hex_lc(text: str) -> bool:
    return bool(text) and all(c in HEX_LC for c in text)


def ref_traceparent(values: object) -> RefParent | None:
    """W3C Trace Context level 1, receiver side, for one header value or a repeated header."""
    if values is None:
        return None
    if isinstance(values, (list, tuple)):
        if len(values) != 1:  # absent, or repeated: a repeated traceparent is ignored
            return None
        values = values[0]
    if not isinstance(values, str):
        return None
    header = values.strip(OWS)
    if len(header) < 55:
        return None
    version = header[0:2]
    if not _is_hex_lc(version) or version == "ff":
        return None
    if header[2] != "-" or header[35] != "-" or header[52] != "-":
        return None
    trace_id, span_id, flags = header[3:35], header[36:52], header[53:55]
    if not (_is_hex_lc(trace_id) and _is_hex_lc(span_id) and _is_hex_lc(flags)):
        return None
    if version == "00" and len(header) != 55:
        return None
    if len(header) > 55 and header[55] != "-":
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return RefParent(trace_id, span_id, bool(int(flags, 16) & 1))


@dataclass(frozen=True)
class RefBaggage:
    members: list[tuple[str, str]]  # every well-formed member, decoded, in order
    sizes: list[int]  # the UTF-8 size of each of those members as sent (OWS stripped)
    raw_members: int  # non-empty list members as sent
    raw_bytes: int  # UTF-8 size of the whole list as sent (several headers joined by ",")

    @property
    def within_limits(self) -> bool:
        """Within what a W3C platform MUST propagate: then nothing may be dropped."""
        return self.raw_members <= MAX_MEMBERS and self.raw_bytes <= MAX_BYTES


def _ref_member(member: str) -> tuple[str, str] | None:
    if "=" not in member:
        return None
    key, rest = member.split("=", 1)
    key = key.strip(OWS)
    if not key or any(c not in TCHAR for c in key):
        return None
    value = rest.split(";", 1)[0].strip(OWS)
    if any(c not in BAGGAGE_OCTET for c in value):
        return None
    return key, unquote_plus(value)


def ref_baggage(values: object) -> RefBaggage:
    if values is None:
        parts: list[str] = []
    elif isinstance(values, str):
        parts = [values]
    else:
        parts = [v for v in values if isinstance(v, str)]  # type: ignore[union-attr]
    raw = ",".join(parts)
    members = [m.strip(OWS) for m in raw.split(",")]
    members = [m for m in members if m]
    decoded, sizes = [], []
    for m in members:
        d = _ref_member(m)
        if d is not None:
            decoded.append(d)
            sizes.append(len(m.encode("utf-8", "surrogatepass")))
    return RefBaggage(decoded, sizes, len(members), len(raw.encode("utf-8", "surrogatepass")))


def ref_name_ok(name: str) -> bool:
    return 0 < len(name) <= MAX_NAME and name.isprintable() and "\ufffd" not in name


def ref_version(text: str) -> int | None:
    if not text or not all("0" <= c <= "9" for c in text) or text[0] == "0":
        return None
    value = int(text)
    return value if 1 <= value <= MAX_VERSION else None


def ref_prompt(members: Sequence[tuple[str, str]]) -> tuple[str, int] | None:
    names = {v for k, v in members if k == PROMPT_NAME_KEY}
    versions = {v for k, v in members if k == PROMPT_VERSION_KEY}
    if len(names) != 1 or len(versions) != 1:
        return None
    (name,), (version_text,) = names, versions
    version = ref_version(version_text)
    if not ref_name_ok(name) or version is None:
        return None
    return name, version


def is_subsequence(small: Sequence[object], big: Sequence[object]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


def matched_indexes(small: Sequence[object], big: Sequence[object]) -> list[int] | None:
    """Indexes in ``big`` of an in-order match of ``small`` (earliest match), else None."""
    out: list[int] = []
    start = 0
    for x in small:
        for j in range(start, len(big)):
            if big[j] == x:
                out.append(j)
                start = j + 1
                break
        else:
            return None
    return out


# ----------------------------------------------------------------------------- ingredients

VALID_TRACE = "0af7651916cd43dd8448eb211c80319c"
VALID_SPAN = "b7ad6b7169203331"

SPECIAL_NAMES = [
    "test-prompt",
    "with space",
    "plus+sign",
    "100% =ok",
    "a=b=c",
    "%41%",
    "+",
    "%",
    " lead",
    "trail ",
    "ünïcødé 名前 🚀",
    'a/b,c;d\\e"f',
    "x" * 200,
]
HOSTILE_VERSIONS = [
    "0", "-1", "+1", "01", "1.0", "1e3", " 1", "1 ", "0x1", "\u0661", "\u00b2",
    "2147483647", "2147483648", "99999999999", "", "1,2",
]  # fmt: skip
TRACEPARENT_SHAPES = [
    f"00-{VALID_TRACE}-{VALID_SPAN}-01",
    f"00-{VALID_TRACE}-{VALID_SPAN}-00",
    f"ff-{VALID_TRACE}-{VALID_SPAN}-01",
    f"00-{'0' * 32}-{VALID_SPAN}-01",
    f"00-{VALID_TRACE}-{'0' * 16}-01",
    f"00-{VALID_TRACE.upper()}-{VALID_SPAN}-01",
    f"00-{VALID_TRACE}-{VALID_SPAN}-01-extra",
    f"01-{VALID_TRACE}-{VALID_SPAN}-01-future-fields",
    f"cc-{VALID_TRACE}-{VALID_SPAN}-09",
    f"01-{VALID_TRACE}-{VALID_SPAN}-01x",
    f"00-{VALID_TRACE[:-1]}-{VALID_SPAN}-01",
    f"00_{VALID_TRACE}_{VALID_SPAN}_01",
    "00--01",
    "",
]


def encodings(value: str) -> list[str]:
    """Ways a sender may put ``value`` on the wire as a baggage value."""
    return [quote(value, safe=""), quote_plus(value), value.replace(" ", "%20"), value]


# ----------------------------------------------------------------------------- e2e generator


@dataclass
class HeaderSet:
    """One request's W3C headers as raw bytes (``None``: header not sent)."""

    traceparent: bytes | None
    baggage: bytes | None
    tracestate: bytes | None = None
    note: str = ""

    def as_list(self) -> list[tuple[bytes, bytes]]:
        out = []
        for name, value in (
            (b"traceparent", self.traceparent),
            (b"tracestate", self.tracestate),
            (b"baggage", self.baggage),
        ):
            if value is not None:
                out.append((name, value))
        return out

    def as_seen(self) -> dict[str, str]:
        """What the proxy's request object holds: bytes read as Latin-1, keys lower-case."""
        seen = {}
        for name, value in self.as_list():
            seen[name.decode()] = value.decode("latin-1")
        return seen


def _rand_hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _random_traceparent(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.35:
        version = rng.choice(["00", "00", "01", "fe", "ff", "0F", "zz"])
        trace = rng.choice(
            [_rand_hex(rng, 32), "0" * 32, _rand_hex(rng, 32).upper(), _rand_hex(rng, 31)]
        )
        span = rng.choice([_rand_hex(rng, 16), "0" * 16, _rand_hex(rng, 17)])
        flags = rng.choice(["01", "00", "03", "ff", "1", "0g"])
        tail = rng.choice(["", "", "-", "-x", "x", "-" + _rand_hex(rng, 8)])
        return f"{version}-{trace}-{span}-{flags}{tail}"
    if roll < 0.55:
        return rng.choice(TRACEPARENT_SHAPES)
    if roll < 0.8:
        return "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(rng.randrange(0, 80)))
    return "".join(chr(rng.randrange(0x80, 0x100)) for _ in range(rng.randrange(1, 60)))


def _random_member(rng: random.Random, marker: str) -> str:
    roll = rng.random()
    prop = rng.choice(["", "", ";p", ";p=1;q", ";prop=" + marker])
    if roll < 0.3:
        name = rng.choice([*SPECIAL_NAMES, marker + " name"])
        return f"{PROMPT_NAME_KEY}={rng.choice(encodings(name))}{prop}"
    if roll < 0.5:
        version = rng.choice([*HOSTILE_VERSIONS, "1", "2", "7"])
        return f"{PROMPT_VERSION_KEY}={quote(version, safe='')}{prop}"
    if roll < 0.65:
        return f"k{rng.randrange(100)} = {marker}{prop}"
    if roll < 0.8:
        return rng.choice(
            [f"bad key={marker}", f"{marker}", f'q="{marker}"', f"é={marker}", f"k={marker}é", "="]
        )
    return f"langfuse_user_id={marker}"


def hostile_header_sets(seed: int, count: int) -> list[HeaderSet]:
    """``count`` hostile header sets, each with a distinctive marker that must never be logged."""
    rng = random.Random(seed)
    sets: list[HeaderSet] = []
    for i in range(count):
        marker = f"HOSTILEMARK{seed}x{i:03d}"
        traceparent = rng.choice([None, _random_traceparent(rng), _random_traceparent(rng)])
        kind = rng.random()
        if kind < 0.1:  # over the member limit, prompt at the end
            members = [f"k{j}={marker}" for j in range(rng.randrange(65, 90))]
            members += [f"{PROMPT_NAME_KEY}=over-limit", f"{PROMPT_VERSION_KEY}=3"]
            baggage: str | None = ",".join(members)
        elif kind < 0.2:  # over the byte limit
            baggage = f"big={marker}{'v' * 8300},{PROMPT_NAME_KEY}=after-big,{PROMPT_VERSION_KEY}=3"
        elif kind < 0.3:
            baggage = None
        else:
            members = [_random_member(rng, marker) for _ in range(rng.randrange(1, 8))]
            baggage = ",".join(members)
        raw_tp = None if traceparent is None else traceparent.encode("latin-1")
        if raw_tp is not None and rng.random() < 0.2:
            raw_tp = raw_tp + b";" + marker.encode()
        raw_bg = None if baggage is None else baggage.encode("utf-8")
        tracestate = rng.choice([None, f"vendor={marker}".encode(), b"\xff\xfe=="])
        sets.append(HeaderSet(raw_tp, raw_bg, tracestate, note=marker))
    return sets
