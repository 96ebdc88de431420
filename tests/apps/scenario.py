"""The app users already have, in every variant the bridge must serve.

Run by the end-to-end tests as its own process, from the client tier's environment, either
under ``opentelemetry-instrument`` (SCENARIO_INSTRUMENT=launcher) or plainly with
``otel_bridge.instrument()`` first (SCENARIO_INSTRUMENT=call). Prints one JSON line per
``run-test`` span so the test can find each caller's trace among what was exported.

SCENARIO_PATH   langfuse_openai | propagate_attributes | use_prompt
SCENARIO_CALL   sync | async | stream | astream
SCENARIO_PROMPTS        comma-separated prompt names, used one after the other (default test-prompt)
SCENARIO_CONCURRENCY    N > 1: N concurrent async traces, prompts assigned round-robin
SCENARIO_OTHER_URL      a non-gateway origin called inside the same context (leak check)
SCENARIO_EXTRA_BODY     JSON merged into extra_body (the old hand-built metadata)
SCENARIO_REPEAT         run each prompt's sync/async scenario N times in a row (default 1)
SCENARIO_SHAPE          span (default): `run-test` is a start_as_current_observation span and
                        the clients get SCENARIO_BASE_URL; observe: the shape platform guides
                        teach, `@observe` around a `langfuse.openai` call (prompt passed as
                        langfuse_prompt), with the client built with no base_url unless
                        SCENARIO_BASE_URL is set, so OPENAI_BASE_URL names the gateway

Runs on langfuse 3, 4 and 5 and the OpenAI SDK 1, 2 and 3 (httpx2 is used where installed).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

if os.environ.get("SCENARIO_INSTRUMENT") == "call":
    import otel_bridge

    otel_bridge.instrument()

import httpx
from langfuse import get_client, observe

try:  # the OpenAI SDK 3's HTTP client; SDK 1 and 2 send through httpx
    import httpx2
except ImportError:
    httpx2 = None

SHAPE = os.environ.get("SCENARIO_SHAPE", "span")
PATH = os.environ.get("SCENARIO_PATH", "langfuse_openai")
CALL = os.environ.get("SCENARIO_CALL", "sync")
PROMPTS = os.environ.get("SCENARIO_PROMPTS", "test-prompt").split(",")
CONCURRENCY = int(os.environ.get("SCENARIO_CONCURRENCY", "1"))
OTHER_URL = os.environ.get("SCENARIO_OTHER_URL")
# May name the caller's own ids as {trace_id} and {span_id}, as the hand-built workaround did.
EXTRA_BODY = os.environ.get("SCENARIO_EXTRA_BODY")
BASE_URL = os.environ.get("SCENARIO_BASE_URL")
API_KEY = os.environ.get("SCENARIO_API_KEY")
MODEL = os.environ.get("SCENARIO_MODEL", "llama3.2:1b")
REPEAT = int(os.environ.get("SCENARIO_REPEAT", "1"))

if PATH == "langfuse_openai":
    from langfuse.openai import openai
else:
    import openai

langfuse = get_client()
# The observe shape names its gateway the way platform guides teach: OPENAI_BASE_URL and
# OPENAI_API_KEY in the environment, nothing in the code.
_client_args = {"base_url": BASE_URL} if BASE_URL else {}
if API_KEY:
    _client_args["api_key"] = API_KEY
sync_client = openai.OpenAI(max_retries=0, **_client_args)
async_client = openai.AsyncOpenAI(max_retries=0, **_client_args)


def request_kwargs(
    prompt: object, messages: list[dict[str, str]], span: object
) -> dict[str, object]:
    kwargs: dict[str, object] = {
        "model": MODEL,
        "messages": messages,
        "stream": CALL in ("stream", "astream"),
    }
    if PATH == "langfuse_openai":
        kwargs.update(name="llm-response", langfuse_prompt=prompt)
    if EXTRA_BODY is not None:
        body = EXTRA_BODY.replace("{trace_id}", span.trace_id).replace("{span_id}", span.id)
        kwargs["extra_body"] = json.loads(body)
    return kwargs


def prompt_scope(prompt: object) -> object:
    if PATH == "propagate_attributes":
        # langfuse >= 4.14; langfuse 3's propagate_attributes has no prompt.
        from langfuse import propagate_attributes

        return propagate_attributes(prompt=prompt, as_baggage=True)
    if PATH == "use_prompt":
        import otel_bridge

        return otel_bridge.use_prompt(prompt)
    import contextlib

    return contextlib.nullcontext()


class _Ids:
    """The current observation's ids, as the `@observe` shape sees them."""

    def __init__(self) -> None:
        self.trace_id = langfuse.get_current_trace_id()
        self.id = langfuse.get_current_observation_id()


def report(span: object, prompt: object, call_seconds: float) -> None:
    print(
        json.dumps(
            {
                "trace_id": span.trace_id,
                "span_id": span.id,
                "prompt_name": prompt.name,
                "prompt_version": prompt.version,
                # The app's own view of the gateway call: what an export problem must not slow.
                "call_seconds": call_seconds,
            }
        ),
        flush=True,
    )


def run_sync(prompt_name: str) -> None:
    prompt = langfuse.get_prompt(prompt_name)
    messages = prompt.compile()
    with langfuse.start_as_current_observation(
        as_type="span", name="run-test", input=messages
    ) as span:
        with prompt_scope(prompt):
            started = time.perf_counter()
            response = sync_client.chat.completions.create(**request_kwargs(prompt, messages, span))
            if CALL == "stream":
                text = "".join(
                    chunk.choices[0].delta.content or "" for chunk in response if chunk.choices
                )
            else:
                text = response.choices[0].message.content
            call_seconds = time.perf_counter() - started
            if OTHER_URL:
                httpx.get(OTHER_URL)
                if httpx2 is not None:
                    httpx2.get(OTHER_URL)
        span.update(output=text)
        report(span, prompt, call_seconds)


@observe(name="run-test")
def run_observed(prompt_name: str) -> str:
    prompt = langfuse.get_prompt(prompt_name)
    messages = prompt.compile()
    started = time.perf_counter()
    response = sync_client.chat.completions.create(**request_kwargs(prompt, messages, None))
    if CALL == "stream":
        text = "".join(c.choices[0].delta.content or "" for c in response if c.choices)
    else:
        text = response.choices[0].message.content
    report(_Ids(), prompt, time.perf_counter() - started)
    return text


@observe(name="run-test")
async def arun_observed(prompt_name: str) -> str:
    prompt = langfuse.get_prompt(prompt_name)
    messages = prompt.compile()
    started = time.perf_counter()
    response = await async_client.chat.completions.create(**request_kwargs(prompt, messages, None))
    if CALL == "astream":
        text = "".join([c.choices[0].delta.content or "" async for c in response if c.choices])
    else:
        text = response.choices[0].message.content
    report(_Ids(), prompt, time.perf_counter() - started)
    return text


async def run_async(prompt_name: str) -> None:
    prompt = langfuse.get_prompt(prompt_name)
    messages = prompt.compile()
    with langfuse.start_as_current_observation(
        as_type="span", name="run-test", input=messages
    ) as span:
        with prompt_scope(prompt):
            started = time.perf_counter()
            response = await async_client.chat.completions.create(
                **request_kwargs(prompt, messages, span)
            )
            if CALL == "astream":
                text = "".join(
                    [c.choices[0].delta.content or "" async for c in response if c.choices]
                )
            else:
                text = response.choices[0].message.content
            call_seconds = time.perf_counter() - started
            if OTHER_URL:
                async with httpx.AsyncClient() as other:
                    await other.get(OTHER_URL)
                if httpx2 is not None:
                    async with httpx2.AsyncClient() as other2:
                        await other2.get(OTHER_URL)
        span.update(output=text)
        report(span, prompt, call_seconds)


async def run_concurrent() -> None:
    names = [PROMPTS[i % len(PROMPTS)] for i in range(CONCURRENCY)]
    await asyncio.gather(*(run_async(name) for name in names))


async def run_sequential() -> None:
    # One event loop for all calls: the async client's connection pool is bound to it.
    for name in PROMPTS:
        for _ in range(REPEAT):
            await run_async(name)


def main() -> int:
    if SHAPE == "observe":
        for name in PROMPTS:
            if CALL in ("sync", "stream"):
                run_observed(name)
            else:
                asyncio.run(arun_observed(name))
    elif CONCURRENCY > 1:
        asyncio.run(run_concurrent())
    else:
        if CALL in ("sync", "stream"):
            for name in PROMPTS:
                for _ in range(REPEAT):
                    run_sync(name)
        else:
            asyncio.run(run_sequential())
    langfuse.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
