// Picks the next token from a row of logits: argmax when temperature is 0, else seeded sampling with
// temperature, top_k and top_p. The random draw is a pure function of (seed, position), not a stream, so a
// run resumed at any token on another worker draws the same numbers. Called by shared/tasks/text-generation.ts.
import type { GenerationParams } from "../protocol/generation.ts";
import { jsonMask } from "./text-generation-format.ts";
import type { Decode } from "./text-generation-sequence.ts";

type Sampling = Pick<GenerationParams, "temperature" | "top_k" | "top_p" | "seed">;

/** Index of the largest logit; the lowest index wins a tie, so every runtime picks the same. */
export function argmax(logits: ArrayLike<number>, from = 0, to = logits.length): number {
  let best = from;
  for (let i = from + 1; i < to; i++) if ((logits[i] as number) > (logits[best] as number)) best = i;
  return best - from;
}

/** A uniform number in [0, 1) from (seed, position): a counter-based generator (two rounds of a 32-bit mixer). */
export function uniformAt(seed: number, position: number): number {
  let h = Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(position + 1, 0x85ebca77);
  for (let round = 0; round < 2; round++) {
    h ^= h >>> 16;
    h = Math.imul(h, 0x7feb352d);
    h ^= h >>> 15;
    h = Math.imul(h, 0x846ca68b);
    h ^= h >>> 16;
  }
  return (h >>> 0) / 4294967296;
}

/**
 * The candidates sampling draws from, most likely first, with their probabilities: softmax(logits / T) over
 * the top_k best, cut to the smallest prefix whose mass reaches top_p, renormalised. Teacher-forced checks
 * (is this token inside the set?) can call it with the same parameters.
 */
export function candidates(
  logits: ArrayLike<number>,
  from: number,
  to: number,
  p: Sampling,
): { id: number; prob: number }[] {
  const set = sampled(logits, from, to, p);
  return Array.from({ length: set.count }, (_, i) => ({
    id: set.order[i] as number,
    prob: (set.weights[i] as number) / set.total / set.mass,
  }));
}

/**
 * The sampling set without an object a token: ids by logit (highest first, the lower id first on a tie), the
 * first `count` of them kept (top_k, then top_p); a kept token's probability is weights[i] / total / mass. Each
 * sum runs in that order, so every runtime (and candidates()) gets the same floating-point figures.
 */
function sampled(
  logits: ArrayLike<number>,
  from: number,
  to: number,
  p: Sampling,
): { order: ArrayLike<number>; weights: Float64Array; total: number; mass: number; count: number } {
  const order = byLogit(logits, from, to);
  const n = p.top_k > 0 ? Math.min(p.top_k, order.length) : order.length;
  const max = logits[from + (order[0] ?? 0)] as number;
  const weights = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const w = Math.exp(((logits[from + (order[i] as number)] as number) - max) / p.temperature);
    weights[i] = w;
    total += w;
  }
  let mass = 0;
  let count = 0;
  while (count < n) {
    mass += (weights[count] as number) / total;
    count++;
    if (mass >= p.top_p) break;
  }
  return { order, weights, total, mass, count };
}

/**
 * The ids of logits[from, to) by logit, highest first, the lower id first on a tie. A Float32Array (what the
 * runtimes give) is ordered by a stable radix sort of each logit's order-preserving bits, many times faster than
 * sorting ids with a comparator, which is what a plain array still gets.
 */
function byLogit(logits: ArrayLike<number>, from: number, to: number): ArrayLike<number> {
  const n = to - from;
  if (!(logits instanceof Float32Array)) {
    const ids = Array.from({ length: n }, (_, i) => i);
    return ids.sort((a, b) => (logits[from + b] as number) - (logits[from + a] as number) || a - b);
  }
  const bits = new Uint32Array(logits.buffer, logits.byteOffset + from * 4, n);
  let keys = new Uint32Array(n);
  let ids = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let b = bits[i] as number;
    if (b === 0x80000000) b = 0; // -0 ties +0, as the comparator has it
    // Ascending unsigned order of `up` is ascending float order; its complement puts the highest first.
    const up = b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
    keys[i] = ~up >>> 0;
    ids[i] = i;
  }
  // Least significant byte first; each pass is stable, so ids of equal logits stay in ascending order.
  let keysOut = new Uint32Array(n);
  let idsOut = new Int32Array(n);
  const counts = new Uint32Array(256);
  for (let shift = 0; shift < 32; shift += 8) {
    counts.fill(0);
    for (let i = 0; i < n; i++) {
      const d = ((keys[i] as number) >>> shift) & 255;
      counts[d] = (counts[d] as number) + 1;
    }
    let at = 0;
    for (let d = 0; d < 256; d++) {
      const c = counts[d] as number;
      counts[d] = at;
      at += c;
    }
    for (let i = 0; i < n; i++) {
      const k = keys[i] as number;
      const d = (k >>> shift) & 255;
      const to = counts[d] as number;
      counts[d] = to + 1;
      keysOut[to] = k;
      idsOut[to] = ids[i] as number;
    }
    [keys, keysOut] = [keysOut, keys];
    [ids, idsOut] = [idsOut, ids];
  }
  return ids;
}

/**
 * Before generated-token `position` reaches min_new_tokens, an end-of-text token may not be picked: its
 * logits in the row starting at `from` become -Infinity (in place; each row is read for one position only).
 */
export function holdEnd(
  logits: Float32Array,
  from: number,
  eos: readonly number[],
  p: Pick<GenerationParams, "min_new_tokens">,
  position: number,
): void {
  if (position >= (p.min_new_tokens ?? 0)) return;
  for (const e of eos) logits[from + e] = Number.NEGATIVE_INFINITY;
}

export type Penalties = Pick<
  GenerationParams,
  "presence_penalty" | "frequency_penalty" | "repetition_penalty" | "logit_bias"
>;

/** Whether a call asked for any bias or penalty (a row is then changed). */
function penalised(p: Penalties): boolean {
  return (
    (p.presence_penalty ?? 0) !== 0 ||
    (p.frequency_penalty ?? 0) !== 0 ||
    (p.repetition_penalty ?? 1) !== 1 ||
    (p.logit_bias !== undefined && Object.keys(p.logit_bias).length > 0)
  );
}

/**
 * The bias and penalties of `p` on the row of logits [from, from + vocab), in place, in vLLM's order: logit_bias
 * added to the tokens it names; repetition_penalty over the prompt's tokens and the generated ones (transformers'
 * rule: a positive logit divided by it, a negative one multiplied); then presence_penalty and frequency_penalty
 * over the generated ones (OpenAI's: the logit lowered by presence once a token has appeared, and by frequency
 * times its count). `generated` is read up to `count`.
 */
export function penalise(
  logits: Float32Array,
  from: number,
  vocab: number,
  p: Penalties,
  prompt: ArrayLike<number>,
  generated: ArrayLike<number>,
  count = generated.length,
): void {
  if (!penalised(p)) return;
  for (const [key, bias] of Object.entries(p.logit_bias ?? {})) {
    const t = Number(key);
    if (t < vocab) logits[from + t] = (logits[from + t] as number) + bias;
  }
  const repetition = p.repetition_penalty ?? 1;
  if (repetition !== 1) {
    const seen = new Set<number>();
    const hit = (t: number) => {
      if (t < 0 || t >= vocab || seen.has(t)) return;
      seen.add(t);
      const l = logits[from + t] as number;
      logits[from + t] = l > 0 ? l / repetition : l * repetition;
    };
    for (let i = 0; i < prompt.length; i++) hit(prompt[i] as number);
    for (let i = 0; i < count; i++) hit(generated[i] as number);
  }
  const presence = p.presence_penalty ?? 0;
  const frequency = p.frequency_penalty ?? 0;
  if (presence === 0 && frequency === 0) return;
  const counts = new Map<number, number>();
  for (let i = 0; i < count; i++) {
    const t = generated[i] as number;
    if (t >= 0 && t < vocab) counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  for (const [t, n] of counts) logits[from + t] = (logits[from + t] as number) - presence - frequency * n;
}

/**
 * A row made ready to pick generated token `position` from (in place; each row is read for one position only):
 * the bias and penalties of the call, min_new_tokens' hold on end-of-text, and JSON mode's mask (which needs the
 * tokenizer's `decode`). The decode loop and the teacher-forced check both call this, so a claim is held to the
 * same rules.
 */
export function shapeRow(
  logits: Float32Array,
  from: number,
  vocab: number,
  eos: readonly number[],
  p: Penalties & Pick<GenerationParams, "min_new_tokens" | "format" | "schema" | "json_spacing" | "json_markers">,
  prompt: ArrayLike<number>,
  generated: ArrayLike<number>,
  position: number,
  decode?: Decode,
): void {
  penalise(logits, from, vocab, p, prompt, generated, position);
  holdEnd(logits, from, eos, p, position);
  if (p.format !== undefined) {
    if (!decode) throw new Error("JSON mode needs the tokenizer's decode");
    jsonMask(p, logits, from, vocab, eos, decode, generated, position);
  }
}

/** The token at generated-token `position` of a sequence, from its logits row [from, to). */
export function pickToken(logits: ArrayLike<number>, from: number, to: number, p: Sampling, position: number): number {
  if (p.temperature === 0) return argmax(logits, from, to);
  const { order, weights, total, mass, count } = sampled(logits, from, to, p);
  let u = uniformAt(p.seed, position);
  for (let i = 0; i < count; i++) {
    u -= (weights[i] as number) / total / mass;
    if (u < 0) return order[i] as number;
  }
  return order[count - 1] as number;
}

/**
 * Whether a run whose every logit differs from these by at most `tol` could have picked `token` at generated
 * position `position`: the teacher-forced check of a claimed token (text-generation-check.ts). Greedy: its
 * logit is within 2 tol of the best (two such runs may order a near tie either way). Sampling, under the same
 * seed rule: the seeded draw lands in the token's interval, widened by eps = e^(4 tol / T) - 1 (how far such
 * logits can move any cumulative probability), with the top_p cut taken either side of its edge when the edge
 * is that close, and a token whose logit ties (within 2 tol) one in the set standing in for it (a top_k edge).
 */
export function tokenAllowed(
  logits: ArrayLike<number>,
  from: number,
  to: number,
  p: Sampling,
  position: number,
  token: number,
  tol: number,
): boolean {
  if (!Number.isInteger(token) || token < 0 || token >= to - from) return false;
  const logit = (id: number) => logits[from + id] as number;
  if (p.temperature === 0) return logit(token) >= logit(argmax(logits, from, to)) - 2 * tol;
  // The draw itself, as an honest run of the same runtime gives it: one pass over the set.
  if (pickToken(logits, from, to, p, position) === token) return true;
  const eps = Math.min(1, Math.expm1((4 * tol) / p.temperature));
  const u = uniformAt(p.seed, position);
  const cuts = new Set([p.top_p, Math.max(1e-9, p.top_p - eps), Math.min(1, p.top_p + eps)]);
  for (const top_p of cuts) {
    let lo = 0;
    for (const c of candidates(logits, from, to, { ...p, top_p })) {
      const hi = lo + c.prob;
      if (u >= lo - eps && u < hi + eps && Math.abs(logit(c.id) - logit(token)) <= 2 * tol) return true;
      lo = hi;
    }
  }
  return false;
}
