"""OpenAI SDK adapter: an app that gives its OpenAI client a base_url has named its gateway.

Consulted only while ``OTEL_BRIDGE_GATEWAYS`` is unset. The bridge wraps the constructors of
``openai.OpenAI`` and ``openai.AsyncOpenAI`` (when ``openai`` is imported, or at once if it
already is) and counts the origin of each client's base_url as a gateway, unless it is one
of OpenAI's own hosts. Subclasses that talk to a cloud provider (Azure, Bedrock) and clients
built with ``provider=`` are never counted: they are not the app's gateway.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from otel_bridge import _client

_logger = logging.getLogger(__name__)

_CLIENT_CLASSES = ("OpenAI", "AsyncOpenAI")
_SOURCE = "an OpenAI client's base_url"
# Marks a constructor the bridge wrapped, and holds the original for unwatch().
_ORIGINAL = "__otel_bridge_original_init__"

_hook_registered = False


def watch_clients() -> None:
    """Learn the base_url of every ``openai.OpenAI``/``AsyncOpenAI`` built from now on."""
    global _hook_registered
    if _hook_registered:
        return
    try:
        from wrapt import register_post_import_hook
    except ImportError:  # then OPENAI_BASE_URL is the only way the app names its gateway
        return
    register_post_import_hook(_wrap_client_classes, "openai")
    _hook_registered = True


def unwatch() -> None:
    """Put the OpenAI constructors back, if the bridge wrapped them."""
    import sys

    module = sys.modules.get("openai")
    for cls in _client_classes(module):
        original = getattr(vars(cls).get("__init__"), _ORIGINAL, None)
        if original is not None:
            type.__setattr__(cls, "__init__", original)


def _client_classes(module: object) -> list[type]:
    found = (getattr(module, name, None) for name in _CLIENT_CLASSES)
    return [cls for cls in found if isinstance(cls, type)]


def _wrap_client_classes(module: object) -> None:
    try:
        for cls in _client_classes(module):
            init = vars(cls).get("__init__")
            if callable(init) and getattr(init, _ORIGINAL, None) is None:
                type.__setattr__(cls, "__init__", _learning_init(cls, init))
    except Exception:  # a changed SDK must not stop the app's import of openai
        _logger.debug("otel-bridge: could not watch OpenAI clients", exc_info=True)


def _learning_init(cls: type, init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        # Exactly these classes: Azure and Bedrock subclasses reach their cloud, not a gateway.
        if type(self) is cls and kwargs.get("provider") is None:
            try:
                learn_base_url(getattr(self, "base_url", None))
            except Exception:  # never let the bridge break the app's client
                _logger.debug("otel-bridge: could not read an OpenAI base_url", exc_info=True)

    setattr(__init__, _ORIGINAL, init)
    return __init__


def learn_base_url(base_url: object) -> None:
    """Count ``base_url``'s origin as a gateway unless it is OpenAI's own API."""
    origin = _client.origin_of(base_url)
    if origin is None or is_openai_host(origin.host):
        return
    _client.learn_gateway(origin, _SOURCE)


def is_openai_host(host: str) -> bool:
    return host == "openai.com" or host.endswith(".openai.com")
