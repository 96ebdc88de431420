"""``otel-bridge check``: probe a running gateway the way an instrumented app calls it.

One chat completion goes through the gateway from a child process traced by the bridge, with
the prompt linked; the trace is then read back from the user's Langfuse and every check that
fails names its cause in terms the user can act on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from otel_bridge._verify import (
    AccessDenied,
    LangfuseReader,
    Observation,
    PromptWanted,
    is_gateway_generation,
    named_prompt,
    prompt_linked,
    render_tree,
    verify,
)

PROBE_MODULE = "otel_bridge._check_probe"

HOOK_NOT_LOADED = "hook not loaded"
PARENT_DANGLES = "parent dangles"
PROMPT_UNKNOWN = "prompt unknown in this project"
BAGGAGE_STRIPPED = "baggage stripped"


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str
    cause: str | None = None  # the diagnosis' short name, for a failed check


@dataclass(frozen=True)
class ProbeResult:
    trace_id: str
    marker: str
    gateway_span_ids: Sequence[str]


class CheckError(Exception):
    """The check could not run; the message says what to change."""


def parse_prompt(value: str) -> PromptWanted:
    name, sep, version = value.rpartition(":")
    if not sep:
        return PromptWanted(value)
    if not name or not version.isdigit() or int(version) < 1:
        raise CheckError(f"--prompt {value!r}: expected NAME or NAME:VERSION (version >= 1)")
    return PromptWanted(name, int(version))


def resolve_prompt(reader: LangfuseReader, wanted: PromptWanted) -> tuple[PromptWanted, bool]:
    """The prompt version to link and whether the project has it.

    A missing version is still probed when it is given: the trace then shows what the gateway
    makes of a link to a prompt Langfuse does not have.
    """
    try:
        served = reader.get_prompt(wanted)
    except AccessDenied as denied:
        raise CheckError(str(denied)) from None
    except httpx.HTTPError as exc:
        message = f"could not read prompts from Langfuse at {reader.base_url}: {exc}"
        raise CheckError(message) from None
    if served is not None and isinstance(served.get("version"), int):
        return PromptWanted(wanted.name, int(served["version"])), True
    if wanted.version is None:
        raise CheckError(
            f"prompt {wanted} is not in this Langfuse project (no version labelled production): "
            "create it, or pass --prompt NAME:VERSION of a prompt the project has"
        )
    return wanted, False


def run_probe(
    *,
    gateway: str,
    api_key: str,
    model: str,
    prompt: PromptWanted,
    reader: LangfuseReader,
    export_filter: str | None = None,
    timeout: float = 180.0,
) -> ProbeResult:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LANGFUSE_"))}
    env.update(
        OTEL_BRIDGE_GATEWAYS=gateway,
        OTEL_SERVICE_NAME="otel-bridge-check",
        LANGFUSE_PUBLIC_KEY=reader.public_key,
        LANGFUSE_SECRET_KEY=reader.secret_key,
        LANGFUSE_BASE_URL=reader.base_url,
        OTEL_BRIDGE_CHECK_API_KEY=api_key,
        OTEL_BRIDGE_CHECK_MODEL=model,
        OTEL_BRIDGE_CHECK_PROMPT_NAME=prompt.name,
        OTEL_BRIDGE_CHECK_PROMPT_VERSION=str(prompt.version),
        PYTHONUNBUFFERED="1",
    )
    if export_filter:
        env["OTEL_BRIDGE_CHECK_EXPORT_FILTER"] = export_filter
    completed = subprocess.run(
        [sys.executable, "-m", PROBE_MODULE],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if not lines:
        hint = (
            "\n  run the check from the app tier's environment: pip install 'otel-bridge[client]'"
            if "ModuleNotFoundError" in completed.stderr
            else ""
        )
        raise CheckError(
            f"the probe failed (exit {completed.returncode}) before calling the gateway:\n"
            + "\n".join(completed.stderr.strip().splitlines()[-15:])
            + hint
        )
    result: dict[str, Any] = json.loads(lines[-1])
    if "error" in result:
        raise CheckError(
            f"the gateway at {gateway} refused the probe call: {result['error']}\n"
            "  check the gateway URL, the LiteLLM key (--api-key, LITELLM_API_KEY or "
            "OPENAI_API_KEY) and that --model names a model the gateway serves"
        )
    return ProbeResult(
        trace_id=str(result["trace_id"]),
        marker=str(result["marker"]),
        gateway_span_ids=[str(s) for s in result.get("gateway_span_ids") or []],
    )


def find_elsewhere(reader: LangfuseReader, probe: ProbeResult) -> str | None:
    """The trace id the gateway logged the probe's generation under, if not the app's."""
    # v2 pages newest first: the probe's generation is among the project's latest ones unless
    # more than a page of generations started since (a busy project: then it is not named).
    params: dict[str, str | int] = {"type": "GENERATION", "fields": "core,io", "limit": 200}
    try:
        response = reader.get("/api/public/v2/observations", params)
        response.raise_for_status()
        rows = response.json().get("data") or []
    except (AccessDenied, httpx.HTTPError, ValueError):
        return None
    for row in rows:
        if probe.marker in json.dumps(row.get("input")) and row.get("traceId") != probe.trace_id:
            return str(row.get("traceId"))
    return None


def diagnose(
    observations: Sequence[Observation],
    probe: ProbeResult,
    prompt: PromptWanted,
    prompt_known: bool,
    elsewhere: Callable[[], str | None] = lambda: None,
) -> list[Finding]:
    """What the trace says about the deployment, each failure with its cause and its fix."""
    by_id = {o["id"]: o for o in observations}
    gateway = [o for o in observations if is_gateway_generation(o, by_id)]
    if not gateway:
        other = elsewhere()
        if other is not None:
            return [
                Finding(
                    "gateway generation in the app's trace",
                    False,
                    f"{HOOK_NOT_LOADED}: the gateway logged the probe's generation in another "
                    f"trace ({other}), so it did not take the app's traceparent. Load the bridge "
                    "hook in the proxy: litellm_settings.callbacks: "
                    '["otel_bridge.litellm.bridge"], with otel-bridge[proxy] installed in the '
                    "proxy's environment and OTEL_BRIDGE_DISABLED unset; also make sure nothing "
                    "between the app and the gateway drops the traceparent header",
                    HOOK_NOT_LOADED,
                )
            ]
        return [
            Finding(
                "gateway generation in the app's trace",
                False,
                "the gateway's generation did not arrive in this Langfuse project: give the "
                "gateway the same LANGFUSE_PUBLIC_KEY/LANGFUSE_SECRET_KEY/LANGFUSE_HOST as the "
                'app and a Langfuse callback (success_callback: ["langfuse"] or '
                'callbacks: ["langfuse_otel"]), or wait longer (--wait)',
            )
        ]
    generation = gateway[0]
    findings = [Finding("gateway generation in the app's trace", True, str(generation.get("name")))]
    parent = generation.get("parentObservationId")
    placed = False
    if not parent:
        findings.append(
            Finding(
                "gateway generation under the app's call",
                False,
                f"{HOOK_NOT_LOADED}: the gateway's generation is a root of its own in the app's "
                "trace (LiteLLM took the trace id from traceparent but no parent). Load the "
                'bridge hook in the proxy: litellm_settings.callbacks: ["otel_bridge.litellm.'
                "bridge\"], with otel-bridge[proxy] installed in the proxy's environment and "
                "OTEL_BRIDGE_DISABLED unset",
                HOOK_NOT_LOADED,
            )
        )
    elif parent not in by_id:
        placed = True
        if parent in probe.gateway_span_ids:
            detail = (
                f"{PARENT_DANGLES}: the gateway's generation hangs below the app's HTTP client "
                f"span {parent}, which never reached Langfuse: the app's export filter drops "
                "it. Build the app's Langfuse client with should_export_span="
                "otel_bridge.langfuse_export_filter (or combine your filter with it), or create "
                "no Langfuse client before otel_bridge.instrument() so the bridge builds it"
            )
        else:
            detail = (
                f"{PARENT_DANGLES}: the gateway's generation names parent {parent}, which is not "
                "the app's HTTP call and is not in the trace: something between the app and the "
                "gateway rewrites traceparent"
            )
        findings.append(
            Finding("gateway generation under the app's call", False, detail, PARENT_DANGLES)
        )
    else:
        placed = True
        findings.append(
            Finding(
                "gateway generation under the app's call",
                True,
                f"parent {by_id[parent].get('name')} ({parent})",
            )
        )
    findings.append(_prompt_finding(generation, prompt, prompt_known, placed))
    return findings


def _prompt_finding(
    generation: Observation, prompt: PromptWanted, prompt_known: bool, placed: bool
) -> Finding:
    check = "prompt linked on the gateway generation"
    if prompt_linked(generation):
        return Finding(check, True, f"prompt {named_prompt(generation)}")
    named = named_prompt(generation)
    if named is not None and prompt_known and named == prompt:
        return Finding(
            check,
            False,
            f"prompt {prompt} is named on the gateway generation and is in this project now, "
            "but Langfuse linked no promptId: it was created after the generation arrived; "
            "run the check again",
        )
    if named is not None or not prompt_known:
        missing = named or prompt
        return Finding(
            check,
            False,
            f"{PROMPT_UNKNOWN}: prompt {missing} is not in the Langfuse project the gateway logs "
            "to, so Langfuse links no prompt (promptId is null). Create that prompt version in "
            "this project, or have the app use one that exists",
            PROMPT_UNKNOWN,
        )
    if not placed:
        return Finding(
            check, False, "no prompt on the gateway generation: follows from the hook not loading"
        )
    return Finding(
        check,
        False,
        f"{BAGGAGE_STRIPPED}: the gateway placed its generation from the app's traceparent, but "
        f"no prompt arrived although prompt {prompt} exists in this project: something between "
        "the app and the gateway (a proxy, load balancer or API gateway) drops the W3C "
        "`baggage` header. Let it forward `baggage` along with `traceparent`",
        BAGGAGE_STRIPPED,
    )


def check(
    *,
    gateway: str,
    api_key: str,
    model: str,
    prompt: PromptWanted,
    reader: LangfuseReader,
    wait: float,
    export_filter: str | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """Run the whole check; 0 when every check passes, 1 when one fails, 2 when it cannot run."""
    try:
        prompt, prompt_known = resolve_prompt(reader, prompt)
        if prompt_known:
            out(f"prompt {prompt} found in Langfuse at {reader.base_url}")
        else:
            out(f"prompt {prompt} is NOT in Langfuse at {reader.base_url}; probing with it anyway")
        out(f"sending one call to {gateway} (model {model!r}) as an instrumented app ...")
        probe = run_probe(
            gateway=gateway,
            api_key=api_key,
            model=model,
            prompt=prompt,
            reader=reader,
            export_filter=export_filter,
        )
    except CheckError as exc:
        out(f"otel-bridge check: {exc}")
        return 2
    until = (datetime.now(UTC) + timedelta(seconds=wait)).strftime("%H:%M:%S UTC")
    out(
        f"reading trace {probe.trace_id} back from Langfuse; waiting up to {wait:.0f}s "
        f"(until {until}) for the gateway's generation"
    )
    verdict = verify(reader, probe.trace_id, wait=wait, expected_prompt=prompt)
    missing = [c for c in verdict.checks if c.name == "trace found"]
    if missing:
        out(f"  [FAIL] trace read: {missing[0].detail}")
        out("CHECK FAILED")
        return 1
    findings = diagnose(
        verdict.observations,
        probe,
        prompt,
        prompt_known,
        elsewhere=lambda: find_elsewhere(reader, probe),
    )
    out(f"\ntrace {probe.trace_id}")
    out(render_tree(verdict.observations))
    out("")
    for finding in findings:
        out(f"  [{'ok' if finding.ok else 'FAIL'}] {finding.check}: {finding.detail}")
    failed = [f for f in findings if not f.ok]
    if failed:
        causes = ", ".join(dict.fromkeys(f.cause for f in failed if f.cause))
        out("CHECK FAILED" + (f": {causes}" if causes else ""))
        return 1
    out(f"CHECK PASSED: the gateway at {gateway} joins the app's trace and links prompt {prompt}")
    return 0


def env_default(*names: str, environ: Mapping[str, str] = os.environ) -> str | None:
    for name in names:
        if environ.get(name):
            return environ[name]
    return None
