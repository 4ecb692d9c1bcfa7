// Log probabilities of generated tokens (params.logprobs; OpenAI's logprobs and top_logprobs, vLLM's logprobs):
// for each token, its log probability under the model's own distribution at its place (log-softmax of the raw
// logits, before temperature, penalties, bias and masks: vLLM's default "raw_logprobs"), and the `n` most likely
// tokens there. The decode loop (text-generation-engine.ts) reads a row before shaping it; the teacher-forced
// check of a donor's claim (text-generation-check.ts) holds the claimed values to the same figures within its
// tolerance, so a donor cannot report values the model does not give.
import type { PromptLogprob, TokenLogprob } from "../protocol/generation.ts";
import type { Decode } from "./text-generation-sequence.ts";

/** A token as an entry names it: its text, and its bytes where the text cannot carry them. */
interface Named {
  token: string;
  bytes?: number[];
}

/** Each tokenizer's names of single tokens, as read so far (a row's top tokens repeat from step to step). */
const names = new WeakMap<Decode, Map<number, Named>>();

/**
 * A token's text as decode([id]) gives it, special tokens named (an end-of-text token among the top ones); and,
 * for a byte-level token that ends mid-character (its text reads U+FFFD), its own bytes (decode.tokenBytes).
 */
export function tokenName(decode: Decode, id: number): Named {
  let known = names.get(decode);
  if (!known) {
    known = new Map();
    names.set(decode, known);
  }
  let named = known.get(id);
  if (named === undefined) {
    const token = decode([id], { skip_special_tokens: false });
    const bytes = token.includes("\uFFFD") ? decode.tokenBytes?.(id) : null;
    named = bytes ? { token, bytes } : { token };
    known.set(id, named);
  }
  return named;
}

const sameName = (claimed: Named, named: Named) =>
  claimed.token === named.token && JSON.stringify(claimed.bytes ?? null) === JSON.stringify(named.bytes ?? null);

/** log Σ exp over the row [from, to), in float64 from its largest value. */
function logSumExp(logits: ArrayLike<number>, from: number, to: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = from; i < to; i++) max = Math.max(max, logits[i] as number);
  let sum = 0;
  for (let i = from; i < to; i++) sum += Math.exp((logits[i] as number) - max);
  return max + Math.log(sum);
}

/** The `n` ids of the row with the highest logits, highest first, the lower id first on a tie. */
export function topIds(logits: ArrayLike<number>, from: number, to: number, n: number): number[] {
  const top: number[] = [];
  if (n <= 0) return top;
  const logit = (id: number) => logits[from + id] as number;
  for (let id = 0; id < to - from; id++) {
    const l = logit(id);
    if (top.length === n && l <= logit(top[n - 1] as number)) continue;
    // Inserted after every id at least as high: ascending ids stay first among equals.
    let at = top.length;
    while (at > 0 && logit(top[at - 1] as number) < l) at--;
    top.splice(at, 0, id);
    if (top.length > n) top.pop();
  }
  return top;
}

/** Log probabilities of a row, read before it is shaped: each id's, and the `n` best. */
export interface RowLogprobs {
  of(id: number): number;
  top: number[];
  /** The row's length: the vocabulary. */
  vocab: number;
}

/** The least log probability reported (vLLM's): a masked logit's -Infinity has no JSON. */
export const MIN_LOGPROB = -9999;

/**
 * A row's log probabilities, from its values as they are now: the row is copied, since the decode loop and the
 * check shape it in place (penalties, masks) before the values are read.
 */
export function rowLogprobs(logits: ArrayLike<number>, from: number, to: number, n: number): RowLogprobs {
  const row =
    logits instanceof Float32Array
      ? logits.slice(from, to)
      : Float32Array.from({ length: to - from }, (_, i) => logits[from + i] as number);
  const lse = logSumExp(row, 0, row.length);
  // A logprob never exceeds 0; rounding of a lone dominant logit could put it a hair above.
  return {
    of: (id) => Math.max(MIN_LOGPROB, Math.min(0, (row[id] as number) - lse)),
    top: topIds(row, 0, row.length, n),
    vocab: row.length,
  };
}

/**
 * A value as reported: 6 significant digits, far inside any check's tolerance, so an entry is about half the size
 * of one written with all 17 (an answer with logprobs is mostly these figures).
 */
const reported = (logprob: number) => Number(logprob.toPrecision(6));

/** What a run reports for `token` picked from a row whose log probabilities are `row`. */
export function tokenLogprob(row: RowLogprobs, token: number, decode: Decode): TokenLogprob {
  return {
    ...tokenName(decode, token),
    logprob: reported(row.of(token)),
    top: row.top.map((id) => ({ id, ...tokenName(decode, id), logprob: reported(row.of(id)) })),
  };
}

/**
 * A prompt's entries (params.prompt_logprobs): the first token's text alone, then each token's log probability
 * given those before it; `at(k)` is the row of logits that chooses prompt token k (k ≥ 1).
 */
export function promptLogprobs(
  logits: ArrayLike<number>,
  at: (k: number) => { from: number; to: number },
  prompt: readonly number[],
  n: number,
  decode: Decode,
): PromptLogprob[] {
  return prompt.map((token, k) => {
    if (k === 0) return { ...tokenName(decode, token), logprob: null, top: [] };
    const { from, to } = at(k);
    return tokenLogprob(rowLogprobs(logits, from, to, n), token, decode);
  });
}

/**
 * What is wrong with a claim's prompt entries against the model's (each as logprobProblem judges a token's), or
 * null; `at` as promptLogprobs'.
 */
export function promptLogprobsProblem(
  claimed: readonly PromptLogprob[],
  logits: ArrayLike<number>,
  at: (k: number) => { from: number; to: number },
  prompt: readonly number[],
  n: number,
  tol: number,
  decode: Decode,
): string | null {
  if (claimed.length !== prompt.length) return `${claimed.length} entries for a prompt of ${prompt.length} tokens`;
  for (const [k, token] of prompt.entries()) {
    const entry = claimed[k] as PromptLogprob;
    if (k === 0) {
      if (!sameName(entry, tokenName(decode, token)) || entry.logprob !== null || entry.top.length > 0) {
        return "the first prompt token's entry is not its text alone";
      }
      continue;
    }
    const { from, to } = at(k);
    const problem =
      entry.logprob === null
        ? "its logprob is null"
        : logprobProblem({ ...entry, logprob: entry.logprob }, rowLogprobs(logits, from, to, n), token, n, tol, decode);
    if (problem) return `prompt token ${k}: ${problem}`;
  }
  return null;
}

/**
 * Whether a claimed entry is what a run whose every logit differs from the model's by at most `tol` could report
 * for `token` (each log probability then moves by at most 2 tol): its value and each top one's within 2 tol of the
 * model's, texts as the tokenizer gives them, `n` distinct top ids in order, none of them beaten by a left-out id
 * by more than 4 tol. Null when it is, else what is wrong.
 */
export function logprobProblem(
  claimed: TokenLogprob,
  row: RowLogprobs,
  token: number,
  n: number,
  tol: number,
  decode: Decode,
): string | null {
  // Reported values carry 6 significant digits: their rounding is allowed for besides the tolerance.
  const slack = 2 * tol + 1e-6;
  const off = (id: number, value: number) => Math.abs(row.of(id) - value) > slack + 1e-5 * Math.abs(value);
  if (!sameName(claimed, tokenName(decode, token))) return "its text (or bytes) is not the token's";
  if (off(token, claimed.logprob)) return `its logprob is ${claimed.logprob}; the model gives ${row.of(token)}`;
  const want = Math.min(n, row.top.length);
  if (claimed.top.length !== want) return `it lists ${claimed.top.length} top tokens; ${want} were asked for`;
  const ids = new Set<number>();
  let last = Number.POSITIVE_INFINITY;
  for (const t of claimed.top) {
    if (t.id >= row.vocab) return `top token ${t.id} is past the vocabulary`;
    if (ids.has(t.id)) return `top token ${t.id} is listed twice`;
    ids.add(t.id);
    if (!sameName(t, tokenName(decode, t.id))) return `top token ${t.id}'s text (or bytes) is not the token's`;
    if (off(t.id, t.logprob)) return `top token ${t.id}'s logprob is ${t.logprob}; the model gives ${row.of(t.id)}`;
    if (t.logprob > last + 1e-9) return "the top tokens are not in order";
    last = t.logprob;
  }
  const lowest = Math.min(...claimed.top.map((t) => row.of(t.id)));
  const beaten = row.top.find((id) => !ids.has(id) && row.of(id) > lowest + 2 * slack);
  if (beaten !== undefined) return `top tokens leave out ${beaten}, more likely than one listed`;
  return null;
}
