"""The otel-bridge demo scenario: one chat completion through the LiteLLM proxy, traced by Langfuse.

Run under the bridge (``otel-bridge demo`` and docker/app/Dockerfile do this)::

    OTEL_PYTHON_DISTRO=otel_bridge OTEL_PYTHON_CONFIGURATOR=otel_bridge \\
    OTEL_BRIDGE_GATEWAYS=http://litellm:4000 opentelemetry-instrument python -m otel_bridge.demo.app

Environment: LITELLM_BASE_URL (default http://litellm:4000), LITELLM_API_KEY (a LiteLLM key;
the compose demo passes the master key), LITELLM_MODEL (default llama3.2:1b),
LANGFUSE_PUBLIC_KEY / LANGFUSE_SECRET_KEY / LANGFUSE_BASE_URL for the Langfuse SDK, and
SEED_TEST_PROMPT (default true): create the chat prompt "test-prompt" when the project has none,
so a fresh self-hosted Langfuse runs the scenario unchanged, and OTEL_BRIDGE_DEMO_PROMPT_VERSION:
use this version of the prompt (default: the production one). A version the project lacks is
used anyway, from a local copy, as by an app pinned to a version nobody created in this
project: the trace then shows how Langfuse treats a link to a missing prompt.

Prints ``trace <id>: <answer>`` and ``prompt <name> version <n>``.
"""

from __future__ import annotations

import os

from langfuse import Langfuse, get_client
from langfuse.api import ChatMessage, NotFoundError, Prompt_Chat
from langfuse.model import ChatMessageDict, ChatPromptClient

# langfuse.openai re-exports the patched openai module without declaring it.
from langfuse.openai import openai  # type: ignore[attr-defined]

BASE_URL = os.environ.get("LITELLM_BASE_URL", "http://litellm:4000")
API_KEY = os.environ.get("LITELLM_API_KEY", "")
MODEL = os.environ.get("LITELLM_MODEL", "llama3.2:1b")
PROMPT_NAME = "test-prompt"
PROMPT_VERSION = os.environ.get("OTEL_BRIDGE_DEMO_PROMPT_VERSION")
SCENARIO_MESSAGES: list[ChatMessageDict] = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Say hello in one short sentence."},
]


def seed_prompt_if_missing(langfuse: Langfuse) -> None:
    """Create the scenario's prompt once, labelled `production` so get_prompt() serves it."""
    if os.environ.get("SEED_TEST_PROMPT", "true").strip().lower() not in {"1", "true", "yes", "on"}:
        return
    try:
        langfuse.get_prompt(PROMPT_NAME, max_retries=0)
    except NotFoundError:
        langfuse.create_prompt(
            name=PROMPT_NAME,
            type="chat",
            prompt=list(SCENARIO_MESSAGES),
            labels=["production"],
            commit_message="seeded by the otel-bridge demo app",
        )


def scenario_prompt(langfuse: Langfuse) -> ChatPromptClient:
    """The prompt the scenario uses: the production one, or the pinned version."""
    if PROMPT_VERSION is None:
        return langfuse.get_prompt(PROMPT_NAME, type="chat")
    version = int(PROMPT_VERSION)
    try:
        return langfuse.get_prompt(PROMPT_NAME, version=version, type="chat", max_retries=0)
    except NotFoundError:
        print(f"note: {PROMPT_NAME!r} version {version} is not in this project; using a local copy")
        local = Prompt_Chat(
            name=PROMPT_NAME,
            version=version,
            prompt=[ChatMessage(role=m["role"], content=m["content"]) for m in SCENARIO_MESSAGES],
            config={},
            labels=[],
            tags=[],
        )
        return ChatPromptClient(local)


def main() -> None:
    client = openai.OpenAI(api_key=API_KEY, base_url=BASE_URL)
    langfuse = get_client()
    seed_prompt_if_missing(langfuse)

    # --- the scenario, as written ---------------------------------------------------------
    prompt = scenario_prompt(langfuse)
    messages = prompt.compile()
    with langfuse.start_as_current_observation(
        as_type="span", name="run-test", input=messages
    ) as span:
        # name= and langfuse_prompt= belong to the Langfuse wrapper, not to OpenAI's types.
        response = client.chat.completions.create(  # type: ignore[call-overload]
            model=MODEL,
            stream=False,
            messages=messages,
            name="llm-response",
            langfuse_prompt=prompt,
        )
        span.update(output=response.choices[0].message.content)
    langfuse.flush()
    # ---------------------------------------------------------------------------------------

    print(f"trace {span.trace_id}: {response.choices[0].message.content!r}")
    print(f"prompt {prompt.name} version {prompt.version}")


if __name__ == "__main__":
    main()
