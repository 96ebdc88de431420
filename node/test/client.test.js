// The client tier in one process with real OpenTelemetry JS, the real undici instrumentation,
// real fetch and real Langfuse JS: what reaches a gateway origin and what reaches any other.
"use strict";
const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { context, propagation, trace } = require("@opentelemetry/api");
const { NodeTracerProvider } = require("@opentelemetry/sdk-trace-node");
const { InMemorySpanExporter, SimpleSpanProcessor } = require("@opentelemetry/sdk-trace-base");
const { registerInstrumentations } = require("@opentelemetry/instrumentation");
const { UndiciInstrumentation } = require("@opentelemetry/instrumentation-undici");
const { startActiveObservation, propagateAttributes } = require("@langfuse/tracing");
const bridge = require("..");
const { captureServer, langfuseMembers } = require("./helpers");

const PROMPT = { name: "support triage+ü", version: 3, isFallback: false };
const exporter = new InMemorySpanExporter();
let gateway;
let other;

before(async () => {
  gateway = await captureServer("gateway");
  other = await captureServer("other");
  bridge.configure({ gateways: [gateway.url] });
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  provider.register({ propagator: bridge.createPropagator({}) });
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [new UndiciInstrumentation(bridge.bridgeUndiciConfig())],
  });
});

after(async () => {
  await gateway.close();
  await other.close();
});

function receivedWith(server, tag) {
  return server.received.filter((r) => r.tag === tag);
}

async function get(url, tag, init) {
  const response = await fetch(`${url}${url.includes("?") ? "&" : "?"}tag=${tag}`, init);
  await response.arrayBuffer();
  return response;
}

test("usePrompt: the prompt goes to the gateway only, %20 for space", async () => {
  await startActiveObservation("run", async () => {
    await bridge.usePrompt(PROMPT, async () => {
      await get(`${gateway.url}/v1/chat/completions`, "use");
      await get(`${other.url}/x`, "use");
    });
  });
  const [atGateway] = receivedWith(gateway, "use");
  const [atOther] = receivedWith(other, "use");
  assert.deepEqual(atGateway.members.slice(0, 2), [
    ["langfuse_prompt_name", PROMPT.name],
    ["langfuse_prompt_version", "3"],
  ]);
  assert.match(atGateway.baggage.join(","), /langfuse_prompt_name=support%20triage%2B%C3%BC/);
  // Langfuse's own langfuse_trace_id member reaches the gateway too, and only the gateway.
  assert.ok(atGateway.members.some(([k]) => k === "langfuse_trace_id"));
  assert.ok(atOther.traceparent, "traceparent still flows everywhere");
  assert.deepEqual(langfuseMembers(atOther), []);
});

test("propagateAttributes({ prompt, asBaggage }) is carried to the gateway only", async () => {
  await startActiveObservation("run", async () => {
    await propagateAttributes({ prompt: PROMPT, asBaggage: true }, async () => {
      await get(gateway.url, "pa-baggage");
      await get(other.url, "pa-baggage");
    });
  });
  const [atGateway] = receivedWith(gateway, "pa-baggage");
  const [atOther] = receivedWith(other, "pa-baggage");
  assert.deepEqual(bridge.promptFromMembers(atGateway.members), { name: PROMPT.name, version: 3 });
  // The prompt members appear once: the bridge's, not Langfuse's copy as well.
  assert.equal(atGateway.members.filter(([k]) => k === "langfuse_prompt_name").length, 1);
  assert.deepEqual(langfuseMembers(atOther), []);
});

test("propagateAttributes({ prompt }) without asBaggage still reaches the gateway", async () => {
  await startActiveObservation("run", async () => {
    await propagateAttributes({ prompt: { name: "test-prompt", version: 1 } }, async () => {
      await get(gateway.url, "pa-context");
      await get(other.url, "pa-context");
    });
  });
  const [atGateway] = receivedWith(gateway, "pa-context");
  assert.deepEqual(bridge.promptFromMembers(atGateway.members), { name: "test-prompt", version: 1 });
  assert.deepEqual(langfuseMembers(receivedWith(other, "pa-context")[0]), []);
});

test("other baggage members still go everywhere", async () => {
  const baggage = propagation.createBaggage({ tenant: { value: "a b" } });
  await context.with(propagation.setBaggage(context.active(), baggage), async () => {
    await bridge.usePrompt({ name: "test-prompt", version: 1 }, async () => {
      await get(gateway.url, "other-members");
      await get(other.url, "other-members");
    });
  });
  const [atGateway] = receivedWith(gateway, "other-members");
  const [atOther] = receivedWith(other, "other-members");
  assert.deepEqual(atOther.members, [["tenant", "a b"]]);
  assert.deepEqual(atGateway.members, [
    ["langfuse_prompt_name", "test-prompt"],
    ["langfuse_prompt_version", "1"],
    ["tenant", "a b"],
  ]);
});

for (const code of [301, 302, 303, 307, 308]) {
  test(`a ${code} from the gateway to another origin carries no langfuse_* member`, async () => {
    const tag = `redirect-away-${code}`;
    const target = encodeURIComponent(`${other.url}/landing?tag=${tag}`);
    await startActiveObservation("run", async () => {
      await bridge.usePrompt(PROMPT, () =>
        get(`${gateway.url}/redirect?code=${code}&to=${target}`, tag, { method: "POST", body: "{}" }),
      );
    });
    const [atGateway] = receivedWith(gateway, tag);
    const [atOther] = receivedWith(other, tag);
    assert.ok(atOther, "the redirect was followed");
    assert.deepEqual(bridge.promptFromMembers(atGateway.members), { name: PROMPT.name, version: 3 });
    assert.deepEqual(langfuseMembers(atOther), []);
    assert.ok(atOther.traceparent);
  });
}

test("a redirect from another origin to the gateway carries the prompt on the gateway hop", async () => {
  const target = encodeURIComponent(`${gateway.url}/v1/chat?tag=redirect-in`);
  await bridge.usePrompt(PROMPT, () => get(`${other.url}/redirect?to=${target}`, "redirect-in"));
  assert.deepEqual(langfuseMembers(receivedWith(other, "redirect-in")[0]), []);
  const [atGateway] = receivedWith(gateway, "redirect-in");
  assert.deepEqual(bridge.promptFromMembers(atGateway.members), { name: PROMPT.name, version: 3 });
});

test("a baggage header the app sets itself loses langfuse_* members off-gateway", async () => {
  const headers = { baggage: "langfuse_prompt_name=leak,langfuse_prompt_version=1,keep=me" };
  await get(other.url, "own-header", { headers });
  await get(gateway.url, "own-header", { headers });
  const [atOther] = receivedWith(other, "own-header");
  assert.deepEqual(atOther.members, [["keep", "me"]]);
  // The app's own header reaches its gateway untouched.
  assert.ok(receivedWith(gateway, "own-header")[0].members.some(([k, v]) => v === "leak"));
});

test("the export filter keeps gateway calls' client spans and Langfuse's defaults only", async () => {
  exporter.reset();
  await startActiveObservation("filter-run", async () => {
    await get(gateway.url, "filter");
    await get(other.url, "filter");
  });
  const spans = exporter.getFinishedSpans();
  const gatewaySpan = spans.find((s) => s.attributes["server.port"] === Number(new URL(gateway.url).port));
  const otherSpan = spans.find((s) => s.attributes["server.port"] === Number(new URL(other.url).port));
  const langfuseSpan = spans.find((s) => s.name === "filter-run");
  assert.equal(gatewaySpan.attributes[bridge.GATEWAY_ATTRIBUTE], `http://127.0.0.1:${new URL(gateway.url).port}`);
  assert.equal(bridge.langfuseExportFilter({ otelSpan: gatewaySpan }), true);
  assert.equal(bridge.langfuseExportFilter({ otelSpan: otherSpan }), false);
  assert.equal(bridge.langfuseExportFilter({ otelSpan: langfuseSpan }), true);
  // traceparent names the gateway span: the parent the gateway's generation will point to.
  const [atGateway] = receivedWith(gateway, "filter");
  assert.equal(atGateway.traceparent.split("-")[2], gatewaySpan.spanContext().spanId);
});

test("200 concurrent calls with two prompts: each request carries its own", async () => {
  const prompts = [{ name: "test-prompt", version: 1 }, { name: "second prompt+%", version: 4 }];
  await Promise.all(
    Array.from({ length: 200 }, (_, i) =>
      startActiveObservation(`run-${i}`, async () => {
        await new Promise((resolve) => setTimeout(resolve, i % 7));
        await bridge.usePrompt(prompts[i % 2], () => get(gateway.url, `concurrent-${i}`));
      }),
    ),
  );
  for (let i = 0; i < 200; i += 1) {
    const [atGateway] = receivedWith(gateway, `concurrent-${i}`);
    assert.deepEqual(bridge.promptFromMembers(atGateway.members), prompts[i % 2], `call ${i}`);
  }
});

test("bad input: clear errors for bad prompts and gateways, no prompt outside a scope", async () => {
  assert.throws(() => bridge.usePrompt({ name: "p", version: 1, isFallback: true }, () => 0), /fallback/);
  assert.throws(() => bridge.usePrompt({ name: "p", version: 0 }, () => 0), /version/);
  assert.throws(() => bridge.usePrompt({ name: "", version: 1 }, () => 0), /name/);
  assert.throws(() => bridge.usePrompt(null, () => 0), /prompt object/);
  assert.throws(() => bridge.parseGateways("localhost:4000"), /"localhost:4000": scheme must be http or https/);
  assert.equal(bridge.currentPrompt(), null);
  await get(gateway.url, "no-prompt");
  assert.deepEqual(receivedWith(gateway, "no-prompt")[0].members, []);
  // An unreadable carrier is no baggage, never an exception in the app.
  const getter = { get() { throw new Error("boom"); }, keys: () => [] };
  const ctx = context.active();
  assert.equal(new bridge.GatewayBaggagePropagator().extract(ctx, {}, getter), ctx);
});

test("extract decodes the Python side's encoding, + as space", () => {
  const getter = { get: (carrier, key) => carrier[key], keys: (c) => Object.keys(c) };
  const ctx = new bridge.GatewayBaggagePropagator().extract(
    context.active(),
    { baggage: "langfuse_prompt_name=a+b%20c,langfuse_prompt_version=2" },
    getter,
  );
  assert.deepEqual(bridge.currentPrompt(ctx), { name: "a b c", version: 2 });
  assert.equal(trace.getSpan(ctx), undefined);
});
