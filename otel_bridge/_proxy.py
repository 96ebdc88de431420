"""Proxy tier: an incoming request's bridge context, turned into Langfuse logging metadata.

The keys written are the ones LiteLLM's ``langfuse`` callback has always honoured
(``existing_trace_id``, ``parent_observation_id``, ``prompt``): the bridge produces exactly
what callers used to hand-build in ``extra_body``, so the callback logs it the way it logged
their metadata, and a caller that still sends that metadata keeps full control of it.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass

from otel_bridge._context import BridgeContext, Rejection

_logger = logging.getLogger("otel_bridge.proxy")

# Metadata keys through which a caller places a generation in a trace. If the caller set any
# of them, the header-derived parent is not mixed in: a parent from one trace under another
# trace's id would dangle.
_TRACE_STEERING_KEYS = ("existing_trace_id", "parent_observation_id")


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """Which callers may attach their generation to an existing trace.

    ``OTEL_BRIDGE_TRUSTED_CALLERS``: ``all`` (default), ``none``, or a comma-separated list
    of ``key:<key alias or hashed token>`` and ``team:<team id or alias>``. An untrusted
    caller's request is still served and logged, as a fresh trace; its prompt link stays.
    """

    allow_all: bool = True
    keys: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, value: str | None) -> TrustPolicy:
        text = (value or "all").strip()
        if text.lower() == "all":
            return cls()
        if text.lower() == "none":
            return cls(allow_all=False)
        keys: set[str] = set()
        teams: set[str] = set()
        for item in filter(None, (part.strip() for part in text.split(","))):
            kind, sep, ident = item.partition(":")
            if not sep or not ident or kind not in ("key", "team"):
                raise ValueError(
                    f"OTEL_BRIDGE_TRUSTED_CALLERS entry {item!r}: expected all, none, "
                    "key:<alias or token hash> or team:<id or alias>"
                )
            (keys if kind == "key" else teams).add(ident)
        return cls(allow_all=False, keys=frozenset(keys), teams=frozenset(teams))

    def trusts(self, key_ids: tuple[str | None, ...], team_ids: tuple[str | None, ...]) -> bool:
        if self.allow_all:
            return True
        return any(k in self.keys for k in key_ids if k) or any(
            t in self.teams for t in team_ids if t
        )


class RejectionLog:
    """Counts ignored context parts by reason; logs at 1, 2, 4, 8... so logs stay bounded.

    Header values are never logged: they are caller-controlled and may carry secrets.
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, reasons: tuple[Rejection | str, ...]) -> None:
        for reason in reasons:
            key = reason.value if isinstance(reason, Rejection) else reason
            with self._lock:
                self._counts[key] += 1
                count = self._counts[key]
            if count & (count - 1) == 0:
                _logger.warning(
                    "otel-bridge: ignored part of an incoming trace context (reason=%s, %d so far)",
                    key,
                    count,
                )

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


def langfuse_metadata(
    context: BridgeContext,
    caller_metadata: Mapping[str, object],
    *,
    may_attach: bool = True,
) -> dict[str, object]:
    """The metadata entries to add for LiteLLM's Langfuse logging; never overrides the caller.

    The parent is used only when the caller sampled its trace: an unsampled caller exports
    nothing, so a generation under its span would point at an observation that never arrives.
    """
    updates: dict[str, object] = {}
    parent = context.parent
    caller_steers = any(caller_metadata.get(key) is not None for key in _TRACE_STEERING_KEYS)
    caller_trace = caller_metadata.get("trace_id")
    if (
        parent is not None
        and parent.sampled
        and may_attach
        and not caller_steers
        and (caller_trace is None or caller_trace == parent.trace_id)
    ):
        updates["existing_trace_id"] = parent.trace_id
        updates["parent_observation_id"] = parent.span_id
    if context.prompt is not None and caller_metadata.get("prompt") is None:
        # LiteLLM links a prompt only from {name, version, prompt}; an empty message list is
        # the smallest "prompt" it accepts, and the bridge never has the template anyway.
        updates["prompt"] = {
            "name": context.prompt.name,
            "version": context.prompt.version,
            "prompt": [],
        }
    return updates


def apply(updates: Mapping[str, object], targets: list[MutableMapping[str, object]]) -> None:
    for target in targets:
        for key, value in updates.items():
            target.setdefault(key, value)
