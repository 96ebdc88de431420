"""What the double holds: received spans, the rows Langfuse would store for them, prompts, logs.

Every accepted export is stored twice over, as the spans that went over the wire (read by tests
at once) and as the rows Langfuse's worker would write: events-table rows (write mode
``events_only``) and legacy-table observations (``legacy``). The rows become readable through the
HTTP read API ``ingestion_delay`` seconds after the export was accepted, as Langfuse ingests
through a queue (``OtelIngestionProcessor.publishToOtelIngestionQueue``, then the worker's
``otelIngestionQueueProcessorBuilder``). The prompt lookup happens at acceptance.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from otel_bridge.recording_server._mapping import (
    LangfuseWorkerError,
    events_row,
    legacy_observation,
    observation_type,
    order_key,
)
from otel_bridge.recording_server._records import (
    PromptFetch,
    RecordedPrompt,
    RecordedRequest,
    RecordedSpan,
)

__all__ = ["Store"]


@dataclass(frozen=True)
class _Batch:
    """One accepted export as Langfuse's worker would persist it."""

    visible_at: float
    spans: tuple[RecordedSpan, ...]
    events_rows: tuple[dict[str, Any], ...]
    legacy_observations: tuple[dict[str, Any], ...]
    failure: str | None


def _now_iso() -> str:
    moment = datetime.now(tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Store:
    """Thread-safe state shared by the HTTP handlers and the test-facing accessors."""

    def __init__(self, ingestion_delay: float = 0.0) -> None:
        if ingestion_delay < 0:
            raise ValueError(f"ingestion_delay must be >= 0 seconds, got {ingestion_delay!r}")
        self.ingestion_delay = ingestion_delay
        self.cond = threading.Condition()
        self._spans: list[RecordedSpan] = []
        self._batches: list[_Batch] = []
        self.generation = 0
        self._requests: list[RecordedRequest] = []
        self._counts: Counter[tuple[str, int]] = Counter()
        self._prompt_fetches: list[PromptFetch] = []
        self._ingestion_events: list[dict[str, Any]] = []
        self._prompts: dict[str, dict[int, tuple[RecordedPrompt, str]]] = {}

    # -- prompts

    def add_prompt(self, record: RecordedPrompt) -> None:
        with self.cond:
            self._prompts.setdefault(record.name, {})[record.version] = (record, _now_iso())

    def prompt_versions(self, name: str) -> dict[int, tuple[RecordedPrompt, str]]:
        with self.cond:
            return dict(self._prompts.get(name, {}))

    def find_prompt(self, name: str, version: int) -> RecordedPrompt | None:
        """PromptService.findPrompt by project + name + version."""
        with self.cond:
            found = self._prompts.get(name, {}).get(version)
        return found[0] if found else None

    # -- ingestion

    def accept(self, spans: list[RecordedSpan], worker_failure: str | None = None) -> None:
        """Record an accepted export and what Langfuse's worker would write for it
        (nothing, when ``worker_failure`` says why the worker throws on it)."""
        now_ms = time.time_ns() // 1_000_000
        events: list[dict[str, Any]] = []
        legacy: list[dict[str, Any]] = []
        failure = worker_failure
        try:
            if failure is not None:
                raise LangfuseWorkerError(failure)
            for span in spans:
                # processToIngestionEvents runs the type mapper over the whole batch first;
                # if it throws, the queued job fails and nothing of the batch is stored.
                observation_type(span)
            for span in spans:
                observation = legacy_observation(span, self.find_prompt, now_ms)
                if observation is not None:
                    legacy.append(observation)
                try:
                    events.append(events_row(span, self.find_prompt, now_ms))
                except LangfuseWorkerError:
                    continue  # createEventRecord threw: this one event is skipped
        except LangfuseWorkerError as exc:
            events, legacy, failure = [], [], str(exc)
        for row in events:
            row["order_key"] = order_key(row["start_ms"], row["trace_id"], row["span_id"])
        batch = _Batch(
            visible_at=time.monotonic() + self.ingestion_delay,
            spans=tuple(spans),
            events_rows=tuple(events),
            legacy_observations=tuple(legacy),
            failure=failure,
        )
        with self.cond:
            self._spans.extend(spans)
            self._batches.append(batch)
            self.generation += 1
            self.cond.notify_all()

    def _visible(self, include_pending: bool) -> list[_Batch]:
        now = time.monotonic()
        with self.cond:
            return [b for b in self._batches if include_pending or b.visible_at <= now]

    def events_rows(self, *, include_pending: bool = False) -> list[dict[str, Any]]:
        """The events table: the latest row per (trace, span, start), as after merges."""
        latest: dict[tuple[str, str, int], dict[str, Any]] = {}
        for batch in self._visible(include_pending):
            for row in batch.events_rows:
                latest[(row["trace_id"], row["span_id"], row["start_ms"])] = row
        return list(latest.values())

    def legacy_trace(
        self, trace_id: str, *, include_pending: bool = False
    ) -> tuple[list[RecordedSpan], list[dict[str, Any]]] | None:
        """Spans and legacy observations of one trace (an observation id upserts); None if the
        legacy traces table has no such trace."""
        spans: list[RecordedSpan] = []
        observations: dict[str, dict[str, Any]] = {}
        for batch in self._visible(include_pending):
            if batch.failure is not None:
                continue
            spans.extend(s for s in batch.spans if s.trace_id == trace_id)
            observations.update(
                (o["id"], o) for o in batch.legacy_observations if o["traceId"] == trace_id
            )
        if not spans:
            return None
        return spans, list(observations.values())

    def batch_failures(self) -> list[str]:
        with self.cond:
            return [b.failure for b in self._batches if b.failure is not None]

    def pending(self) -> bool:
        now = time.monotonic()
        with self.cond:
            return any(b.visible_at > now for b in self._batches)

    # -- spans as received

    def spans(self) -> list[RecordedSpan]:
        with self.cond:
            return list(self._spans)

    def wait_for_spans(
        self,
        predicate: Callable[[list[RecordedSpan]], bool],
        timeout: float,
        describe: Callable[[], str],
    ) -> list[RecordedSpan]:
        deadline = time.monotonic() + timeout
        while True:
            with self.cond:
                snapshot = list(self._spans)
                generation = self.generation
            if predicate(snapshot):
                return snapshot
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s; {describe()}")
            with self.cond:
                if self.generation == generation:
                    self.cond.wait(min(remaining, 0.25))

    # -- logs

    def record_request(self, entry: RecordedRequest) -> None:
        with self.cond:
            self._requests.append(entry)
            self._counts[(entry.path, entry.status)] += 1

    def requests(self) -> list[RecordedRequest]:
        with self.cond:
            return list(self._requests)

    def counts(self) -> dict[tuple[str, int], int]:
        with self.cond:
            return dict(self._counts)

    def note_fetch(self, fetch: PromptFetch) -> None:
        with self.cond:
            self._prompt_fetches.append(fetch)

    def prompt_fetches(self) -> list[PromptFetch]:
        with self.cond:
            return list(self._prompt_fetches)

    def add_ingestion_events(self, events: list[Mapping[str, Any]]) -> None:
        with self.cond:
            self._ingestion_events.extend(dict(e) for e in events)

    def ingestion_events(self) -> list[dict[str, Any]]:
        with self.cond:
            return list(self._ingestion_events)

    def clear(self) -> None:
        """Forget spans, stored rows, requests, fetches and counters; prompts stay."""
        with self.cond:
            self._spans.clear()
            self._batches.clear()
            self._requests.clear()
            self._counts.clear()
            self._prompt_fetches.clear()
            self._ingestion_events.clear()
            self.generation += 1
            self.cond.notify_all()
