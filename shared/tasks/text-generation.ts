// text-generation: a batch of prompts decoded together on a GPT-style decoder with a KV cache (the Optimum
// layout: input_ids, attention_mask, position_ids, past_key_values.{i}.key|value -> logits, present.*): one
// prefill of every prompt, left-padded, then one step per token, each sequence stopping on its own. Tokens go to
// opts.onTokens as they come (the worker loop sends them as TokensFrames). Run by every runner via loadModel.
import type { FinishReason, GenerationItem, GenerationOutput } from "../protocol/generation.ts";
import type { ItemResult } from "../protocol/worker.ts";
import type { InferenceSession, TypedTensor, WireTensor } from "../runner/model-runner.ts";
import { fromTypedData, ORT_TYPE, toTypedData } from "../runner/wire-tensor.ts";
import { invalidInput, merge, partition, type Task, type TaskContext } from "./task-types.ts";
import { contextProblem, parseGenerationItem } from "./text-generation-item.ts";
import { pickToken } from "./text-generation-sampler.ts";
import type { TextTokenizer } from "./tokenizer.ts";

/** What the decode loop needs of config.json (GPT-2's names, as Transformers.js reads them). */
interface DecoderShape {
  layers: number;
  heads: number;
  headDim: number;
  eos: number[];
  pad: number;
}

interface Sequence {
  pos: number;
  item: GenerationItem;
  promptTokens: number;
  /** Prompt, then the resumed tokens: what the prefill reads. */
  prefix: number[];
  /** Generated tokens, the resumed ones first. */
  generated: number[];
  /** Characters of the generated text already sent (the resumed text included). */
  sent: number;
  text: string;
  finish?: FinishReason;
}

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
      for (const { index, value } of good) {
        const prompt = encode(tokenizer, value.prompt);
        const problem = contextProblem(prompt.length, value.params.max_new_tokens, context);
        if (problem) results[index] = invalidInput(problem);
        else sequences.push(start(index, value, prompt));
      }
      await generate(ctx.session, shape, sequences, (seq, token) => {
        if (shape.eos.includes(token)) {
          // The end-of-text token is neither output nor counted; what was held back ends the text.
          seq.finish = "stop";
          seq.text = decode(seq.generated, { skip_special_tokens: true });
          return;
        }
        seq.generated.push(token);
        const full = decode(seq.generated, { skip_special_tokens: true });
        const { text, stopped } = advanceText(full, seq.sent, seq.item.params.stop);
        if (stopped !== undefined) {
          seq.finish = "stop";
          seq.text = stopped;
        } else if (seq.generated.length >= seq.item.params.max_new_tokens) {
          seq.finish = "length";
          seq.text = full;
        }
        const delta = seq.finish ? (seq.text.slice(seq.sent) as string) : text;
        seq.sent += delta.length;
        opts?.onTokens?.({ pos: seq.pos, offset: seq.generated.length - 1, tokens: [token], text: delta });
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
        sequences.map((s) => s.pos),
        outputs,
      );
    },
  };

  function start(pos: number, item: GenerationItem, prompt: number[]): Sequence {
    const resumed = item.resume?.tokens ?? [];
    const seq: Sequence = {
      pos,
      item,
      promptTokens: prompt.length,
      prefix: [...prompt, ...resumed],
      generated: [...resumed],
      sent: item.resume?.text.length ?? 0,
      text: item.resume?.text ?? "",
    };
    if (resumed.length >= item.params.max_new_tokens) {
      seq.finish = "length";
      seq.text = decode?.(resumed, { skip_special_tokens: true }) ?? seq.text;
    }
    return seq;
  }
}

/**
 * The text safe to send after `sent` characters, and where a stop string cut it: held back are a trailing
 * U+FFFD (a character whose bytes are not all out yet) and any tail that could still become a stop string.
 */
export function advanceText(full: string, sent: number, stops: readonly string[]): { text: string; stopped?: string } {
  const longest = Math.max(0, ...stops.map((s) => s.length));
  const from = Math.max(0, sent - longest + 1);
  let cut = -1;
  for (const stop of stops) {
    const at = full.indexOf(stop, from);
    if (at >= 0 && (cut < 0 || at < cut)) cut = at;
  }
  if (cut >= 0) return { text: full.slice(sent, Math.max(sent, cut)), stopped: full.slice(0, Math.max(sent, cut)) };
  let safe = full.length;
  while (safe > sent && full[safe - 1] === "\uFFFD") safe--;
  for (const stop of stops) {
    for (let n = Math.min(stop.length - 1, safe - sent); n > 0; n--) {
      if (full.slice(safe - n, safe) === stop.slice(0, n)) {
        safe -= n;
        break;
      }
    }
  }
  return { text: full.slice(sent, Math.max(sent, safe)) };
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
  const batch = active.length;
  const width = Math.max(...active.map((s) => s.prefix.length));
  // Left padding: every row's last prompt token sits in the last column, so each step appends one column.
  let mask: number[][] = active.map((s) => [...new Array(width - s.prefix.length).fill(0), ...s.prefix.map(() => 1)]);
  let ids = active.flatMap((s) => [...new Array(width - s.prefix.length).fill(shape.pad), ...s.prefix]);
  let positions = active.flatMap((s) => [...new Array(width - s.prefix.length).fill(0), ...s.prefix.map((_, i) => i)]);
  let past: Record<string, TypedTensor> = {};
  for (let layer = 0; layer < shape.layers; layer++) {
    for (const kv of ["key", "value"]) {
      const empty = { type: "float32", dims: [batch, shape.heads, 0, shape.headDim], data: new Float32Array(0) };
      past[`present.${layer}.${kv}`] = empty;
    }
  }
  // A sequence that finishes leaves the batch (its rows of the cache dropped), so the rest run on fewer rows.
  let rows = active;
  for (let step = 0; rows.length > 0; step++) {
    const columns = ids.length / rows.length;
    const feeds: Record<string, TypedTensor> = {
      input_ids: int64(ids, [rows.length, columns]),
      attention_mask: int64(mask.flat(), [rows.length, mask[0]?.length ?? 0]),
      position_ids: int64(positions, [rows.length, columns]),
    };
    for (let layer = 0; layer < shape.layers; layer++) {
      for (const kv of ["key", "value"]) {
        feeds[`past_key_values.${layer}.${kv}`] = past[`present.${layer}.${kv}`] as TypedTensor;
      }
    }
    const out = await runTyped(session, feeds);
    const logits = out.logits;
    if (logits?.dims.length !== 3) throw new Error("the decoder gave no logits of shape [batch, sequence, vocab]");
    const vocab = logits.dims[2] as number;
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

function encode(tokenizer: TextTokenizer, text: string): number[] {
  const max = Number.MAX_SAFE_INTEGER;
  return (
    tokenizer([text], { padding: true, truncation: true, max_length: max, return_tensor: false }).input_ids?.[0] ?? []
  );
}

function int64(values: number[], dims: number[]): TypedTensor {
  return { type: "int64", dims, data: BigInt64Array.from(values, (v) => BigInt(v)) };
}

/** The session's typed run, or its wire run for a session that has none (a test double, a custom runtime). */
async function runTyped(
  session: InferenceSession,
  feeds: Record<string, TypedTensor>,
): Promise<Record<string, TypedTensor>> {
  if (session.runTyped) return session.runTyped(feeds);
  const wire: Record<string, WireTensor> = {};
  for (const [name, t] of Object.entries(feeds)) wire[name] = fromTypedData(name, t.type, t.dims, t.data);
  const out: Record<string, TypedTensor> = {};
  for (const [name, t] of Object.entries(await session.run(wire))) {
    out[name] = { type: ORT_TYPE[t.datatype], dims: t.shape, data: toTypedData(t.datatype, t.data) };
  }
  return out;
}

function decoderShape(config: Record<string, unknown>): DecoderShape {
  const int = (key: string) => {
    const v = config[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
      throw new Error(`config.json needs ${key} (a positive integer) for text-generation`);
    return v;
  };
  const eos = config.eos_token_id;
  const eosIds = (Array.isArray(eos) ? eos : [eos]).filter((v): v is number => typeof v === "number");
  const pad = typeof config.pad_token_id === "number" ? config.pad_token_id : (eosIds[0] ?? 0);
  const heads = int("n_head");
  return { layers: int("n_layer"), heads, headDim: int("n_embd") / heads, eos: eosIds, pad };
}
