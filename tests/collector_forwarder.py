"""The shipped collector pipeline (collector/otelcol-config.yaml), run by rotel.

No OpenTelemetry Collector binary installs here, but ``rotel`` (PyPI, a Rust OTLP
collector/forwarder configured by flags) does. This module reads the collector's YAML, expands
``${env:...}`` exactly like the collector's confmap resolver does, and translates the traces
pipeline into rotel flags, so the tests forward LiteLLM's spans along the same route the
collector would: OTLP/HTTP in on ``/v1/traces``, out with the exporter's endpoint, headers and
compression.

Translation (collector -> rotel):

    receivers.otlp.protocols.http.endpoint   --otlp-http-endpoint (bind address chosen by the test)
    receivers.otlp.protocols.grpc.endpoint   --otlp-grpc-endpoint (rotel always opens one)
    processors.batch                         --traces-batch-max-size / --traces-batch-timeout
    processors.memory_limiter                (none: it only refuses data under memory pressure)
    exporters.otlphttp[/name].endpoint       --otlp-exporter-traces-endpoint <endpoint>/v1/traces
    exporters.otlphttp[/name].headers        --otlp-exporter-custom-headers k=v,k2=v2
    exporters.otlphttp[/name].compression    --otlp-exporter-compression
    exporters.debug                          --debug-log traces --debug-log-verbosity V
                                             (detailed -> detailed; basic, normal -> basic)
    exporters.nop                            (none: it discards)
    extensions.health_check                  (none: readiness is probed on the OTLP port)

Anything else (a transform processor, another exporter, a metrics pipeline, an unknown key)
raises :class:`UnsupportedConfig`: a forwarder that silently skipped part of the pipeline would
test a different pipeline than the one shipped.

The pipeline's exporter list is read after ``${env:...}`` expansion, as the collector reads
it: the shipped config names its second exporter ``${env:OTEL_COLLECTOR_DEBUG_EXPORTER:-nop}``
(the debug switch), so ``nop`` (the default) adds nothing and ``debug`` turns rotel's debug log
on.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from otel_bridge.demo._stack import ChildProcess, free_port

REPO = Path(__file__).resolve().parent.parent
COLLECTOR_CONFIG = REPO / "collector" / "otelcol-config.yaml"
OTLP_TRACES_PATH = "/v1/traces"


class UnsupportedConfig(ValueError):
    """The collector config uses something this translator does not know how to forward."""


# --------------------------------------------------------------------------- ${env:...} expansion

# The collector's env provider accepts names matching this (confmap/internal/envvar).
_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SCHEME_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):(?P<opaque>.*)$", re.S)
_MAX_EXPANSIONS = 100


def _retrieve(uri: str, env: Mapping[str, str]) -> Any:
    """One ``${...}`` reference, resolved like confmap's env provider (the default scheme)."""
    body = uri[2:-1]
    if ":" not in body:
        body = "env:" + body  # otelcol's resolver uses `env` as the default scheme
    match = _SCHEME_URI.match(body)
    if match is None:
        raise UnsupportedConfig(f"invalid uri {uri!r}")
    scheme, opaque = match["scheme"], match["opaque"]
    if scheme != "env":
        raise UnsupportedConfig(f"{uri!r}: only the env provider is translated, not {scheme!r}")
    if "$" in opaque:
        raise UnsupportedConfig(f"the uri {uri!r} contains unsupported characters ('$')")
    name, has_default, default = opaque.partition(":-")
    if not _ENV_NAME.match(name):
        raise UnsupportedConfig(f"environment variable {name!r} has invalid name")
    if name in env:
        text = env[name]  # set but empty stays empty: the default applies only when UNSET
    elif has_default:
        if default == "":
            return ""
        text = default
    else:
        return None  # the collector logs a warning and expands to nothing
    # The provider parses the value as YAML but keeps its original text, which is what a
    # string field (every field translated here) receives: "0x1F" stays "0x1F", not 31.
    return text


def _as_text(uri: str, value: Any) -> str:
    """An embedded reference's value, converted to text the way confmap's toString does."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise UnsupportedConfig(f"expanding {uri}, expected a scalar, got {type(value).__name__}")


def _find_uri(text: str) -> str | None:
    """The first expandable ``${...}``: the innermost one before the first ``}``."""
    while "}" in text:
        close = text.index("}")
        open_ = text.rfind("${", 0, close + 1)
        if open_ >= 0:
            return text[open_ : close + 1]
        text = text[close + 1 :]
    return None


def _expand_string(text: str, env: Mapping[str, str]) -> Any:
    # `$$` is the collector's escape for a literal `$`: protect it from expansion first.
    marker = "\x00dollar\x00"
    work: Any = text.replace("$$", marker)
    for _ in range(_MAX_EXPANSIONS):
        if not isinstance(work, str) or "${" not in work or "}" not in work:
            break
        uri = _find_uri(work)
        if uri is None:
            break
        if uri == work:
            work = _retrieve(uri, env)  # a whole-value reference keeps its YAML type
        else:
            work = work.replace(uri, _as_text(uri, _retrieve(uri, env)))
    else:
        raise UnsupportedConfig("too many recursive expansions")
    return work.replace(marker, "$") if isinstance(work, str) else work


def expand_env(node: Any, env: Mapping[str, str]) -> Any:
    """The config with every ``${env:NAME}`` / ``${env:NAME:-default}`` resolved from ``env``."""
    if isinstance(node, str):
        return _expand_string(node, env)
    if isinstance(node, list):
        return [expand_env(item, env) for item in node]
    if isinstance(node, dict):
        return {key: expand_env(value, env) for key, value in node.items()}
    return node


def load_collector_config(env: Mapping[str, str], path: Path = COLLECTOR_CONFIG) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    if not isinstance(config, dict):
        raise UnsupportedConfig(f"{path}: not a mapping")
    expanded: dict[str, Any] = expand_env(config, env)
    return expanded


# --------------------------------------------------------------------------- translation


_MEMORY_LIMITER_KEYS = {
    "check_interval",
    "limit_percentage",
    "spike_limit_percentage",
    "limit_mib",
    "spike_limit_mib",
}
_DEBUG_KEYS = {"verbosity", "sampling_initial", "sampling_thereafter"}
# The collector's debug verbosities -> rotel's (it has only basic and detailed).
_DEBUG_VERBOSITY = {"basic": "basic", "normal": "basic", "detailed": "detailed"}
_OTLPHTTP_KEYS = {"endpoint", "traces_endpoint", "headers", "encoding", "compression"}


def _type(component: str) -> str:
    return component.split("/", 1)[0]


def _only_keys(where: str, node: Any, allowed: set[str]) -> Mapping[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, Mapping):
        raise UnsupportedConfig(f"{where}: expected a mapping, got {node!r}")
    unknown = set(node) - allowed
    if unknown:
        raise UnsupportedConfig(f"{where}: keys {sorted(unknown)} are not translated")
    return node


@dataclass(frozen=True)
class ForwarderPlan:
    """What the collector config says the traces pipeline does, in rotel's terms."""

    receiver_http_endpoint: str
    receiver_grpc_endpoint: str | None
    receiver_traces_path: str
    exporter_name: str
    exporter_endpoint: str
    traces_endpoint: str
    headers: dict[str, str]
    compression: str
    batch_max_size: int | None
    batch_timeout: str | None
    ignored: tuple[str, ...] = field(default=())
    # rotel's --debug-log-verbosity when the pipeline has a debug exporter, else None.
    debug_verbosity: str | None = None

    def rotel_args(
        self, *, http_bind: str, grpc_bind: str, workdir: Path, batch_timeout: str | None = None
    ) -> list[str]:
        """Flags for ``rotel-agent start``; listen addresses are the test's, not the config's."""
        for key, value in self.headers.items():
            # rotel splits the flag on ',' and each pair on the first '='.
            if "," in key or "=" in key or "," in value:
                raise UnsupportedConfig(f"header {key!r} cannot be passed to rotel")
        args = [
            "start",
            "--otlp-http-endpoint", http_bind,
            "--otlp-grpc-endpoint", grpc_bind,
            "--otlp-receiver-traces-http-path", self.receiver_traces_path,
            # The pipeline is traces only; rotel would otherwise accept metrics and logs too.
            "--otlp-receiver-metrics-disabled",
            "--otlp-receiver-logs-disabled",
            "--exporter", "otlp",
            "--otlp-exporter-protocol", "http",
            "--otlp-exporter-traces-endpoint", self.traces_endpoint,
            # rotel insists on an endpoint for its (unused: receivers disabled) metrics and logs
            # exporters; the base endpoint satisfies it and is never posted to.
            "--otlp-exporter-endpoint", self.exporter_endpoint,
            "--otlp-exporter-compression", self.compression,
            "--pid-file", str(workdir / "rotel-agent.pid"),
            "--log-file", str(workdir / "rotel-agent.log"),
        ]  # fmt: skip
        if self.headers:
            args += [
                "--otlp-exporter-custom-headers",
                ",".join(f"{k}={v}" for k, v in self.headers.items()),
            ]
        if self.batch_max_size is not None:
            args += ["--traces-batch-max-size", str(self.batch_max_size)]
        timeout = batch_timeout or self.batch_timeout
        if timeout is not None:
            args += ["--traces-batch-timeout", timeout]
        if self.debug_verbosity is not None:
            args += ["--debug-log", "traces", "--debug-log-verbosity", self.debug_verbosity]
        return args


def _otlp_receiver(name: str, node: Any) -> tuple[str, str | None, str]:
    receiver = _only_keys(f"receivers.{name}", node, {"protocols"})
    protocols = _only_keys(
        f"receivers.{name}.protocols", receiver.get("protocols"), {"grpc", "http"}
    )
    if "http" not in protocols:
        raise UnsupportedConfig(f"receivers.{name}: no http protocol (LiteLLM's otel posts HTTP)")
    http = _only_keys(
        f"receivers.{name}.protocols.http", protocols["http"], {"endpoint", "traces_url_path"}
    )
    grpc = _only_keys(f"receivers.{name}.protocols.grpc", protocols.get("grpc"), {"endpoint"})
    http_endpoint = str(http.get("endpoint") or "localhost:4318")
    grpc_endpoint = str(grpc.get("endpoint") or "localhost:4317") if "grpc" in protocols else None
    path = str(http.get("traces_url_path") or OTLP_TRACES_PATH)
    return http_endpoint, grpc_endpoint, path


def _duration(where: str, value: Any) -> str:
    text = str(value)
    if not re.fullmatch(r"\d+(ms|s|m)", text):
        raise UnsupportedConfig(f"{where}: duration {text!r} is not translated")
    return text


def translate(config: Mapping[str, Any]) -> ForwarderPlan:
    """The expanded collector config's traces pipeline as a :class:`ForwarderPlan`."""
    _only_keys("config", config, {"extensions", "receivers", "processors", "exporters", "service"})
    service = _only_keys("service", config.get("service"), {"extensions", "pipelines", "telemetry"})
    ignored: list[str] = []
    for extension in service.get("extensions") or []:
        if _type(extension) != "health_check":
            raise UnsupportedConfig(f"extension {extension!r} is not translated")
        ignored.append(f"extensions.{extension}")
    pipelines = service.get("pipelines") or {}
    unknown = [p for p in pipelines if _type(p) != "traces"]
    if unknown or len(pipelines) != 1:
        raise UnsupportedConfig(f"exactly one traces pipeline is translated, got {list(pipelines)}")
    (pipeline_name,) = pipelines
    pipeline = _only_keys(
        f"service.pipelines.{pipeline_name}",
        pipelines[pipeline_name],
        {"receivers", "processors", "exporters"},
    )

    def component(section: str, name: str) -> Any:
        defined = config.get(section) or {}
        if name not in defined:
            raise UnsupportedConfig(f"{pipeline_name} uses {section}.{name}, which is not defined")
        return defined[name]

    receivers = pipeline.get("receivers") or []
    if len(receivers) != 1 or _type(receivers[0]) != "otlp":
        raise UnsupportedConfig(f"exactly one otlp receiver is translated, got {receivers}")
    http_endpoint, grpc_endpoint, path = _otlp_receiver(
        receivers[0], component("receivers", receivers[0])
    )

    batch_max_size: int | None = None
    batch_timeout: str | None = None
    for name in pipeline.get("processors") or []:
        node = component("processors", name)
        kind = _type(name)
        if kind == "memory_limiter":
            _only_keys(f"processors.{name}", node, _MEMORY_LIMITER_KEYS)
            ignored.append(f"processors.{name}")
        elif kind == "batch":
            batch = _only_keys(
                f"processors.{name}", node, {"send_batch_size", "send_batch_max_size", "timeout"}
            )
            size = batch.get("send_batch_max_size") or batch.get("send_batch_size")
            batch_max_size = int(size) if size is not None else None
            if "timeout" in batch:
                batch_timeout = _duration(f"processors.{name}.timeout", batch["timeout"])
        else:
            raise UnsupportedConfig(
                f"processor {name!r} is not translated: rotel would forward the spans unchanged "
                "(extend tests/collector_forwarder.py: rotel has --otlp-with-trace-processor)"
            )

    forwarding: list[tuple[str, Mapping[str, Any]]] = []
    debug_verbosity: str | None = None
    exporters = list(pipeline.get("exporters") or [])
    for name in exporters:
        if not isinstance(name, str) or not name:
            raise UnsupportedConfig(f"{pipeline_name}: exporter id {name!r} (is its variable set?)")
    if len(set(exporters)) != len(exporters):
        # The collector refuses a pipeline that lists an exporter twice.
        raise UnsupportedConfig(f"{pipeline_name} lists an exporter twice: {exporters}")
    for name in exporters:
        node = component("exporters", name)
        kind = _type(name)
        if kind == "nop":
            if node not in (None, {}):
                raise UnsupportedConfig(f"exporters.{name}: nop takes no settings, got {node!r}")
            ignored.append(f"exporters.{name}")
        elif kind == "debug":
            debug = _only_keys(f"exporters.{name}", node, _DEBUG_KEYS)
            verbosity = str(debug.get("verbosity") or "basic")
            if verbosity not in _DEBUG_VERBOSITY:
                raise UnsupportedConfig(f"exporters.{name}.verbosity {verbosity!r}")
            if debug_verbosity is not None:
                raise UnsupportedConfig("more than one debug exporter is not translated")
            debug_verbosity = _DEBUG_VERBOSITY[verbosity]
        elif kind == "otlphttp":
            forwarding.append(
                (
                    name,
                    _only_keys(f"exporters.{name}", node, _OTLPHTTP_KEYS),
                )
            )
        else:
            raise UnsupportedConfig(f"exporter {name!r} is not translated")
    if len(forwarding) != 1:
        raise UnsupportedConfig(f"exactly one otlphttp exporter is translated, got {forwarding}")
    exporter_name, exporter = forwarding[0]
    encoding = exporter.get("encoding", "proto")
    if encoding != "proto":
        raise UnsupportedConfig(f"exporters.{exporter_name}.encoding: {encoding!r}, not proto")
    compression = exporter.get("compression", "gzip")  # otlphttp's default is gzip too
    if compression not in ("gzip", "none"):
        raise UnsupportedConfig(f"exporters.{exporter_name}.compression {compression!r}")
    endpoint = str(exporter.get("endpoint") or "")
    # The otlphttp exporter appends /v1/traces to `endpoint` unless traces_endpoint is given.
    traces_endpoint = str(
        exporter.get("traces_endpoint") or endpoint.rstrip("/") + OTLP_TRACES_PATH
    )
    if not traces_endpoint.startswith(("http://", "https://")):
        raise UnsupportedConfig(
            f"exporters.{exporter_name}: endpoint {endpoint!r} is not a URL (is its variable set?)"
        )
    headers = {
        str(k): "" if v is None else str(v) for k, v in (exporter.get("headers") or {}).items()
    }
    return ForwarderPlan(
        receiver_http_endpoint=http_endpoint,
        receiver_grpc_endpoint=grpc_endpoint,
        receiver_traces_path=path,
        exporter_name=exporter_name,
        exporter_endpoint=endpoint,
        traces_endpoint=traces_endpoint,
        headers=headers,
        compression=str(compression),
        batch_max_size=batch_max_size,
        batch_timeout=batch_timeout,
        ignored=tuple(ignored),
        debug_verbosity=debug_verbosity,
    )


# --------------------------------------------------------------------------- the rotel process


def rotel_binary() -> Path:
    spec = importlib.util.find_spec("rotel")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("rotel is not installed in the test environment (pip install rotel)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"
    if not binary.exists():
        raise RuntimeError(f"{binary} not found: the rotel wheel ships its agent binary there")
    return binary


class RotelForwarder(ChildProcess):
    """rotel running the collector pipeline, listening on loopback ports picked here.

    ``stop()`` then ``start()`` restarts it on the same ports (the proxy keeps its endpoint).
    """

    def __init__(
        self,
        plan: ForwarderPlan,
        workdir: Path,
        *,
        batch_timeout: str = "100ms",
        ports: tuple[int, int] | None = None,
    ) -> None:
        self.plan = plan
        self.workdir = workdir
        self.batch_timeout = batch_timeout
        self.http_port, self.grpc_port = ports or (free_port(), free_port())
        self.starts = 0
        super().__init__(workdir / "rotel-stdout.log")

    @property
    def url(self) -> str:
        """Base URL of the OTLP/HTTP receiver."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def traces_url(self) -> str:
        return self.url + self.plan.receiver_traces_path

    def command(self) -> list[str]:
        return [
            str(rotel_binary()),
            *self.plan.rotel_args(
                http_bind=f"127.0.0.1:{self.http_port}",
                grpc_bind=f"127.0.0.1:{self.grpc_port}",
                workdir=self.workdir,
                batch_timeout=self.batch_timeout,
            ),
        ]

    def start(self, timeout: float = 20.0) -> RotelForwarder:
        if self.process is not None and self.process.poll() is None:
            return self
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTEL_", "OTEL_"))}
        self.starts += 1

        def listening() -> bool:
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=0.5):
                return True

        self.launch(self.command(), env, self.workdir, listening, timeout, 0.1, append_log=True)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)

    def __enter__(self) -> RotelForwarder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def collector_forwarder(
    env: Mapping[str, str], workdir: Path, *, path: Path = COLLECTOR_CONFIG, **kwargs: Any
) -> RotelForwarder:
    """An (unstarted) rotel forwarder for the shipped collector config, expanded from ``env``."""
    return RotelForwarder(translate(load_collector_config(env, path)), workdir, **kwargs)


__all__: Sequence[str] = [
    "COLLECTOR_CONFIG",
    "ForwarderPlan",
    "RotelForwarder",
    "UnsupportedConfig",
    "collector_forwarder",
    "expand_env",
    "load_collector_config",
    "rotel_binary",
    "translate",
]
