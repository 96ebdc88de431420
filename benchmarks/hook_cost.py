"""The proxy hook's own cost per request, in microseconds (run with the proxy tier's Python).

Calls ``otel_bridge.litellm.bridge`` on request dicts shaped like the ones LiteLLM 1.106
hands to ``async_pre_call_hook`` (captured from a real proxy: ``metadata`` with ~50 keys and
a copy of the headers, ``proxy_server_request`` with the lower-cased headers, the logging
object whose ``litellm_params["metadata"]`` is the same dict, a real ``UserAPIKeyAuth``).
Every call gets fresh metadata dicts, built the same way in the baseline loop, so the figure
is the hook's work alone. Measured paths:

* ``bridged``        ``traceparent`` + prompt ``baggage``: writes the three metadata keys;
* ``traceparent``    a ``traceparent`` and no baggage;
* ``no context``     neither header (what every request of an unbridged client looks like);
* ``malformed``      an invalid ``traceparent`` and a bad baggage member (rejection path).

Each is timed through ``bridge.bridge_request(data, user_api_key_dict)`` and through the
whole ``async_pre_call_hook`` coroutine, against an empty LiteLLM ``CustomLogger`` hook.

    .venv-proxy/bin/python benchmarks/hook_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network here
os.environ.setdefault("LITELLM_TELEMETRY", "False")

from _common import (
    CHAT_BODY,
    MODEL,
    bridge_baggage,
    command_line,
    machine_summary,
    median,
    ratio_line,
)

TARGET_US = 20.0
LITELLM_OVERHEAD_US = 3000.0  # LiteLLM's published proxy overhead, for scale
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def request_headers(context: dict[str, str]) -> dict[str, str]:
    """Headers as LiteLLM stores them for a request from the OpenAI Python SDK."""
    return {
        "host": "litellm.internal:4000",
        "accept-encoding": "gzip, deflate",
        "connection": "keep-alive",
        "accept": "application/json",
        "content-type": "application/json",
        "user-agent": "OpenAI/Python 3.54.0",
        "x-stainless-lang": "python",
        "x-stainless-package-version": "3.54.0",
        "x-stainless-os": "Linux",
        "x-stainless-arch": "x64",
        "x-stainless-runtime": "CPython",
        "x-stainless-runtime-version": "3.11.2",
        "x-stainless-async": "false",
        "x-stainless-retry-count": "0",
        "x-stainless-read-timeout": "600",
        **context,
        "content-length": str(len(CHAT_BODY)),
    }


# The keys LiteLLM 1.106 has put in data["metadata"] by the time pre-call hooks run.
_METADATA_TEMPLATE: dict[str, Any] = {
    "used_client_oauth_token": False,
    "user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
    "user_api_key_alias": "app-backend",
    "user_api_key_spend": 0.0,
    **{
        key: None
        for key in [
            "user_api_key_max_budget",
            "user_api_key_user_spend",
            "user_api_key_user_max_budget",
            "user_api_key_team_spend",
            "user_api_key_team_max_budget",
            "user_api_key_project_id",
            "user_api_key_project_alias",
            "user_api_key_org_id",
            "user_api_key_org_alias",
            "user_api_key_end_user_id",
            "user_api_key_user_email",
            "user_api_key_budget_reset_at",
            "agent_id",
            "actor_agent_id",
            "target_agent_id",
            "billing_agent_id",
            "agent_execution_mode",
            "verified_human_user_id",
            "user_api_end_user_max_budget",
            "global_max_parallel_requests",
            "user_api_key_team_model_max_budget",
            "user_api_key_end_user_model_max_budget",
            "user_api_key_user_model_max_budget",
            "user_api_key_team_metadata",
            "user_api_key_object_permission_id",
            "user_api_key_team_object_permission_id",
            "litellm_parent_otel_span",
        ]
    },
    "user_api_key_team_id": "team-research",
    "user_api_key_team_alias": "research",
    "user_api_key_user_id": "default_user_id",
    "user_api_key_request_route": "/chat/completions",
    "user_api_key_auth_metadata": {},
    "user_api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
    "litellm_api_version": "1.106.2",
    "inherited_tags": (),
    "user_api_key_model_max_budget": {},
    "user_api_key_metadata": {},
    "endpoint": "http://litellm.internal:4000/chat/completions",
    "llm_api_timing_windows": (),
    "requester_ip_address": "10.0.0.7",
    "user_agent": "OpenAI/Python 3.54.0",
    "caller_tags": (),
    "litellm_roi_estimator": False,
    "queue_time_seconds": 0.0004,
}
_MESSAGES = [{"role": "user", "content": "Say hello."}]


class _LoggingObject:
    """Stands in for LiteLLM's ``Logging``: the hook reads only ``litellm_params``."""

    __slots__ = ("litellm_params",)

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.litellm_params = {"metadata": metadata, "litellm_metadata": None, "api_base": None}


def data_factory(headers: dict[str, str]) -> Callable[[], dict[str, Any]]:
    """Builds a fresh request dict per call; shared parts are the ones the hook only reads."""
    raw_headers = {**headers, "authorization": "Bearer sk-app-0123456789"}
    requester = {"headers": headers, "used_client_oauth_token": False}
    body = json.loads(CHAT_BODY)
    template = _METADATA_TEMPLATE

    def make() -> dict[str, Any]:
        metadata = {**template, "headers": headers, "requester_metadata": requester}
        return {
            "model": MODEL,
            "messages": _MESSAGES,
            "metadata": metadata,
            "proxy_server_request": {
                "url": "http://litellm.internal:4000/chat/completions",
                "method": "POST",
                "headers": headers,
                "body": body,
            },
            "secret_fields": {"raw_headers": raw_headers},
            "litellm_call_id": "86c3d555-3aa5-4368-8475-5e77c92f23f2",
            "litellm_logging_obj": _LoggingObject(metadata),
        }

    return make


def drive(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends (the hook awaits nothing) without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        return stop.value
    coroutine.close()
    raise RuntimeError("the hook suspended: it cannot be timed this way")


def time_loop(body: Callable[[int], None], number: int) -> float:
    """CPU time of this thread per call, in us: preemption by other processes is not counted,
    which matters on a 2-core machine shared with other work."""
    gc.collect()
    gc.disable()  # as timeit does: a collection in one loop and not the other is only noise
    try:
        started = time.thread_time_ns()
        body(number)
        return (time.thread_time_ns() - started) / number / 1000
    finally:
        gc.enable()


def measure(
    make: Callable[[], dict[str, Any]],
    user: Any,
    bridge: Any,
    noop_logger: Any,
    number: int,
    repeats: int,
) -> dict[str, float]:
    """(loop with the hook) - (the same loop with a no-op), over interleaved repeats."""
    bridge_request = bridge.bridge_request
    bridge_hook = bridge.async_pre_call_hook
    noop_hook = noop_logger.async_pre_call_hook

    def noop_request(data: dict[str, Any], user: Any) -> None:
        return None

    def direct(n: int) -> None:
        for _ in range(n):
            bridge_request(make(), user)

    def direct_base(n: int) -> None:
        for _ in range(n):
            noop_request(make(), user)

    def hook(n: int) -> None:
        for _ in range(n):
            drive(bridge_hook(user, None, make(), "acompletion"))

    def hook_base(n: int) -> None:
        for _ in range(n):
            drive(noop_hook(user, None, make(), "acompletion"))

    loops = {
        "direct": direct,
        "direct_base": direct_base,
        "direct_base_2": direct_base,
        "hook": hook,
        "hook_base": hook_base,
    }
    samples: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for index in range(repeats):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            samples[name].append(time_loop(loops[name], number))

    def cost(name: str, base: str, pick: Callable[[list[float]], float]) -> float:
        return pick(samples[name]) - pick(samples[base])

    return {
        "bridge_request_us": cost("direct", "direct_base", median),
        "bridge_request_min_us": cost("direct", "direct_base", min),
        "async_pre_call_hook_us": cost("hook", "hook_base", median),
        "async_pre_call_hook_min_us": cost("hook", "hook_base", min),
        "noise_us": cost("direct_base_2", "direct_base", median),
        "baseline_us": median(samples["direct_base"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short run: checks it works")
    parser.add_argument("--number", type=int, help="calls per timed loop (default 2000)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 30)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    number = args.number or (300 if args.quick else 2000)
    repeats = args.repeats or (5 if args.quick else 30)

    os.environ.pop("OTEL_BRIDGE_DISABLED", None)
    os.environ.pop("OTEL_BRIDGE_TRUSTED_CALLERS", None)
    import logging

    from litellm.integrations.custom_logger import CustomLogger
    from litellm.proxy._types import UserAPIKeyAuth

    from otel_bridge.litellm import bridge  # the instance config.yaml names

    logging.getLogger("otel_bridge.proxy").setLevel(logging.ERROR)  # the rejection path logs
    print(f"$ {command_line()}\n{machine_summary()}", flush=True)
    user = UserAPIKeyAuth(
        token="88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        key_alias="app-backend",
        team_id="team-research",
        team_alias="research",
        user_id="default_user_id",
    )
    traceparent = f"00-{TRACE_ID}-{SPAN_ID}-01"
    cases = {
        "bridged": {"traceparent": traceparent, "baggage": bridge_baggage()},
        "traceparent": {"traceparent": traceparent},
        "no context": {},
        "malformed": {"traceparent": "00-xyz-123-01", "baggage": "langfuse_prompt_name"},
    }

    # The measured call must do the real work: check its effect once per case.
    effect = data_factory(request_headers(cases["bridged"]))()
    bridge.bridge_request(effect, user)
    metadata = effect["metadata"]
    assert metadata["existing_trace_id"] == TRACE_ID, metadata
    assert metadata["parent_observation_id"] == SPAN_ID, metadata
    assert metadata["prompt"]["name"] == "bench-prompt", metadata
    untouched = data_factory(request_headers(cases["no context"]))()
    bridge.bridge_request(untouched, user)
    assert "existing_trace_id" not in untouched["metadata"]

    results: dict[str, dict[str, float]] = {}
    gc.collect()
    gc.freeze()  # what is alive now stays: per-loop collections only see new objects
    print(
        f"\n{number} calls per loop, {repeats} interleaved repeats; CPU us per call, "
        "median (min) of the repeats, minus the same loop without the hook"
    )
    print(f"  {'case':<12} {'bridge_request':>16} {'async_pre_call_hook':>20} {'A vs A noise':>13}")
    for name, context in cases.items():
        make = data_factory(request_headers(context))
        r = measure(make, user, bridge, CustomLogger(), number, repeats)
        results[name] = r
        print(
            f"  {name:<12} {r['bridge_request_us']:8.2f} ({r['bridge_request_min_us']:5.2f}) "
            f"{r['async_pre_call_hook_us']:8.2f} ({r['async_pre_call_hook_min_us']:5.2f}) "
            f"{r['noise_us']:+13.2f}",
            flush=True,
        )
    bridged = results["bridged"]
    cost = max(bridged["bridge_request_us"], bridged["async_pre_call_hook_us"])
    print(
        f"\n  building one request dict (the part both loops share): "
        f"{bridged['baseline_us']:.2f} us"
    )
    print(
        f"  bridged request: {cost:.1f} us, "
        f"{cost / LITELLM_OVERHEAD_US:.2%} of LiteLLM's published ~3 ms proxy overhead; "
        f"target <= {TARGET_US:.0f} us: {'met' if cost <= TARGET_US else 'NOT met'}"
    )
    print(
        ratio_line(
            "hook",
            bridged_us=bridged["bridge_request_us"],
            hook_us=bridged["async_pre_call_hook_us"],
            traceparent_us=results["traceparent"]["bridge_request_us"],
            no_context_us=results["no context"]["bridge_request_us"],
            malformed_us=results["malformed"]["bridge_request_us"],
            noise_us=bridged["noise_us"],
            share_of_3ms=cost / LITELLM_OVERHEAD_US,
            target_us=TARGET_US,
        )
    )
    print(f"  rejections counted while timing: {bridge.rejections.snapshot()}")
    if args.json:
        args.json.write_text(json.dumps({"command": command_line(), "cases": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
