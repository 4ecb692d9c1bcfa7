// Tool calling on POST /v1/chat/completions (edge/routes/openai-chat.ts): the call a reply may make becomes the
// JSON Schema the reply is written under (structured outputs, shared/protocol/json-schema.ts), and the reply's text
// becomes OpenAI's `tool_calls`, whole or streamed (edge/openai-stream.ts, in the queue object). A call is always
// written {"name": <the tool>, "arguments": {...}} (an anyOf over the tools it may call, as vLLM's guided decoding of
// "required" does; a named function is an anyOf of one), between the chat template's tool_call markers where it has
// them, so a conversation's history shows the call as the next turn's prompt does (renderedCalls); the caller gets
// the call without the wrapping. With those markers the model may decide (tool_choice "auto", the default): a reply
// that begins with the prefix is a call, one that does not is text (GenerationParams.json_markers.optional).
import { ErrorCode, type GenerationOutput, type GenerationParams, type ModelConfig } from "../shared/index.ts";
import type { ChatTemplate } from "../shared/protocol/chat-template.ts";
import { compileJsonSchema, SchemaProblem } from "../shared/protocol/json-schema.ts";
import type { OpenAiFinishReason, Tool, ToolCall, ToolCallDelta, ToolChoice } from "../shared/protocol/openai-chat.ts";
import { type JsonState, jsonDone, jsonFeed, jsonStart } from "../shared/tasks/json-grammar.ts";
import { callStart } from "../shared/tasks/text-generation-format.ts";
import { ApiError } from "./errors.ts";

type JsonMarkers = NonNullable<GenerationParams["json_markers"]>;

/** What the stream shaper and the answer need to turn a reply into a call (plain data: it travels to the queue). */
export interface ToolPlan {
  /** Choice i's call id is `${callId}_${i}`. */
  callId: string;
  /** The chat template's tool_call markers the call is written between; optional: the reply may be text instead. */
  markers?: JsonMarkers;
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

/**
 * The plan and the format a reply is written under for a chat's tools and tool_choice; undefined when it is text
 * ("none", or no tools). "auto" (tool_choice left out with tools) needs the template's tool_call markers.
 */
export function toolFormat(
  model: ModelConfig,
  tools: readonly Tool[] | null | undefined,
  choice: ToolChoice | null | undefined,
):
  | { plan: ToolPlan; format: Pick<GenerationParams, "format" | "schema" | "json_markers">; shown?: string }
  | undefined {
  if (!tools || tools.length === 0 || choice === "none") return undefined;
  const auto = choice == null || choice === "auto";
  const tags = model.chat_template?.tool_call;
  if (auto && !tags) {
    throw refused(
      "tool_choice",
      `model "${model.name}"'s chat template says not how it writes a tool call, so it cannot decide on its own whether to make one (tool_choice "auto", the default with tools): send tool_choice "required" (a call of a tool the model picks), {"type": "function", "function": {"name": ...}} (a call of that one), or "none" (the tools are then ignored)`,
    );
  }
  const called =
    typeof choice === "object" && choice !== null
      ? tools.filter((t) => t.function.name === choice.function.name)
      : tools;
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
  const markers = tags && { prefix: tags.prefix, suffix: tags.suffix, optional: auto };
  const plan = { callId: `call_${crypto.randomUUID().replaceAll("-", "")}`, ...(markers ? { markers } : {}) };
  // The tools as the template shows them to the model (each as sent, a line), so it knows what it may call.
  const list = tags?.tools;
  return {
    plan,
    ...(list ? { shown: list.prefix + tools.map((t) => JSON.stringify(t)).join("\n") + list.suffix } : {}),
    format: {
      format: "json_schema",
      schema: schema as NonNullable<GenerationParams["schema"]>,
      ...(markers ? { json_markers: markers } : {}),
    },
  };
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
 * An assistant message's tool calls as the model would have written them, for the next turn's prompt: each
 * {"name": ..., "arguments": ...} between the template's tool_call markers, or one a line where it has none
 * (arguments as JSON where they parse, else as the string sent).
 */
export function renderedCalls(calls: readonly ToolCall[], template: ChatTemplate | undefined): string {
  const tags = template?.tool_call;
  const written = calls.map((call) => {
    let args: unknown = call.function.arguments;
    try {
      args = JSON.parse(call.function.arguments);
    } catch {}
    const json = JSON.stringify({ name: call.function.name, arguments: args });
    return tags ? tags.prefix + json + tags.suffix : json;
  });
  return written.join(tags ? "" : "\n");
}

/** The start of a call, which names its tool: `{"name":"<name>","arguments":` (names are plain: no escapes). */
const HEAD = '{"name":"';
const TAIL = '","arguments":';

/**
 * A reply's text read as it grows: still undecided (the start of the markers' prefix, where the model may decide),
 * text, or a call: the object after the prefix, read up to its closing brace (what follows is the suffix).
 */
class ReplyReader {
  private text = "";
  private kind: "undecided" | "text" | "call";
  /** The call's object so far; null once a character could not continue one (never from a masked run). */
  private json: JsonState | null = jsonStart();
  private body = "";
  private closed = false;

  constructor(private readonly markers: JsonMarkers | undefined) {
    this.kind = markers ? "undecided" : "call";
  }

  push(piece: string): this {
    if (this.kind === "text") {
      this.text += piece;
    } else if (this.kind === "call") {
      this.feed(piece);
    } else {
      this.text += piece;
      const { prefix, optional } = this.markers as JsonMarkers;
      // As the worker's mask reads it (text-generation-format.ts): whitespace may come first where the call is optional.
      const start = optional ? callStart(this.text) : this.text;
      if (start.startsWith(prefix)) {
        this.kind = "call";
        this.feed(start.slice(prefix.length));
      } else if (!prefix.startsWith(start)) {
        this.kind = optional ? "text" : "call";
        if (this.kind === "call") this.json = null;
      }
    }
    return this;
  }

  /** The object's characters, one at a time, so its end is found wherever a piece ends. */
  private feed(piece: string): void {
    for (const ch of piece) {
      if (this.closed || this.json === null) return;
      this.json = jsonFeed(this.json, ch);
      if (this.json === null) return;
      this.body += ch;
      this.closed = jsonDone(this.json);
    }
  }

  /** What the reply is so far; `ended`: nothing more comes, so an undecided reply is text. */
  read(
    ended: boolean,
  ):
    | { kind: "undecided" }
    | { kind: "text"; text: string }
    | { kind: "call"; name: string | undefined; args: string; whole: boolean } {
    if (this.kind === "undecided") {
      if (!ended) return { kind: "undecided" };
      // Ended in the prefix: text where the model could decide, else a call cut before its name.
      if (!this.markers?.optional) return { kind: "call", name: undefined, args: "", whole: false };
      return { kind: "text", text: this.text };
    }
    if (this.kind === "text") return { kind: "text", text: this.text };
    const end = this.body.indexOf(TAIL, HEAD.length);
    if (!this.body.startsWith(HEAD) || end < 0) return { kind: "call", name: undefined, args: "", whole: false };
    const args = this.body.slice(end + TAIL.length);
    // The closing brace after the arguments is the wrapping's.
    return {
      kind: "call",
      name: this.body.slice(HEAD.length, end),
      args: this.closed ? args.slice(0, -1) : args,
      whole: this.closed,
    };
  }
}

const readReply = (plan: ToolPlan, output: GenerationOutput) =>
  new ReplyReader(plan.markers).push(output.generated_text).read(true);

/** A whole reply's call, as the answer's message carries it; none for text, or a reply cut before it named its tool. */
export function toolCallOf(plan: ToolPlan, output: GenerationOutput, index: number): ToolCall | undefined {
  const reply = readReply(plan, output);
  if (reply.kind !== "call" || reply.name === undefined) return undefined;
  return { id: `${plan.callId}_${index}`, type: "function", function: { name: reply.name, arguments: reply.args } };
}

/** The answer's message: the reply's text where it made no call, else no content and the call (none when cut before its name). */
export function toolMessage(plan: ToolPlan, output: GenerationOutput, index: number) {
  const reply = readReply(plan, output);
  if (reply.kind === "text") return { role: "assistant" as const, content: reply.text };
  const call = toolCallOf(plan, output, index);
  return { role: "assistant" as const, content: null, ...(call ? { tool_calls: [call] } : {}) };
}

/** A reply's finish: a call written whole ends as "tool_calls"; text, or a call cut by max_tokens, as it ended. */
export function toolFinish(plan: ToolPlan, output: GenerationOutput): OpenAiFinishReason {
  const reply = readReply(plan, output);
  return reply.kind === "call" && reply.whole ? "tool_calls" : output.finish_reason;
}

/** What a streamed reply's new text is to send: nothing yet, text, or tool-call deltas. */
export type ReplyPiece =
  | { kind: "undecided" }
  | { kind: "text"; text: string }
  | { kind: "call"; deltas: ToolCallDelta[] };

/**
 * A streamed reply's text as content or tool-call deltas, per choice: nothing while undecided (the text may be the
 * start of a call's prefix); text, the held text first; a call, nothing until the tool's name is known, then a
 * delta naming the call, then pieces of its arguments (the last character held back until the object closes, since
 * it may be the wrapping's closing brace).
 */
export function toolCallStream(plan: ToolPlan) {
  const readers = new Map<number, ReplyReader>();
  /** Per choice: characters of text sent, or of the call's arguments (undefined: not yet named). */
  const sent = new Map<number, number>();
  const piece = (index: number, ended: boolean): ReplyPiece => {
    const reader = readers.get(index) ?? new ReplyReader(plan.markers);
    readers.set(index, reader);
    const reply = reader.read(ended);
    if (reply.kind === "undecided") return reply;
    const before = sent.get(index);
    if (reply.kind === "text") {
      sent.set(index, reply.text.length);
      return { kind: "text", text: reply.text.slice(before ?? 0) };
    }
    const args = reply.whole || ended ? reply.args : reply.args.slice(0, -1);
    if (reply.name === undefined || (before !== undefined && args.length <= before))
      return { kind: "call", deltas: [] };
    sent.set(index, args.length);
    const more = args.slice(before ?? 0);
    const deltas: ToolCallDelta[] =
      before === undefined
        ? [
            {
              index: 0,
              id: `${plan.callId}_${index}`,
              type: "function",
              function: { name: reply.name, arguments: more },
            },
          ]
        : [{ index: 0, function: { arguments: more } }];
    return { kind: "call", deltas };
  };
  return {
    /** What to send for text generated since the last. */
    push(index: number, text: string): ReplyPiece {
      const reader = readers.get(index) ?? new ReplyReader(plan.markers);
      readers.set(index, reader.push(text));
      return piece(index, false);
    },
    /** What finishes the choice, from its output (the truth, whatever the stream carried). */
    end(index: number, output: GenerationOutput): ReplyPiece {
      readers.set(index, new ReplyReader(plan.markers).push(output.generated_text));
      return piece(index, true);
    },
  };
}
