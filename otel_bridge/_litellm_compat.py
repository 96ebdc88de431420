"""What the installed LiteLLM release offers the bridge, and what it cannot do there.

LiteLLM decides the proxy's langfuse major and which logging paths exist; the bridge adapts
and, where a path cannot work, says so once at start-up (docs/compatibility.md has the measured
matrix, docs/setup-by-litellm-version.md the set-up per range).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

_logger = logging.getLogger("otel_bridge.proxy")

Version = tuple[int, int, int]

# LiteLLM's typed OTel logger (LITELLM_OTEL_V2) exists from this release; before it the
# variable is ignored and the legacy logger runs.
OTEL_V2_SINCE: Version = (1, 88, 0)
# From this release the `langfuse` callback refuses anything but langfuse >=4.7,<5; before it
# the callback uses the v2 SDK API (`Langfuse.trace`), which only langfuse 2.x has.
LANGFUSE_V4_SINCE: Version = (1, 104, 0)
# Before this release LiteLLM imports a `callbacks:` entry only from a .py file next to
# config.yaml, so a dotted path into an installed package fails at start-up.
DOTTED_CALLBACKS_SINCE: Version = (1, 94, 0)
# Before this release LiteLLM's OTel logger imports the gRPC OTLP exporter whatever protocol
# it exports with, so `langfuse_otel` and `otel` fail to start without that package.
GRPC_EXPORTER_OPTIONAL_SINCE: Version = (1, 81, 3)
# The bridge's oldest measured release.
OLDEST_SUPPORTED: Version = (1, 74, 0)

CALLBACK_MODULE = "otel_bridge_callback"
CALLBACK_FILE_NAME = f"{CALLBACK_MODULE}.py"
CALLBACK_FILE_ENTRY = f"{CALLBACK_MODULE}.bridge"
PACKAGE_ENTRY = "otel_bridge.litellm.bridge"
CALLBACK_FILE_TEXT = f'''"""The otel-bridge hook, as a file next to config.yaml (see below).

Written by `otel-bridge litellm-callback-file`. LiteLLM before 1.94 imports `callbacks:`
entries only from a .py file next to config.yaml. Name it in config.yaml as
    litellm_settings:
      callbacks: ["{CALLBACK_FILE_ENTRY}"]
"""

from otel_bridge.litellm import bridge

__all__ = ["bridge"]
'''


def parse_version(text: str | None) -> Version | None:
    """``1.74.15.post2`` -> (1, 74, 15); None for anything without three leading numbers."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def installed_version(distribution: str) -> Version | None:
    try:
        return parse_version(metadata.version(distribution))
    except metadata.PackageNotFoundError:
        return None


def _text(version: Version) -> str:
    return ".".join(map(str, version))


def langfuse_requirement(litellm: Version) -> str:
    """The langfuse requirement of this LiteLLM's `langfuse` callback."""
    return "langfuse>=4.7,<5" if litellm >= LANGFUSE_V4_SINCE else "langfuse>=2.7.3,<3"


def langfuse_fits(litellm: Version, langfuse: Version) -> bool:
    if litellm >= LANGFUSE_V4_SINCE:
        return (4, 7, 0) <= langfuse < (5, 0, 0)
    return (2, 7, 3) <= langfuse < (3, 0, 0)


def needs_callback_file(litellm: Version) -> bool:
    return litellm < DOTTED_CALLBACKS_SINCE


def has_otel_v2(litellm: Version) -> bool:
    return litellm >= OTEL_V2_SINCE


@dataclass(frozen=True, slots=True)
class Finding:
    """Something that cannot work in this deployment, for one start-up log line."""

    path: str
    reason: str

    def line(self) -> str:
        return f"otel-bridge: unsupported here: {self.path}: {self.reason}"


def findings(
    litellm: Version | None,
    langfuse: Version | None,
    environ: Mapping[str, str],
    *,
    has_grpc_exporter: bool = True,
) -> list[Finding]:
    """What the bridge cannot do with these versions and this environment."""
    if litellm is None:
        return []
    found: list[Finding] = []
    if litellm < OLDEST_SUPPORTED:
        found.append(
            Finding(
                "all paths",
                f"LiteLLM {_text(litellm)} is older than {_text(OLDEST_SUPPORTED)}, the oldest "
                "release measured (docs/compatibility.md)",
            )
        )
    v2_asked = environ.get("LITELLM_OTEL_V2", "").strip().lower() in ("1", "true", "yes", "on")
    if v2_asked and not has_otel_v2(litellm):
        found.append(
            Finding(
                "LITELLM_OTEL_V2",
                f"LiteLLM {_text(litellm)} has no OTel V2 (added in {_text(OTEL_V2_SINCE)}); "
                "it ignores LITELLM_OTEL_V2 and runs the legacy OTel logger, which the bridge "
                "supports",
            )
        )
    if litellm < GRPC_EXPORTER_OPTIONAL_SINCE and not has_grpc_exporter:
        found.append(
            Finding(
                "langfuse_otel and otel callbacks",
                f"LiteLLM {_text(litellm)}'s OTel logger imports the gRPC OTLP exporter even to "
                "export over HTTP, and it is not installed: those callbacks log nothing; "
                'pip install "opentelemetry-exporter-otlp" in the proxy',
            )
        )
    if langfuse is not None and not langfuse_fits(litellm, langfuse):
        found.append(
            Finding(
                "langfuse callback",
                f"LiteLLM {_text(litellm)}'s `langfuse` callback needs "
                f"{langfuse_requirement(litellm)}, installed is langfuse {_text(langfuse)}: "
                f'it logs nothing; pip install "{langfuse_requirement(litellm)}" in the proxy '
                "(langfuse_otel and otel do not use it)",
            )
        )
    return found


def log_findings(environ: Mapping[str, str] | None = None) -> list[Finding]:
    """Log, once per process, one warning line per thing that cannot work here."""
    found = findings(
        installed_version("litellm"),
        installed_version("langfuse"),
        os.environ if environ is None else environ,
        has_grpc_exporter=installed_version("opentelemetry-exporter-otlp-proto-grpc") is not None,
    )
    for finding in found:
        _logger.warning("%s", finding.line())
    return found


# --- the callback file next to config.yaml ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallbackFile:
    path: Path
    written: bool  # False: an identical file was already there
    config_names_it: bool | None  # None: no config.yaml to read


def _config_callbacks(config_text: str) -> list[str]:
    """The entries of every ``callbacks:`` list in config.yaml, without a YAML dependency."""
    entries: list[str] = []
    for match in re.finditer(r"^\s*callbacks\s*:\s*\[([^\]]*)\]", config_text, re.MULTILINE):
        entries.extend(e.strip().strip("'\"") for e in match[1].split(",") if e.strip())
    for match in re.finditer(r"^(\s*)callbacks\s*:\s*\n((?:\1\s*-\s*.*\n?)+)", config_text, re.M):
        entries.extend(
            line.strip()[1:].strip().strip("'\"") for line in match[2].splitlines() if line.strip()
        )
    return entries


def write_callback_file(config_path: Path) -> CallbackFile:
    """Write :data:`CALLBACK_FILE_NAME` next to ``config_path`` (which need not exist yet).

    Raises ``FileExistsError`` if a different file of that name is there: it is someone
    else's, and overwriting it would silently change what the proxy loads.
    """
    target = config_path.resolve().parent / CALLBACK_FILE_NAME
    written = True
    if target.exists():
        if target.read_text() != CALLBACK_FILE_TEXT:
            raise FileExistsError(
                f"{target} exists with other content; move it away or compare it with "
                "`otel-bridge litellm-callback-file --print`"
            )
        written = False
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(CALLBACK_FILE_TEXT)
    names_it = (
        CALLBACK_FILE_ENTRY in _config_callbacks(config_path.read_text())
        if config_path.is_file()
        else None
    )
    return CallbackFile(target, written, names_it)


def callback_file_command(config: str, *, print_only: bool = False) -> int:
    """``otel-bridge litellm-callback-file CONFIG``: write the file, say what config.yaml needs."""
    if print_only:
        print(CALLBACK_FILE_TEXT, end="")
        return 0
    config_path = Path(config)
    if config_path.is_dir():
        print(
            f"otel-bridge litellm-callback-file: {config} is a directory; pass the path of the "
            "proxy's config.yaml (the file is written next to it)"
        )
        return 2
    try:
        result = write_callback_file(config_path)
    except (FileExistsError, OSError) as error:
        print(f"otel-bridge litellm-callback-file: {error}")
        return 1
    print(f"{'wrote' if result.written else 'already up to date:'} {result.path}")
    if result.config_names_it is False:
        print(
            f"{config_path} does not name it yet: set\n"
            f'  litellm_settings:\n    callbacks: ["{CALLBACK_FILE_ENTRY}"]\n'
            f"(instead of {PACKAGE_ENTRY}, which LiteLLM before "
            f"{_text(DOTTED_CALLBACKS_SINCE)} cannot import)"
        )
        return 1
    if result.config_names_it is None:
        print(f'name it in {config_path}: callbacks: ["{CALLBACK_FILE_ENTRY}"]')
    return 0
