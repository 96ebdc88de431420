// withOtelBridge() with a real NodeSDK (its own process: node --test runs each file alone).
"use strict";
const { test, after } = require("node:test");
const assert = require("node:assert/strict");
const { NodeSDK } = require("@opentelemetry/sdk-node");
const { InMemorySpanExporter, SimpleSpanProcessor } = require("@opentelemetry/sdk-trace-base");
const { UndiciInstrumentation } = require("@opentelemetry/instrumentation-undici");
const { LangfuseSpanProcessor } = require("@langfuse/otel");
const bridge = require("..");
const { captureServer, langfuseMembers } = require("./helpers");

test("withOtelBridge: NodeSDK with your own undici hooks still bridges gateway calls", async (t) => {
  const gateway = await captureServer("gateway");
  const other = await captureServer("other");
  t.after(() => Promise.all([gateway.close(), other.close()]));
  const theirs = [];
  const exporter = new InMemorySpanExporter();
  const config = bridge.withOtelBridge(
    {
      serviceName: "sdk-test",
      spanProcessors: [new SimpleSpanProcessor(exporter)],
      instrumentations: [
        [new UndiciInstrumentation({ requestHook: (span, request) => theirs.push(request.origin) })],
      ],
    },
    { gateways: gateway.url, env: {} },
  );
  assert.equal(config.spanProcessors.length, 1, "your span processors are kept as they are");
  const sdk = new NodeSDK(config);
  sdk.start();
  after(() => sdk.shutdown());
  await bridge.usePrompt({ name: "test-prompt", version: 1 }, async () => {
    for (const server of [gateway, other]) await (await fetch(`${server.url}/?tag=sdk`)).arrayBuffer();
  });
  assert.deepEqual(bridge.promptFromMembers(gateway.received[0].members), { name: "test-prompt", version: 1 });
  assert.deepEqual(langfuseMembers(other.received[0]), []);
  assert.deepEqual(theirs, [gateway.url, other.url], "the app's own requestHook still ran");
  // The client span ends when undici reports the response finished: wait for that, with a deadline.
  const deadline = Date.now() + 10_000;
  let marked = [];
  while (Date.now() < deadline) {
    marked = exporter.getFinishedSpans().filter((s) => bridge.isGatewaySpan(s));
    if (marked.length > 0 && exporter.getFinishedSpans().length >= 2) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(marked.length, 1);
  assert.equal(exporter.getFinishedSpans().length, 2, "one client span per request");
});

test("withOtelBridge: a LangfuseSpanProcessor is added when you pass no processors", () => {
  const config = bridge.withOtelBridge({}, { gateways: "http://127.0.0.1:4000", env: {} });
  assert.equal(config.spanProcessors.length, 1);
  assert.ok(config.spanProcessors[0] instanceof LangfuseSpanProcessor);
  assert.ok(config.instrumentations.flat().some((i) => i instanceof UndiciInstrumentation));
  return Promise.all(config.spanProcessors.map((p) => p.shutdown()));
});

test("withOtelBridge: OTEL_BRIDGE_DISABLED returns the config untouched", () => {
  const config = { serviceName: "x" };
  assert.equal(bridge.withOtelBridge(config, { env: { OTEL_BRIDGE_DISABLED: "TRUE" } }), config);
});
