/**
 * The bridge's wire vocabulary, byte-compatible with the Python package's `otel_bridge._context`.
 *
 * Both tiers speak only W3C headers: `traceparent` names the caller's span, and `baggage`
 * carries `langfuse_prompt_name` and `langfuse_prompt_version` (Langfuse's own keys). The
 * contract is written down in docs/header-contract.md; tests/vectors/baggage.json holds the
 * examples both implementations are checked against.
 */

export const PROMPT_NAME_KEY = "langfuse_prompt_name";
export const PROMPT_VERSION_KEY = "langfuse_prompt_version";
/** Every `langfuse_*` member is trace data to Langfuse, so the whole prefix stays with gateways. */
export const LANGFUSE_BAGGAGE_PREFIX = "langfuse_";

// W3C Baggage: at least 64 members and 8192 bytes must propagate; beyond that whole members go.
export const MAX_BAGGAGE_MEMBERS = 64;
export const MAX_BAGGAGE_BYTES = 8192;
// Langfuse drops propagated strings over 200 characters, so a longer name cannot be a prompt's.
export const MAX_PROMPT_NAME_LENGTH = 200;
// Langfuse stores prompt versions as a 32-bit signed integer.
export const MAX_PROMPT_VERSION = 2 ** 31 - 1;

// RFC 7230 token characters: the grammar of a baggage key.
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// baggage-octet: printable US-ASCII except space, DQUOTE, comma, semicolon and backslash.
const BAGGAGE_VALUE = /^[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*$/;
const VERSION = /^[1-9][0-9]{0,9}$/;
// Python's str.isprintable(): no "Other" or "Separator" character except the ASCII space.
const NON_PRINTABLE = /(?! )[\p{C}\p{Z}]/u;
const HEX_PAIR = /^[0-9A-Fa-f]{2}$/;
// Characters encodeURIComponent leaves alone but Python's quote(safe="") escapes.
const SUB_DELIMS = /[!'()*]/g;

export type Member = readonly [key: string, value: string];

/** A Langfuse prompt version: what a gateway generation links to. */
export interface PromptRef {
  readonly name: string;
  readonly version: number;
}

/** Why a prompt-like value cannot be linked, or "" if it can. */
export function promptNameProblem(name: unknown): string {
  if (typeof name !== "string" || name.length === 0) return "a non-empty string is required";
  if ([...name].length > MAX_PROMPT_NAME_LENGTH) {
    return `longer than ${MAX_PROMPT_NAME_LENGTH} characters`;
  }
  if (NON_PRINTABLE.test(name) || name.includes("\ufffd")) {
    return "contains control characters or undecodable bytes";
  }
  return "";
}

/**
 * A PromptRef from a Langfuse prompt client (`{ name, version, isFallback }`) or a
 * `{ name, version }` object. Throws a TypeError naming the problem: a fallback prompt has no
 * Langfuse version to link to, so it is refused too.
 */
export function toPromptRef(prompt: unknown): PromptRef {
  if (prompt === null || typeof prompt !== "object") {
    throw new TypeError(`otel-bridge: a prompt object is required, got ${describe(prompt)}`);
  }
  const { name, version, isFallback, is_fallback } = prompt as Record<string, unknown>;
  if (isFallback === true || is_fallback === true) {
    throw new TypeError("otel-bridge: a fallback prompt has no Langfuse version to link to");
  }
  const problem = promptNameProblem(name);
  if (problem) throw new TypeError(`otel-bridge: invalid prompt name ${describe(name)}: ${problem}`);
  if (
    typeof version !== "number" ||
    !Number.isInteger(version) ||
    version < 1 ||
    version > MAX_PROMPT_VERSION
  ) {
    throw new TypeError(
      `otel-bridge: invalid prompt version ${describe(version)}: ` +
        `an integer from 1 to ${MAX_PROMPT_VERSION} is required`,
    );
  }
  return Object.freeze({ name: name as string, version });
}

function describe(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : String(value);
}

// The same prompt arrives on every call of a deployment: validate each pair once.
const promptCache = new Map<string, PromptRef | null>();

/** The prompt named by two baggage/context values, or null if they are not a valid link. */
export function promptFromStrings(name: unknown, version: unknown): PromptRef | null {
  if (typeof name !== "string") return null;
  const versionText = typeof version === "number" ? String(version) : version;
  if (typeof versionText !== "string") return null;
  const key = `${versionText}\u0000${name}`;
  const cached = promptCache.get(key);
  if (cached !== undefined) return cached;
  let found: PromptRef | null = null;
  if (!promptNameProblem(name) && VERSION.test(versionText)) {
    const number = Number(versionText);
    if (number <= MAX_PROMPT_VERSION) found = Object.freeze({ name, version: number });
  }
  if (promptCache.size >= 1024) promptCache.clear();
  promptCache.set(key, found);
  return found;
}

/** The baggage members that carry a prompt link. */
export function promptMembers(prompt: PromptRef): Member[] {
  return [
    [PROMPT_NAME_KEY, prompt.name],
    [PROMPT_VERSION_KEY, String(prompt.version)],
  ];
}

/** Percent-encode exactly as Python's `urllib.parse.quote(value, safe="")`: `%20` for space. */
export function encodeValue(value: string): string {
  return encodeURIComponent(value).replace(
    SUB_DELIMS,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

// Outbound requests repeat the same few members: encode each once.
const memberCache = new Map<string, string | null>();

function encodeMember(key: string, value: string): string | null {
  const cacheKey = `${key}\u0000${value}`;
  const cached = memberCache.get(cacheKey);
  if (cached !== undefined) return cached;
  let part: string | null = null;
  if (TOKEN.test(key)) {
    try {
      part = `${key}=${encodeValue(value)}`;
    } catch {
      part = null; // a lone surrogate has no UTF-8 form: the member is dropped
    }
  }
  if (memberCache.size >= 1024) memberCache.clear();
  memberCache.set(cacheKey, part);
  return part;
}

/**
 * Encode members as one W3C `baggage` value within the W3C limits. Keys that are not tokens
 * are skipped; a member that would pass 64 members or 8192 bytes is dropped whole.
 */
export function formatBaggage(members: Iterable<Member>): string {
  let header = "";
  let count = 0;
  for (const [key, value] of members) {
    const part = encodeMember(key, value);
    if (part === null) continue;
    const size = part.length + (count ? 1 : 0);
    if (count >= MAX_BAGGAGE_MEMBERS || header.length + size > MAX_BAGGAGE_BYTES) continue;
    header = count ? `${header},${part}` : part;
    count += 1;
  }
  return header;
}

const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** Python's `unquote_plus(value, errors="replace")` for a value made of baggage-octets. */
export function decodeValue(value: string): string {
  if (!value.includes("%") && !value.includes("+")) return value;
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i += 1) {
    const char = value[i] as string;
    if (char === "+") {
      bytes.push(0x20);
    } else if (char === "%" && HEX_PAIR.test(value.slice(i + 1, i + 3))) {
      bytes.push(parseInt(value.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(char.charCodeAt(0));
    }
  }
  return decoder.decode(Uint8Array.from(bytes));
}

function stripOws(text: string): string {
  return text.replace(/^[ \t]+|[ \t]+$/g, "");
}

function decodeMember(member: string): Member | null {
  const equals = member.indexOf("=");
  if (equals < 0) return null;
  const key = stripOws(member.slice(0, equals));
  if (!TOKEN.test(key)) return null;
  const value = stripOws(member.slice(equals + 1).split(";", 1)[0] as string);
  if (!BAGGAGE_VALUE.test(value)) return null;
  return [key, decodeValue(value)];
}

/**
 * Decode W3C `baggage` header value(s) into members, in order. Several headers are one list;
 * malformed members are dropped one by one; past 64 members or 8192 bytes the rest is dropped.
 * `+` decodes to a space (as OpenTelemetry Python encodes it); properties after `;` are ignored.
 */
export function parseBaggage(values: string | readonly string[] | undefined | null): Member[] {
  if (values === undefined || values === null) return [];
  const raw = typeof values === "string" ? values : values.join(",");
  const members: Member[] = [];
  let size = 0;
  for (const piece of raw.split(",")) {
    const member = stripOws(piece);
    if (!member) continue;
    const encodedSize = Buffer.byteLength(member, "utf8") + (members.length ? 1 : 0);
    if (members.length >= MAX_BAGGAGE_MEMBERS || size + encodedSize > MAX_BAGGAGE_BYTES) break;
    const decoded = decodeMember(member);
    if (decoded === null) continue;
    size += encodedSize;
    members.push(decoded);
  }
  return members;
}

/** The prompt link among baggage members: both keys are needed, and must agree if repeated. */
export function promptFromMembers(members: Iterable<Member>): PromptRef | null {
  const names = new Set<string>();
  const versions = new Set<string>();
  for (const [key, value] of members) {
    if (key === PROMPT_NAME_KEY) names.add(value);
    else if (key === PROMPT_VERSION_KEY) versions.add(value);
  }
  if (names.size !== 1 || versions.size !== 1) return null;
  return promptFromStrings([...names][0], [...versions][0]);
}

/** Scheme, host and port: the unit a browser, and the bridge, trust. */
export interface Origin {
  readonly scheme: "http" | "https";
  readonly host: string;
  readonly port: number;
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = { http: 80, https: 443 };

/** `scheme://host:port`, the label gateway client spans carry (as the Python side writes it). */
export function originLabel(origin: Origin): string {
  return `${origin.scheme}://${origin.host}:${origin.port}`;
}

/** The origin of an absolute URL, or null if it is not http(s). Never throws. */
export function originOf(url: string): Origin | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  const scheme = parsed.protocol.slice(0, -1).toLowerCase();
  const defaultPort = DEFAULT_PORTS[scheme];
  // WHATWG URL keeps IPv6 brackets; Python's urlsplit().hostname does not.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (defaultPort === undefined || !host) return null;
  return {
    scheme: scheme as Origin["scheme"],
    host,
    port: parsed.port ? Number(parsed.port) : defaultPort,
  };
}

/** One gateway base URL; throws an Error that names the entry and what is wrong with it. */
export function parseOrigin(url: string): Origin {
  const text = url.trim();
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch {
    const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(text)?.[1]?.toLowerCase();
    if (scheme === undefined || DEFAULT_PORTS[scheme] === undefined) {
      throw new Error(`gateway ${JSON.stringify(text)}: scheme must be http or https`);
    }
    throw new Error(`gateway ${JSON.stringify(text)}: not a valid URL (host or port)`);
  }
  const scheme = parsed.protocol.slice(0, -1).toLowerCase();
  if (DEFAULT_PORTS[scheme] === undefined) {
    throw new Error(`gateway ${JSON.stringify(text)}: scheme must be http or https`);
  }
  const origin = originOf(text);
  if (origin === null) throw new Error(`gateway ${JSON.stringify(text)}: no host`);
  return origin;
}

/** `OTEL_BRIDGE_GATEWAYS`: comma-separated base URLs; paths are ignored, blanks skipped. */
export function parseGateways(value: string | readonly string[] | undefined | null): Origin[] {
  if (value === undefined || value === null) return [];
  const items = typeof value === "string" ? value.split(",") : [...value];
  const seen = new Map<string, Origin>();
  for (const item of items) {
    if (!item.trim()) continue;
    const origin = parseOrigin(item);
    seen.set(originLabel(origin), origin);
  }
  return [...seen.values()];
}
