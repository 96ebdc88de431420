// What the Node client (@otel-bridge/node) adds to each outbound request, over plain
// OpenTelemetry JS injection. Node's counterpart of benchmarks/client_cost.py.
//
// Plain: W3CTraceContextPropagator + W3CBaggagePropagator, the undici instrumentation without
// hooks. Bridge: W3CTraceContextPropagator + the bridge's GatewayBaggagePropagator, and the
// bridge's startSpanHook/requestHook on the undici instrumentation (what the register entry
// sets up). Same context around each request in both: an application span, and baggage with
// the prompt the way Langfuse's propagateAttributes({ prompt, asBaggage: true }) puts it there
// (plus langfuse_trace_id, which Langfuse JS always adds, and one application member).
//
// 1. injection alone, both variants in this process: per request, start the client span, run
//    the hooks (bridge only), inject into a header object, end the span;
// 2. real fetch() requests against a loopback server in its own process, each variant in its
//    own Node process (an undici instrumentation is process-wide), run in alternating rounds.
//
// Costs are CPU time per request (process.cpuUsage, so other processes taking the cores do not
// count), the median of paired differences over interleaved repeats; "A vs A" runs the plain
// variant twice to show the noise floor. No pass/fail: the numbers go to docs/performance.md.
//
//     (cd node && npm ci && npm run build) && node benchmarks/node_client_cost.mjs [--quick]
import { fork } from "node:child_process";
import { createRequire } from "node:module";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NODE_DIR = path.join(HERE, "..", "node");
const require = createRequire(path.join(NODE_DIR, "package.json"));
const api = require("@opentelemetry/api");
const { W3CTraceContextPropagator, W3CBaggagePropagator, CompositePropagator } =
  require("@opentelemetry/core");
const { BasicTracerProvider } = require("@opentelemetry/sdk-trace-base");
const bridge = require(NODE_DIR);

const TARGET_US = 10;
const PROMPT = { name: "test-prompt", version: 1 };
const QUICK = process.argv.includes("--quick");
const role = process.env.NODE_CLIENT_COST_ROLE;

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function cpuMicros() {
  const { user, system } = process.cpuUsage();
  return user + system;
}

/** The application's context: a span, and baggage as Langfuse JS leaves it. */
function appContext(tracer) {
  const span = tracer.startSpan("app-work");
  const baggage = api.propagation.createBaggage({
    langfuse_trace_id: { value: span.spanContext().traceId },
    langfuse_prompt_name: { value: PROMPT.name },
    langfuse_prompt_version: { value: String(PROMPT.version) },
    tenant: { value: "acme" },
  });
  return api.propagation.setBaggage(api.trace.setSpan(api.ROOT_CONTEXT, span), baggage);
}

// ------------------------------------------------------------------ 1. injection alone

function injectionBench() {
  const provider = new BasicTracerProvider();
  const tracer = provider.getTracer("@opentelemetry/instrumentation-undici");
  const gateway = "http://127.0.0.1:4000";
  bridge.configure({ gateways: [gateway] });
  const plain = new CompositePropagator({
    propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()],
  });
  const bridged = bridge.createPropagator({});
  const context = appContext(tracer);
  // What usePrompt(prompt, fn) leaves in the context (its key is createContextKey, i.e. Symbol.for).
  const usePromptContext = context.setValue(Symbol.for("otel_bridge.prompt"), bridge.toPromptRef(PROMPT));
  const withoutPromptBaggage = api.propagation.setBaggage(
    usePromptContext,
    api.propagation.getBaggage(context).removeEntries("langfuse_prompt_name", "langfuse_prompt_version"),
  );
  const variants = {
    plain: (origin, ctx) => {
      const span = tracer.startSpan("POST", { kind: api.SpanKind.CLIENT }, ctx);
      const headers = {};
      plain.inject(api.trace.setSpan(ctx, span), headers, api.defaultTextMapSetter);
      span.end();
      return headers;
    },
    bridge: (origin, ctx) => {
      const request = { origin, headers: [] };
      const attributes = bridge.startSpanHook(request);
      const span = tracer.startSpan("POST", { kind: api.SpanKind.CLIENT, attributes }, ctx);
      bridge.requestHook(span, request);
      const headers = {};
      bridged.inject(api.trace.setSpan(ctx, span), headers, api.defaultTextMapSetter);
      span.end();
      return headers;
    },
  };
  // Sanity: the bridge sends the prompt to the gateway and nothing langfuse_* elsewhere.
  const atGateway = variants.bridge(gateway, context).baggage;
  const atOther = variants.bridge("http://127.0.0.1:5000", context).baggage;
  if (!atGateway.startsWith("langfuse_prompt_name=test-prompt") || atOther.includes("langfuse_")) {
    throw new Error(`bridge variant misconfigured: ${atGateway} / ${atOther}`);
  }
  const cases = [
    ["gateway", gateway, context],
    ["gateway, prompt from usePrompt", gateway, withoutPromptBaggage],
    ["other origin", "http://127.0.0.1:5000", context],
  ];
  const perBatch = QUICK ? 2000 : 20000;
  const repeats = QUICK ? 7 : 30;
  const rows = [];
  for (const [label, origin, ctx] of cases) {
    const run = (fn) => {
      const start = cpuMicros();
      for (let i = 0; i < perBatch; i += 1) fn(origin, ctx);
      return (cpuMicros() - start) / perBatch;
    };
    for (let i = 0; i < 3; i += 1) for (const fn of Object.values(variants)) run(fn); // warm-up
    const samples = { plain: [], bridge: [], plain2: [] };
    for (let r = 0; r < repeats; r += 1) {
      // Interleaved, order rotated, so drift hits all three alike.
      const order = [["plain", variants.plain], ["bridge", variants.bridge], ["plain2", variants.plain]];
      for (let k = 0; k < r % 3; k += 1) order.push(order.shift());
      for (const [name, fn] of order) samples[name].push(run(fn));
    }
    rows.push(row(label, samples));
  }
  return rows;
}

function row(label, samples) {
  const added = median(samples.bridge.map((v, i) => v - samples.plain[i]));
  const noise = median(samples.plain2.map((v, i) => v - samples.plain[i]));
  return {
    label,
    plain: median(samples.plain),
    bridge: median(samples.bridge),
    added,
    ratio: median(samples.bridge) / median(samples.plain),
    noise,
  };
}

// ------------------------------------------------------------------ 2. real requests

async function clientProcess() {
  // One variant per process: the undici instrumentation subscribes process-wide.
  const variant = process.env.NODE_CLIENT_COST_VARIANT;
  const { NodeTracerProvider } = require("@opentelemetry/sdk-trace-node");
  const { registerInstrumentations } = require("@opentelemetry/instrumentation");
  const { UndiciInstrumentation } = require("@opentelemetry/instrumentation-undici");
  const gateway = process.env.NODE_CLIENT_COST_GATEWAY;
  const other = process.env.NODE_CLIENT_COST_OTHER;
  const provider = new NodeTracerProvider();
  let undiciConfig = {};
  if (variant === "bridge") {
    bridge.configure({ gateways: [gateway] });
    provider.register({ propagator: bridge.createPropagator({}) });
    undiciConfig = bridge.bridgeUndiciConfig();
  } else {
    provider.register(); // tracecontext + baggage, OpenTelemetry JS's defaults
  }
  registerInstrumentations({
    tracerProvider: provider,
    instrumentations: [new UndiciInstrumentation(undiciConfig)],
  });
  const tracer = provider.getTracer("app");
  const context = appContext(tracer);
  const urls = { gateway: `${gateway}/v1/chat/completions`, other: `${other}/x` };
  async function batch(target, count) {
    const start = cpuMicros();
    await api.context.with(context, async () => {
      for (let i = 0; i < count; i += 1) {
        const response = await fetch(urls[target], { method: "POST", body: "{}" });
        await response.arrayBuffer();
      }
    });
    return (cpuMicros() - start) / count;
  }
  process.on("message", async ({ target, count }) => {
    process.send({ perRequest: await batch(target, count) });
  });
  process.send({ ready: true });
}

function serverProcess() {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json", "content-length": "2" });
      res.end("{}");
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, "127.0.0.1", () => process.send({ port: server.address().port }));
  process.on("disconnect", () => process.exit(0));
}

function once(child) {
  return new Promise((resolve, reject) => {
    const onExit = (code) => reject(new Error(`child exited with ${code}`));
    child.once("exit", onExit);
    child.once("message", (message) => {
      child.off("exit", onExit);
      resolve(message);
    });
  });
}

async function realRequestsBench() {
  const children = [];
  try {
    const spawn = (env) => {
      const child = fork(fileURLToPath(import.meta.url), process.argv.slice(2), {
        env: { ...process.env, ...env },
      });
      children.push(child);
      return child;
    };
    const gatewayServer = spawn({ NODE_CLIENT_COST_ROLE: "server" });
    const otherServer = spawn({ NODE_CLIENT_COST_ROLE: "server" });
    const gateway = `http://127.0.0.1:${(await once(gatewayServer)).port}`;
    const other = `http://127.0.0.1:${(await once(otherServer)).port}`;
    const clientEnv = (variant) => ({
      NODE_CLIENT_COST_ROLE: "client",
      NODE_CLIENT_COST_VARIANT: variant,
      NODE_CLIENT_COST_GATEWAY: gateway,
      NODE_CLIENT_COST_OTHER: other,
    });
    const clients = {
      plain: spawn(clientEnv("plain")),
      bridge: spawn(clientEnv("bridge")),
      plain2: spawn(clientEnv("plain")),
    };
    for (const child of Object.values(clients)) await once(child);
    const count = QUICK ? 100 : 300;
    const repeats = QUICK ? 7 : 30;
    const ask = async (name, target) => {
      clients[name].send({ target, count });
      return (await once(clients[name])).perRequest;
    };
    const rows = [];
    for (const target of ["gateway", "other"]) {
      for (let i = 0; i < 3; i += 1) for (const name of Object.keys(clients)) await ask(name, target);
      const samples = { plain: [], bridge: [], plain2: [] };
      for (let r = 0; r < repeats; r += 1) {
        const order = ["plain", "bridge", "plain2"];
        for (let k = 0; k < r % 3; k += 1) order.push(order.shift());
        for (const name of order) samples[name].push(await ask(name, target));
      }
      rows.push(row(`fetch, ${target === "gateway" ? "gateway" : "other origin"}`, samples));
    }
    return rows;
  } finally {
    for (const child of children) child.kill();
  }
}

// ------------------------------------------------------------------ report

function fmt(value, digits = 2) {
  return value.toFixed(digits);
}

async function main() {
  const injection = injectionBench();
  const real = await realRequestsBench();
  const cpus = os.cpus();
  console.log(`node ${process.version}, ${os.platform()} ${os.arch()}, ${cpus.length} x ${cpus[0]?.model}`);
  console.log(`command: node benchmarks/node_client_cost.mjs${QUICK ? " --quick" : ""}\n`);
  console.log("| Request to | Plain OTel JS | Bridge | Added | Ratio | A vs A |");
  console.log("|---|---|---|---|---|---|");
  const print = (rows) => {
    for (const r of rows) {
      const added = r.label === "gateway" || r.label.includes("gateway") && !r.label.includes("usePrompt")
        ? `**${r.added >= 0 ? "+" : ""}${fmt(r.added)}**`
        : `${r.added >= 0 ? "+" : ""}${fmt(r.added)}`;
      console.log(
        `| ${r.label} | ${fmt(r.plain)} | ${fmt(r.bridge)} | ${added} | ${fmt(r.ratio, 3)} | ${r.noise >= 0 ? "+" : ""}${fmt(r.noise)} |`,
      );
    }
  };
  console.log("| *injection alone (client span + hooks + inject)* | | | | | |");
  print(injection);
  console.log("| *real fetch() requests to a loopback server* | | | | | |");
  print(real);
  const gatewayRows = (rows) => rows.filter((r) => r.label.includes("gateway"));
  const worst = Math.max(...gatewayRows(injection).map((r) => r.added));
  const realNoise = Math.max(...real.map((r) => Math.abs(r.noise)));
  console.log(
    "\nCPU µs per request; added = median of paired differences, A vs A = the same for two " +
      `plain runs (the noise floor).\nThe bridge's own work on a gateway call: at most ` +
      `${fmt(worst)} µs (target <= ${TARGET_US} µs: ${worst <= TARGET_US ? "met" : "NOT met"}). ` +
      `Real requests: ${real.map((r) => `${r.label} ${r.added >= 0 ? "+" : ""}${fmt(r.added)}`).join(", ")} ` +
      `µs, against a noise floor of up to ${fmt(realNoise)} µs in this run.`,
  );
}

if (role === "server") serverProcess();
else if (role === "client") await clientProcess();
else await main();
