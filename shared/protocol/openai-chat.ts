// OpenAI's chat completions and (legacy) completions as EdgeSwarm serves them at POST /v1/chat/completions and
// POST /v1/completions: request schemas, answers and stream chunks. edge/routes/openai-chat.ts validates with
// these; the SDK and tests use the types. Reference: platform.openai.com/docs/api-reference/chat.
import { z } from "zod";
import { LogitBias, MAX_TOP_LOGPROBS, Penalty, RepetitionPenalty } from "./generation.ts";
import { HfGrammar } from "./huggingface.ts";
import { ParsedJson } from "./validate.ts";

/** The most choices (`n`) one call may ask for. */
export const MAX_CHOICES = 8;

/** The most prompts one completions call may send (each its own item; the model's max_inputs_per_request bounds them too). */
export const MAX_PROMPTS = 64;

const PROMPT_TEXT = "each prompt must be a non-empty string (arrays of token ids are not supported)";

/** Text parts only: a model here reads text. */
const ContentPart = z.strictObject({ type: z.literal("text"), text: z.string() });

export const ChatRequestMessage = z.looseObject({
  role: z.string(),
  content: z.union([z.string(), z.array(ContentPart).min(1)], {
    error: () => "must be a string or an array of text parts",
  }),
  name: z.string().optional(),
});

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

/**
 * Chat fields for what this server does not do (tool calls), taken only at the values that ask for
 * nothing, since some clients send every field with its default; any other value is refused with what to send
 * instead, where OpenAI's strict check would only call the field unknown.
 */
const NotServed = {
  tools: z.array(z.unknown()).nullish(),
  // "auto" with no tools offers nothing either.
  tool_choice: z
    .enum(["none", "auto"], {
      error: () => 'these models do not call tools: leave tools and tool_choice out, or send tool_choice "none"',
    })
    .nullish(),
  parallel_tool_calls: z.boolean().nullish(),
};

export const ChatCompletionRequest = z
  .strictObject({
    ...Common,
    ...NotServed,
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
  // vLLM's rule without a tool parser: tools listed are not offered to the model unless tool_choice asks for them.
  .refine((r) => (r.tools?.length ?? 0) === 0 || r.tool_choice === "none", {
    path: ["tools"],
    message: 'these models do not call tools: leave tools out, or send tool_choice "none" (the tools are then ignored)',
  });
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

export type OpenAiFinishReason = "stop" | "length";

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
    message: { role: "assistant"; content: string };
    finish_reason: OpenAiFinishReason;
    logprobs: ChatLogprobs | null;
  }[];
  usage: Usage;
  /** EdgeSwarm's figures for the call (shared/protocol/caller.ts GenerationStats). */
  edgeswarm?: { ttft_ms: number | null; tokens_per_s: number | null };
}

export interface ChatCompletionChunk {
  id: string;
  object: "chat.completion.chunk";
  created: number;
  model: string;
  choices: {
    index: number;
    delta: { role?: "assistant"; content?: string };
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
