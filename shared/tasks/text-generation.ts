// text-generation: a batch of prompts decoded on a GPT-style decoder with a KV cache (the Optimum layout:
// input_ids, attention_mask, position_ids, past_key_values.{i}.key|value -> logits, present.*): one prefill of
// its prompts, left-padded, then one step per token, each sequence stopping on its own; a run that comes while
// another decodes joins its batch (text-generation-engine.ts), and opts.signal takes a run's sequences out.
// Tokens go to opts.onTokens as they come (the worker loop sends them as TokensFrames). An item with `verify` is a donor's
// claim to check, not to generate: text-generation-check.ts answers its verdict. Run by every runner via loadModel.

import { ErrorCode } from "../protocol/errors.ts";
import type { GenerationOutput, PromptLogprob } from "../protocol/generation.ts";
import type { ItemResult } from "../protocol/worker.ts";
import type { InferenceSession } from "../runner/model-runner.ts";
import { invalidInput, merge, partition, type Task, type TaskContext } from "./task-types.ts";
import { type ClaimToCheck, checkClaims } from "./text-generation-check.ts";
import { type DecoderShape, decoderShape, encode, prefill } from "./text-generation-decoder.ts";
import { DecodeEngine } from "./text-generation-engine.ts";
import { unfinishedReply } from "./text-generation-format.ts";
import { contextProblem, modelProblem, parseGenerationItem, promptLogprobsFit } from "./text-generation-item.ts";
import { promptLogprobs } from "./text-generation-logprobs.ts";
import { type Decode, type Sequence, startSequence, takeToken } from "./text-generation-sequence.ts";

export { advanceText } from "./text-generation-sequence.ts";

/** Sequences decoded at once when the model's entry gives no max_batch_size (a task made by hand). */
const DEFAULT_MAX_ROWS = 16;

const CANCELLED: ItemResult = {
  error: { code: ErrorCode.cancelled, message: "the run was cancelled while generating", retryable: false },
};

export function createTextGeneration(ctx: TaskContext): Task {
  const tokenizer = ctx.tokenizer;
  const decode = tokenizer?.decode;
  if (!tokenizer || !decode)
    throw new Error("text-generation needs a tokenizer: list tokenizer and tokenizer_config in files");
  const shape = decoderShape(ctx.config ?? {});
  const wanted = ["input_ids", "attention_mask", "position_ids"];
  for (let i = 0; i < shape.layers; i++) wanted.push(`past_key_values.${i}.key`, `past_key_values.${i}.value`);
  if (wanted.some((n) => !ctx.session.inputNames.includes(n)) || ctx.session.inputNames.length !== wanted.length) {
    throw new Error(
      `text-generation runs a decoder with a KV cache: inputs ${wanted.join(", ")} (n_layer ${shape.layers} in config.json); the model has ${ctx.session.inputNames.join(", ")}`,
    );
  }
  const context = ctx.maxSequenceLength;
  // One decode loop for the model: the sequences of concurrent runs decode together (continuous batching).
  const engine = new DecodeEngine(ctx.session, shape, ctx.maxBatchSize ?? DEFAULT_MAX_ROWS);
  return {
    async run(inputs, opts) {
      const { results, good } = partition(inputs, (input) => parseGenerationItem(input, context));
      const sequences: Sequence[] = [];
      const claims: (ClaimToCheck & { pos: number })[] = [];
      for (const { index, value } of good) {
        const prompt = encode(tokenizer, value.prompt);
        const problem =
          modelProblem(value.params, shape) ??
          contextProblem(prompt.length, value.params.max_new_tokens, context) ??
          promptLogprobsFit(prompt.length, value.params);
        if (problem) results[index] = invalidInput(problem);
        else if (value.verify) claims.push({ pos: index, item: value, claim: value.verify, prompt });
        else sequences.push(startSequence(index, value, prompt, decode));
      }
      const verdicts = await checkClaims(ctx.session, shape, decode, claims);
      // A run cancelled meanwhile skips the prompt's prefill (generate answers it cancelled).
      if (!opts?.signal?.aborted) await readPromptLogprobs(ctx.session, shape, decode, sequences);
      const outcome = await engine.generate(
        sequences,
        (seq, token, logprob) => {
          const delta = takeToken(seq, token, shape.eos, decode, logprob);
          if (delta !== null) {
            opts?.onTokens?.({
              pos: seq.pos,
              offset: seq.generated.length - 1,
              tokens: [token],
              text: delta,
              ...(logprob ? { logprobs: [logprob] } : {}),
            });
          }
          // Ended while others decode on: its caller need not wait for them.
          if (seq.finish) opts?.onResult?.(seq.pos, resultOf(seq));
        },
        opts?.signal,
      );
      const outputs = sequences.map((seq): ItemResult => (outcome === "cancelled" ? CANCELLED : resultOf(seq)));
      return merge(
        results,
        [...sequences.map((s) => s.pos), ...claims.map((c) => c.pos)],
        [...outputs, ...verdicts.map((output): ItemResult => ({ output }))],
      );
    },
  };
}

/**
 * The prompt entries of the sequences whose params.prompt_logprobs asks, from one prefill of their prompts of its
 * own (the decode loop's prefill keeps only each prompt's last place; a call that asks pays a second prefill).
 * The n choices of one prompt (the same tokens, the same top count) share one row.
 */
async function readPromptLogprobs(
  session: InferenceSession,
  shape: DecoderShape,
  decode: Decode,
  sequences: readonly Sequence[],
): Promise<void> {
  const asking = sequences.filter((s) => s.item.params.prompt_logprobs !== undefined);
  if (asking.length === 0) return;
  const keyOf = (s: Sequence) => `${s.item.params.prompt_logprobs}:${s.prompt.join(",")}`;
  const rows = new Map<string, Sequence>();
  for (const seq of asking) if (!rows.has(keyOf(seq))) rows.set(keyOf(seq), seq);
  const distinct = [...rows.values()];
  const { logits, at } = await prefill(
    session,
    shape,
    distinct.map((s) => [...s.prompt]),
  );
  const read = new Map<string, PromptLogprob[]>();
  for (const [r, seq] of distinct.entries()) {
    const n = seq.item.params.prompt_logprobs as number;
    read.set(
      keyOf(seq),
      promptLogprobs(logits, (k) => at(r, k - 1), seq.prompt, n, decode),
    );
  }
  for (const seq of asking) seq.promptLogprobs = read.get(keyOf(seq));
}

/** A sequence's result: its output, or why a JSON reply that ended at end-of-text cannot be one (unfinishedReply). */
function resultOf(seq: Sequence): ItemResult {
  const output = outputOf(seq);
  const stuck = output.finish_reason === "stop" ? unfinishedReply(seq.item.params, output.generated_text) : null;
  return stuck ? invalidInput(stuck) : { output };
}

/** A sequence's output as it stands (a sequence that never ended stopped at its length). */
function outputOf(seq: Sequence): GenerationOutput {
  return {
    generated_text: seq.text,
    tokens: seq.generated,
    finish_reason: seq.finish ?? "length",
    prompt_tokens: seq.promptTokens,
    ...(seq.logprobs ? { logprobs: seq.logprobs } : {}),
    ...(seq.endLogprob ? { end_logprob: seq.endLogprob } : {}),
    ...(seq.promptLogprobs ? { prompt_logprobs: seq.promptLogprobs } : {}),
  };
}
