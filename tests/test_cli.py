"""`otel-bridge demo` and `otel-bridge verify`, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from harness import (
    LoopbackServer,
    ProxyProcess,
    UpstreamServer,
    client_env,
    proxy_python,
    run_scenario,
    start_proxy,
    upstream_config,
)

from otel_bridge._verify import LangfuseReader, PromptWanted, judge, render_tree, verify
from otel_bridge.recording_server import RecordingServer

CLI = [sys.executable, "-m", "otel_bridge.cli"]
# What Langfuse returns for a generation whose prompt it found in the project.
# Seconds before what the double accepted becomes readable, as Langfuse's ingestion queue.
INGESTION_DELAY = 2.0
LINKED: dict[str, object] = {"promptId": "prompt-id-1", "promptName": "p", "promptVersion": 1}


def _observation(
    id_: str, parent: str | None, type_: str = "SPAN", name: str = "s", **extra: object
) -> dict[str, object]:
    return {
        "id": id_,
        "traceId": "t" * 32,
        "parentObservationId": parent,
        "type": type_,
        "name": name,
        **extra,
    }


def test_judge_accepts_a_unified_trace() -> None:
    trace = {
        "id": "t" * 32,
        "observations": [
            _observation("a", None, name="run-test"),
            _observation("b", "a", name="POST"),
            _observation("c", "b", "GENERATION", "litellm-acompletion", **LINKED),
        ],
    }
    verdict = judge(trace)
    assert verdict.ok, verdict.summary()
    assert render_tree(trace["observations"]).splitlines() == [
        "- run-test [SPAN] id=a",
        "  - POST [SPAN] id=b",
        "    - litellm-acompletion [GENERATION] id=c  prompt='p' v1",
    ]


@pytest.mark.parametrize(
    ("observations", "failing"),
    [
        (
            [
                _observation("a", None),
                _observation("c", "zz", "GENERATION", "litellm-x", **LINKED),
            ],
            {"no dangling parents"},
        ),
        (
            [_observation("a", None), _observation("c", "a", "GENERATION", "litellm-x")],
            {"prompt linked on the gateway generation"},
        ),
        (
            [_observation("a", None), _observation("c", "a", "GENERATION", "llm-response")],
            {"gateway generation present"},
        ),
        (
            [
                _observation("a", None),
                _observation("b", None),
                _observation("c", "a", "GENERATION", "litellm-x", **LINKED),
            ],
            {"one root"},
        ),
        ([], {"one trace", "one root", "gateway generation present"}),
    ],
)
def test_judge_names_what_is_wrong(
    observations: list[dict[str, object]], failing: set[str]
) -> None:
    verdict = judge({"id": "t" * 32, "observations": observations})
    assert not verdict.ok
    assert {c.name for c in verdict.checks if not c.ok} == failing
    assert verdict.summary().startswith("NOT UNIFIED")


@pytest.mark.e2e
def test_demo_runs_the_whole_path_and_says_unified() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OTEL_"))}
    env["OTEL_BRIDGE_PROXY_PYTHON"] = str(proxy_python())
    result = subprocess.run([*CLI, "demo"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "UNIFIED: trace" in out and "NOT UNIFIED" not in out
    assert "- run-test [SPAN]" in out
    assert "litellm-acompletion [GENERATION]" in out and "prompt='test-prompt' v1" in out


@pytest.fixture(scope="module")
def recorder_and_proxies(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RecordingServer, ProxyProcess, ProxyProcess]]:
    """A Langfuse double that makes what it ingests readable only after a delay, as Langfuse's
    queue does, and two gateways logging to it: with and without the bridge hook."""
    from conftest import TEST_PROMPTS

    with (
        RecordingServer(prompts=TEST_PROMPTS, ingestion_delay=INGESTION_DELAY) as recorder,
        UpstreamServer() as upstream,
    ):
        env = {
            "LANGFUSE_PUBLIC_KEY": recorder.public_key,
            "LANGFUSE_SECRET_KEY": recorder.secret_key,
            "LANGFUSE_HOST": recorder.url,
        }
        config = upstream_config(upstream.api_base)
        bridged = start_proxy(config, env, tmp_path_factory.mktemp("bridged"))
        try:
            plain_config = upstream_config(upstream.api_base, bridge=False)
            plain = start_proxy(plain_config, env, tmp_path_factory.mktemp("plain"))
            try:
                yield recorder, bridged, plain
            finally:
                plain.stop()
        finally:
            bridged.stop()


def _verify(
    recorder: RecordingServer, trace_id: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "verify", "--trace-id", trace_id, "--base-url", recorder.url,
         "--public-key", recorder.public_key, "--secret-key", recorder.secret_key, *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.e2e
def test_verify_right_after_the_app_exits_waits_for_the_complete_trace(
    recorder_and_proxies: tuple[RecordingServer, ProxyProcess, ProxyProcess],
) -> None:
    # Default waits: the app has just exited, nothing is readable yet, and the gateway's
    # generation comes in its own later batch. A judge that ran on the first readable
    # observation would say `gateway generation present: 0`.
    recorder, bridged, _ = recorder_and_proxies
    (run,) = run_scenario(client_env(recorder.url, bridged.url, SCENARIO_PATH="langfuse_openai"))
    good = _verify(recorder, run["trace_id"])
    assert good.returncode == 0, good.stdout + good.stderr
    assert "waiting up to 60s (until " in good.stdout
    assert "UNIFIED" in good.stdout and "NOT UNIFIED" not in good.stdout
    assert "[ok] prompt linked on the gateway generation: prompt 'test-prompt' version 1" in (
        good.stdout
    )
    # It read the v4 way, every page with the field groups the verdict needs.
    reads = [r for r in recorder.requests if r.path == "/api/public/v2/observations"]
    assert reads and all(f"traceId={run['trace_id']}" in r.query for r in reads)
    assert all("limit=1000" in r.query and "prompt" in r.query for r in reads)


@pytest.mark.e2e
def test_verify_tells_a_unified_trace_from_a_split_one(
    recorder_and_proxies: tuple[RecordingServer, ProxyProcess, ProxyProcess],
) -> None:
    recorder, bridged, plain = recorder_and_proxies
    (run,) = run_scenario(client_env(recorder.url, bridged.url, SCENARIO_PATH="langfuse_openai"))
    good = _verify(recorder, run["trace_id"])
    assert good.returncode == 0, good.stdout + good.stderr
    assert "UNIFIED" in good.stdout and "NOT UNIFIED" not in good.stdout
    # Without the bridge LiteLLM reuses the traceparent's trace id but logs its generation as a
    # second root, with no prompt link: the trace splits in two trees.
    (split,) = run_scenario(client_env(recorder.url, plain.url, SCENARIO_PATH="langfuse_openai"))
    bad = _verify(recorder, split["trace_id"], "--prompt", "test-prompt:1")
    assert bad.returncode == 1
    assert "NOT UNIFIED" in bad.stdout
    assert "[FAIL] one root: run-test, litellm-acompletion" in bad.stdout
    assert "[FAIL] prompt linked on the gateway generation" in bad.stdout


def test_verify_names_wrong_keys_at_once(recorder: RecordingServer) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*CLI, "verify", "--trace-id", "0" * 32, "--base-url", recorder.url,
         "--public-key", recorder.public_key, "--secret-key", "sk-lf-wrong", "--wait", "30"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "[FAIL] trace found: wrong keys or project: Langfuse at" in result.stdout
    assert "answered 401" in result.stdout
    # Waiting would not help, so it does not wait.
    assert time.monotonic() - started < 25


def test_verify_says_a_trace_is_not_ingested_yet(recorder: RecordingServer) -> None:
    result = _verify(recorder, "1" * 32, "--wait", "2")
    assert result.returncode == 1
    assert f"[FAIL] trace found: not ingested yet: Langfuse at {recorder.url} has no " in (
        result.stdout
    )


def test_reader_follows_v2_cursors_past_one_page() -> None:
    # 1,201 spans of one trace: two pages at Langfuse's maximum limit of 1,000.
    trace_id = "ab" * 16
    spans = [
        {
            "traceId": trace_id,
            "spanId": f"{i + 1:016x}",
            "parentSpanId": "" if i == 0 else f"{1:016x}",
            "name": f"span-{i}",
            "startTimeUnixNano": str(1_700_000_000_000_000_000 + i * 1000),
            "endTimeUnixNano": str(1_700_000_000_000_000_000 + i * 1000 + 500),
        }
        for i in range(1201)
    ]
    body = {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}
    with RecordingServer() as recorder:
        sent = httpx.post(
            recorder.otlp_endpoint,
            json=body,
            auth=(recorder.public_key, recorder.secret_key),
            timeout=30,
        )
        assert sent.status_code == 200, sent.text
        reader = LangfuseReader(recorder.url, recorder.public_key, recorder.secret_key)
        observations = reader.v2_observations(trace_id)
        reads = [r for r in recorder.requests if r.path == "/api/public/v2/observations"]
    assert observations is not None
    assert len({o["id"] for o in observations}) == 1201
    assert len(reads) == 2 and "cursor=" not in reads[0].query and "cursor=" in reads[1].query


@contextmanager
def langfuse_process(tmp_path: Path, *args: str) -> Iterator[dict[str, str]]:
    """The recording server as a process of its own, like a Langfuse the demo is pointed at."""
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{
        "name": "test-prompt", "version": 1, "type": "chat", "labels": ["production"],
        "prompt": [{"role": "user", "content": "Say hello in one short sentence."}],
    }]))  # fmt: skip
    keys = {"LANGFUSE_PUBLIC_KEY": "pk-lf-demo", "LANGFUSE_SECRET_KEY": "sk-lf-demo"}
    with (tmp_path / "langfuse.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "otel_bridge.recording_server", "--port", "0",
             "--public-key", keys["LANGFUSE_PUBLIC_KEY"],
             "--secret-key", keys["LANGFUSE_SECRET_KEY"], "--prompt-file", str(prompts), *args],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("READY "), (ready, (tmp_path / "langfuse.log").read_text())
        yield {**keys, "LANGFUSE_BASE_URL": ready.split()[1]}
    finally:
        process.terminate()
        process.wait(timeout=15)


def _demo(langfuse: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LANGFUSE_", "OTEL_"))}
    env.update(langfuse, OTEL_BRIDGE_PROXY_PYTHON=str(proxy_python()))
    return subprocess.run(
        [*CLI, "demo", *args], env=env, capture_output=True, text=True, timeout=400
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    "langfuse_args",
    [
        ["--write-mode", "events_only"],
        ["--write-mode", "legacy"],
        ["--write-mode", "events_only", "--ingestion-delay", "4"],
    ],
    ids=["events_only", "legacy", "events_only-delayed"],
)
def test_demo_against_a_langfuse_of_its_own_says_unified(
    tmp_path: Path, langfuse_args: list[str]
) -> None:
    with langfuse_process(tmp_path, *langfuse_args) as langfuse:
        result = _demo(langfuse)
        base = langfuse["LANGFUSE_BASE_URL"]
        auth = (langfuse["LANGFUSE_PUBLIC_KEY"], langfuse["LANGFUSE_SECRET_KEY"])
        trace_id = result.stdout.split("reading trace ", 1)[-1].split(" ", 1)[0]
        v1 = httpx.get(f"{base}/api/public/traces/{trace_id}", auth=auth, timeout=10)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"sending to the Langfuse at {base}" in out
    assert "UNIFIED: trace" in out and "NOT UNIFIED" not in out
    assert "litellm-acompletion [GENERATION]" in out and "prompt='test-prompt' v1\n" in out
    # The same trace as the API serves it: events_only has no v1 trace endpoint at all.
    assert v1.status_code == (404 if "events_only" in langfuse_args else 200), v1.text


@pytest.mark.e2e
@pytest.mark.parametrize("write_mode", ["events_only", "legacy"])
def test_demo_with_a_prompt_version_missing_from_the_project_names_it(
    tmp_path: Path, write_mode: str
) -> None:
    with langfuse_process(tmp_path, "--write-mode", write_mode) as langfuse:
        result = _demo(langfuse, "--prompt-version", "7")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "prompt test-prompt version 7" in out  # what the app used
    assert "[FAIL] prompt linked on the gateway generation: litellm-acompletion: prompt " in out
    assert "NOT UNIFIED: " in out
    assert (
        "prompt 'test-prompt' version 7 is missing from this Langfuse project"
        in (out.split("NOT UNIFIED: ", 1)[1])
    )


def test_verify_without_credentials_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANGFUSE_")}
    result = subprocess.run(
        [*CLI, "verify", "--trace-id", "0" * 32],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "LANGFUSE_PUBLIC_KEY" in result.stderr


def test_demo_without_a_proxy_environment_says_how_to_get_one(tmp_path: Path) -> None:
    env = {**os.environ, "OTEL_BRIDGE_PROXY_PYTHON": str(tmp_path / "missing" / "python")}
    result = subprocess.run(
        [*CLI, "demo", "--local"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "./dev demo" in result.stderr


def test_judge_finds_gateway_generations_by_where_they_hang() -> None:
    # LiteLLM's OTel V2 names its generation `chat <model>`: it is the gateway's because it hangs
    # below the app's HTTP call; the app's own generation is a sibling of that call.
    trace = {
        "id": "t" * 32,
        "observations": [
            _observation("a", None, name="run-test"),
            _observation("g", "a", "GENERATION", "llm-response", **LINKED),
            _observation("b", "a", name="POST"),
            _observation("s", "b", name="POST /chat/completions"),
            _observation("d", "s", name="fastapi.dependencies"),
            _observation("c", "d", "GENERATION", "chat llama3.2:1b", **LINKED),
            _observation("b2", "a", name="POST"),
            _observation("c2", "b2", "GENERATION", "chat llama3.2:1b"),
        ],
    }
    verdict = judge(trace)
    failed = {c.name: c.detail for c in verdict.checks if not c.ok}
    assert failed == {
        "prompt linked on the gateway generation": "chat llama3.2:1b: no prompt on it"
    }
    assert {c.name: c.detail for c in verdict.checks}["gateway generation present"] == (
        "2 gateway generation(s)"
    )


def _gateway_trace(**prompt: object) -> dict[str, object]:
    return {
        "id": "t" * 32,
        "observations": [
            _observation("a", None, name="run-test"),
            _observation("b", "a", name="POST"),
            _observation("c", "b", "GENERATION", "litellm-acompletion", **prompt),
        ],
    }


def test_judge_counts_a_prompt_as_linked_only_with_its_promptId() -> None:
    # Langfuse v4 stores the name and version the gateway sent, and a promptId only for a
    # prompt it found in the project: without the id the UI cannot open the prompt.
    verdict = judge(_gateway_trace(promptId=None, promptName="test-prompt", promptVersion=7))
    failed = {c.name: c.detail for c in verdict.checks if not c.ok}
    assert failed == {
        "prompt linked on the gateway generation": "litellm-acompletion: prompt 'test-prompt' "
        "version 7 is missing from this Langfuse project (the generation names it, but "
        "Langfuse found no such prompt, so promptId is null)"
    }
    assert "prompt 'test-prompt' version 7" in verdict.summary()
    assert "prompt='test-prompt' v7 (no promptId)" in render_tree(verdict.observations)
    assert not judge(_gateway_trace(promptId="", promptName="p", promptVersion=1)).ok


def test_judge_names_the_expected_prompt_where_langfuse_keeps_no_link() -> None:
    # v3 and v4's legacy tables store no prompt at all when it is not in the project.
    asked: list[PromptWanted] = []

    def lookup(prompt: PromptWanted) -> bool:
        asked.append(prompt)
        return prompt.version == 1

    missing = judge(
        _gateway_trace(), expected_prompt=PromptWanted("test-prompt", 7), prompt_lookup=lookup
    )
    assert [c.detail for c in missing.checks if not c.ok] == [
        "litellm-acompletion: prompt 'test-prompt' version 7 is missing from this Langfuse "
        "project (Langfuse keeps no link to a prompt it does not have)"
    ]
    present = judge(
        _gateway_trace(), expected_prompt=PromptWanted("test-prompt", 1), prompt_lookup=lookup
    )
    assert [c.detail for c in present.checks if not c.ok] == [
        "litellm-acompletion: no prompt reached the gateway, though prompt 'test-prompt' "
        "version 1 exists in this project"
    ]
    assert asked == [PromptWanted("test-prompt", 7), PromptWanted("test-prompt", 1)]


class _LangfuseWithoutV2(LoopbackServer):
    """Answers as a Langfuse server with LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN off: v2
    observations 404 with the message of web/src/pages/api/public/v2/observations/index.ts, and
    the v1 trace endpoint either 404 for every trace (events_only, the message of
    createAuthedProjectAPIRoute's rejectInEventsOnlyMode) or serving ``trace`` (v3, legacy)."""

    V2_OFF = (
        "The observations v2 API is only available in a Langfuse v4 write mode. Learn more at: "
        "https://langfuse.com/docs/v4"
    )
    EVENTS_ONLY = (
        "This endpoint is not available on deployments running in Langfuse v4 events_only "
        "mode. Learn more about Langfuse v4 at: https://langfuse.com/docs/v4"
    )

    def __init__(self, trace: dict[str, object] | None) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.paths.append(self.path.split("?", 1)[0])
                if self.path.startswith("/api/public/v2/observations"):
                    self._json(404, {"message": outer.V2_OFF, "error": "LangfuseNotFoundError"})
                elif trace is None:
                    self._json(404, {"message": outer.EVENTS_ONLY})
                else:
                    self._json(200, trace)

            def _json(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)


def test_verify_names_an_events_only_langfuse_that_serves_no_reads() -> None:
    with _LangfuseWithoutV2(trace=None) as langfuse:
        started = time.monotonic()
        verdict = verify(LangfuseReader(langfuse.url, "pk", "sk"), "2" * 32, wait=30)
        elapsed = time.monotonic() - started
    (failed,) = verdict.checks
    assert failed.detail.startswith("events-only 404: this Langfuse runs in the events_only")
    assert "LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true" in failed.detail
    assert langfuse.paths == ["/api/public/v2/observations", f"/api/public/traces/{'2' * 32}"]
    assert elapsed < 10  # no waiting for what cannot come


def test_verify_falls_back_to_the_v1_trace_where_v2_is_off() -> None:
    trace = _gateway_trace(**LINKED)
    with _LangfuseWithoutV2(trace=trace) as langfuse:
        verdict = verify(LangfuseReader(langfuse.url, "pk", "sk"), "t" * 32, wait=5)
    assert verdict.ok, verdict.summary()
    assert langfuse.paths == ["/api/public/v2/observations", f"/api/public/traces/{'t' * 32}"]
