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
import { afterText, callStart, type JsonMarkers, prefixTail } from "../shared/tasks/text-generation-format.ts";
import { ApiError } from "./errors.ts";

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
  // Where the model decides, it may write text first (its reasoning, a sentence) and call after it.
  const markers = tags && {
    prefix: tags.prefix,
    suffix: tags.suffix,
    optional: auto,
    ...(req.parallel_tool_calls === false ? {} : { parallel: true }),
    ...(auto ? { after_text: true } : {}),
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
  if (!tools.plan.markers) return tools;
  // A reply that is no call is the answer's object from its first character: no text for a call to follow.
  const { after_text: _, ...kept } = tools.plan.markers;
  const markers = { ...kept, text_schema: answer };
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
 * JSON as Python's json.dumps writes it by default (", " and ": " between parts, other characters as they are): what
 * Hugging Face chat templates' `tojson` renders, and the spacing a reply may be written with (json_spacing).
 */
function dumps(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(dumps).join(", ")}]`;
  if (value !== null && typeof value === "object") {
    return `{${Object.entries(value)
      .map(([k, v]) => `${JSON.stringify(k)}: ${dumps(v)}`)
      .join(", ")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/**
 * An assistant message's tool calls as the model would have written them, for the next turn's prompt: each
 * {"name": ..., "arguments": ...} between the template's tool_call markers, or one a line where it has none
 * (arguments as JSON where they parse, else as the string sent), spaced as templates' `tojson` writes it.
 */
export function renderedCalls(calls: readonly ToolCall[], template: ChatTemplate | undefined): string {
  const tags = template?.tool_call;
  const written = calls.map((call) => {
    let args: unknown = call.function.arguments;
    try {
      args = JSON.parse(call.function.arguments);
    } catch {}
    const json = dumps({ name: call.function.name, arguments: args });
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

/** How a reply's calls are read: any object, spaced or compact (a call's end is its closing brace either way). */
const ANY_CALL = spacedSchema(JSON_OBJECT);

/**
 * A reply's text read as it grows: still undecided (the start of the markers' prefix, where the model may decide),
 * text, or calls: each object after a prefix, read up to its closing brace (what follows is the suffix, then
 * with json_markers.parallel whitespace and the next call's prefix). With json_markers.after_text the calls may
 * follow text, which is then the reply's content.
 */
class ReplyReader {
  /** The reply's text: all of it while undecided or text; once calls begin, what came before them (content). */
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
      this.inText(piece);
    } else if (this.kind === "call") {
      this.feed(piece);
    } else {
      this.text += piece;
      const { prefix, optional } = this.markers as JsonMarkers;
      // As the worker's mask reads it (text-generation-format.ts): whitespace may come first where the call is optional.
      const start = optional ? callStart(this.text) : this.text;
      if (start.startsWith(prefix)) {
        this.kind = "call";
        this.text = "";
        this.calls.push({ json: jsonStart(ANY_CALL), body: "", closed: false });
        this.feed(start.slice(prefix.length));
      } else if (!prefix.startsWith(start)) {
        // Text where the model may write it (read on for a call after it); else a call that went wrong: no content.
        const text = this.text;
        this.kind = optional ? "text" : "call";
        this.text = "";
        if (this.kind === "call") this.calls.push({ json: null, body: "", closed: false });
        else this.inText(text);
      }
    }
    return this;
  }

  /** Text, where with json_markers.after_text a call begins the moment its prefix is whole. */
  private inText(piece: string): void {
    const from = Math.max(0, this.text.length - (this.markers?.prefix.length ?? 0) + 1);
    this.text += piece;
    if (!afterText(this.markers)) return;
    const { prefix } = this.markers as JsonMarkers;
    const at = this.text.indexOf(prefix, from);
    if (at < 0) return;
    const rest = this.text.slice(at + prefix.length);
    this.text = this.text.slice(0, at);
    this.kind = "call";
    this.calls.push({ json: jsonStart(ANY_CALL), body: "", closed: false });
    this.feed(rest);
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

  /**
   * What the reply is so far; `ended`: nothing more comes, so an undecided reply is text. Text's last `held`
   * characters may still begin a call (json_markers.after_text); a call's `text` is the content before it.
   */
  read(
    ended: boolean,
  ):
    | { kind: "undecided" }
    | { kind: "text"; text: string; held: number }
    | { kind: "call"; calls: ReadCall[]; whole: boolean; text: string } {
    if (this.kind === "undecided") {
      if (!ended) return { kind: "undecided" };
      // Ended in the prefix: text where the model could write text, else a call cut before its name.
      if (!this.markers?.optional || this.markers.text_schema !== undefined)
        return { kind: "call", calls: [], whole: false, text: "" };
      return { kind: "text", text: this.text, held: 0 };
    }
    if (this.kind === "text") {
      const mayCall = !ended && afterText(this.markers);
      const held = mayCall ? prefixTail(this.text, (this.markers as JsonMarkers).prefix).length : 0;
      return { kind: "text", text: this.text, held };
    }
    return { kind: "call", calls: this.calls.flatMap(readCall), whole: this.whole(), text: this.text };
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

/**
 * The answer's message: the reply's text where it made no call, else its calls (none when cut before a name) and
 * as content the text before them (json_markers.after_text), null for none.
 */
export function toolMessage(plan: ToolPlan, output: GenerationOutput, index: number) {
  const reply = readReply(plan, output);
  if (reply.kind !== "call") return { role: "assistant" as const, content: reply.kind === "text" ? reply.text : "" };
  const calls: ToolCall[] = reply.calls.map((c, k) => ({
    id: callIdOf(plan, index, k),
    type: "function",
    function: { name: c.name, arguments: c.args },
  }));
  const content = reply.text === "" ? null : reply.text;
  return { role: "assistant" as const, content, ...(calls.length > 0 ? { tool_calls: calls } : {}) };
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
  /** `text`: content not sent yet, before the calls (json_markers.after_text). */
  | { kind: "call"; deltas: ToolCallDelta[]; text?: string };

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
    // Text is sent as it comes, but for an end that may begin a call; a call's content before it, what is left.
    const before = sentText.get(index) ?? 0;
    const shown = Math.max(before, reply.text.length - (reply.kind === "text" ? reply.held : 0));
    sentText.set(index, shown);
    const text = reply.text.slice(before, shown);
    if (reply.kind === "text") return { kind: "text", text };
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
    return { kind: "call", deltas, ...(text === "" ? {} : { text }) };
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
