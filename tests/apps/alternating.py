"""One trace, one prompt, several requests spread round-robin over gateway replicas.

Run by tests/test_scale_out.py as its own process from the client tier's environment, under
``opentelemetry-instrument`` with the bridge's distro (like tests/apps/scenario.py). Inside one
``run-test`` span and one ``otel_bridge.use_prompt`` scope it sends ALTERNATING_REQUESTS chat
completions, the i-th to the (i mod n)-th base URL of ALTERNATING_BASE_URLS, then prints one
JSON line: the caller's trace and span ids, the prompt, and the base URL of each request in
order.

ALTERNATING_BASE_URLS   comma-separated gateway base URLs (all listed in OTEL_BRIDGE_GATEWAYS)
ALTERNATING_REQUESTS    how many requests (default 6)
SCENARIO_API_KEY        the gateway's key; SCENARIO_MODEL the model name
"""

from __future__ import annotations

import json
import os
import sys

import openai
from langfuse import get_client

import otel_bridge

BASE_URLS = [url.strip() for url in os.environ["ALTERNATING_BASE_URLS"].split(",") if url.strip()]
REQUESTS = int(os.environ.get("ALTERNATING_REQUESTS", "6"))
API_KEY = os.environ["SCENARIO_API_KEY"]
MODEL = os.environ.get("SCENARIO_MODEL", "llama3.2:1b")
PROMPT_NAME = os.environ.get("SCENARIO_PROMPTS", "test-prompt").split(",")[0]


def main() -> int:
    langfuse = get_client()
    clients = [openai.OpenAI(api_key=API_KEY, base_url=url, max_retries=0) for url in BASE_URLS]
    prompt = langfuse.get_prompt(PROMPT_NAME)
    messages = prompt.compile()
    sent: list[str] = []
    with langfuse.start_as_current_observation(
        as_type="span", name="run-test", input=messages
    ) as span:
        with otel_bridge.use_prompt(prompt):
            for i in range(REQUESTS):
                client = clients[i % len(clients)]
                response = client.chat.completions.create(model=MODEL, messages=messages)
                if not response.choices[0].message.content:
                    raise RuntimeError(f"empty answer from {BASE_URLS[i % len(clients)]}")
                sent.append(BASE_URLS[i % len(clients)])
        span.update(output={"requests": len(sent)})
        print(
            json.dumps(
                {
                    "trace_id": span.trace_id,
                    "span_id": span.id,
                    "prompt_name": prompt.name,
                    "prompt_version": prompt.version,
                    "sent_to": sent,
                }
            ),
            flush=True,
        )
    langfuse.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
