"""The `otel` callback path through the shipped collector pipeline, end to end.

    scenario app --(Langfuse SDK, direct)------------------------------> recording server
        | traceparent + baggage                                            ^
        v                                                                  | OTLP/HTTP, gzip,
    LiteLLM proxy (`otel` + bridge) --OTLP/HTTP /v1/traces--> rotel -------+ Basic auth,
                                                                             x-langfuse-ingestion-version

rotel stands in for the OpenTelemetry Collector (none installs here): tests/collector_forwarder.py
translates collector/otelcol-config.yaml into rotel flags, so the exporter endpoint, headers
and compression under test are the shipped ones, expanded from the environment that
collector/README.md documents (LANGFUSE_OTLP_ENDPOINT, LANGFUSE_AUTH).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_forwarder import (
    COLLECTOR_CONFIG,
    RotelForwarder,
    UnsupportedConfig,
    collector_forwarder,
    expand_env,
    load_collector_config,
    translate,
)
from e2e_assertions import (
    CLIENT_SERVICE,
    PROMPT_NAME,
    WORKAROUND_METADATA,
    assert_logged_as_without_the_bridge,
    assert_unified,
    is_proxy_span,
    proxy_generations,
    run_two_prompts,
    run_with_extra_body,
    wait_for_proxy_generations,
)
from harness import (
    CALLS,
    PATHS,
    CaptureServer,
    ProxyProcess,
    UpstreamServer,
    assert_upstream_got_no_context,
    client_env,
    run_scenario,
    start_proxy,
    upstream_config,
)

from otel_bridge.demo._stack import example_config
from otel_bridge.recording_server import OTLP_TRACES_PATH, RecordingServer

PROMPT = ("test-prompt", 1)
ROTEL_AGENT = "Rotel Rust/"


def collector_env(recorder: RecordingServer) -> dict[str, str]:
    """The collector's environment as collector/README.md documents it."""
    token = f"{recorder.public_key}:{recorder.secret_key}".encode()
    return {
        "LANGFUSE_OTLP_ENDPOINT": f"{recorder.url}/api/public/otel",
        "LANGFUSE_AUTH": base64.b64encode(token).decode("ascii"),
    }


# --------------------------------------------------------------------------- the translator


def test_shipped_config_translates_to_the_documented_route() -> None:
    env = {
        "LANGFUSE_OTLP_ENDPOINT": "http://langfuse-web:3000/api/public/otel",
        "LANGFUSE_AUTH": "dG9r",
    }
    plan = translate(load_collector_config(env))
    # LiteLLM's `otel` callback (examples/litellm/otel.yaml) posts to the receiver's HTTP port
    # and the OTLP path; the tests bind 127.0.0.1:<picked> instead of 0.0.0.0:4318.
    shipped_endpoint = example_config("otel.yaml")["environment_variables"]["OTEL_ENDPOINT"]
    assert plan.receiver_http_endpoint.rsplit(":", 1)[1] == "4318"
    assert shipped_endpoint.endswith(":4318" + plan.receiver_traces_path)
    assert plan.receiver_traces_path == "/v1/traces"
    assert plan.traces_endpoint == "http://langfuse-web:3000/api/public/otel/v1/traces"
    assert plan.headers == {"Authorization": "Basic dG9r", "x-langfuse-ingestion-version": "4"}
    assert plan.compression == "gzip"
    # The debug switch is off by default: the second exporter is `nop`, rotel logs nothing.
    assert set(plan.ignored) == {
        "extensions.health_check",
        "processors.memory_limiter",
        "exporters.nop",
    }
    assert plan.debug_verbosity is None
    assert "--debug-log" not in plan.rotel_args(http_bind="a", grpc_bind="b", workdir=Path("."))


@pytest.mark.parametrize(
    ("switch", "verbosity", "expected"),
    [(None, None, None), ("nop", "detailed", None), ("debug", None, "basic"),
     ("debug", "normal", "basic"), ("debug", "detailed", "detailed")],
)  # fmt: skip
def test_debug_switch_translates_to_rotels_debug_log(
    switch: str | None, verbosity: str | None, expected: str | None
) -> None:
    env = {"LANGFUSE_OTLP_ENDPOINT": "http://x/api/public/otel", "LANGFUSE_AUTH": "t"}
    if switch is not None:
        env["OTEL_COLLECTOR_DEBUG_EXPORTER"] = switch
    if verbosity is not None:
        env["OTEL_DEBUG_VERBOSITY"] = verbosity
    plan = translate(load_collector_config(env))
    assert plan.debug_verbosity == expected
    assert ("exporters.nop" in plan.ignored) == (expected is None)
    args = plan.rotel_args(http_bind="a", grpc_bind="b", workdir=Path("."))
    if expected is None:
        assert "--debug-log" not in args
    else:
        assert args[-4:] == ["--debug-log", "traces", "--debug-log-verbosity", expected]
    # Forwarding is the same either way: the switch only adds or removes the log.
    assert plan.traces_endpoint == "http://x/api/public/otel/v1/traces"


@pytest.mark.parametrize("switch", ["nop", "debug"])
def test_debug_switch_in_a_running_forwarder(switch: str, tmp_path: Path) -> None:
    """Both settings forward the span; only `debug` prints it to the forwarder's log.

    Verbosity `detailed` in both runs (it prints span names): with the switch at `nop` the
    verbosity must change nothing.
    """
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    name = f"debug-switch-{switch}-span"
    span = Span(
        trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
        span_id=bytes.fromhex("b7ad6b7169203331"),
        name=name,
        start_time_unix_nano=1,
        end_time_unix_nano=2,
    )
    body = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    ).SerializeToString()
    with RecordingServer() as server:
        env = {
            **collector_env(server),
            "OTEL_COLLECTOR_DEBUG_EXPORTER": switch,
            "OTEL_DEBUG_VERBOSITY": "detailed",
        }
        with collector_forwarder(env, tmp_path) as forwarder:
            response = httpx.post(
                forwarder.traces_url,
                content=body,
                headers={"content-type": "application/x-protobuf"},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            server.wait_for_spans(lambda spans: any(s.name == name for s in spans), timeout=20)
        log = forwarder.log_path.read_text(errors="replace")
    assert (name in log) == (switch == "debug"), log[-2000:]


def test_env_expansion_follows_the_collector() -> None:
    env = {"SET": "value", "EMPTY": "", "HEX": "0x1F"}
    assert expand_env("${env:SET}", env) == "value"
    assert expand_env("Basic ${env:SET}", env) == "Basic value"
    assert expand_env("${SET}", env) == "value"  # otelcol's default scheme is env
    assert expand_env("${env:UNSET:-fallback}", env) == "fallback"
    # confmap's env provider applies the default only when the variable is UNSET.
    assert expand_env("${env:EMPTY:-fallback}", env) == ""
    assert expand_env("${env:UNSET}", env) is None
    assert expand_env("a${env:UNSET}b", env) == "ab"
    assert expand_env("$${env:SET}", env) == "${env:SET}"
    assert expand_env("${env:HEX}", env) == "0x1F"
    assert expand_env({"k": ["${env:SET}", 3]}, env) == {"k": ["value", 3]}
    with pytest.raises(UnsupportedConfig):
        expand_env("${file:/etc/passwd}", env)
    with pytest.raises(UnsupportedConfig):
        expand_env("${env:BAD-NAME}", env)


def _shipped_raw() -> dict[str, Any]:
    env = {"LANGFUSE_OTLP_ENDPOINT": "http://x/api/public/otel", "LANGFUSE_AUTH": "t"}
    return load_collector_config(env, COLLECTOR_CONFIG)


@pytest.mark.parametrize(
    "change",
    ["transform_processor", "other_exporter", "metrics_pipeline", "unknown_exporter_key", "unset"],
)
def test_translator_fails_loudly_on_what_it_does_not_forward(change: str) -> None:
    config = copy.deepcopy(_shipped_raw())
    traces = config["service"]["pipelines"]["traces"]
    if change == "transform_processor":
        config["processors"]["transform/bridge"] = {"trace_statements": []}
        traces["processors"].insert(1, "transform/bridge")
    elif change == "other_exporter":
        config["exporters"]["otlp/grpc"] = {"endpoint": "x:4317"}
        traces["exporters"].append("otlp/grpc")
    elif change == "metrics_pipeline":
        config["service"]["pipelines"]["metrics"] = dict(traces)
    elif change == "unknown_exporter_key":
        config["exporters"]["otlphttp/langfuse"]["sending_queue"] = {"enabled": False}
    else:
        config["exporters"]["otlphttp/langfuse"]["endpoint"] = None
    with pytest.raises(UnsupportedConfig):
        translate(config)


# --------------------------------------------------------------------------- the processes


@pytest.fixture(scope="module")
def rotel(
    recorder: RecordingServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RotelForwarder]:
    forwarder = collector_forwarder(collector_env(recorder), tmp_path_factory.mktemp("rotel"))
    forwarder.start()
    try:
        yield forwarder
    finally:
        forwarder.stop()


def otel_proxy_env(rotel: RotelForwarder, *, v2: bool) -> dict[str, str]:
    """examples/litellm/otel.yaml's environment, aimed at the forwarder, not otel-collector."""
    env = dict(example_config("otel.yaml")["environment_variables"])
    env["OTEL_ENDPOINT"] = rotel.traces_url
    # Test speed only: the SDK's batch processor exports after 200 ms instead of 5 s.
    env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    if v2:
        env["LITELLM_OTEL_V2"] = "true"
    return env


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@contextlib.contextmanager
def _otel_proxy(
    rotel: RotelForwarder,
    upstream: UpstreamServer,
    workdir: Path,
    *,
    v2: bool,
    bridge: bool = True,
) -> Iterator[ProxyProcess]:
    env = otel_proxy_env(rotel, v2=v2)
    assert env["OTEL_EXPORTER"] == "otlp_http" and env["OTEL_SERVICE_NAME"] == "litellm-proxy"
    config = upstream_config(upstream.api_base, "otel.yaml", bridge=bridge)
    process = start_proxy(config, env, workdir)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def legacy_proxy(
    rotel: RotelForwarder, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp("proxy-legacy")
    with _otel_proxy(rotel, upstream, workdir, v2=False) as process:
        yield process


@pytest.fixture(scope="module")
def v2_proxy(
    rotel: RotelForwarder, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    with _otel_proxy(rotel, upstream, tmp_path_factory.mktemp("proxy-v2"), v2=True) as process:
        yield process


# The same proxies without the bridge: what LiteLLM exports on its own.
@pytest.fixture(scope="module")
def plain_legacy_proxy(
    rotel: RotelForwarder, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp("plain-legacy")
    with _otel_proxy(rotel, upstream, workdir, v2=False, bridge=False) as process:
        yield process


@pytest.fixture(scope="module")
def plain_v2_proxy(
    rotel: RotelForwarder, upstream: UpstreamServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp("plain-v2")
    with _otel_proxy(rotel, upstream, workdir, v2=True, bridge=False) as process:
        yield process


@pytest.fixture(autouse=True)
def clean_recorder(recorder: RecordingServer, upstream: UpstreamServer) -> None:
    recorder.clear()
    upstream.clear()


def rotel_requests(recorder: RecordingServer) -> list[Any]:
    return [
        r
        for r in recorder.requests
        if r.path == OTLP_TRACES_PATH and r.headers.get("user-agent", "").startswith(ROTEL_AGENT)
    ]


def assert_came_through_rotel(recorder: RecordingServer) -> None:
    """Every proxy span arrived in an accepted OTLP request from rotel, with the shipped headers."""
    via_rotel = rotel_requests(recorder)
    assert via_rotel, f"no OTLP request from rotel; {recorder.summary()}"
    for request in via_rotel:
        assert request.status == 200, (request.status, request.reason)  # 401 if auth was wrong
        assert request.headers.get("x-langfuse-ingestion-version") == "4"
        assert request.headers.get("content-encoding") == "gzip"
        assert request.headers.get("content-type") == "application/x-protobuf"
    proxy_spans = [s for s in recorder.spans() if is_proxy_span(s)]
    assert proxy_spans
    # The client exports through the Langfuse SDK directly, never through rotel, so the spans
    # that came in rotel's requests are exactly the proxy's.
    assert sum(r.span_count for r in via_rotel) == len(proxy_spans)
    for request in recorder.requests:
        if request.path == OTLP_TRACES_PATH and request not in via_rotel:
            assert "rotel" not in request.headers.get("user-agent", "").lower()


def assert_one_generation_from_the_proxy(
    recorder: RecordingServer, run: dict[str, Any], *, client_generation: bool
) -> None:
    """No double counting: one GENERATION observation from the proxy, in every view of it."""
    trace = recorder.trace(run["trace_id"])
    proxy_ids = {s.span_id for s in recorder.spans_for_trace(run["trace_id"]) if is_proxy_span(s)}
    generations = [o for o in trace["observations"] if o["type"] == "GENERATION"]
    from_proxy = [o for o in generations if o["id"] in proxy_ids]
    assert len(from_proxy) == 1, [(o["name"], o["type"]) for o in from_proxy]
    assert len(generations) == 1 + int(client_generation), [o["name"] for o in generations]
    spans = recorder.spans_for_trace(run["trace_id"])
    assert all(
        s.resource_attributes.get("service.name") == "litellm-proxy"
        for s in spans
        if s.span_id in proxy_ids
    )
    assert any(s.resource_attributes.get("service.name") == CLIENT_SERVICE for s in spans)


@pytest.fixture
def other_origin() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


VARIANTS = ["legacy", "v2"]


@pytest.mark.e2e
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_otel_callback_through_the_collector_pipeline(
    variant: str,
    path: str,
    call: str,
    recorder: RecordingServer,
    rotel: RotelForwarder,
    upstream: UpstreamServer,
    other_origin: CaptureServer,
    request: pytest.FixtureRequest,
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(f"{variant}_proxy")
    env = client_env(
        recorder.url,
        proxy.url,
        SCENARIO_PATH=path,
        SCENARIO_CALL=call,
        SCENARIO_OTHER_URL=other_origin.url,
    )
    started_ns = time.time_ns()
    (run,) = run_scenario(env)
    wait_for_proxy_generations(recorder, 1)
    client_generation = path == "langfuse_openai"
    assert_unified(recorder, run, prompt=PROMPT, client_generation=client_generation)
    assert_one_generation_from_the_proxy(recorder, run, client_generation=client_generation)
    assert len(proxy_generations(recorder.spans())) == 1
    # (The proxy's own start-up may export spans of its own; they start before the scenario.)
    stray = [s for s in recorder.spans() if s.start_time_unix_nano >= started_ns]
    assert [s.name for s in stray if s.trace_id != run["trace_id"]] == []
    assert_came_through_rotel(recorder)
    # The same context reached another origin (httpx and httpx2) without langfuse_* baggage.
    assert len(other_origin.requests) == 2
    for sent in other_origin.requests:
        assert "traceparent" in sent
        assert not any("langfuse_" in value for value in sent.get("baggage", []))
    # The model provider got the call and none of its trace context.
    assert_upstream_got_no_context(
        upstream.requests, expected=1, secrets=[run["trace_id"], run["span_id"], PROMPT[0]]
    )


@pytest.mark.e2e
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_two_prompts_one_after_the_other_through_the_collector(
    variant: str,
    path: str,
    recorder: RecordingServer,
    rotel: RotelForwarder,
    request: pytest.FixtureRequest,
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(f"{variant}_proxy")
    for run in run_two_prompts(recorder, proxy, path=path, call="async"):
        assert_one_generation_from_the_proxy(
            recorder, run, client_generation=path == "langfuse_openai"
        )


@pytest.mark.e2e
@pytest.mark.parametrize("variant", VARIANTS)
def test_200_concurrent_traces_through_the_collector_zero_cross_talk(
    variant: str, recorder: RecordingServer, rotel: RotelForwarder, request: pytest.FixtureRequest
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(f"{variant}_proxy")
    runs = run_two_prompts(recorder, proxy, path="use_prompt", call="async", concurrency=200)
    for run in runs:
        assert_one_generation_from_the_proxy(recorder, run, client_generation=False)
    assert_came_through_rotel(recorder)


@pytest.mark.e2e
@pytest.mark.parametrize("variant", VARIANTS)
def test_no_context_through_the_collector_is_logged_exactly_as_without_the_bridge(
    variant: str, recorder: RecordingServer, rotel: RotelForwarder, request: pytest.FixtureRequest
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(f"{variant}_proxy")
    plain: ProxyProcess = request.getfixturevalue(f"plain_{variant}_proxy")
    assert_logged_as_without_the_bridge(recorder, proxy, plain)


@pytest.mark.e2e
@pytest.mark.parametrize("variant", VARIANTS)
def test_old_metadata_through_the_collector_gets_the_same_result_as_before(
    variant: str, recorder: RecordingServer, rotel: RotelForwarder, request: pytest.FixtureRequest
) -> None:
    """The hand-built workaround's keys: the OTel paths honour none but generation_name, and
    the bridge changes nothing about that (its metadata prompt wins over the header's)."""
    results = []
    for name in (f"plain_{variant}_proxy", f"{variant}_proxy"):
        target: ProxyProcess = request.getfixturevalue(name)
        run, generation, _ = run_with_extra_body(recorder, target, WORKAROUND_METADATA)
        results.append(
            (
                generation.trace_id == run["trace_id"],
                generation.name,
                generation.attributes.get(PROMPT_NAME),
            )
        )
    assert results[0] == results[1]
    assert results[1][0] is True  # joined from the traceparent, on both proxies
    assert results[1][2] is None  # a metadata prompt is never linked on the OTel paths


@pytest.mark.e2e
def test_the_forwarders_auth_header_is_what_gets_the_spans_in(
    recorder: RecordingServer,
    rotel: RotelForwarder,
    legacy_proxy: ProxyProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The same pipeline with a LANGFUSE_AUTH for another key pair: refused, nothing stored."""
    wrong = {**collector_env(recorder), "LANGFUSE_AUTH": base64.b64encode(b"pk:sk").decode()}
    impostor = collector_forwarder(
        wrong, tmp_path_factory.mktemp("rotel-wrong-auth"), ports=(rotel.http_port, rotel.grpc_port)
    )
    rotel.stop()
    try:
        impostor.start()
        env = client_env(recorder.url, legacy_proxy.url, SCENARIO_PATH="use_prompt")
        (run,) = run_scenario(env)
        deadline = time.monotonic() + 30
        while not rotel_requests(recorder) and time.monotonic() < deadline:
            time.sleep(0.2)
        refused = rotel_requests(recorder)
        assert refused and all(r.status == 401 for r in refused), recorder.summary()
        assert not [s for s in recorder.spans() if is_proxy_span(s)]
        assert recorder.spans_for_trace(run["trace_id"])  # the client's own export got in
    finally:
        impostor.stop()
        rotel.start()


# Attributes from which Langfuse types a span as a generation (any model attribute).
MODEL_KEYS = {
    "langfuse.observation.model.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "llm.model_name",
    "model",
}


class OtlpSink:
    """A dead end at the collector's OTLP/HTTP address: accepts every export (200, so the
    exporter neither retries nor drops), forwards nothing, and records each span's trace id
    and attribute keys, so a test can wait for the exact spans a request makes."""

    def __init__(self, port: int) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[tuple[str, frozenset[str]]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                export = ExportTraceServiceRequest.FromString(body)
                got = [
                    (span.trace_id.hex(), frozenset(a.key for a in span.attributes))
                    for resource in export.resource_spans
                    for scope in resource.scope_spans
                    for span in scope.spans
                ]
                with lock:
                    outer.spans.extend(got)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._lock = lock
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def has_model_call(self, trace_id: str) -> bool:
        with self._lock:
            return any(t == trace_id and keys & MODEL_KEYS for t, keys in self.spans)

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.mark.e2e
def test_without_the_forwarder_no_proxy_span_arrives(
    recorder: RecordingServer, rotel: RotelForwarder, legacy_proxy: ProxyProcess
) -> None:
    """Negative control: the proxy reaches the recording server only through rotel.

    Last in this module: it replaces the shared forwarder with a dead end on its port, then
    restarts it.
    """
    # Positive control first: with rotel up, the proxy's spans arrive.
    env = client_env(recorder.url, legacy_proxy.url, SCENARIO_PATH="use_prompt")
    (run,) = run_scenario(env)
    wait_for_proxy_generations(recorder, 1)
    assert_came_through_rotel(recorder)
    rotel.stop()
    try:
        with OtlpSink(rotel.http_port) as sink:
            recorder.clear()
            (run,) = run_scenario(env)
            # The client's spans come in (they never pass rotel) ...
            recorder.wait_for_spans(
                lambda spans: any(s.span_id == run["span_id"] for s in spans), timeout=30
            )
            # ... the proxy exported its model call to the collector's address, accepted there ...
            deadline = time.monotonic() + 30
            while not sink.has_model_call(run["trace_id"]):
                assert time.monotonic() < deadline, "the proxy exported nothing to the collector"
                time.sleep(0.1)
            # ... and none of it reached Langfuse.
            assert not [s for s in recorder.spans() if is_proxy_span(s)], recorder.summary()
            assert not rotel_requests(recorder)
    finally:
        rotel.start()
