// OpenAI's chat completions and (legacy) completions as EdgeSwarm serves them at POST /v1/chat/completions and
// POST /v1/completions: request schemas, answers and stream chunks. edge/routes/openai-chat.ts validates with
// these; the SDK and tests use the types. Reference: platform.openai.com/docs/api-reference/chat.
import { z } from "zod";
import { LogitBias, MAX_TOP_LOGPROBS, Penalty, RepetitionPenalty } from "./generation.ts";
import { HfGrammar } from "./huggingface.ts";
import { ParsedJson } from "./validate.ts";

/** The most tools one chat may list (and tool calls one message may carry). */
export const MAX_TOOLS = 64;

/** The most choices (`n`) one call may ask for. */
export const MAX_CHOICES = 8;

/** The most prompts one completions call may send (each its own item; the model's max_inputs_per_request bounds them too). */
export const MAX_PROMPTS = 64;

const PROMPT_TEXT = "each prompt must be a non-empty string (arrays of token ids are not supported)";

/** Text parts only: a model here reads text. */
const ContentPart = z.strictObject({ type: z.literal("text"), text: z.string() });

/** A tool call as an assistant message carries it (one the caller got back and ran). */
export const ToolCall = z.looseObject({
  id: z.string().max(128),
  type: z.literal("function"),
  function: z.looseObject({ name: z.string().max(64), arguments: z.string() }),
});
export type ToolCall = z.infer<typeof ToolCall>;

export const ChatRequestMessage = z
  .looseObject({
    role: z.string(),
    /** Null or left out only on an assistant message that made tool calls, as OpenAI's. */
    content: z
      .union([z.string(), z.array(ContentPart).min(1)], {
        error: () => "must be a string or an array of text parts",
      })
      .nullish(),
    name: z.string().optional(),
    tool_calls: z.array(ToolCall).max(MAX_TOOLS).nullish(),
    /** A tool message's: the call it answers. */
    tool_call_id: z.string().max(128).optional(),
  })
  .refine((m) => m.content != null || (m.role === "assistant" && (m.tool_calls?.length ?? 0) > 0), {
    path: ["content"],
    message: "must be a string or an array of text parts (null only on an assistant message with tool_calls)",
  })
  .refine((m) => m.role !== "tool" || m.tool_call_id !== undefined, {
    path: ["tool_call_id"],
    message: "a tool message names the call it answers (the id of an assistant message's tool call)",
  });
export type ChatRequestMessage = z.infer<typeof ChatRequestMessage>;

/** What both endpoints share: sampling, stopping and streaming, in OpenAI's names. */
const Common = {
  model: z.string().min(1, "must name a model"),
  max_tokens: z.int().nullish(),
  /** vLLM's extension: tokens to generate before an end-of-text token may end the reply (stop strings still do). */
  min_tokens: z.int().nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  /** EdgeSwarm's extension (as vLLM's): sample only among the k most likely tokens. */
  top_k: z.int().min(0).nullish(),
  seed: z
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .nullish(),
  stop: z.union([z.string(), z.array(z.string())]).nullish(),
  /** Over the tokens generated so far: lowered once a token appears (presence) and for each time (frequency). */
  presence_penalty: Penalty.nullish(),
  frequency_penalty: Penalty.nullish(),
  /** vLLM's extension (transformers' rule, over the prompt and the reply): above 1 discourages repeats. */
  repetition_penalty: RepetitionPenalty.nullish(),
  /** Token ids to a bias of -100 to 100 on their logits. */
  logit_bias: LogitBias.nullish(),
  /** Choices to generate for the one prompt, each its own item (the i-th sampled with seed + i). */
  n: z
    .int()
    .min(1)
    .max(MAX_CHOICES, { error: () => `n must be 1 to ${MAX_CHOICES}` })
    .nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullish(),
  user: z.string().optional(),
  /** EdgeSwarm's extension: the session the conversation lives in (send only the new messages). */
  session: z.string().optional(),
  /** EdgeSwarm's: the most a call may wait, ms. */
  timeout_ms: z.int().positive().optional(),
  /**
   * The reply's form: text (the default), one JSON object (JSON mode), or one JSON object a JSON Schema accepts
   * (structured outputs; the schema's keywords served are json-schema.ts's, `strict` or not). Completions take it
   * too, as vLLM's do.
   */
  response_format: z
    .discriminatedUnion(
      "type",
      [
        z.looseObject({ type: z.literal("text") }),
        z.looseObject({ type: z.literal("json_object") }),
        z.looseObject({
          type: z.literal("json_schema"),
          json_schema: z.looseObject({
            name: z.string().max(64).optional(),
            description: z.string().optional(),
            /** Left out: any one object, as json_object. */
            schema: z.record(z.string(), ParsedJson).optional(),
            strict: z.boolean().nullish(),
          }),
        }),
      ],
      { error: () => 'type must be "text", "json_object" or "json_schema" (with json_schema: {name, schema})' },
    )
    .nullish(),
};

const TOP_RANGE = `must be 0 to ${MAX_TOP_LOGPROBS}`;

/** A function the model may be made to call: its arguments are written under `parameters`, a JSON Schema. */
export const Tool = z.strictObject({
  type: z.literal("function", { error: () => 'type must be "function"' }),
  function: z.strictObject({
    name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "must be 1 to 64 letters, digits, _ or -"),
    description: z.string().optional(),
    /** Left out: a function of no arguments (`{}`). */
    parameters: z.record(z.string(), ParsedJson).optional(),
    strict: z.boolean().nullish(),
  }),
});
export type Tool = z.infer<typeof Tool>;

/** Which tool the reply calls: none, maybe one ("auto", the default with tools), one the model picks ("required"), or the one named. */
export const ToolChoice = z.union(
  [
    z.enum(["none", "auto", "required"]),
    z.strictObject({ type: z.literal("function"), function: z.strictObject({ name: z.string() }) }),
  ],
  { error: () => 'must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}' },
);
export type ToolChoice = z.infer<typeof ToolChoice>;

/**
 * Tool calling (edge/openai-tools.ts): with tool_choice "required" or a named function the reply is a call, its
 * arguments written under the function's schema as structured outputs are. "auto" (the default with tools) lets the
 * model decide, where its chat template says how it writes a call (tool_call); the edge refuses it elsewhere.
 */
const Tools = {
  tools: z.array(Tool).max(MAX_TOOLS, `must list at most ${MAX_TOOLS} tools`).nullish(),
  tool_choice: ToolChoice.nullish(),
  /** Left out or true: a reply may make several calls, where the model's template tags them; else one. */
  parallel_tool_calls: z.boolean().nullish(),
};

export const ChatCompletionRequest = z
  .strictObject({
    ...Common,
    ...Tools,
    messages: z.array(ChatRequestMessage).min(1, "must hold at least one message"),
    max_completion_tokens: z.int().nullish(),
    /** Each reply token's log probability (the model's own distribution), and top_logprobs most likely tokens. */
    logprobs: z.boolean().nullish(),
    top_logprobs: z.int().min(0, TOP_RANGE).max(MAX_TOP_LOGPROBS, TOP_RANGE).nullish(),
  })
  // As vLLM: 0 (a client's default) asks for nothing.
  .refine((r) => !r.top_logprobs || r.logprobs === true, {
    path: ["top_logprobs"],
    message: "top_logprobs needs logprobs: true",
  })
  .refine(
    (r) => (r.tools?.length ?? 0) > 0 || r.tool_choice == null || r.tool_choice === "none" || r.tool_choice === "auto",
    {
      path: ["tool_choice"],
      message: "tool_choice asks for a call, and tools lists none: send the tools it may call",
    },
  )
  .refine((r) => new Set((r.tools ?? []).map((t) => t.function.name)).size === (r.tools ?? []).length, {
    path: ["tools"],
    message: "each tool needs a name of its own",
  })
  .refine(
    (r) =>
      typeof r.tool_choice !== "object" ||
      r.tool_choice === null ||
      (r.tools ?? []).some((t) => t.function.name === (r.tool_choice as { function: { name: string } }).function.name),
    { path: ["tool_choice", "function", "name"], message: "must name one of tools" },
  );
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

export const CompletionRequest = z.strictObject({
  ...Common,
  /** A prompt, or several (OpenAI's batch form): each with its `n` choices, choice i·n + j the j-th of prompt i. */
  prompt: z.union(
    [
      z.string().min(1, PROMPT_TEXT),
      z
        .array(z.string().min(1, PROMPT_TEXT), { error: () => PROMPT_TEXT })
        .min(1, "must hold at least one prompt")
        .max(MAX_PROMPTS, `must hold at most ${MAX_PROMPTS} prompts`),
    ],
    { error: () => `must be a prompt or an array of 1 to ${MAX_PROMPTS} prompts; ${PROMPT_TEXT}` },
  ),
  /** Each token's log probability and this many most likely tokens (OpenAI allows 5; vLLM, as here, 20). */
  logprobs: z.int().min(0, TOP_RANGE).max(MAX_TOP_LOGPROBS, TOP_RANGE).nullish(),
  /** The prompt before each choice's text, and with `logprobs` its tokens' log probabilities before the reply's. */
  echo: z.boolean().nullish(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

/**
 * A completion from @huggingface/inference's textGeneration, posted to <endpoint>/v1/completions: it sends
 * max_new_tokens as max_tokens and every other text-generation parameter under its own name. These are read
 * as POST /models/{name} reads them (HfTextGenerationParameters): do_sample, temperature up to 10,
 * min_new_tokens, stop_sequences, and return_full_text, which puts the prompt before the reply.
 */
export const HfCompletionRequest = z.strictObject({
  ...CompletionRequest.shape,
  temperature: z.number().min(0).max(10).nullish(),
  do_sample: z.boolean().nullish(),
  return_full_text: z.boolean().nullish(),
  min_new_tokens: z.int().nullish(),
  stop_sequences: z.array(z.string()).nullish(),
  grammar: HfGrammar.nullish(),
});
export type HfCompletionRequest = z.infer<typeof HfCompletionRequest>;

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export type OpenAiFinishReason = "stop" | "length" | "tool_calls";

/** A token as chat log probabilities give it: its text, its UTF-8 bytes, its log probability. */
export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

/** A chat choice's (or chunk's) log probabilities: one entry a token, each with the most likely ones there. */
export interface ChatLogprobs {
  content: (ChatTokenLogprob & { top_logprobs: ChatTokenLogprob[] })[];
}

/**
 * A completion's log probabilities (the legacy shape): per token its text, log probability, the most likely tokens
 * there as text → log probability, and where it starts in the choice's text.
 */
export interface CompletionLogprobs {
  tokens: string[];
  /** null for an echoed prompt's first token, which nothing comes before. */
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

export interface ChatCompletion {
  id: string;
  object: "chat.completion";
  created: number;
  model: string;
  choices: {
    index: number;
    /** content is null when the reply is a tool call. */
    message: { role: "assistant"; content: string | null; tool_calls?: ToolCall[] };
    finish_reason: OpenAiFinishReason;
    logprobs: ChatLogprobs | null;
  }[];
  usage: Usage;
  /** EdgeSwarm's figures for the call (shared/protocol/caller.ts GenerationStats). */
  edgeswarm?: { ttft_ms: number | null; tokens_per_s: number | null };
}

/** A streamed piece of a tool call: the first names it (id, type, name), the others add to its arguments. */
export interface ToolCallDelta {
  index: number;
  id?: string;
  type?: "function";
  function: { name?: string; arguments: string };
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: {
    index: number;
    delta: { role?: "assistant"; content?: string | null; tool_calls?: ToolCallDelta[] };
    finish_reason: OpenAiFinishReason | null;
    logprobs: ChatLogprobs | null;
  }[];
  usage?: Usage | null;
}

export interface TextCompletion {
  id: string;
  object: "text_completion";
  created: number;
  model: string;
  choices: {
    index: number;
    text: string;
    finish_reason: OpenAiFinishReason | null;
    logprobs: CompletionLogprobs | null;
  }[];
  usage?: Usage | null;
}
