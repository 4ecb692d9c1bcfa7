// One text-generation item (shared/protocol/generation.ts's GenerationItem) as the task reads it, or what to fix.
// Pure: no tokenizer, so the edge's submit path can refuse the same items before queueing. The token count
// of the prompt is checked by the task itself (shared/tasks/text-generation.ts), which has the tokenizer.
import { GenerationItem, type GenerationParams, MAX_LOGPROB_ENTRIES } from "../protocol/generation.ts";
import type { Parsed } from "./task-types.ts";
import { maxTextChars } from "./text-item.ts";

export function parseGenerationItem(input: unknown, maxSequenceLength: number): Parsed<GenerationItem> {
  const item = typeof input === "string" ? { prompt: input } : input;
  const parsed = GenerationItem.safeParse(item);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? issue.path.join(".") : "input";
    return {
      error: `${where}: ${issue?.message ?? "not a text-generation item"} (expected {prompt, params?, resume?})`,
    };
  }
  const { prompt, params, resume } = parsed.data;
  const most = maxTextChars(maxSequenceLength);
  if (prompt.length > most) {
    return {
      error: `prompt is ${prompt.length} characters; the most is ${most} (the model's context is ${maxSequenceLength} tokens): shorten it`,
    };
  }
  if (params.max_new_tokens >= maxSequenceLength) {
    return {
      error: `params.max_new_tokens is ${params.max_new_tokens}; the model's context is ${maxSequenceLength} tokens, prompt included: ask for fewer than ${maxSequenceLength}`,
    };
  }
  if (resume && resume.tokens.length > params.max_new_tokens) {
    return {
      error: `resume.tokens holds ${resume.tokens.length} tokens, more than params.max_new_tokens (${params.max_new_tokens})`,
    };
  }
  const tooMany = logprobsProblem(params);
  if (tooMany) return { error: `params.logprobs: ${tooMany}` };
  if (params.logprobs !== undefined && resume && (resume.logprobs?.length ?? 0) !== resume.tokens.length) {
    return {
      error: `resume.logprobs holds ${resume.logprobs?.length ?? 0} entries for ${resume.tokens.length} resumed tokens; params.logprobs needs one a token`,
    };
  }
  return { value: parsed.data };
}

/**
 * Whether an answer with the log probabilities asked for fits (MAX_LOGPROB_ENTRIES): null, else what to lower.
 * `names` are the caller's names for the two parameters.
 */
export function logprobsProblem(
  params: Pick<GenerationParams, "logprobs" | "max_new_tokens">,
  names = { tokens: "max_new_tokens", top: "logprobs" },
): string | null {
  if (params.logprobs === undefined) return null;
  const entries = params.max_new_tokens * (params.logprobs + 1);
  if (entries <= MAX_LOGPROB_ENTRIES) return null;
  const most = Math.floor(MAX_LOGPROB_ENTRIES / (params.logprobs + 1));
  return `${params.max_new_tokens} tokens with ${params.logprobs} top tokens each are ${entries} log probabilities; an answer holds at most ${MAX_LOGPROB_ENTRIES}: lower ${names.tokens} to ${most} or ${names.top}`;
}

/**
 * As logprobsProblem, with the prompt's entries (params.prompt_logprobs) counted too, once its token count is known
 * (the worker's tokenizer): null, else what to lower.
 */
export function promptLogprobsFit(promptTokens: number, params: GenerationParams): string | null {
  if (params.prompt_logprobs === undefined) return null;
  const generated = params.logprobs === undefined ? 0 : params.max_new_tokens * (params.logprobs + 1);
  const entries = generated + promptTokens * (params.prompt_logprobs + 1);
  if (entries <= MAX_LOGPROB_ENTRIES) return null;
  return `a prompt of ${promptTokens} tokens with ${params.prompt_logprobs} top tokens each, and the reply's, are ${entries} log probabilities; an answer holds at most ${MAX_LOGPROB_ENTRIES}: shorten the prompt or lower prompt_logprobs`;
}

/**
 * What the prompt's token count allows: the prompt and every token to generate must fit the context. Null when
 * they fit, else the message that says what to lower.
 */
export function contextProblem(promptTokens: number, maxNewTokens: number, context: number): string | null {
  if (promptTokens + maxNewTokens <= context) return null;
  if (promptTokens >= context) {
    return `prompt is ${promptTokens} tokens; the model's context is ${context} tokens, generated ones included: shorten the prompt`;
  }
  return `prompt is ${promptTokens} tokens and params.max_new_tokens ${maxNewTokens}: together over the model's context of ${context} tokens; lower max_new_tokens to at most ${context - promptTokens} or shorten the prompt`;
}

/**
 * What only the model knows to refuse in an item's parameters: JSON mode on a model with no end-of-text token to
 * end the object, or a logit_bias naming a token past its vocabulary (when config.json gives its size). What to
 * fix, else null.
 */
export function modelProblem(
  params: GenerationParams,
  model: { eos: readonly number[]; vocab?: number | undefined },
): string | null {
  if (params.format !== undefined && model.eos.length === 0) {
    return "this model has no end-of-text token (eos_token_id in config.json): JSON mode needs one to end the object";
  }
  const bias = params.logit_bias;
  const vocab = model.vocab;
  if (bias === undefined || vocab === undefined) return null;
  const past = Object.keys(bias).find((key) => Number(key) >= vocab);
  return past === undefined
    ? null
    : `logit_bias names token ${past}; the model's vocabulary has ${vocab} tokens (ids 0 to ${vocab - 1})`;
}
