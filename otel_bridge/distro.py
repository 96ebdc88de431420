"""``opentelemetry-instrument`` entry points: the bridge switched on from the environment.

    OTEL_PYTHON_DISTRO=otel_bridge OTEL_PYTHON_CONFIGURATOR=otel_bridge \\
    OTEL_BRIDGE_GATEWAYS=http://localhost:4000 opentelemetry-instrument python app.py
"""

from __future__ import annotations

import logging
import os
from typing import Any

from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.util._importlib_metadata import EntryPoint

from otel_bridge._config import is_disabled
from otel_bridge._instrumentor import BridgeInstrumentor

_logger = logging.getLogger(__name__)

_TRACE_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def apply_defaults() -> None:
    """Environment defaults; anything the user set wins."""
    # Langfuse accepts OTLP over HTTP only, never gRPC (opentelemetry-distro's default).
    os.environ.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    # The Langfuse SDK exports its own spans: an OTLP exporter is wanted only when one is aimed.
    wants_otlp = any(os.environ.get(name) for name in _TRACE_ENDPOINTS)
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "otlp" if wants_otlp else "none")
    os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
    os.environ.setdefault("OTEL_LOGS_EXPORTER", "none")


def start_bridge(*, raise_bad_setting: bool = False, **kwargs: Any) -> None:
    """Instrument the client tier; whatever goes wrong is logged and leaves the app running.

    ``raise_bad_setting``: an invalid gateway setting raises ``ValueError`` instead (for
    ``otel_bridge.instrument()``, whose caller can fix it).
    """
    instrumentor = BridgeInstrumentor()
    if is_disabled() or instrumentor.is_instrumented_by_opentelemetry:
        return
    try:
        instrumentor.instrument(**kwargs)
    except ValueError as error:
        if raise_bad_setting:
            raise
        _logger.error("otel-bridge: not started: %s", error)
    except Exception:  # the bridge never stops an app
        _logger.exception("otel-bridge: not started")


class OtelBridgeDistro(BaseDistro):  # type: ignore[misc]
    def _configure(self, **kwargs: Any) -> None:
        apply_defaults()

    def load_instrumentor(self, entry_point: EntryPoint, **kwargs: Any) -> None:
        # The bridge instruments httpx and httpx2 itself, with its request hooks.
        if entry_point.name in ("httpx", "httpx2") and not is_disabled():
            start_bridge()
            return
        super().load_instrumentor(entry_point, **kwargs)


class OtelBridgeConfigurator(_OTelSDKConfigurator):
    def _configure(self, **kwargs: Any) -> None:
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]
        start_bridge()

    def _configure_sdk_only(self) -> None:
        super()._configure()  # type: ignore[no-untyped-call]
