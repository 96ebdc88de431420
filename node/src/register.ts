/**
 * Zero-code entry: `node --import @otel-bridge/node/register app.js` (or `--require`).
 * Reads OTEL_BRIDGE_GATEWAYS, LANGFUSE_* and OTEL_* from the environment and starts the bridge
 * before the app loads. A bad setting is reported on stderr and leaves the app running untraced
 * by the bridge: the bridge never stops an app from starting.
 */

import { OTEL_BRIDGE_GATEWAYS, isDisabled, start } from "./setup";
import { configuredGateways } from "./client";

if (!isDisabled()) {
  try {
    start();
    if (configuredGateways().length === 0) {
      console.warn(
        `otel-bridge: ${OTEL_BRIDGE_GATEWAYS} is empty, so no request carries a prompt link; ` +
          "set it to the gateway's base URL, e.g. http://localhost:4000",
      );
    }
  } catch (error) {
    console.error(
      `otel-bridge: not started: ${(error as Error).message}. ` +
        `Fix ${OTEL_BRIDGE_GATEWAYS} (comma-separated http(s) base URLs) or set OTEL_BRIDGE_DISABLED=true.`,
    );
  }
}
