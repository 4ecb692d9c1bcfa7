// text-generation: a batch of prompts decoded together on a GPT-style decoder with a KV cache (the Optimum
// layout: input_ids, attention_mask, position_ids, past_key_values.{i}.key|value -> logits, present.*): one
// prefill of every prompt, left-padded, then one step per token, each sequence stopping on its own. Tokens go to
// opts.onTokens as they come (the worker loop sends them as TokensFrames). An item with `verify` is a donor's
// claim to check, not to generate: text-generation-check.ts answers its verdict. Run by every runner via loadModel.
import type { GenerationOutput } from "../protocol/generation.ts";
import type { ItemResult } from "../protocol/worker.ts";
import type { InferenceSession, TypedTensor } from "../runner/model-runner.ts";
import { invalidInput, merge, partition, type Task, type TaskContext } from "./task-types.ts";
import { type ClaimToCheck, checkClaims } from "./text-generation-check.ts";
import {
  type DecoderShape,
  decoderShape,
  decoderStep,
  emptyCache,
  encode,
  leftPadded,
} from "./text-generation-decoder.ts";
import { contextProblem, parseGenerationItem } from "./text-generation-item.ts";
import { pickToken } from "./text-generation-sampler.ts";
import { type Sequence, startSequence, takeToken } from "./text-generation-sequence.ts";

export { advanceText } from "./text-generation-sequence.ts";

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
  return {
    async run(inputs, opts) {
      const { results, good } = partition(inputs, (input) => parseGenerationItem(input, context));
      const sequences: Sequence[] = [];
      const claims: (ClaimToCheck & { pos: number })[] = [];
      for (const { index, value } of good) {
        const prompt = encode(tokenizer, value.prompt);
        const problem = contextProblem(prompt.length, value.params.max_new_tokens, context);
        if (problem) results[index] = invalidInput(problem);
        else if (value.verify) claims.push({ pos: index, item: value, claim: value.verify, prompt });
        else sequences.push(startSequence(index, value, prompt, decode));
      }
      const verdicts = await checkClaims(ctx.session, shape, decode, claims);
      await generate(ctx.session, shape, sequences, (seq, token) => {
        const delta = takeToken(seq, token, shape.eos, decode);
        if (delta !== null) {
          opts?.onTokens?.({ pos: seq.pos, offset: seq.generated.length - 1, tokens: [token], text: delta });
        }
      });
      const outputs = sequences.map((seq): ItemResult => {
        const output: GenerationOutput = {
          generated_text: seq.text,
          tokens: seq.generated,
          finish_reason: seq.finish ?? "length",
          prompt_tokens: seq.promptTokens,
        };
        return { output };
      });
      return merge(
        results,
        [...sequences.map((s) => s.pos), ...claims.map((c) => c.pos)],
        [...outputs, ...verdicts.map((output): ItemResult => ({ output }))],
      );
    },
  };
}

/** Prefill then decode until every sequence has finished; `accept` is told each sequence's next token. */
async function generate(
  session: InferenceSession,
  shape: DecoderShape,
  sequences: Sequence[],
  accept: (seq: Sequence, token: number) => void,
): Promise<void> {
  const active = sequences.filter((s) => !s.finish);
  if (active.length === 0) return;
  let { ids, mask, positions } = leftPadded(
    active.map((s) => s.prefix),
    shape.pad,
  );
  let past = emptyCache(shape, active.length);
  // A sequence that finishes leaves the batch (its rows of the cache dropped), so the rest run on fewer rows.
  let rows = active;
  for (let step = 0; rows.length > 0; step++) {
    const { out, logits, vocab, columns } = await decoderStep(
      session,
      shape,
      { ids, mask, positions, rows: rows.length },
      past,
    );
    const kept: number[] = [];
    ids = [];
    positions = [];
    rows.forEach((seq, row) => {
      const from = (row * columns + columns - 1) * vocab;
      accept(seq, pickToken(logits.data as Float32Array, from, from + vocab, seq.item.params, seq.generated.length));
      if (seq.finish) return;
      kept.push(row);
      ids.push(seq.generated[seq.generated.length - 1] as number);
      positions.push(seq.prefix.length + step);
      mask[row]?.push(1);
    });
    past = kept.length === rows.length ? out : keepRows(out, kept, shape.layers);
    const before = rows;
    rows = kept.map((row) => before[row] as Sequence);
    mask = kept.map((row) => mask[row] as number[]);
  }
}

/** The cache of the rows kept, in order: each present tensor is [batch, heads, sequence, head_dim], row-major. */
function keepRows(out: Record<string, TypedTensor>, kept: number[], layers: number): Record<string, TypedTensor> {
  const past: Record<string, TypedTensor> = {};
  for (let layer = 0; layer < layers; layer++) {
    for (const kv of ["key", "value"]) {
      const name = `present.${layer}.${kv}`;
      const t = out[name] as TypedTensor;
      const size = t.data.length / (t.dims[0] as number);
      const data = new Float32Array(kept.length * size);
      for (const [i, row] of kept.entries())
        data.set((t.data as Float32Array).subarray(row * size, (row + 1) * size), i * size);
      past[name] = { type: t.type, dims: [kept.length, ...t.dims.slice(1)], data };
    }
  }
  return past;
}
