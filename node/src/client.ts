/**
 * Client tier: W3C context on requests to the gateway, and only there.
 *
 * `traceparent` flows as OpenTelemetry always sends it. The prompt link travels in `baggage`
 * under Langfuse's own keys, and every `langfuse_*` member is withheld from any origin that is
 * not a configured gateway. A propagator cannot see the URL it injects into, so the undici
 * instrumentation's hooks (which can) mark the client span of each gateway-bound request, and
 * the propagator reads that mark from the span it injects for.
 */

import {
  context as otelContext,
  createContextKey,
  diag,
  propagation,
  trace,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
} from "@opentelemetry/api";

import {
  LANGFUSE_BAGGAGE_PREFIX,
  PROMPT_NAME_KEY,
  PROMPT_VERSION_KEY,
  formatBaggage,
  originLabel,
  originOf,
  parseBaggage,
  promptFromStrings,
  promptMembers,
  toPromptRef,
  type Member,
  type Origin,
  type PromptRef,
} from "./codec";

/** Set on the client span of every call to a configured gateway: the gateway's origin. */
export const GATEWAY_ATTRIBUTE = "otel_bridge.gateway";

const PROMPT_CONTEXT_KEY = createContextKey("otel_bridge.prompt");
// @langfuse/core keys its propagated attributes with createContextKey, i.e. Symbol.for(name):
// propagateAttributes({ prompt }) leaves the prompt here even without asBaggage.
const LANGFUSE_PROMPT_NAME_KEY = Symbol.for(PROMPT_NAME_KEY);
const LANGFUSE_PROMPT_VERSION_KEY = Symbol.for(PROMPT_VERSION_KEY);
const BAGGAGE_HEADER = "baggage";

// Spans are weakly held: a span that is gone can never be injected for again.
const gatewaySpans = new WeakSet<object>();
// Each gateway origin's label, by the origin strings undici reports ("http://host:port").
let gatewayLabels = new Map<string, string>();
const requestOrigins = new Map<string, string | null>();

/** Set which origins are gateways (process-wide). An empty list sends no prompt link anywhere. */
export function configureGateways(gateways: readonly Origin[]): void {
  gatewayLabels = new Map(gateways.map((origin) => [originLabel(origin), originLabel(origin)]));
  requestOrigins.clear();
}

export function configuredGateways(): string[] {
  return [...gatewayLabels.values()];
}

/** The gateway label of a request origin such as undici's `request.origin`, or undefined. */
export function gatewayFor(origin: unknown): string | undefined {
  if (typeof origin !== "string" || gatewayLabels.size === 0) return undefined;
  let label = requestOrigins.get(origin);
  if (label === undefined) {
    const parsed = originOf(origin);
    label = (parsed && gatewayLabels.get(originLabel(parsed))) ?? null;
    // A client talks to a handful of hosts; the bound only guards against unbounded growth.
    if (requestOrigins.size >= 256) requestOrigins.clear();
    requestOrigins.set(origin, label);
  }
  return label ?? undefined;
}

/** undici's low-level request, as its diagnostics channel hands it to the instrumentation. */
export interface UndiciRequestLike {
  origin?: unknown;
  headers?: unknown;
}

/**
 * `startSpanHook` for @opentelemetry/instrumentation-undici: the gateway attribute is on the
 * span from its start, so Langfuse's start-time export check sees it too.
 */
export function startSpanHook(request: UndiciRequestLike): Record<string, string> | undefined {
  const label = gatewayFor(request?.origin);
  return label === undefined ? undefined : { [GATEWAY_ATTRIBUTE]: label };
}

/**
 * `requestHook` for @opentelemetry/instrumentation-undici: remember the client span of a
 * gateway-bound request. Any other request loses the `langfuse_*` members of a `baggage`
 * header it already carries (one the app copied from an earlier hop, say).
 */
export function requestHook(span: Span, request: UndiciRequestLike): void {
  if (gatewayFor(request?.origin) !== undefined) {
    gatewaySpans.add(span);
    return;
  }
  stripLangfuseBaggage(request);
}

function stripLangfuseBaggage(request: UndiciRequestLike): void {
  const headers = request?.headers;
  if (Array.isArray(headers)) {
    // undici 6+: [name, value, name, value, ...]
    for (let i = headers.length - 2; i >= 0; i -= 2) {
      if (String(headers[i]).toLowerCase() !== BAGGAGE_HEADER) continue;
      const kept = withoutLangfuse(String(headers[i + 1]));
      if (kept === null) continue;
      if (kept) headers[i + 1] = kept;
      else headers.splice(i, 2);
    }
  } else if (typeof headers === "string" && headers.includes(LANGFUSE_BAGGAGE_PREFIX)) {
    // undici 5: "name: value\r\n" lines
    request.headers = headers
      .split("\r\n")
      .map((line) => {
        const colon = line.indexOf(":");
        if (colon < 0 || line.slice(0, colon).trim().toLowerCase() !== BAGGAGE_HEADER) return line;
        const kept = withoutLangfuse(line.slice(colon + 1).trim());
        return kept === null ? line : kept ? `${BAGGAGE_HEADER}: ${kept}` : undefined;
      })
      .filter((line) => line !== undefined)
      .join("\r\n");
  }
}

/** The header value without `langfuse_*` members; null when there was nothing to remove. */
function withoutLangfuse(value: string): string | null {
  if (!value.includes(LANGFUSE_BAGGAGE_PREFIX)) return null;
  const members = parseBaggage(value);
  return formatBaggage(members.filter(([key]) => !key.startsWith(LANGFUSE_BAGGAGE_PREFIX)));
}

/** Whether `span` (a ReadableSpan) is the client span of a call to a configured gateway. */
export function isGatewaySpan(span: unknown): boolean {
  const attributes = (span as { attributes?: Record<string, unknown> } | null)?.attributes;
  return typeof attributes === "object" && attributes !== null && GATEWAY_ATTRIBUTE in attributes;
}

/**
 * Run `fn` with gateway calls inside it linked to `prompt`: a Langfuse prompt client or a
 * `{ name, version }` object. Follows async work like any OpenTelemetry context value.
 *
 *     await usePrompt(await langfuse.prompt.get("support-triage"), () =>
 *       openai.chat.completions.create({ ... }));
 */
export function usePrompt<T>(prompt: unknown, fn: () => T): T {
  const ref = toPromptRef(prompt);
  return otelContext.with(otelContext.active().setValue(PROMPT_CONTEXT_KEY, ref), fn);
}

/**
 * The prompt a gateway call made now would carry, most specific source first:
 * 1. the innermost `usePrompt`;
 * 2. Langfuse's `propagateAttributes({ prompt })` (with or without `asBaggage`);
 * 3. `langfuse_prompt_*` baggage, as an upstream service put it there.
 */
export function currentPrompt(context: Context = otelContext.active()): PromptRef | null {
  const explicit = context.getValue(PROMPT_CONTEXT_KEY) as PromptRef | undefined;
  if (explicit !== undefined) return explicit;
  const name = context.getValue(LANGFUSE_PROMPT_NAME_KEY);
  if (name !== undefined) {
    const found = promptFromStrings(name, context.getValue(LANGFUSE_PROMPT_VERSION_KEY));
    if (found !== null) return found;
  }
  const baggage = propagation.getBaggage(context);
  if (baggage === undefined) return null;
  return promptFromStrings(
    baggage.getEntry(PROMPT_NAME_KEY)?.value,
    baggage.getEntry(PROMPT_VERSION_KEY)?.value,
  );
}

/**
 * W3C `baggage` in place of OpenTelemetry's W3CBaggagePropagator, with the Python side's codec.
 * Members outside the `langfuse_` prefix go everywhere as before; `langfuse_*` members and the
 * prompt link go only with requests whose client span the hooks marked as gateway calls.
 */
export class GatewayBaggagePropagator implements TextMapPropagator {
  inject(context: Context, carrier: unknown, setter: TextMapSetter): void {
    const gateway = gatewaySpans.has(trace.getSpan(context) ?? NO_SPAN);
    const baggage = propagation.getBaggage(context);
    let members: Member[];
    if (!gateway) {
      if (baggage === undefined) return;
      members = [];
      for (const [key, entry] of baggage.getAllEntries()) {
        if (!key.startsWith(LANGFUSE_BAGGAGE_PREFIX)) members.push([key, entry.value]);
      }
    } else {
      const prompt = currentPrompt(context);
      // The bridge's own members go first so the W3C size limit never cuts them.
      members = prompt ? promptMembers(prompt) : [];
      const everywhere: Member[] = [];
      for (const [key, entry] of baggage?.getAllEntries() ?? []) {
        if (!key.startsWith(LANGFUSE_BAGGAGE_PREFIX)) everywhere.push([key, entry.value]);
        else if (key !== PROMPT_NAME_KEY && key !== PROMPT_VERSION_KEY) {
          members.push([key, entry.value]);
        }
      }
      members.push(...everywhere);
    }
    const header = formatBaggage(members);
    if (header) setter.set(carrier, BAGGAGE_HEADER, header);
  }

  extract(context: Context, carrier: unknown, getter: TextMapGetter): Context {
    let members: Member[];
    try {
      const value = getter.get(carrier, BAGGAGE_HEADER);
      members = parseBaggage(value === undefined ? undefined : value);
    } catch (error) {
      // A carrier the getter cannot read is no baggage, never an error for the app.
      diag.debug("otel-bridge: unreadable baggage carrier", error);
      return context;
    }
    if (members.length === 0) return context;
    const entries: Record<string, { value: string }> = {};
    for (const [key, value] of members) entries[key] = { value };
    return propagation.setBaggage(context, propagation.createBaggage(entries));
  }

  fields(): string[] {
    return [BAGGAGE_HEADER];
  }
}

const NO_SPAN = {};
