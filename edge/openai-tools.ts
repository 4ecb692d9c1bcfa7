// Tool calling on POST /v1/chat/completions (edge/routes/openai-chat.ts): the call a reply must make becomes the
// JSON Schema the reply is written under (structured outputs, shared/protocol/json-schema.ts), and the reply's text
// becomes OpenAI's `tool_calls`, whole or streamed (edge/openai-stream.ts, in the queue object). A reply is always
// written {"name": <the tool>, "arguments": {...}} (an anyOf over the tools it may call, as vLLM's guided decoding of
// "required" does; a named function is an anyOf of one), so a conversation's history shows the call as the next
// turn's prompt does (renderedCalls); the caller gets the call without the wrapping.
import { ErrorCode, type GenerationOutput, type GenerationParams } from "../shared/index.ts";
import { compileJsonSchema, SchemaProblem } from "../shared/protocol/json-schema.ts";
import type { OpenAiFinishReason, Tool, ToolCall, ToolCallDelta, ToolChoice } from "../shared/protocol/openai-chat.ts";
import { ApiError } from "./errors.ts";

/** What the stream shaper and the answer need to turn a reply into a call (plain data: it travels to the queue). */
export interface ToolPlan {
  /** Choice i's call id is `${callId}_${i}`. */
  callId: string;
}

/** A function of no arguments: `{}` and nothing else. */
const NO_ARGUMENTS: Record<string, unknown> = { type: "object", properties: {}, additionalProperties: false };

const refused = (param: string, message: string) =>
  new ApiError(400, ErrorCode.validation, `${param}: ${message}`, { extra: { param } });

/**
 * One tool's part of the reply's schema: {"name": its name, "arguments": its parameters}, its $defs and definitions
 * moved to the whole schema's $defs under the tool's index (each namespace its own), and its $refs with them.
 */
function wrapped(tool: Tool, i: number, $defs: Record<string, unknown>) {
  const { $defs: own, definitions, ...parameters }: Record<string, unknown> = tool.function.parameters ?? NO_ARGUMENTS;
  for (const [name, def] of Object.entries((own ?? {}) as object)) $defs[`t${i}_s_${name}`] = moveRefs(def, i);
  for (const [name, def] of Object.entries((definitions ?? {}) as object)) $defs[`t${i}_d_${name}`] = moveRefs(def, i);
  return {
    type: "object",
    properties: { name: { const: tool.function.name }, arguments: moveRefs(parameters, i) },
    required: ["name", "arguments"],
    additionalProperties: false,
  };
}

/** The plan and the schema a reply is written under for a chat's tools and tool_choice; undefined when it is text. */
export function toolFormat(
  tools: readonly Tool[] | null | undefined,
  choice: ToolChoice | null | undefined,
): { plan: ToolPlan; schema: NonNullable<GenerationParams["schema"]> } | undefined {
  if (!tools || tools.length === 0 || choice == null || choice === "none" || choice === "auto") return undefined;
  const called = typeof choice === "object" ? tools.filter((t) => t.function.name === choice.function.name) : tools;
  // Each called tool alone, wrapped as the reply writes it, so a schema refused names its tool.
  for (const t of called) {
    const i = tools.indexOf(t);
    try {
      const $defs: Record<string, unknown> = {};
      const one = wrapped(t, i, $defs);
      compileJsonSchema(Object.keys($defs).length > 0 ? { ...one, $defs } : one);
    } catch (e) {
      if (!(e instanceof SchemaProblem)) throw e;
      throw refused(`tools[${i}].function.parameters`, e.message.replaceAll("$.properties.arguments", "$"));
    }
  }
  const $defs: Record<string, unknown> = {};
  const anyOf = called.map((t) => wrapped(t, tools.indexOf(t), $defs));
  const schema = Object.keys($defs).length > 0 ? { anyOf, $defs } : { anyOf };
  try {
    compileJsonSchema(schema);
  } catch (e) {
    if (!(e instanceof SchemaProblem)) throw e;
    throw refused("tools", `the tools together: ${e.message}; send fewer, or name the one to call in tool_choice`);
  }
  const plan = { callId: `call_${crypto.randomUUID().replaceAll("-", "")}` };
  return { plan, schema: schema as NonNullable<GenerationParams["schema"]> };
}

/** A schema with its $refs pointed at their new names; literals (const, enum) are left as written. */
function moveRefs(value: unknown, tool: number): unknown {
  if (Array.isArray(value)) return value.map((v) => moveRefs(v, tool));
  if (typeof value !== "object" || value === null) return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => {
      if (k === "const" || k === "enum") return [k, v];
      const ref = k === "$ref" && typeof v === "string" ? /^#\/(\$defs|definitions)\/(.+)$/.exec(v) : null;
      return [k, ref ? `#/$defs/t${tool}_${ref[1] === "$defs" ? "s" : "d"}_${ref[2]}` : moveRefs(v, tool)];
    }),
  );
}

/**
 * An assistant message's tool calls as the model would have written them, for the next turn's prompt: one
 * {"name": ..., "arguments": ...} a line (arguments as JSON where they parse, else as the string sent).
 */
export function renderedCalls(calls: readonly ToolCall[]): string {
  return calls
    .map((call) => {
      let args: unknown = call.function.arguments;
      try {
        args = JSON.parse(call.function.arguments);
      } catch {}
      return JSON.stringify({ name: call.function.name, arguments: args });
    })
    .join("\n");
}

/** The start of a reply, which names its tool: `{"name":"<name>","arguments":` (names are plain: no escapes). */
const HEAD = '{"name":"';
const TAIL = '","arguments":';

/**
 * The call a reply's text makes so far: the tool's name once written, and its arguments' text (without the
 * wrapping's closing brace once the whole reply is written: a reply is compact, so it parses exactly then).
 */
function readCall(text: string): { name: string | undefined; args: string; whole: boolean } {
  const end = text.indexOf(TAIL, HEAD.length);
  if (!text.startsWith(HEAD) || end < 0) return { name: undefined, args: "", whole: false };
  const args = text.slice(end + TAIL.length);
  // Only a text that ends with a brace can be whole: the stream asks each token, so the rest are not parsed.
  let whole = false;
  if (text.endsWith("}")) {
    try {
      JSON.parse(text);
      whole = true;
    } catch {}
  }
  return { name: text.slice(HEAD.length, end), args: whole ? args.slice(0, -1) : args, whole };
}

/** A whole reply's call, as the answer's message carries it; none for a reply cut before it named its tool. */
export function toolCallOf(plan: ToolPlan, output: GenerationOutput, index: number): ToolCall | undefined {
  const { name, args } = readCall(output.generated_text);
  if (name === undefined) return undefined;
  return { id: `${plan.callId}_${index}`, type: "function", function: { name, arguments: args } };
}

/** The answer's message for a reply that is a call: no content, the call (none when cut before its name). */
export function toolMessage(plan: ToolPlan, output: GenerationOutput, index: number) {
  const call = toolCallOf(plan, output, index);
  return { role: "assistant" as const, content: null, ...(call ? { tool_calls: [call] } : {}) };
}

/** A reply's finish as a call's: a call written whole ends as "tool_calls", one cut by max_tokens as "length". */
export const toolFinish = (output: GenerationOutput): OpenAiFinishReason =>
  readCall(output.generated_text).whole ? "tool_calls" : output.finish_reason;

/**
 * A streamed reply's text as tool-call deltas, per choice: nothing until the tool's name is known, then a delta
 * naming the call, then pieces of its arguments (the last character held back, since it may be the wrapping's
 * closing brace; the output settles it).
 */
export function toolCallStream(plan: ToolPlan) {
  const texts = new Map<number, string>();
  const sent = new Map<number, number>();
  const deltas = (index: number, args: string, name: string | undefined): ToolCallDelta[] => {
    const before = sent.get(index);
    if (name === undefined || (before !== undefined && args.length <= before)) return [];
    sent.set(index, args.length);
    const piece = args.slice(before ?? 0);
    return before === undefined
      ? [{ index: 0, id: `${plan.callId}_${index}`, type: "function", function: { name, arguments: piece } }]
      : [{ index: 0, function: { arguments: piece } }];
  };
  return {
    /** The deltas for text generated since the last. */
    push(index: number, text: string): ToolCallDelta[] {
      const all = (texts.get(index) ?? "") + text;
      texts.set(index, all);
      const { name, args, whole } = readCall(all);
      return deltas(index, whole ? args : args.slice(0, -1), name);
    },
    /** The deltas that finish the choice's call from its output. */
    end(index: number, output: GenerationOutput): ToolCallDelta[] {
      const call = toolCallOf(plan, output, index);
      return call ? deltas(index, call.function.arguments, call.function.name) : [];
    },
  };
}
