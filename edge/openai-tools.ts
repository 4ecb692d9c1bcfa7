// Tool calling on POST /v1/chat/completions (edge/routes/openai-chat.ts): the call a reply must make becomes the
// JSON Schema the reply is written under (structured outputs, shared/protocol/json-schema.ts), and the reply's text
// becomes OpenAI's `tool_calls`, whole or streamed (edge/openai-stream.ts, in the queue object). A named function's
// reply is its arguments; "required" over several tools writes {"name": <one of them>, "arguments": {...}}, as
// vLLM's guided decoding of "required" does, and the caller gets the call without the wrapping.
import { ErrorCode, type GenerationOutput, type GenerationParams } from "../shared/index.ts";
import { compileJsonSchema, SchemaProblem } from "../shared/protocol/json-schema.ts";
import type { OpenAiFinishReason, Tool, ToolCall, ToolCallDelta, ToolChoice } from "../shared/protocol/openai-chat.ts";
import { ApiError } from "./errors.ts";

/** What the stream shaper and the answer need to turn a reply into a call (plain data: it travels to the queue). */
export interface ToolPlan {
  /** The tools the reply may call; one: the reply is its arguments, several: the reply names the one it calls. */
  names: string[];
  /** Choice i's call id is `${callId}_${i}`. */
  callId: string;
}

/** A function of no arguments: `{}` and nothing else. */
const NO_ARGUMENTS: Record<string, unknown> = { type: "object", properties: {}, additionalProperties: false };

/** The plan and the item's format for a chat's tools and tool_choice; undefined when the reply is text. */
export function toolFormat(
  tools: readonly Tool[] | null | undefined,
  choice: ToolChoice | null | undefined,
): { plan: ToolPlan; format: Pick<GenerationParams, "format" | "schema"> } | undefined {
  if (!tools || tools.length === 0 || choice == null || choice === "none" || choice === "auto") return undefined;
  for (const [i, t] of tools.entries()) {
    try {
      compileJsonSchema(t.function.parameters ?? NO_ARGUMENTS);
    } catch (e) {
      if (!(e instanceof SchemaProblem)) throw e;
      const param = `tools[${i}].function.parameters`;
      throw new ApiError(400, ErrorCode.validation, `${param}: ${e.message}`, { extra: { param } });
    }
  }
  const called = typeof choice === "object" ? tools.filter((t) => t.function.name === choice.function.name) : tools;
  const plan = { names: called.map((t) => t.function.name), callId: `call_${crypto.randomUUID().replaceAll("-", "")}` };
  const only = called.length === 1 ? called[0] : undefined;
  if (only) {
    const schema = (only.function.parameters ?? NO_ARGUMENTS) as GenerationParams["schema"];
    return { plan, format: { format: "json_schema", schema } };
  }
  // Each tool's $defs move to the wrapper's, under the tool's index, so its $refs still find them.
  const $defs: Record<string, unknown> = {};
  const anyOf = called.map((t, i) => {
    const { $defs: own, definitions, ...parameters }: Record<string, unknown> = t.function.parameters ?? NO_ARGUMENTS;
    for (const [name, def] of Object.entries({ ...(definitions as object), ...(own as object) })) {
      $defs[`t${i}_${name}`] = moveRefs(def, i);
    }
    return {
      type: "object",
      properties: { name: { const: t.function.name }, arguments: moveRefs(parameters, i) },
      required: ["name", "arguments"],
      additionalProperties: false,
    };
  });
  const schema = Object.keys($defs).length > 0 ? { anyOf, $defs } : { anyOf };
  return { plan, format: { format: "json_schema", schema: schema as GenerationParams["schema"] } };
}

function moveRefs(value: unknown, tool: number): unknown {
  if (Array.isArray(value)) return value.map((v) => moveRefs(v, tool));
  if (typeof value !== "object" || value === null) return value;
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => {
      const ref = k === "$ref" && typeof v === "string" ? /^#\/(\$defs|definitions)\/(.+)$/.exec(v) : null;
      return [k, ref ? `#/$defs/t${tool}_${ref[2]}` : moveRefs(v, tool)];
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

/** The start of a reply that names its tool: `{"name":"<name>","arguments":` (names are plain: no escapes). */
const HEAD = '{"name":"';
const TAIL = '","arguments":';

/** The call a reply's text makes so far: the tool's name once written, and its arguments' text. */
function readCall(plan: ToolPlan, text: string): { name: string | undefined; args: string } {
  if (plan.names.length === 1) return { name: plan.names[0], args: text };
  const end = text.indexOf(TAIL, HEAD.length);
  if (!text.startsWith(HEAD) || end < 0) return { name: undefined, args: "" };
  return { name: text.slice(HEAD.length, end), args: text.slice(end + TAIL.length) };
}

/** A whole reply's call, as the answer's message carries it; a reply cut short keeps what it wrote. */
export function toolCallOf(plan: ToolPlan, output: GenerationOutput, index: number): ToolCall {
  const { name, args } = readCall(plan, output.generated_text);
  // The wrapping object's own closing brace is not the arguments'.
  const whole = plan.names.length > 1 && output.finish_reason === "stop" ? args.slice(0, -1) : args;
  return { id: `${plan.callId}_${index}`, type: "function", function: { name: name ?? "", arguments: whole } };
}

/** A reply's finish as a call's: a call written whole ends as "tool_calls", one cut by max_tokens as "length". */
export const toolFinish = (finish: GenerationOutput["finish_reason"]): OpenAiFinishReason =>
  finish === "stop" ? "tool_calls" : finish;

/**
 * A streamed reply's text as tool-call deltas, per choice: nothing until the tool's name is known, then a delta
 * naming the call, then pieces of its arguments (the last character held back when the reply names its tool,
 * since it may be the wrapping's closing brace; the output settles it).
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
      const { name, args } = readCall(plan, all);
      return deltas(index, plan.names.length > 1 ? args.slice(0, -1) : args, name);
    },
    /** The deltas that finish the choice's call from its output. */
    end(index: number, output: GenerationOutput): ToolCallDelta[] {
      const call = toolCallOf(plan, output, index);
      return deltas(index, call.function.arguments, call.function.name || undefined);
    },
  };
}
