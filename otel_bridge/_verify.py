"""Read a trace back through the Langfuse public API and judge whether it is unified.

Langfuse v4 (and Cloud) runs in the ``events_only`` write mode by default, where
``GET /api/public/traces/{id}`` answers 404 for every trace; observations are read with
``GET /api/public/v2/observations?traceId=...`` instead. v3 servers, and v4 ones with the
preview API switched off, answer 404 on v2, and v4 in ``legacy`` mode serves v2 from a table it
does not fill: the reader takes v2 when it has rows and falls back to the v1 trace otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

# LiteLLM's Langfuse logging names its generations litellm-<call type> (or litellm:<key alias>)
# and always records its hidden_params; either marks the gateway's generation.
_GATEWAY_NAME_PREFIX = "litellm"
_GATEWAY_METADATA_KEYS = ("hidden_params", "litellm_response_cost")
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

# What the verdict needs from each observation: parents and type (core), name (basic),
# start time for the tree (time), the prompt link (prompt) and LiteLLM's marks (metadata).
V2_FIELDS = "core,basic,time,prompt,metadata"
V2_PAGE_LIMIT = 1000  # Langfuse's maximum
# Langfuse's 404 bodies that say the endpoint is switched off, not that the trace is missing.
_EVENTS_ONLY_MESSAGE = "events_only"
_V2_OFF_MESSAGE = "only available in a Langfuse v4"

Observation = Mapping[str, Any]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    trace_id: str
    observations: Sequence[Observation]
    checks: Sequence[Check]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def summary(self) -> str:
        failed = [c for c in self.checks if not c.ok]
        if not failed:
            return (
                f"UNIFIED: trace {self.trace_id} is one tree with the gateway generation "
                "and its prompt link"
            )
        return "NOT UNIFIED: " + "; ".join(f"{c.name}: {c.detail}" for c in failed)


@dataclass(frozen=True)
class PromptWanted:
    """The prompt a caller meant to link: named by the caller, or by the generation itself."""

    name: str
    version: int | None = None

    def __str__(self) -> str:
        return f"{self.name!r}" + (f" version {self.version}" if self.version is not None else "")


# --------------------------------------------------------------------------- reading


class AccessDenied(Exception):
    """Langfuse refused the keys (401/403): wrong keys, or keys of another project."""


@dataclass(frozen=True)
class TraceRead:
    """One read of a trace: its observations, where they came from, or why there are none."""

    observations: list[Observation]
    source: str
    problem: str | None = None  # one line, when nothing usable came back
    final: bool = False  # the problem will not go away by waiting


@dataclass
class LangfuseReader:
    """The few Langfuse public API reads the verifier and ``otel-bridge check`` need."""

    base_url: str
    public_key: str
    secret_key: str
    timeout: float = 10.0
    _v2_available: bool | None = field(default=None, init=False)
    _v1_events_only: bool = field(default=False, init=False)
    _prompts_seen: dict[PromptWanted, bool | None] = field(default_factory=dict, init=False)

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> httpx.Response:
        response = httpx.get(
            f"{self.base_url.rstrip('/')}{path}",
            params=dict(params or {}),
            auth=(self.public_key, self.secret_key),
            timeout=self.timeout,
        )
        if response.status_code in (401, 403):
            raise AccessDenied(
                f"wrong keys or project: Langfuse at {self.base_url} answered "
                f"{response.status_code} to {path} ({_message(response)}); check "
                "LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY are a pair from the project the app "
                "and the gateway send to, and LANGFUSE_BASE_URL is that project's region/host"
            )
        return response

    def v2_observations(self, trace_id: str) -> list[Observation] | None:
        """All observations of the trace from the v2 API; None when this server has no v2."""
        if self._v2_available is False:
            return None
        observations: list[Observation] = []
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {
                "traceId": trace_id,
                "fields": V2_FIELDS,
                "limit": V2_PAGE_LIMIT,
            }
            if cursor:
                params["cursor"] = cursor
            response = self.get("/api/public/v2/observations", params)
            if response.status_code == 404:
                self._v2_available = False
                return None
            response.raise_for_status()
            self._v2_available = True
            page = response.json()
            observations.extend(page.get("data") or [])
            cursor = (page.get("meta") or {}).get("cursor")
            if not cursor:
                return observations

    def v1_trace(self, trace_id: str) -> tuple[list[Observation] | None, str]:
        """The v1 trace's observations, or None and Langfuse's 404 message."""
        if self._v1_events_only:
            # Switched off for good on this server; Cloud also rate-limits this legacy route.
            return None, _EVENTS_ONLY_MESSAGE
        response = self.get(f"/api/public/traces/{quote(trace_id, safe='')}")
        if response.status_code == 404:
            message = _message(response)
            self._v1_events_only = _EVENTS_ONLY_MESSAGE in message
            return None, message
        response.raise_for_status()
        return list(response.json().get("observations") or []), ""

    def read(self, trace_id: str) -> TraceRead:
        try:
            observations = self.v2_observations(trace_id)
            if observations:
                return TraceRead(observations, "v2 observations")
            v1_observations, v1_message = self.v1_trace(trace_id)
        except AccessDenied as denied:
            return TraceRead([], "", str(denied), final=True)
        except (httpx.HTTPError, ValueError) as exc:
            return TraceRead([], "", f"Langfuse at {self.base_url} did not answer usably: {exc}")
        if v1_observations:
            return TraceRead(v1_observations, "v1 trace")
        if observations is None and _EVENTS_ONLY_MESSAGE in v1_message:
            return TraceRead(
                [],
                "",
                "events-only 404: this Langfuse runs in the events_only write mode, where "
                "GET /api/public/traces/{id} answers 404 for every trace, and its v2 observations "
                "API is switched off; set LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true on the "
                "Langfuse server (web container) or look the trace up in the UI",
                final=True,
            )
        where = "v2 observations" if observations is not None else "the v1 trace endpoint"
        return TraceRead(
            [],
            "",
            f"not ingested yet: Langfuse at {self.base_url} has no observation of trace "
            f"{trace_id} ({where}); the app or the gateway has not exported it to this project "
            "yet, or exports elsewhere",
        )

    def prompt_exists(self, prompt: PromptWanted) -> bool | None:
        """Whether the project has this prompt (version); None when Langfuse cannot say."""
        if prompt not in self._prompts_seen:
            try:
                self._prompts_seen[prompt] = self.get_prompt(prompt) is not None
            except (AccessDenied, httpx.HTTPError, ValueError):
                return None
        return self._prompts_seen[prompt]

    def get_prompt(self, prompt: PromptWanted) -> dict[str, Any] | None:
        """The prompt as Langfuse serves it (``production`` label without a version)."""
        params: dict[str, str | int] = {}
        if prompt.version is not None:
            params["version"] = prompt.version
        response = self.get(f"/api/public/v2/prompts/{quote(prompt.name, safe='')}", params)
        if response.status_code == 404:
            return None
        response.raise_for_status()
        served: dict[str, Any] = response.json()
        return served


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, Mapping):
        return str(body.get("message") or body.get("error") or body)[:300]
    return str(body)[:200]


# --------------------------------------------------------------------------- judging


def is_gateway_generation(observation: Observation, by_id: Mapping[str, Observation]) -> bool:
    """A generation the gateway logged: LiteLLM's marks, or below the app's HTTP call.

    The app's own generations (``langfuse.openai``) are siblings of its HTTP client span; the
    gateway's hang below it, whatever the gateway names them (V2: ``chat <model>``).
    """
    if observation.get("type") != "GENERATION":
        return False
    metadata = observation.get("metadata")
    name = str(observation.get("name") or "")
    if name.startswith(_GATEWAY_NAME_PREFIX) or (
        isinstance(metadata, Mapping) and any(key in metadata for key in _GATEWAY_METADATA_KEYS)
    ):
        return True
    seen: set[str] = set()
    parent = observation.get("parentObservationId")
    while isinstance(parent, str) and parent in by_id and parent not in seen:
        seen.add(parent)
        ancestor = by_id[parent]
        if str(ancestor.get("name") or "").split(" ", 1)[0] in _HTTP_METHODS:
            return True
        parent = ancestor.get("parentObservationId")
    return False


def prompt_linked(observation: Observation) -> bool:
    """Langfuse resolved the prompt: only then is ``promptId`` set (v4 keeps name and version
    of an unknown prompt, without an id; v3 and legacy tables keep nothing)."""
    prompt_id = observation.get("promptId")
    return isinstance(prompt_id, str) and prompt_id != ""


def named_prompt(observation: Observation) -> PromptWanted | None:
    name, version = observation.get("promptName"), observation.get("promptVersion")
    if not isinstance(name, str) or not name:
        return None
    return PromptWanted(name, version if isinstance(version, int) else None)


PromptLookup = Callable[[PromptWanted], bool | None]


def _unlinked_detail(
    observation: Observation, expected: PromptWanted | None, lookup: PromptLookup | None
) -> str:
    label = str(observation.get("name"))
    named = named_prompt(observation)
    if named is not None:
        # v4 keeps what the gateway sent and sets promptId only for a prompt it found.
        if lookup is not None and lookup(named):
            return (
                f"{label}: prompt {named} is named but not linked (promptId is null), though "
                "the project has it now: it was created after the generation arrived, or the "
                "gateway logs to another project than these keys read"
            )
        return (
            f"{label}: prompt {named} is missing from this Langfuse project (the generation "
            "names it, but Langfuse found no such prompt, so promptId is null)"
        )
    if expected is None:
        return f"{label}: no prompt on it"
    # v3 and legacy tables drop the whole link to an unknown prompt: ask whether it exists.
    exists = lookup(expected) if lookup is not None else None
    if exists is False:
        return (
            f"{label}: prompt {expected} is missing from this Langfuse project (Langfuse keeps "
            "no link to a prompt it does not have)"
        )
    if exists:
        return (
            f"{label}: no prompt reached the gateway, though prompt {expected} exists in this "
            "project"
        )
    return f"{label}: no prompt on it, expected prompt {expected}"


def judge(
    trace: Mapping[str, Any],
    *,
    expected_prompt: PromptWanted | None = None,
    prompt_lookup: PromptLookup | None = None,
) -> Verdict:
    """The checks on one trace: ``{"id": ..., "observations": [...]}``."""
    trace_id = str(trace.get("id"))
    observations: list[Observation] = list(trace.get("observations") or [])
    by_id = {o["id"]: o for o in observations}
    checks = [
        Check(
            "one trace",
            bool(observations) and all(o.get("traceId") == trace_id for o in observations),
            f"{len(observations)} observations",
        )
    ]
    dangling = [
        f"{o.get('name')} -> {o['parentObservationId']}"
        for o in observations
        if o.get("parentObservationId") and o["parentObservationId"] not in by_id
    ]
    checks.append(
        Check("no dangling parents", not dangling, ", ".join(dangling) or "all parents exported")
    )
    # In start order: v2 pages come newest first, v1 oldest first.
    roots = sorted(
        (o for o in observations if not o.get("parentObservationId")),
        key=lambda o: str(o.get("startTime") or ""),
    )
    checks.append(Check("one root", len(roots) == 1, ", ".join(str(o.get("name")) for o in roots)))
    gateway = [o for o in observations if is_gateway_generation(o, by_id)]
    checks.append(
        Check("gateway generation present", bool(gateway), f"{len(gateway)} gateway generation(s)")
    )
    if gateway:
        unlinked = [o for o in gateway if not prompt_linked(o)]
        linked = sorted({str(named_prompt(o)) for o in gateway if not unlinked})
        checks.append(
            Check(
                "prompt linked on the gateway generation",
                not unlinked,
                "; ".join(_unlinked_detail(o, expected_prompt, prompt_lookup) for o in unlinked)
                if unlinked
                else ", ".join(f"prompt {p}" for p in linked),
            )
        )
    return Verdict(trace_id, observations, checks)


# --------------------------------------------------------------------------- polling


def _fingerprint(observations: Sequence[Observation]) -> frozenset[tuple[Any, ...]]:
    return frozenset(
        (o.get("id"), o.get("parentObservationId"), o.get("promptId"), o.get("promptName"))
        for o in observations
    )


def verify(
    reader: LangfuseReader,
    trace_id: str,
    *,
    wait: float = 60.0,
    settle: float = 5.0,
    interval: float = 1.0,
    expected_prompt: PromptWanted | None = None,
) -> Verdict:
    """Judge the trace once it is complete, re-reading it while ingestion catches up.

    A correct trace is judged as soon as it reads correct. A wrong one is judged once the
    gateway's generation is there and the trace has not changed for ``settle`` seconds: the
    gateway exports its generation in its own batches, later than the app's spans, so a trace
    read too early looks split even when it is not. At ``wait`` seconds the last read counts.
    """
    deadline = time.monotonic() + wait
    last_change, last_print = time.monotonic(), frozenset[tuple[Any, ...]]()
    while True:
        read = reader.read(trace_id)
        now = time.monotonic()
        if read.observations:
            verdict = judge(
                {"id": trace_id, "observations": read.observations},
                expected_prompt=expected_prompt,
                prompt_lookup=reader.prompt_exists,
            )
            fingerprint = _fingerprint(read.observations)
            if fingerprint != last_print:
                last_print, last_change = fingerprint, now
            gateway_there = any(
                c.name == "gateway generation present" and c.ok for c in verdict.checks
            )
            if verdict.ok or (gateway_there and now - last_change >= settle):
                return verdict
            if now >= deadline:
                if gateway_there:
                    return verdict
                return Verdict(
                    trace_id,
                    verdict.observations,
                    [
                        *verdict.checks,
                        Check(
                            "complete",
                            False,
                            f"no gateway generation arrived within {wait:.0f}s: the gateway "
                            "logs elsewhere, or slower (raise --wait)",
                        ),
                    ],
                )
        elif read.final or now >= deadline:
            return Verdict(trace_id, [], [Check("trace found", False, read.problem or "empty")])
        time.sleep(max(0.0, min(interval, deadline - now)))


def render_tree(observations: Sequence[Observation]) -> str:
    """The trace as an indented tree: name, type, id, prompt link."""
    children: dict[str | None, list[Observation]] = {}
    ids = {o["id"] for o in observations}
    for o in sorted(observations, key=lambda o: str(o.get("startTime") or "")):
        parent = o.get("parentObservationId")
        children.setdefault(parent if parent in ids else None, []).append(o)
    lines: list[str] = []

    def walk(node: Observation, depth: int) -> None:
        prompt = ""
        if node.get("promptName"):
            unresolved = "" if prompt_linked(node) else " (no promptId)"
            prompt = f"  prompt={node['promptName']!r} v{node.get('promptVersion')}{unresolved}"
        parent = node.get("parentObservationId")
        missing = "  (parent MISSING: " + str(parent) + ")" if parent and parent not in ids else ""
        label = f"{node.get('name')} [{node.get('type')}] id={node['id']}"
        lines.append(f"{'  ' * depth}- {label}{prompt}{missing}")
        for child in children.get(node["id"], []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return "\n".join(lines)
