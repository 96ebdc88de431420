// The otel-bridge demo scenario from a Node app: one chat completion through the LiteLLM proxy,
// traced by Langfuse JS, with no tracing code beyond Langfuse's own. `otel-bridge demo --node`
// (and `./dev demo --node`) runs it as docs/quickstart-node.md says:
//
//     node --import @otel-bridge/node/register node/demo/app.mjs
//
// Environment: LITELLM_BASE_URL, LITELLM_API_KEY, LITELLM_MODEL (default llama3.2:1b),
// OTEL_BRIDGE_GATEWAYS, LANGFUSE_* for the Langfuse SDK, SEED_TEST_PROMPT (default true: create
// the chat prompt "test-prompt" when the project has none) and OTEL_BRIDGE_DEMO_PROMPT_VERSION
// (default: the production version). Prints `trace <id>: <answer>` and
// `prompt <name> version <n>`, as the Python demo app does.
import OpenAI from "openai";
import { LangfuseClient } from "@langfuse/client";
import { propagateAttributes, startActiveObservation } from "@langfuse/tracing";

const env = process.env;
const PROMPT_NAME = "test-prompt";
const MESSAGES = [
  { role: "system", content: "You are a concise assistant." },
  { role: "user", content: "Say hello in one short sentence." },
];

const langfuse = new LangfuseClient();
const openai = new OpenAI({
  apiKey: env.LITELLM_API_KEY ?? "",
  baseURL: env.LITELLM_BASE_URL ?? "http://litellm:4000",
  maxRetries: 0,
});

async function scenarioPrompt() {
  const version = env.OTEL_BRIDGE_DEMO_PROMPT_VERSION;
  const options = version ? { version: Number(version) } : {};
  try {
    return await langfuse.prompt.get(PROMPT_NAME, { ...options, type: "chat", maxRetries: 0 });
  } catch (error) {
    const seed = ["1", "true", "yes", "on"].includes((env.SEED_TEST_PROMPT ?? "true").toLowerCase());
    if (!seed || version) throw error;
    await langfuse.prompt.create({
      name: PROMPT_NAME,
      type: "chat",
      prompt: MESSAGES,
      labels: ["production"],
      commitMessage: "seeded by the otel-bridge Node demo app",
    });
    return langfuse.prompt.get(PROMPT_NAME, { type: "chat", maxRetries: 0 });
  }
}

// --- the scenario, as written ---------------------------------------------------------------
const prompt = await scenarioPrompt();
const messages = prompt.compile();
const { traceId, answer } = await startActiveObservation("run-test", async (span) => {
  span.update({ input: messages });
  const response = await propagateAttributes({ prompt, asBaggage: true }, () =>
    openai.chat.completions.create({ model: env.LITELLM_MODEL ?? "llama3.2:1b", messages }),
  );
  const content = response.choices[0].message.content;
  span.update({ output: content });
  return { traceId: span.traceId, answer: content };
});
// ----------------------------------------------------------------------------------------------

console.log(`trace ${traceId}: ${JSON.stringify(answer)}`);
console.log(`prompt ${prompt.name} version ${prompt.version}`);
