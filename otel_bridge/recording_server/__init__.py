"""A recording test double of Langfuse's public HTTP API (not Langfuse itself).

See :mod:`otel_bridge.recording_server._server` for usage.
"""

from otel_bridge.recording_server._server import (
    HEALTH_PATH,
    INGESTION_PATH,
    OTLP_TRACES_PATH,
    PROJECT_ID,
    PROJECTS_PATH,
    PROMPTS_PREFIX,
    TRACES_PREFIX,
    AttributeValue,
    FaultMode,
    PromptFetch,
    RecordedEvent,
    RecordedPrompt,
    RecordedRequest,
    RecordedSpan,
    RecordingServer,
    main,
    observation_type,
)

__all__ = [
    "HEALTH_PATH",
    "INGESTION_PATH",
    "OTLP_TRACES_PATH",
    "PROJECTS_PATH",
    "PROJECT_ID",
    "PROMPTS_PREFIX",
    "TRACES_PREFIX",
    "AttributeValue",
    "FaultMode",
    "PromptFetch",
    "RecordedEvent",
    "RecordedPrompt",
    "RecordedRequest",
    "RecordedSpan",
    "RecordingServer",
    "main",
    "observation_type",
]
