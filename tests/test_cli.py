"""`otel-bridge demo` and `otel-bridge verify`, run as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ProxyProcess, client_env, mock_config, proxy_python, run_scenario, start_proxy

from otel_bridge._verify import PromptWanted, judge, render_tree
from otel_bridge.recording_server import RecordingServer

CLI = [sys.executable, "-m", "otel_bridge.cli"]
# What Langfuse returns for a generation whose prompt it found in the project.
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
    from conftest import TEST_PROMPTS

    with RecordingServer(prompts=TEST_PROMPTS) as recorder:
        env = {
            "LANGFUSE_PUBLIC_KEY": recorder.public_key,
            "LANGFUSE_SECRET_KEY": recorder.secret_key,
            "LANGFUSE_HOST": recorder.url,
        }
        bridged = start_proxy(mock_config(), env, tmp_path_factory.mktemp("bridged"))
        try:
            plain = start_proxy(mock_config(bridge=False), env, tmp_path_factory.mktemp("plain"))
            try:
                yield recorder, bridged, plain
            finally:
                plain.stop()
        finally:
            bridged.stop()


def _verify(recorder: RecordingServer, trace_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "verify", "--trace-id", trace_id, "--base-url", recorder.url,
         "--public-key", recorder.public_key, "--secret-key", recorder.secret_key, "--wait", "10"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


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
    bad = _verify(recorder, split["trace_id"])
    assert bad.returncode == 1
    assert "NOT UNIFIED" in bad.stdout
    assert "[FAIL] one root: run-test, litellm-acompletion" in bad.stdout
    assert "[FAIL] prompt linked on the gateway generation" in bad.stdout


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
