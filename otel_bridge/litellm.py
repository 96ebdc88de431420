"""LiteLLM proxy adapter: the bridge as a LiteLLM callback.

Add it next to the Langfuse callback in the proxy's ``config.yaml``::

    litellm_settings:
      success_callback: ["langfuse"]
      callbacks: ["otel_bridge.litellm.bridge"]

Before each call, :class:`LiteLLMBridge` reads ``traceparent`` and ``baggage`` from the
incoming request and writes ``existing_trace_id``, ``parent_observation_id`` and ``prompt``
into the request's metadata, where LiteLLM's Langfuse logging reads them. Whatever happens,
the request goes on: the hook logs and counts what it could not use and never raises.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from otel_bridge._config import OTEL_BRIDGE_TRUSTED_CALLERS, is_disabled
from otel_bridge._context import decode_headers
from otel_bridge._proxy import RejectionLog, TrustPolicy, apply, langfuse_metadata

_logger = logging.getLogger("otel_bridge.proxy")

# /chat/completions keeps caller metadata in "metadata"; /messages and /responses in
# "litellm_metadata", and their logging object already holds a copy of its own.
_METADATA_FIELDS = ("metadata", "litellm_metadata")


def _request_headers(data: Mapping[str, Any]) -> Mapping[str, Any]:
    request = data.get("proxy_server_request")
    headers = request.get("headers") if isinstance(request, Mapping) else None
    if not isinstance(headers, Mapping):
        metadata = data.get("metadata")
        headers = metadata.get("headers") if isinstance(metadata, Mapping) else None
    return headers if isinstance(headers, Mapping) else {}


def _metadata_targets(data: MutableMapping[str, Any]) -> list[MutableMapping[str, object]]:
    targets: list[MutableMapping[str, object]] = [
        value for field in _METADATA_FIELDS if isinstance(value := data.get(field), MutableMapping)
    ]
    params = getattr(data.get("litellm_logging_obj"), "litellm_params", None)
    if isinstance(params, Mapping) and isinstance(params.get("metadata"), MutableMapping):
        targets.append(params["metadata"])
    unique: dict[int, MutableMapping[str, object]] = {id(t): t for t in targets}
    return list(unique.values())


def _caller_ids(user_api_key_dict: object) -> tuple[tuple[str | None, ...], tuple[str | None, ...]]:
    def text(name: str) -> str | None:
        value = getattr(user_api_key_dict, name, None)
        return value if isinstance(value, str) else None

    return (text("key_alias"), text("token")), (text("team_id"), text("team_alias"))


class LiteLLMBridge(CustomLogger):  # type: ignore[misc]
    """Turns W3C context on incoming proxy requests into LiteLLM Langfuse metadata."""

    def __init__(self, trust: TrustPolicy | None = None) -> None:
        super().__init__()
        self.enabled = not is_disabled()
        self.trust = trust or TrustPolicy.parse(os.environ.get(OTEL_BRIDGE_TRUSTED_CALLERS))
        self.rejections = RejectionLog()

    def bridge_request(
        self, data: MutableMapping[str, Any], user_api_key_dict: object = None
    ) -> None:
        """Apply the request's bridge context to its metadata (the hook's whole effect)."""
        context = decode_headers(_request_headers(data))
        if context.rejections:
            self.rejections.record(context.rejections)
        if not context:
            return
        targets = _metadata_targets(data)
        if not targets:
            return
        caller: dict[str, object] = {}
        for target in reversed(targets):
            caller.update(target)
        may_attach = self.trust.trusts(*_caller_ids(user_api_key_dict))
        if context.parent is not None and not may_attach:
            self.rejections.record(("caller_not_trusted",))
        apply(langfuse_metadata(context, caller, may_attach=may_attach), targets)

    async def async_pre_call_hook(
        self,
        user_api_key_dict: Any,
        cache: Any,
        data: dict[str, Any],
        call_type: Any,
    ) -> dict[str, Any]:
        if self.enabled:
            try:
                self.bridge_request(data, user_api_key_dict)
            except Exception:  # the request must go on whatever the bridge hits
                self.rejections.record(("internal_error",))
                _logger.exception("otel-bridge: hook failed; the request continues unbridged")
        return data


bridge = LiteLLMBridge()
"""The instance ``config.yaml`` names: ``callbacks: ["otel_bridge.litellm.bridge"]``."""
