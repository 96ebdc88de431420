"""Environment settings shared by both tiers. Read once, at instrumentation or hook start."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

OTEL_BRIDGE_GATEWAYS = "OTEL_BRIDGE_GATEWAYS"
OTEL_BRIDGE_DISABLED = "OTEL_BRIDGE_DISABLED"
OTEL_BRIDGE_TRUSTED_CALLERS = "OTEL_BRIDGE_TRUSTED_CALLERS"
OTEL_BRIDGE_REFUSED_BAGGAGE_PREFIXES = "OTEL_BRIDGE_REFUSED_BAGGAGE_PREFIXES"
# The OpenAI SDK's own setting: an app that names its gateway this way has said where it is.
OPENAI_BASE_URL = "OPENAI_BASE_URL"

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme, host and port: the unit a browser, and the bridge, trust."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @classmethod
    def of(cls, scheme: str, host: str, port: int | None) -> Origin | None:
        """From a request URL's parts; None for a scheme that is not http(s)."""
        scheme = scheme.lower()
        default = _DEFAULT_PORTS.get(scheme)
        if default is None or not host:
            return None
        return cls(scheme, host.lower(), port or default)

    @classmethod
    def parse(cls, url: str) -> Origin:
        """Origin of ``url``; ``ValueError`` names what is wrong with it."""
        text = url.strip()
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ValueError(f"gateway {text!r}: scheme must be http or https")
        if not parts.hostname:
            raise ValueError(f"gateway {text!r}: no host")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as error:
            raise ValueError(f"gateway {text!r}: {error}") from None
        return cls(scheme, parts.hostname.lower(), port)


def parse_gateways(value: str | Iterable[str] | None) -> frozenset[Origin]:
    """Parse ``OTEL_BRIDGE_GATEWAYS``: comma-separated base URLs; paths are ignored."""
    if value is None:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else list(value)
    return frozenset(Origin.parse(item) for item in items if item.strip())


def gateways_from_env() -> frozenset[Origin]:
    return parse_gateways(os.environ.get(OTEL_BRIDGE_GATEWAYS))


def gateways_named() -> bool:
    """Whether ``OTEL_BRIDGE_GATEWAYS`` names the gateways (then nothing else counts)."""
    return bool(os.environ.get(OTEL_BRIDGE_GATEWAYS, "").strip())


def openai_base_url() -> tuple[Origin | None, str | None]:
    """``OPENAI_BASE_URL``'s origin, or the reason it cannot be one; (None, None) when unset."""
    value = os.environ.get(OPENAI_BASE_URL, "").strip()
    if not value:
        return None, None
    try:
        return Origin.parse(value), None
    except ValueError as error:
        return None, str(error).replace("gateway ", f"{OPENAI_BASE_URL} ", 1)


def is_disabled() -> bool:
    return os.environ.get(OTEL_BRIDGE_DISABLED, "").strip().lower() in {"1", "true", "yes", "on"}


def refused_baggage_prefixes(default: tuple[str, ...]) -> tuple[str, ...]:
    """``OTEL_BRIDGE_REFUSED_BAGGAGE_PREFIXES``: comma-separated; ``none`` refuses nothing."""
    value = os.environ.get(OTEL_BRIDGE_REFUSED_BAGGAGE_PREFIXES)
    if value is None:
        return default
    if value.strip().lower() == "none":
        return ()
    return tuple(p.strip() for p in value.split(",") if p.strip())
