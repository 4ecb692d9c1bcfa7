// Picks the next token from a row of logits: argmax when temperature is 0, else seeded sampling with
// temperature, top_k and top_p. The random draw is a pure function of (seed, position), not a stream, so a
// run resumed at any token on another worker draws the same numbers. Called by shared/tasks/text-generation.ts.
import type { GenerationParams } from "../protocol/generation.ts";

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
  const ids = Array.from({ length: to - from }, (_, i) => i);
  ids.sort((a, b) => (logits[from + b] as number) - (logits[from + a] as number) || a - b);
  const kept = p.top_k > 0 ? ids.slice(0, p.top_k) : ids;
  const max = logits[from + (kept[0] ?? 0)] as number;
  const weights = kept.map((id) => Math.exp(((logits[from + id] as number) - max) / p.temperature));
  const total = weights.reduce((a, b) => a + b, 0);
  const out: { id: number; prob: number }[] = [];
  let mass = 0;
  for (const [i, id] of kept.entries()) {
    const prob = (weights[i] as number) / total;
    out.push({ id, prob });
    mass += prob;
    if (mass >= p.top_p) break;
  }
  const kept_mass = out.reduce((a, c) => a + c.prob, 0);
  return out.map((c) => ({ id: c.id, prob: c.prob / kept_mass }));
}

/**
 * Before generated-token `position` reaches min_new_tokens, an end-of-text token may not be picked: its
 * logits in the row starting at `from` become -Infinity (in place; each row is read for one position only).
 * The decode loop and the teacher-forced check both call this, so a claim is held to the same rule.
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

/** The token at generated-token `position` of a sequence, from its logits row [from, to). */
export function pickToken(logits: ArrayLike<number>, from: number, to: number, p: Sampling, position: number): number {
  if (p.temperature === 0) return argmax(logits, from, to);
  const set = candidates(logits, from, to, p);
  let u = uniformAt(p.seed, position);
  for (const c of set) {
    u -= c.prob;
    if (u < 0) return c.id;
  }
  return (set[set.length - 1] as { id: number }).id;
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
