"""Run the proxy hook (``otel_bridge.litellm``) in the client-tier test environment.

LiteLLM lives only in the proxy tier's interpreter. The hook needs of LiteLLM the
``CustomLogger`` base class and, while it looks for LiteLLM's tracer providers, the module's
callback lists. When LiteLLM is not importable here, a minimal stand-in module provides
exactly those, and only while the hook module is imported or the hook runs
(:func:`call_bridge`): ``sys.modules`` is restored afterwards, so no other test sees a fake
``litellm``. The real LiteLLM is exercised end to end, by the proxy processes.

The module is imported with ``OTEL_BRIDGE_DISABLED=1`` so that importing it here does not
install the proxy's global propagator or start its watcher thread in the test process.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
import types
from collections.abc import Iterator
from functools import cache
from typing import Any
from unittest import mock

HAVE_LITELLM = importlib.util.find_spec("litellm") is not None


class _CustomLoggerStandIn:
    """What ``LiteLLMBridge`` needs of ``litellm.integrations.custom_logger.CustomLogger``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass


def _fake_litellm() -> dict[str, types.ModuleType]:
    litellm = types.ModuleType("litellm")
    integrations = types.ModuleType("litellm.integrations")
    custom_logger = types.ModuleType("litellm.integrations.custom_logger")
    custom_logger.CustomLogger = _CustomLoggerStandIn  # type: ignore[attr-defined]
    litellm.integrations = integrations  # type: ignore[attr-defined]
    integrations.custom_logger = custom_logger  # type: ignore[attr-defined]
    for name in ("callbacks", "success_callback", "failure_callback"):
        setattr(litellm, name, [])
    return {
        "litellm": litellm,
        "litellm.integrations": integrations,
        "litellm.integrations.custom_logger": custom_logger,
    }


_FAKES = _fake_litellm()


@contextlib.contextmanager
def litellm_available() -> Iterator[None]:
    if HAVE_LITELLM:
        yield
        return
    with mock.patch.dict(sys.modules, _FAKES):
        yield


@cache
def bridge_module() -> types.ModuleType:
    package = importlib.import_module("otel_bridge")
    with mock.patch.dict(os.environ, {"OTEL_BRIDGE_DISABLED": "1"}), litellm_available():
        module = importlib.import_module("otel_bridge.litellm")
    # Without LiteLLM, patch.dict took otel_bridge.litellm out of sys.modules again; drop the
    # attribute too, so `import otel_bridge.litellm` elsewhere fails as it would without LiteLLM.
    if not HAVE_LITELLM and getattr(package, "litellm", None) is module:
        delattr(package, "litellm")
    return module


def make_bridge(trust: Any = None) -> Any:
    module = bridge_module()
    with litellm_available():
        return module.LiteLLMBridge(trust=trust if trust is not None else module.TrustPolicy())


def call_bridge(bridge: Any, data: Any, user_api_key_dict: object = None) -> None:
    """``bridge.bridge_request(data, user_api_key_dict)``, with LiteLLM importable."""
    with litellm_available():
        bridge.bridge_request(data, user_api_key_dict)
