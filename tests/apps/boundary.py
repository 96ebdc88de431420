"""The client tier near its boundary: every way a request may leave the prompt's context.

Run by tests/test_client_boundary.py as its own process (OpenTelemetry's global tracer
provider and propagator can be set once per process). Instruments with
``otel_bridge.instrument(gateways=[BOUNDARY_GATEWAY])``, then, inside one prompt context,
sends requests with httpx and httpx2, sync and async, directly, through redirects, from
threads (with and without a copied context) and from asyncio tasks, to the gateway origin
and to another origin. Every request names its case in the query string; one JSON line per
case says whether the gateway must have received the prompt for it.

BOUNDARY_GATEWAY   base URL of the gateway capture server (the only configured gateway)
BOUNDARY_OTHER     base URL of a capture server on another port (another origin)
BOUNDARY_MODE      use_prompt | propagate_attributes | generation
BOUNDARY_TENANT    if set, also carry non-Langfuse baggage ``tenant=<value>``
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import otel_bridge

GATEWAY = os.environ["BOUNDARY_GATEWAY"].rstrip("/")
OTHER = os.environ["BOUNDARY_OTHER"].rstrip("/")
MODE = os.environ["BOUNDARY_MODE"]
TENANT = os.environ.get("BOUNDARY_TENANT")
PROMPT_NAME = os.environ.get("BOUNDARY_PROMPT", "test-prompt")

otel_bridge.instrument(gateways=[GATEWAY])

import httpx  # noqa: E402
import httpx2  # noqa: E402
from langfuse import get_client, propagate_attributes  # noqa: E402
from opentelemetry import baggage, context, trace  # noqa: E402

LIBS: dict[str, Any] = {"httpx": httpx, "httpx2": httpx2}
cases: list[dict[str, Any]] = []


def case(name: str, gateway_prompt: bool | None) -> str:
    """Register a case; ``gateway_prompt``: True must carry it, None may or may not."""
    cases.append({"case": name, "gateway_prompt": gateway_prompt})
    return name


def url(base: str, path: str, name: str, **query: str) -> str:
    extra = "".join(f"&{k}={quote(v, safe='')}" for k, v in query.items())
    return f"{base}{path}?case={quote(name, safe='')}{extra}"


def redirect_url(name: str, code: str, start: str, target: str) -> str:
    return url(start, "/redirect", name, code=code, to=url(target, "/landing", name))


# --------------------------------------------------------------------------------------- sync


def sync_calls(lib: str, label: str, expect: bool | None) -> None:
    module = LIBS[lib]
    with module.Client(follow_redirects=True, timeout=10) as client:
        client.get(url(GATEWAY, "/gw", case(f"{lib}-{label}-gateway", expect)))
        client.get(url(OTHER, "/other", case(f"{lib}-{label}-other", None)))
        name = case(f"{lib}-{label}-redirect302", expect)
        client.get(redirect_url(name, "302", GATEWAY, OTHER))
        name = case(f"{lib}-{label}-redirect307", expect)
        client.post(redirect_url(name, "307", GATEWAY, OTHER), content=b"{}")
        name = case(f"{lib}-{label}-into-gateway", None)
        client.get(redirect_url(name, "302", OTHER, GATEWAY))
    # Module-level helpers (a client per call).
    module.get(url(GATEWAY, "/gw", case(f"{lib}-{label}-module-gateway", expect)))
    module.get(url(OTHER, "/other", case(f"{lib}-{label}-module-other", None)))
    name = case(f"{lib}-{label}-module-redirect", expect)
    module.get(redirect_url(name, "302", GATEWAY, OTHER), follow_redirects=True)


async def async_calls(lib: str, label: str, expect: bool | None) -> None:
    module = LIBS[lib]
    async with module.AsyncClient(follow_redirects=True, timeout=10) as client:
        await client.get(url(GATEWAY, "/gw", case(f"{lib}-{label}-gateway", expect)))
        await client.get(url(OTHER, "/other", case(f"{lib}-{label}-other", None)))
        name = case(f"{lib}-{label}-redirect302", expect)
        await client.get(redirect_url(name, "302", GATEWAY, OTHER))
        name = case(f"{lib}-{label}-redirect307", expect)
        await client.post(redirect_url(name, "307", GATEWAY, OTHER), content=b"{}")


def in_threads(lib: str) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        # Without a copied context the thread sees none of the caller's context.
        pool.submit(sync_calls, lib, "thread-bare", None).result()
        ctx = contextvars.copy_context()
        pool.submit(ctx.run, sync_calls, lib, "thread-copied", True).result()


async def in_tasks(lib: str) -> None:
    await asyncio.create_task(async_calls(lib, "task", True))
    await asyncio.gather(async_calls(lib, "gather", True))
    # asyncio.to_thread copies the context into the thread.
    await asyncio.to_thread(sync_calls, lib, "to-thread", True)


def exercise() -> None:
    for lib in LIBS:
        sync_calls(lib, "sync", True)
        in_threads(lib)
        asyncio.run(async_calls(lib, "async", True))
        asyncio.run(in_tasks(lib))


# ----------------------------------------------------------------------------- the contexts


def main() -> int:
    langfuse = get_client()
    token = None
    if TENANT:
        token = context.attach(baggage.set_baggage("tenant", TENANT))
    tracer = trace.get_tracer("boundary")
    version = 3
    with tracer.start_as_current_span("boundary-root"):
        if MODE == "use_prompt":
            with otel_bridge.use_prompt({"name": PROMPT_NAME, "version": 3}):
                exercise()
        elif MODE == "propagate_attributes":
            with propagate_attributes(
                prompt={"name": PROMPT_NAME, "version": 3},
                user_id="secret-user",
                session_id="secret-session",
                metadata={"secret": "value"},
                as_baggage=True,
            ):
                exercise()
        elif MODE == "generation":
            prompt = langfuse.get_prompt(PROMPT_NAME)
            version = prompt.version
            with langfuse.start_as_current_observation(
                as_type="generation", name="boundary-generation", prompt=prompt
            ):
                exercise()
        else:
            raise SystemExit(f"unknown BOUNDARY_MODE {MODE!r}")
    if token is not None:
        context.detach(token)
    langfuse.flush()
    print(json.dumps({"prompt": [PROMPT_NAME, version]}), flush=True)
    for item in cases:
        print(json.dumps(item), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
