/**
 * otel-bridge for Node.js: the client tier (see README.md and docs/header-contract.md).
 *
 * Zero-code: `node --import @otel-bridge/node/register app.js` with OTEL_BRIDGE_GATEWAYS set.
 * Own NodeSDK: `new NodeSDK(withOtelBridge({ ... }))`.
 */

export {
  GATEWAY_ATTRIBUTE,
  GatewayBaggagePropagator,
  currentPrompt,
  isGatewaySpan,
  requestHook,
  startSpanHook,
  usePrompt,
} from "./client";
export {
  LANGFUSE_BAGGAGE_PREFIX,
  PROMPT_NAME_KEY,
  PROMPT_VERSION_KEY,
  formatBaggage,
  parseBaggage,
  parseGateways,
  promptFromMembers,
  promptMembers,
  toPromptRef,
  type Member,
  type Origin,
  type PromptRef,
} from "./codec";
export {
  OTEL_BRIDGE_DISABLED,
  OTEL_BRIDGE_GATEWAYS,
  bridgeUndiciConfig,
  configure,
  createPropagator,
  isDisabled,
  langfuseExportFilter,
  start,
  withOtelBridge,
  type BridgeHandle,
  type BridgeOptions,
  type BridgeableSDKConfig,
} from "./setup";
