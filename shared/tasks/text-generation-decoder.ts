// The decoder as the text-generation task drives it (the Optimum KV-cache layout): its shape from config.json,
// a left-padded batch of token prefixes with an empty cache, and one run of the session. Shared by the decode
// loop (text-generation.ts) and the teacher-forced check (text-generation-check.ts), which is one such prefill.
import type { InferenceSession, TypedTensor, WireTensor } from "../runner/model-runner.ts";
import { fromTypedData, ORT_TYPE, toTypedData } from "../runner/wire-tensor.ts";
import type { TextTokenizer } from "./tokenizer.ts";

/** What the decode loop needs of config.json (GPT-2's names, as Transformers.js reads them). */
export interface DecoderShape {
  layers: number;
  heads: number;
  headDim: number;
  eos: number[];
  pad: number;
  /** config.json's vocab_size, when given: the token ids a call may name (logit_bias). */
  vocab?: number;
}

/** A batch of prefixes, left-padded: every row's last token sits in the last column, so each step appends one. */
export interface PaddedBatch {
  ids: number[];
  mask: number[][];
  positions: number[];
  /** Columns of padding before each row's first token. */
  pads: number[];
  width: number;
}

export function decoderShape(config: Record<string, unknown>): DecoderShape {
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
  const vocab = Number.isInteger(config.vocab_size) ? (config.vocab_size as number) : undefined;
  return {
    layers: int("n_layer"),
    heads,
    headDim: int("n_embd") / heads,
    eos: eosIds,
    pad,
    ...(vocab === undefined ? {} : { vocab }),
  };
}

export function leftPadded(prefixes: readonly number[][], pad: number): PaddedBatch {
  const width = Math.max(...prefixes.map((p) => p.length));
  const pads = prefixes.map((p) => width - p.length);
  return {
    ids: prefixes.flatMap((p, r) => [...new Array(pads[r]).fill(pad), ...p]),
    mask: prefixes.map((p, r) => [...new Array(pads[r]).fill(0), ...p.map(() => 1)]),
    positions: prefixes.flatMap((p, r) => [...new Array(pads[r]).fill(0), ...p.map((_, i) => i)]),
    pads,
    width,
  };
}

/** The cache before the first step: no past key or value for any layer. */
export function emptyCache(shape: DecoderShape, batch: number): Record<string, TypedTensor> {
  const past: Record<string, TypedTensor> = {};
  for (let layer = 0; layer < shape.layers; layer++) {
    for (const kv of ["key", "value"]) {
      past[`present.${layer}.${kv}`] = {
        type: "float32",
        dims: [batch, shape.heads, 0, shape.headDim],
        data: new Float32Array(0),
      };
    }
  }
  return past;
}

/** One run of the decoder on `rows` rows of ids after the cache `past` (present.* tensors of the last run). */
export async function decoderStep(
  session: InferenceSession,
  shape: DecoderShape,
  step: { ids: number[]; mask: number[][]; positions: number[]; rows: number },
  past: Record<string, TypedTensor>,
): Promise<{ out: Record<string, TypedTensor>; logits: TypedTensor; vocab: number; columns: number }> {
  const columns = step.ids.length / step.rows;
  const feeds: Record<string, TypedTensor> = {
    input_ids: int64(step.ids, [step.rows, columns]),
    attention_mask: int64(step.mask.flat(), [step.rows, step.mask[0]?.length ?? 0]),
    position_ids: int64(step.positions, [step.rows, columns]),
  };
  for (let layer = 0; layer < shape.layers; layer++) {
    for (const kv of ["key", "value"]) {
      feeds[`past_key_values.${layer}.${kv}`] = past[`present.${layer}.${kv}`] as TypedTensor;
    }
  }
  const out = await runTyped(session, feeds);
  const logits = out.logits;
  if (logits?.dims.length !== 3) throw new Error("the decoder gave no logits of shape [batch, sequence, vocab]");
  return { out, logits, vocab: logits.dims[2] as number, columns };
}

/** The logits of a prefill: `at(r, k)` is the row [from, to) of prefix r's logits that choose its token k + 1. */
export interface Prefilled {
  logits: Float32Array;
  at: (r: number, k: number) => { from: number; to: number };
}

/** One run of the decoder over whole token lists (left-padded together, no cache): every place's logits. */
export async function prefill(
  session: InferenceSession,
  shape: DecoderShape,
  prefixes: readonly number[][],
): Promise<Prefilled> {
  const batch = leftPadded(prefixes, shape.pad);
  const rows = prefixes.length;
  const step = { ids: batch.ids, mask: batch.mask, positions: batch.positions, rows };
  const { logits, vocab, columns } = await decoderStep(session, shape, step, emptyCache(shape, rows));
  return {
    logits: logits.data as Float32Array,
    at: (r, k) => {
      const from = (r * columns + (batch.pads[r] as number) + k) * vocab;
      return { from, to: from + vocab };
    },
  };
}

export function encode(tokenizer: TextTokenizer, text: string): number[] {
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
