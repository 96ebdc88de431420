"""Import the proxy hook (``otel_bridge.litellm``) in the client-tier test environment.

LiteLLM lives only in the proxy tier's interpreter. The hook uses nothing from LiteLLM but
the ``CustomLogger`` base class, so when LiteLLM is not importable the module is loaded
against a minimal stand-in for that one class, and ``sys.modules`` is restored afterwards:
no other test sees a fake ``litellm``. The real class is exercised end to end, by the proxy.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import cache
from unittest import mock


class _CustomLoggerStandIn:
    """What ``LiteLLMBridge`` needs of ``litellm.integrations.custom_logger.CustomLogger``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass


@cache
def bridge_module() -> types.ModuleType:
    if importlib.util.find_spec("litellm") is not None:
        return importlib.import_module("otel_bridge.litellm")
    litellm = types.ModuleType("litellm")
    integrations = types.ModuleType("litellm.integrations")
    custom_logger = types.ModuleType("litellm.integrations.custom_logger")
    custom_logger.CustomLogger = _CustomLoggerStandIn  # type: ignore[attr-defined]
    litellm.integrations = integrations  # type: ignore[attr-defined]
    integrations.custom_logger = custom_logger  # type: ignore[attr-defined]
    fakes = {
        "litellm": litellm,
        "litellm.integrations": integrations,
        "litellm.integrations.custom_logger": custom_logger,
    }
    package = importlib.import_module("otel_bridge")
    with mock.patch.dict(sys.modules, fakes):
        module = importlib.import_module("otel_bridge.litellm")
    # patch.dict removed otel_bridge.litellm from sys.modules again; drop the attribute too,
    # so `import otel_bridge.litellm` elsewhere still fails as it would without LiteLLM.
    if getattr(package, "litellm", None) is module:
        delattr(package, "litellm")
    return module
