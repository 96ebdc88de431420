"""Read a trace back through the Langfuse public API and judge whether it is unified."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

# LiteLLM's Langfuse logging names its generations litellm-<call type> (or litellm:<key alias>)
# and always records its hidden_params; either marks the gateway's generation.
_GATEWAY_NAME_PREFIX = "litellm"
_GATEWAY_METADATA_KEYS = ("hidden_params", "litellm_response_cost")

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


_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def judge(trace: Mapping[str, Any]) -> Verdict:
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
    roots = [o for o in observations if not o.get("parentObservationId")]
    checks.append(Check("one root", len(roots) == 1, ", ".join(str(o.get("name")) for o in roots)))
    gateway = [o for o in observations if is_gateway_generation(o, by_id)]
    checks.append(
        Check("gateway generation present", bool(gateway), f"{len(gateway)} gateway generation(s)")
    )
    if gateway:
        unlinked = [
            f"{o.get('name')} ({o.get('promptName')!r} v{o.get('promptVersion')!r})"
            for o in gateway
            if not (
                isinstance(o.get("promptName"), str) and isinstance(o.get("promptVersion"), int)
            )
        ]
        linked = (
            {(o.get("promptName"), o.get("promptVersion")) for o in gateway}
            if not unlinked
            else set()
        )
        checks.append(
            Check(
                "prompt linked on the gateway generation",
                not unlinked,
                "unlinked: " + ", ".join(unlinked)
                if unlinked
                else ", ".join(f"prompt {n!r} version {v!r}" for n, v in sorted(linked, key=str)),
            )
        )
    return Verdict(trace_id, observations, checks)


def fetch_trace(
    base_url: str, public_key: str, secret_key: str, trace_id: str, *, timeout: float = 10.0
) -> dict[str, Any] | None:
    """GET /api/public/traces/{id}; None while the trace is not (yet) there."""
    response = httpx.get(
        f"{base_url.rstrip('/')}/api/public/traces/{trace_id}",
        auth=(public_key, secret_key),
        timeout=timeout,
    )
    if response.status_code == 404:
        return None
    response.raise_for_status()
    trace: dict[str, Any] = response.json()
    return trace


def verify(
    base_url: str, public_key: str, secret_key: str, trace_id: str, *, wait: float = 30.0
) -> Verdict:
    """Judge the trace, re-reading it while ingestion may still be catching up."""
    deadline = time.monotonic() + wait
    while True:
        trace = fetch_trace(base_url, public_key, secret_key, trace_id)
        verdict = (
            judge(trace)
            if trace is not None
            else Verdict(trace_id, [], [Check("trace found", False, "404")])
        )
        if verdict.ok or time.monotonic() >= deadline:
            return verdict
        time.sleep(1.0)


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
            prompt = f"  prompt={node['promptName']!r} v{node.get('promptVersion')}"
        parent = node.get("parentObservationId")
        missing = "  (parent MISSING: " + str(parent) + ")" if parent and parent not in ids else ""
        label = f"{node.get('name')} [{node.get('type')}] id={node['id']}"
        lines.append(f"{'  ' * depth}- {label}{prompt}{missing}")
        for child in children.get(node["id"], []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return "\n".join(lines)
