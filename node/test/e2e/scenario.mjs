// The Node app the end-to-end tests run (tests/test_node_e2e.py), set up as
// docs/quickstart-node.md says: `node --import @otel-bridge/node/register scenario.mjs`, and no
// other tracing code. Prints one JSON line per `run-test` observation.
//
// SCENARIO_PATH         propagate_attributes | use_prompt
// SCENARIO_CALL         create | stream
// SCENARIO_PROMPTS      comma-separated prompt names, one run each, in order (default test-prompt)
// SCENARIO_CONCURRENCY  N > 1: N concurrent runs, prompts assigned round-robin
// SCENARIO_OTHER_URL    a non-gateway URL fetched inside the prompt's scope (leak check)
// SCENARIO_REDIRECT_URL a gateway URL that redirects elsewhere, fetched inside the scope
import OpenAI from "openai";
import { LangfuseClient } from "@langfuse/client";
import { propagateAttributes, startActiveObservation } from "@langfuse/tracing";
import { usePrompt } from "@otel-bridge/node";

const env = process.env;
const PATH = env.SCENARIO_PATH ?? "propagate_attributes";
const CALL = env.SCENARIO_CALL ?? "create";
const PROMPTS = (env.SCENARIO_PROMPTS ?? "test-prompt").split(",");
const CONCURRENCY = Number(env.SCENARIO_CONCURRENCY ?? "1");
const MODEL = env.SCENARIO_MODEL ?? "llama3.2:1b";

const langfuse = new LangfuseClient();
const openai = new OpenAI({
  apiKey: env.SCENARIO_API_KEY,
  baseURL: env.SCENARIO_BASE_URL,
  maxRetries: 0,
});

function inPromptScope(prompt, fn) {
  if (PATH === "propagate_attributes") return propagateAttributes({ prompt, asBaggage: true }, fn);
  if (PATH === "use_prompt") return usePrompt(prompt, fn);
  throw new Error(`unknown SCENARIO_PATH ${PATH}`);
}

async function callGateway(messages) {
  if (CALL === "stream") {
    const stream = await openai.chat.completions.create({ model: MODEL, messages, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    return text;
  }
  const response = await openai.chat.completions.create({ model: MODEL, messages });
  return response.choices[0].message.content;
}

async function drain(url) {
  const response = await fetch(url, { method: "POST", body: "{}" });
  await response.arrayBuffer();
}

async function run(promptName) {
  const prompt = await langfuse.prompt.get(promptName);
  const messages = prompt.compile();
  await startActiveObservation("run-test", async (span) => {
    span.update({ input: messages });
    const started = performance.now();
    const text = await inPromptScope(prompt, async () => {
      const answer = await callGateway(messages);
      if (env.SCENARIO_OTHER_URL) await drain(env.SCENARIO_OTHER_URL);
      if (env.SCENARIO_REDIRECT_URL) await drain(env.SCENARIO_REDIRECT_URL);
      return answer;
    });
    span.update({ output: text });
    console.log(
      JSON.stringify({
        trace_id: span.traceId,
        span_id: span.id,
        prompt_name: prompt.name,
        prompt_version: prompt.version,
        text,
        call_seconds: (performance.now() - started) / 1000,
      }),
    );
  });
}

if (CONCURRENCY > 1) {
  // Fetch each prompt once up front, as an app does at start: the client caches it, so the
  // concurrent runs below do not open hundreds of connections to Langfuse at once.
  for (const name of new Set(PROMPTS)) await langfuse.prompt.get(name);
  await Promise.all(
    Array.from({ length: CONCURRENCY }, (_, i) => run(PROMPTS[i % PROMPTS.length])),
  );
} else {
  for (const name of PROMPTS) await run(name);
}
