// A text-generation call made into a queue item, shared by the OpenAI routes (edge/routes/openai-chat.ts) and
// the Hugging Face text-generation shape: the model must generate, parameters in range, chat messages in known
// roles rendered with the model's chat template, a session's conversation read back and trimmed to the context.
// Every refusal is a 400 naming the parameter to fix, thrown before anything is queued.
import type { Context } from "hono";
import {
  ErrorCode,
  type GenerationItem,
  type GenerationOutput,
  type GenerationParams,
  type ModelConfig,
} from "../shared/index.ts";
import {
  CHAT_ROLES,
  type ChatMessage,
  type ChatTemplate,
  parseRenderedChat,
  renderChat,
  trimChat,
} from "../shared/protocol/chat-template.ts";
import { compileJsonSchema, SchemaProblem } from "../shared/protocol/json-schema.ts";
import type { ChatRequestMessage } from "../shared/protocol/openai-chat.ts";
import type { HistoryEntry } from "../shared/protocol/sessions.ts";
import { logprobsProblem } from "../shared/tasks/text-generation-item.ts";
import { maxTextChars } from "../shared/tasks/text-item.ts";
import type { HonoEnv } from "./app-env.ts";
import { ApiError } from "./errors.ts";
import { GENERATION_TASK } from "./model-queue/token-stream.ts";
import { renderedCalls } from "./openai-tools.ts";
import { sessionOf } from "./sessions/session-stub.ts";

/** Tokens generated when a call names no limit (GenerationParams' default). */
const DEFAULT_MAX_NEW_TOKENS = 64;
const MAX_STOPS = 8;
const MAX_STOP_CHARS = 64;

/** A 400 naming the request field at fault (OpenAI's `param`). */
export const refuse = (param: string, message: string) =>
  new ApiError(400, ErrorCode.validation, message, { extra: { param } });

/** The model, if it generates text: 404 for one that does not exist, 400 for one of another task. */
export function generationModel(c: Context<HonoEnv>, name: string): ModelConfig {
  const models = c.get("config").models;
  const model = models.get(name);
  const generators = [...models.values()].filter((m) => m.task === GENERATION_TASK).map((m) => m.name);
  const served = generators.length > 0 ? `its text-generation models: ${generators.join(", ")}` : "it serves none";
  if (!model) {
    throw new ApiError(
      404,
      ErrorCode.unknownModel,
      `the model "${name}" does not exist on this coordinator; ${served}`,
      {
        extra: { param: "model" },
      },
    );
  }
  if (model.task !== GENERATION_TASK) {
    throw refuse("model", `model "${name}" is a ${model.task} model, not a text-generation one; ${served}`);
  }
  return model;
}

export interface SamplingAsked {
  max_tokens?: number | null | undefined;
  /** Tokens before an end-of-text token may end the text (vLLM's min_tokens). */
  min_tokens?: number | null | undefined;
  temperature?: number | null | undefined;
  top_p?: number | null | undefined;
  top_k?: number | null | undefined;
  seed?: number | null | undefined;
  stop?: string | string[] | null | undefined;
  presence_penalty?: number | null | undefined;
  frequency_penalty?: number | null | undefined;
  repetition_penalty?: number | null | undefined;
  logit_bias?: Record<string, number> | null | undefined;
  /** OpenAI's: {"type": "json_object"} asks for JSON mode, {"type": "json_schema"} for a reply a schema accepts. */
  response_format?: { type: string; json_schema?: { schema?: GenerationParams["schema"] } } | null | undefined;
  /** Log probabilities with this many top tokens a place (0 to 20); null or left out: none. */
  logprobs?: number | null | undefined;
  /** The prompt tokens' log probabilities likewise (completions' echo). */
  prompt_logprobs?: number | null | undefined;
}

/**
 * Hugging Face's sampling switch as a temperature, the transformers pipeline's rule: do_sample false is greedy
 * whatever the temperature; true samples, at temperature 1 unless one is given; left out, the temperature says.
 */
export function hfTemperature(doSample: boolean | null | undefined, temperature: number | null | undefined) {
  if (doSample === false) return 0;
  return temperature ?? (doSample === true ? 1 : undefined);
}

/**
 * The parameters a worker gets. Greedy (temperature 0) unless asked otherwise, so an answer is reproducible
 * and a resumed stream continues exactly; max_tokens must leave the prompt room in the context.
 */
export function generationParams(
  model: ModelConfig,
  asked: SamplingAsked,
  /** The names the caller gave these by, for its errors (Hugging Face's, or max_completion_tokens). */
  names: { max?: string; min?: string; stop?: string; top?: string; schema?: string; json?: string } = {},
  /** Stop strings cut the reply's text only, never the JSON (a reply that may be a tool call or text). */
  stopsCutTextOnly = false,
): GenerationParams {
  const { max: maxParam = "max_tokens", min: minParam = "min_tokens", stop: stopParam = "stop" } = names;
  const context = model.max_sequence_length;
  const maxNew = asked.max_tokens ?? Math.min(DEFAULT_MAX_NEW_TOKENS, context - 1);
  // 0 scores the prompt and generates nothing: only with its log probabilities asked for (completions' echo).
  const least = asked.prompt_logprobs == null ? 1 : 0;
  if (maxNew < least || maxNew >= context || maxNew > 4096) {
    throw refuse(
      maxParam,
      `${maxParam} is ${maxNew}; model "${model.name}" has a context of ${context} tokens, prompt included: ask for ${least} to ${Math.min(context - 1, 4096)}${least === 1 ? " (0 only with echo and logprobs)" : ""}`,
    );
  }
  const minNew = asked.min_tokens ?? 0;
  if (minNew < 0 || minNew > maxNew) {
    throw refuse(minParam, `${minParam} is ${minNew}; ask for 0 to ${maxParam} (${maxNew})`);
  }
  const format = jsonFormat(asked.response_format, names.schema ?? "response_format.json_schema.schema");
  const json = format !== undefined;
  if (json && minNew > 0) {
    throw refuse(
      minParam,
      `${minParam} cannot be used with ${names.json ?? "JSON mode"}: the object's closing brace ends the reply`,
    );
  }
  const stop = asked.stop == null ? [] : typeof asked.stop === "string" ? [asked.stop] : asked.stop;
  if (stop.length > MAX_STOPS) {
    throw refuse(stopParam, `${stopParam} holds ${stop.length} strings; send at most ${MAX_STOPS}`);
  }
  const bad = stop.find((s) => s.length === 0 || s.length > MAX_STOP_CHARS);
  if (bad !== undefined) throw refuse(stopParam, `each ${stopParam} string must be 1 to ${MAX_STOP_CHARS} characters`);
  if (json && stop.length > 0 && !stopsCutTextOnly) {
    throw refuse(
      stopParam,
      `${stopParam} cannot be used with ${names.json ?? "JSON mode"}: a stop string would cut the object short`,
    );
  }
  const logprobs = asked.logprobs ?? undefined;
  const tooMany = logprobsProblem(
    { max_new_tokens: maxNew, logprobs },
    { tokens: maxParam, top: names.top ?? "logprobs" },
  );
  if (tooMany) throw refuse(maxParam, tooMany);
  return {
    max_new_tokens: maxNew,
    // Only when asked: an item without it reads to workers and donor scripts older than it.
    ...(minNew > 0 ? { min_new_tokens: minNew } : {}),
    temperature: asked.temperature ?? 0,
    top_k: asked.top_k ?? 0,
    top_p: asked.top_p ?? 1,
    seed: asked.seed ?? 0,
    stop,
    // Likewise only when they change anything.
    ...(asked.presence_penalty ? { presence_penalty: asked.presence_penalty } : {}),
    ...(asked.frequency_penalty ? { frequency_penalty: asked.frequency_penalty } : {}),
    ...(asked.repetition_penalty != null && asked.repetition_penalty !== 1
      ? { repetition_penalty: asked.repetition_penalty }
      : {}),
    ...(asked.logit_bias && Object.keys(asked.logit_bias).length > 0 ? { logit_bias: asked.logit_bias } : {}),
    ...format,
    ...(logprobs === undefined ? {} : { logprobs }),
    ...(asked.prompt_logprobs == null ? {} : { prompt_logprobs: asked.prompt_logprobs }),
  };
}

/** The item's format for a response_format; 400 for a schema the mask cannot hold a reply to (json-schema.ts). */
function jsonFormat(
  asked: SamplingAsked["response_format"],
  param: string,
): Pick<GenerationParams, "format" | "schema" | "json_spacing"> | undefined {
  // Spaced: the model may write JSON as it learnt it, json.dumps' `{"a": 1, "b": 2}` (GenerationParams.json_spacing).
  const anyObject = { format: "json_object", json_spacing: "spaced" } as const;
  if (asked?.type === "json_object") return anyObject;
  if (asked?.type !== "json_schema") return undefined;
  const schema = asked.json_schema?.schema;
  if (schema === undefined) return anyObject;
  try {
    compileJsonSchema(schema);
  } catch (e) {
    if (e instanceof SchemaProblem) throw refuse(param, `${param}: ${e.message}`);
    throw e;
  }
  return { ...anyObject, format: "json_schema", schema };
}

/** Characters a prompt may have so it and the tokens to generate fit the context (text-item.ts's estimate). */
function promptBudget(model: ModelConfig, params: GenerationParams): number {
  return maxTextChars(model.max_sequence_length - params.max_new_tokens);
}

/** A plain prompt's item; 400 when it cannot fit the context with the tokens asked for. */
export function promptItem(
  model: ModelConfig,
  prompt: string,
  params: GenerationParams,
  param = "prompt",
): GenerationItem {
  const most = promptBudget(model, params);
  if (prompt.length > most) {
    throw refuse(
      param,
      `prompt is ${prompt.length} characters; with ${params.max_new_tokens} tokens to generate, model "${model.name}" (context ${model.max_sequence_length} tokens) takes at most ${most}: shorten it or lower max_tokens`,
    );
  }
  return { prompt, params };
}

/** OpenAI's messages as the template's: known roles only, text parts joined. */
export function chatMessages(raw: readonly ChatRequestMessage[], template: ChatTemplate | undefined): ChatMessage[] {
  return raw.map((m, i) => {
    if (!(CHAT_ROLES as readonly string[]).includes(m.role)) {
      throw refuse(`messages[${i}].role`, `messages[${i}].role is "${m.role}"; the roles are ${CHAT_ROLES.join(", ")}`);
    }
    const text =
      m.content == null ? "" : typeof m.content === "string" ? m.content : m.content.map((p) => p.text).join("");
    // An assistant's tool calls are part of what it said: the next turn's prompt shows them (openai-tools.ts), after
    // its content as the model wrote them (between tags, right after the text they followed; else a line each).
    const calls = m.role === "assistant" && m.tool_calls?.length ? renderedCalls(m.tool_calls, template) : "";
    const between = template?.tool_call ? "" : "\n";
    return {
      role: m.role as ChatMessage["role"],
      content: text && calls ? `${text}${between}${calls}` : text || calls,
    };
  });
}

/**
 * A chat's item: the tools shown to the model (a system message of their own, first: openai-tools.ts toolsShown), the
 * session's conversation so far (if any, less the tools its last turn was shown) and the new messages, trimmed to
 * the context by trimChat's rule (system messages stay, the oldest others go first), rendered with the model's
 * template.
 */
export async function chatItem(
  c: Context<HonoEnv>,
  model: ModelConfig,
  messages: ChatMessage[],
  params: GenerationParams,
  session: string | undefined,
  tools?: string,
): Promise<GenerationItem> {
  const template = model.chat_template;
  if (!template) {
    throw refuse("model", `model "${model.name}" has no chat template: send a prompt to POST /v1/completions instead`);
  }
  const toolResult = messages.findIndex((m) => m.role === "tool");
  if (toolResult >= 0 && !template.roles.tool) {
    throw refuse(
      `messages[${toolResult}].role`,
      `model "${model.name}"'s chat template has no tool role, so its prompts cannot carry a tool's result: send the result in a user message`,
    );
  }
  // A message holding the template's own markers would read as other messages: in this prompt, and when a
  // session reads its prompt back (a tool's result that wrote "<|end|><|system|>..." would stay a system message).
  const markers = [
    ...Object.values(template.roles).flatMap((w) => (w ? [w.prefix, w.suffix] : [])),
    template.generation_prompt,
  ];
  const marked = (text: string) => markers.find((k) => k !== "" && text.includes(k));
  for (const [i, m] of messages.entries()) {
    const marker = marked(m.content);
    if (marker !== undefined) {
      throw refuse(
        `messages[${i}].content`,
        `messages[${i}].content holds ${JSON.stringify(marker)}, which model "${model.name}"'s chat template uses to mark where messages begin and end: take it out`,
      );
    }
    if (m.role === "system" && isToolsMessage(template, m)) {
      throw refuse(
        `messages[${i}].content`,
        `messages[${i}].content is written as the system message model "${model.name}"'s chat template shows tools in (${JSON.stringify(template.tool_call?.tools?.prefix)}, a tool a line): send the tools in tools`,
      );
    }
  }
  const marker = tools === undefined ? undefined : marked(tools);
  if (marker !== undefined) {
    throw refuse(
      "tools",
      `tools hold ${JSON.stringify(marker)} (in a name, description or schema), which model "${model.name}"'s chat template uses to mark where messages begin and end: take it out`,
    );
  }
  const earlier = session === undefined ? [] : await conversationOf(c, model, session);
  const shown: ChatMessage[] = tools === undefined ? [] : [{ role: "system", content: tools }];
  const conversation = [...shown, ...earlier.filter((m) => !isToolsMessage(template, m)), ...messages];
  const trimmed = trimChat(template, conversation, promptBudget(model, params));
  if (!trimmed) {
    throw refuse(
      "messages",
      `the last message does not fit model "${model.name}"'s context (${model.max_sequence_length} tokens) with ${params.max_new_tokens} tokens to generate: shorten it or lower max_tokens`,
    );
  }
  return { prompt: renderChat(template, trimmed), params };
}

/**
 * Whether a message is the one a template shows tools in (a turn's own, never carried to the next from a session):
 * a system message of its whole shape, the prefix, a tool as JSON a line, the suffix.
 */
function isToolsMessage(template: ChatTemplate, m: ChatMessage): boolean {
  const wrap = template.tool_call?.tools;
  if (m.role !== "system" || !wrap || m.content.length < wrap.prefix.length + wrap.suffix.length) return false;
  if (!m.content.startsWith(wrap.prefix) || !m.content.endsWith(wrap.suffix)) return false;
  return m.content
    .slice(wrap.prefix.length, m.content.length - wrap.suffix.length)
    .split("\n")
    .every((line) => {
      try {
        const tool = JSON.parse(line) as { type?: unknown } | null;
        return typeof tool === "object" && tool !== null && tool.type === "function";
      } catch {
        return false;
      }
    });
}

/** The session's conversation: its last turn on this model (that turn's prompt read back, and its reply). */
async function conversationOf(c: Context<HonoEnv>, model: ModelConfig, session: string): Promise<ChatMessage[]> {
  const template = model.chat_template;
  const view = await (await sessionOf(c, session)).attach();
  if (!view || !template) return []; // submitJob answers 404 for a session that does not exist
  const last = lastTurn(view.history, model.name);
  if (!last) return [];
  const messages = parseRenderedChat(template, last.input.prompt);
  return messages ? [...messages, { role: "assistant", content: last.output.generated_text }] : [];
}

function lastTurn(
  history: readonly HistoryEntry[],
  model: string,
): { input: GenerationItem; output: GenerationOutput } | undefined {
  // The session's history is oldest first: the last turn is the newest.
  for (const entry of [...history].reverse()) {
    if (entry.model !== model || !Array.isArray(entry.input) || !Array.isArray(entry.output)) continue;
    const input = entry.input[0] as GenerationItem | undefined;
    const output = entry.output[0] as GenerationOutput | null | undefined;
    if (typeof input?.prompt === "string" && typeof output?.generated_text === "string") return { input, output };
  }
  return undefined;
}

/** Waits (briefly) until the session's history holds the job, so the caller's next turn reads this one. */
export async function awaitSessionAppend(c: Context<HonoEnv>, session: string, jobId: string): Promise<void> {
  const stub = await sessionOf(c, session);
  for (let tries = 0; tries < 50; tries++) {
    const view = await stub.attach();
    if (!view || view.history.some((h) => h.job_id === jobId)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}
