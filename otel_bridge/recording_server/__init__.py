"""A recording test double of Langfuse's public API. It is not Langfuse.

``RecordingServer`` answers what the Langfuse SDKs (v4, v5), LiteLLM's ``langfuse`` and
``langfuse_otel`` callbacks, an OTLP exporter or collector, and ``otel-bridge verify`` call, and
records every request, so tests can assert on what went over the wire. Its answers and read API
follow a Langfuse v4 server (read from langfuse/langfuse at v4.16.0) in one of two write modes:

- ``events_only`` (the default, as in Langfuse v4): exports land in the events table, read with
  ``GET /api/public/v2/observations``; ``GET /api/public/traces/{id}`` answers 404.
- ``legacy`` (Langfuse v3's behaviour): exports land in the legacy tables, read with
  ``GET /api/public/traces/{id}``; the v2 endpoint serves nothing.

Each module names the Langfuse file and function its rules follow: ``_otlp`` (decoding an
export), ``_mapping`` (observation type, prompt links, the legacy schema, serving rows),
``_store`` (what is kept, the ingestion delay), ``_api`` (routes, auth, errors), ``_http``
(transport), ``_server`` (lifecycle, faults, the views tests read).

Usage::

    from otel_bridge.recording_server import RecordingServer

    prompt = {
        "name": "greeting",
        "version": 3,
        "type": "chat",
        "prompt": [{"role": "system", "content": "Hi {{name}}"}],
        "labels": ["production"],
    }
    with RecordingServer(public_key="pk-lf-1", secret_key="sk-lf-1", prompts=[prompt]) as srv:
        client = SomeClient(base_url=srv.url, public_key="pk-lf-1", secret_key="sk-lf-1")
        ...  # exercise the code under test
        spans = srv.wait_for_spans(lambda spans: len(spans) >= 2, timeout=5)  # as received
        observations = srv.observations(spans[0].trace_id)  # as the v2 API serves them
        v1 = srv.trace(spans[0].trace_id)  # as legacy mode's v1 trace endpoint would
        assert srv.prompt_fetches[0].served_version == 3

        srv.set_fault("error")            # 500 on every export
        srv.set_fault("slow", delay_s=2)  # answer after two seconds
        srv.set_fault("down")             # drop the connection without answering
        srv.set_fault(None)               # back to normal

    # Langfuse v3 / legacy mode, with asynchronous ingestion:
    RecordingServer(write_mode="legacy", ingestion_delay=0.5)

As a child process (prints ``READY <url>`` once it accepts connections)::

    python -m otel_bridge.recording_server --port 0 --public-key pk --secret-key sk \\
        --prompt-file prompts.json --write-mode events_only --ingestion-delay 0.5
"""

from otel_bridge.recording_server._api import (
    EVENTS_ONLY_MESSAGE,
    HEALTH_PATH,
    INGESTION_PATH,
    OBSERVATIONS_V2_PATH,
    OTLP_TRACES_PATH,
    PROJECTS_PATH,
    PROMPTS_PREFIX,
    TRACES_PREFIX,
)
from otel_bridge.recording_server._cli import main
from otel_bridge.recording_server._mapping import (
    FIELD_GROUPS,
    PROJECT_ID,
    LangfuseWorkerError,
    observation_type,
)
from otel_bridge.recording_server._records import (
    WRITE_MODES,
    AttributeValue,
    FaultMode,
    PromptFetch,
    RecordedEvent,
    RecordedPrompt,
    RecordedRequest,
    RecordedSpan,
    WriteMode,
)
from otel_bridge.recording_server._server import RecordingServer

__all__ = [
    "EVENTS_ONLY_MESSAGE",
    "FIELD_GROUPS",
    "HEALTH_PATH",
    "INGESTION_PATH",
    "OBSERVATIONS_V2_PATH",
    "OTLP_TRACES_PATH",
    "PROJECTS_PATH",
    "PROJECT_ID",
    "PROMPTS_PREFIX",
    "TRACES_PREFIX",
    "WRITE_MODES",
    "AttributeValue",
    "FaultMode",
    "LangfuseWorkerError",
    "PromptFetch",
    "RecordedEvent",
    "RecordedPrompt",
    "RecordedRequest",
    "RecordedSpan",
    "RecordingServer",
    "WriteMode",
    "main",
    "observation_type",
]
