// Tool calling on POST /v1/chat/completions (edge/routes/openai-chat.ts): the call a reply may make becomes the
// JSON Schema the reply is written under (structured outputs, shared/protocol/json-schema.ts), and the reply's text
// becomes OpenAI's `tool_calls`, whole or streamed (edge/openai-stream.ts, in the queue object). A call is always
// written {"name": <the tool>, "arguments": {...}} (an anyOf over the tools it may call, as vLLM's guided decoding of
// "required" does; a named function is an anyOf of one), between the chat template's tool_call markers where it has
// them, so a conversation's history shows the call as the next turn's prompt does (renderedCalls); the caller gets
// the call without the wrapping. With those markers the model may decide (tool_choice "auto", the default): a reply
// that begins with the prefix is a call, one that does not is text (GenerationParams.json_markers.optional); and
// after a call's suffix another may follow (parallel_tool_calls, json_markers.parallel).
import { ErrorCode, type GenerationOutput, type GenerationParams, type ModelConfig } from "../shared/index.ts";
import type { ChatTemplate } from "../shared/protocol/chat-template.ts";
import { compileJsonSchema, SchemaProblem, spacedSchema } from "../shared/protocol/json-schema.ts";
import type { OpenAiFinishReason, Tool, ToolCall, ToolCallDelta, ToolChoice } from "../shared/protocol/openai-chat.ts";
import { JSON_OBJECT, type JsonState, jsonDone, jsonFeed, jsonStart } from "../shared/tasks/json-grammar.ts";
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
  req: {
    tools?: readonly Tool[] | null | undefined;
    tool_choice?: ToolChoice | null | undefined;
    /** Left out or true: with the template's tags, a reply may make several calls. */
    parallel_tool_calls?: boolean | null | undefined;
  },
):
  | {
      plan: ToolPlan;
      format: Pick<GenerationParams, "format" | "schema" | "json_spacing" | "json_markers">;
      shown?: string;
    }
  | undefined {
  const { tools, tool_choice: choice } = req;
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
  const markers = tags && {
    prefix: tags.prefix,
    suffix: tags.suffix,
    optional: auto,
    ...(req.parallel_tool_calls === false ? {} : { parallel: true }),
  };
  const plan = { callId: `call_${crypto.randomUUID().replaceAll("-", "")}`, ...(markers ? { markers } : {}) };
  // The tools as the template shows them to the model (each as sent, a line), so it knows what it may call.
  const list = tags?.tools;
  return {
    plan,
    ...(list ? { shown: list.prefix + tools.map((t) => JSON.stringify(t)).join("\n") + list.suffix } : {}),
    format: {
      format: "json_schema",
      schema: schema as NonNullable<GenerationParams["schema"]>,
      json_spacing: "spaced",
      ...(markers ? { json_markers: markers } : {}),
    },
  };
}

/** What toolFormat answers: the plan the reply is read by, the format it is written under, the tools as shown. */
export type ToolFormat = NonNullable<ReturnType<typeof toolFormat>>;

/**
 * Tools beside response_format (with "auto": toolFormat refuses it otherwise upstream): a reply that makes no call is
 * the answer's object, for the worker's mask and the reply's reader alike.
 */
export function withAnswer(tools: ToolFormat, answer: NonNullable<GenerationParams["schema"]>): ToolFormat {
  const markers = tools.plan.markers && { ...tools.plan.markers, text_schema: answer };
  if (!markers) return tools;
  return { ...tools, plan: { ...tools.plan, markers }, format: { ...tools.format, json_markers: markers } };
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

/**
 * The start of a call, which names its tool: `{"name":"<name>","arguments":`, with a space after each `:` and `,`
 * or not (json_spacing "spaced"); names are plain (no escapes). The arguments begin after the space that may follow
 * their colon, so a streamed call's pieces add up to the whole call's arguments.
 */
const HEAD = /^\{"name": ?"([^"\\]*)", ?"arguments": ?/;

/**
 * A reply's text read as it grows: still undecided (the start of the markers' prefix, where the model may decide),
 * text, or calls: each object after a prefix, read up to its closing brace (what follows is the suffix, then
 * with json_markers.parallel whitespace and the next call's prefix).
 */
/** How a reply's calls are read: any object, spaced or compact (a call's end is its closing brace either way). */
const ANY_CALL = spacedSchema(JSON_OBJECT);

class ReplyReader {
  private text = "";
  private kind: "undecided" | "text" | "call";
  /** The calls' objects so far; a call's state is null once a character could not continue it (never from a masked run). */
  private readonly calls: { json: JsonState | null; body: string; closed: boolean }[] = [];
  /** What came after the last call's object: its suffix, whitespace, the next prefix as far as written. */
  private between = "";

  constructor(private readonly markers: JsonMarkers | undefined) {
    this.kind = markers ? "undecided" : "call";
    if (!markers) this.calls.push({ json: jsonStart(ANY_CALL), body: "", closed: false });
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
        this.calls.push({ json: jsonStart(ANY_CALL), body: "", closed: false });
        this.feed(start.slice(prefix.length));
      } else if (!prefix.startsWith(start)) {
        this.kind = optional ? "text" : "call";
        if (this.kind === "call") this.calls.push({ json: null, body: "", closed: false });
      }
    }
    return this;
  }

  /** The objects' characters, one at a time, so an object's end is found wherever a piece ends. */
  private feed(piece: string): void {
    for (const ch of piece) {
      const call = this.calls.at(-1);
      if (!call || call.json === null) return;
      if (call.closed) {
        this.between += ch;
        const { prefix, suffix, parallel } = this.markers ?? { prefix: "", suffix: "" };
        // Characters come one at a time: the next call begins the moment its prefix is whole.
        if (parallel && this.between.startsWith(suffix) && callStart(this.between.slice(suffix.length)) === prefix) {
          this.calls.push({ json: jsonStart(ANY_CALL), body: "", closed: false });
          this.between = "";
        }
        continue;
      }
      call.json = jsonFeed(call.json, ch);
      if (call.json === null) return;
      call.body += ch;
      call.closed = jsonDone(call.json);
    }
  }

  /** What the reply is so far; `ended`: nothing more comes, so an undecided reply is text. */
  read(
    ended: boolean,
  ): { kind: "undecided" } | { kind: "text"; text: string } | { kind: "call"; calls: ReadCall[]; whole: boolean } {
    if (this.kind === "undecided") {
      if (!ended) return { kind: "undecided" };
      // Ended in the prefix: text where the model could write text, else a call cut before its name.
      if (!this.markers?.optional || this.markers.text_schema !== undefined)
        return { kind: "call", calls: [], whole: false };
      return { kind: "text", text: this.text };
    }
    if (this.kind === "text") return { kind: "text", text: this.text };
    return { kind: "call", calls: this.calls.flatMap(readCall), whole: this.whole() };
  }

  /** Every call begun is whole: the last object closed, and after it at most its suffix and whitespace (no next prefix). */
  private whole(): boolean {
    const last = this.calls.at(-1);
    if (!last?.closed) return false;
    const suffix = this.markers?.suffix ?? "";
    if (suffix.startsWith(this.between)) return true;
    return this.between.startsWith(suffix) && callStart(this.between.slice(suffix.length)) === "";
  }
}

/** A call as read: its tool's name once written, its arguments so far, and whether its object has closed. */
interface ReadCall {
  name: string;
  args: string;
  whole: boolean;
}

/** A call's object read: none until its tool is named; the closing brace after the arguments is the wrapping's. */
function readCall(call: { body: string; closed: boolean }): ReadCall[] {
  const head = HEAD.exec(call.body);
  if (!head) return [];
  const args = call.body.slice(head[0].length);
  return [{ name: head[1] as string, args: call.closed ? args.slice(0, -1) : args, whole: call.closed }];
}

const readReply = (plan: ToolPlan, output: GenerationOutput) =>
  new ReplyReader(plan.markers).push(output.generated_text).read(true);

/** Choice `index`'s k-th call's id: the first `${callId}_${index}`, the next ones numbered after it. */
const callIdOf = (plan: ToolPlan, index: number, k: number) => `${plan.callId}_${index}${k > 0 ? `_${k}` : ""}`;

/** The answer's message: the reply's text where it made no call, else no content and its calls (none when cut before a name). */
export function toolMessage(plan: ToolPlan, output: GenerationOutput, index: number) {
  const reply = readReply(plan, output);
  if (reply.kind !== "call") return { role: "assistant" as const, content: reply.kind === "text" ? reply.text : "" };
  const calls: ToolCall[] = reply.calls.map((c, k) => ({
    id: callIdOf(plan, index, k),
    type: "function",
    function: { name: c.name, arguments: c.args },
  }));
  return { role: "assistant" as const, content: null, ...(calls.length > 0 ? { tool_calls: calls } : {}) };
}

/** A reply's finish: calls written whole end as "tool_calls"; text, or a call cut by max_tokens, as the reply ended. */
export function toolFinish(plan: ToolPlan, output: GenerationOutput): OpenAiFinishReason {
  const reply = readReply(plan, output);
  return reply.kind === "call" && reply.calls.length > 0 && reply.whole ? "tool_calls" : output.finish_reason;
}

/** What a streamed reply's new text is to send: nothing yet, text, or tool-call deltas. */
export type ReplyPiece =
  | { kind: "undecided" }
  | { kind: "text"; text: string }
  | { kind: "call"; deltas: ToolCallDelta[] };

/**
 * A streamed reply's text as content or tool-call deltas, per choice: nothing while undecided (the text may be the
 * start of a call's prefix); text, the held text first; calls, each nothing until its tool's name is known, then a
 * delta naming it (its `index` the call's place in the reply), then pieces of its arguments (the last character held
 * back until the object closes, since it may be the wrapping's closing brace).
 */
export function toolCallStream(plan: ToolPlan) {
  const readers = new Map<number, ReplyReader>();
  /** Per choice: characters of text sent, or of each call's arguments (undefined: not yet named). */
  const sentText = new Map<number, number>();
  const sentArgs = new Map<number, number[]>();
  const piece = (index: number, ended: boolean): ReplyPiece => {
    const reply = (readers.get(index) as ReplyReader).read(ended);
    if (reply.kind === "undecided") return reply;
    if (reply.kind === "text") {
      const before = sentText.get(index) ?? 0;
      sentText.set(index, reply.text.length);
      return { kind: "text", text: reply.text.slice(before) };
    }
    const sent = sentArgs.get(index) ?? [];
    sentArgs.set(index, sent);
    const deltas = reply.calls.flatMap((c, k): ToolCallDelta[] => {
      const args = c.whole || ended ? c.args : c.args.slice(0, -1);
      const before = sent[k];
      if (before !== undefined && args.length <= before) return [];
      sent[k] = args.length;
      const more = args.slice(before ?? 0);
      return before === undefined
        ? [{ index: k, id: callIdOf(plan, index, k), type: "function", function: { name: c.name, arguments: more } }]
        : [{ index: k, function: { arguments: more } }];
    });
    return { kind: "call", deltas };
  };
  return {
    /** What to send for text generated since the last. */
    push(index: number, text: string): ReplyPiece {
      readers.set(index, (readers.get(index) ?? new ReplyReader(plan.markers)).push(text));
      return piece(index, false);
    },
    /** What finishes the choice, from its output (the truth, whatever the stream carried). */
    end(index: number, output: GenerationOutput): ReplyPiece {
      readers.set(index, new ReplyReader(plan.markers).push(output.generated_text));
      return piece(index, true);
    },
  };
}
