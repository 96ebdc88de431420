/**
 * Zero-code entry: `node --import @otel-bridge/node/register app.js` (or `--require`).
 * Reads OTEL_BRIDGE_GATEWAYS, LANGFUSE_* and OTEL_* from the environment and starts the bridge
 * before the app loads. A bad setting is reported on stderr and leaves the app running untraced
 * by the bridge: the bridge never stops an app from starting.
 */

import { OTEL_BRIDGE_GATEWAYS, isDisabled, start } from "./setup";

if (!isDisabled()) {
  try {
    start();
  } catch (error) {
    console.error(
      `otel-bridge: not started: ${(error as Error).message}. ` +
        `Fix ${OTEL_BRIDGE_GATEWAYS} (comma-separated http(s) base URLs) or set OTEL_BRIDGE_DISABLED=true.`,
    );
  }
}
