/**
 * Wiring the bridge into a Node process: zero-code (`start()`, used by the register entry) and
 * one call for apps that build their own NodeSDK (`withOtelBridge()`).
 */

import { diag, type TextMapPropagator } from "@opentelemetry/api";
import { CompositePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import { registerInstrumentations, type Instrumentation } from "@opentelemetry/instrumentation";
import {
  UndiciInstrumentation,
  type UndiciInstrumentationConfig,
} from "@opentelemetry/instrumentation-undici";
import { LangfuseSpanProcessor, isDefaultExportSpan } from "@langfuse/otel";
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace-base";

import {
  GatewayBaggagePropagator,
  configureGateways,
  isGatewaySpan,
  requestHook,
  startSpanHook,
} from "./client";
import { parseGateways, type Origin } from "./codec";

export const OTEL_BRIDGE_GATEWAYS = "OTEL_BRIDGE_GATEWAYS";
export const OTEL_BRIDGE_DISABLED = "OTEL_BRIDGE_DISABLED";
const UNDICI_INSTRUMENTATION = "@opentelemetry/instrumentation-undici";

export interface BridgeOptions {
  /** Gateway base URLs; defaults to OTEL_BRIDGE_GATEWAYS. An invalid entry throws, naming it. */
  gateways?: string | readonly string[];
  /** Environment to read (tests); defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

export function isDisabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return ["1", "true", "yes", "on"].includes((env[OTEL_BRIDGE_DISABLED] ?? "").trim().toLowerCase());
}

/** Set the gateways from `options.gateways` or OTEL_BRIDGE_GATEWAYS; returns them. */
export function configure(options: BridgeOptions = {}): Origin[] {
  const env = options.env ?? process.env;
  const gateways = parseGateways(options.gateways ?? env[OTEL_BRIDGE_GATEWAYS]);
  configureGateways(gateways);
  if (gateways.length === 0) {
    console.warn(
      "otel-bridge: OTEL_BRIDGE_GATEWAYS is empty, so no request will carry a prompt link; " +
        "set it to the gateway's base URL, e.g. http://localhost:4000",
    );
  }
  return gateways;
}

/**
 * Langfuse's default `shouldExportSpan`, plus the client spans of gateway calls: the gateway's
 * generation is parented to that span, so without it the parent id would dangle.
 *
 *     new LangfuseSpanProcessor({ shouldExportSpan: langfuseExportFilter })
 */
export function langfuseExportFilter({ otelSpan }: { otelSpan: ReadableSpan }): boolean {
  return isGatewaySpan(otelSpan) || isDefaultExportSpan(otelSpan);
}

/**
 * `OTEL_PROPAGATORS` (default `tracecontext,baggage`) with `baggage` served by the bridge's
 * propagator, which is added when the list has none: the bridge's context travels in baggage.
 */
export function createPropagator(env: NodeJS.ProcessEnv = process.env): TextMapPropagator {
  const names = (env.OTEL_PROPAGATORS ?? "tracecontext,baggage")
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name && name !== "none");
  const propagators: TextMapPropagator[] = [];
  for (const name of new Set(names)) {
    if (name === "tracecontext") propagators.push(new W3CTraceContextPropagator());
    else if (name !== "baggage") {
      console.warn(
        `otel-bridge: OTEL_PROPAGATORS names ${JSON.stringify(name)}, which the bridge's ` +
          "register entry does not provide; build your own NodeSDK with withOtelBridge() for it",
      );
    }
  }
  propagators.push(new GatewayBaggagePropagator());
  return new CompositePropagator({ propagators });
}

type Hook<A extends unknown[], R> = ((...args: A) => R) | undefined;

function both<A extends unknown[]>(
  ours: (...args: A) => void,
  theirs: Hook<A, void>,
): (...args: A) => void {
  return theirs === undefined ? ours : (...args: A) => {
    ours(...args);
    theirs(...args);
  };
}

/** An undici (fetch) instrumentation config with the bridge's hooks, keeping any of yours. */
export function bridgeUndiciConfig(
  config: UndiciInstrumentationConfig = {},
): UndiciInstrumentationConfig {
  const theirStart = config.startSpanHook;
  return {
    ...config,
    requestHook: both(requestHook, config.requestHook as Hook<Parameters<typeof requestHook>, void>),
    startSpanHook: (request) => {
      const ours = startSpanHook(request);
      const theirs = theirStart?.(request) ?? {};
      return ours === undefined ? theirs : { ...theirs, ...ours };
    },
  };
}

function isUndiciInstrumentation(item: unknown): item is UndiciInstrumentation {
  return (item as Instrumentation | null)?.instrumentationName === UNDICI_INSTRUMENTATION;
}

type InstrumentationList = (Instrumentation | Instrumentation[])[];

/** Adds the bridge's hooks to an undici instrumentation in `list`, or adds one; returns the list. */
function withBridgedUndici(list: InstrumentationList): InstrumentationList {
  let found = false;
  for (const item of list.flat()) {
    if (isUndiciInstrumentation(item)) {
      item.setConfig(bridgeUndiciConfig(item.getConfig()));
      found = true;
    }
  }
  return found ? list : [...list, new UndiciInstrumentation(bridgeUndiciConfig())];
}

/** The NodeSDK configuration fields the bridge sets (a structural subset of NodeSDKConfiguration). */
export interface BridgeableSDKConfig {
  textMapPropagator?: TextMapPropagator | null;
  instrumentations?: InstrumentationList;
  spanProcessors?: SpanProcessor[];
  [key: string]: unknown;
}

/**
 * One call for apps that build their own NodeSDK: returns `config` with the bridge's propagator,
 * the bridge's hooks on undici (fetch, so the openai SDK) and, unless you pass span processors,
 * a LangfuseSpanProcessor that keeps the gateway calls' spans.
 *
 *     const sdk = new NodeSDK(withOtelBridge({ serviceName: "my-app" }));
 *     sdk.start();
 *
 * With your own processors, give Langfuse's `shouldExportSpan: langfuseExportFilter`.
 */
export function withOtelBridge<T extends BridgeableSDKConfig>(config: T, options: BridgeOptions = {}): T {
  const env = options.env ?? process.env;
  if (isDisabled(env)) return config;
  configure(options);
  return {
    ...config,
    textMapPropagator: createPropagator(env),
    instrumentations: withBridgedUndici(config.instrumentations ?? []),
    spanProcessors: config.spanProcessors ?? [
      new LangfuseSpanProcessor({ shouldExportSpan: langfuseExportFilter }),
    ],
  };
}

/** What `start()` set up, for apps that leave with process.exit() and must flush first. */
export interface BridgeHandle {
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

let started: BridgeHandle | undefined;

/**
 * The zero-code setup the register entry runs: a NodeTracerProvider (AsyncLocalStorage context,
 * service name from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES), the bridge's propagator, the
 * undici instrumentation with the bridge's hooks, a LangfuseSpanProcessor with the bridge's
 * export filter when LANGFUSE_PUBLIC_KEY is set, and an OTLP exporter when
 * OTEL_TRACES_EXPORTER names `otlp`. Spans are flushed when the event loop empties.
 * Does nothing when OTEL_BRIDGE_DISABLED is true; a second call returns the first handle.
 */
export function start(options: BridgeOptions = {}): BridgeHandle | undefined {
  const env = options.env ?? process.env;
  if (isDisabled(env)) return undefined;
  if (started !== undefined) return started;
  configure(options);
  // Loaded here so that importing the package for its helpers does not load the SDK.
  const { NodeTracerProvider, BatchSpanProcessor } =
    require("@opentelemetry/sdk-trace-node") as typeof import("@opentelemetry/sdk-trace-node");
  const { defaultResource, detectResources, envDetector } =
    require("@opentelemetry/resources") as typeof import("@opentelemetry/resources");
  const processors: SpanProcessor[] = [];
  if (env.LANGFUSE_PUBLIC_KEY) {
    processors.push(new LangfuseSpanProcessor({ shouldExportSpan: langfuseExportFilter }));
  }
  const exporters = (env.OTEL_TRACES_EXPORTER ?? "").split(",").map((name) => name.trim());
  if (exporters.includes("otlp")) {
    const { OTLPTraceExporter } =
      require("@opentelemetry/exporter-trace-otlp-http") as typeof import("@opentelemetry/exporter-trace-otlp-http");
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter()));
  }
  const provider = new NodeTracerProvider({
    resource: defaultResource().merge(detectResources({ detectors: [envDetector] })),
    spanProcessors: processors,
  });
  provider.register({ propagator: createPropagator(env) });
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [new UndiciInstrumentation(bridgeUndiciConfig())],
  });
  const handle: BridgeHandle = {
    forceFlush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
  process.once("beforeExit", () => {
    handle.shutdown().catch((error: unknown) => diag.error("otel-bridge: flush failed", error));
  });
  started = handle;
  return handle;
}
