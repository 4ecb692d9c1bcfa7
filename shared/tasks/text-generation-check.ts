// The teacher-forced check of a claimed generation (issue 14, point 8): an item with `verify` (a donor's output,
// set by the queue) is not generated again. Its prompt and the claimed tokens go through the decoder in one
// prefill, and each claimed token must be one the model allows at its place (tokenAllowed: the argmax when
// greedy, the seeded draw when sampling, within the claim's logit tolerance); the claim must end where the
// model's run would (end-of-text, a stop string, max_new_tokens: replayed with the decode loop's own takeToken)
// and read as it would. The claims of a batch share one prefill. Called by text-generation.ts; the queue
// compares the verdict instead of a second output (edge/model-queue/verification.ts).
import type { GenerationClaim, GenerationItem, GenerationVerdict } from "../protocol/generation.ts";
import type { InferenceSession } from "../runner/model-runner.ts";
import { type DecoderShape, prefill } from "./text-generation-decoder.ts";
import { unfinishedReply } from "./text-generation-format.ts";
import { logprobProblem, promptLogprobsProblem, rowLogprobs } from "./text-generation-logprobs.ts";
import { pickToken, shapeRow, tokenAllowed } from "./text-generation-sampler.ts";
import { type Decode, startSequence, takeToken } from "./text-generation-sequence.ts";

export interface ClaimToCheck {
  item: GenerationItem;
  claim: GenerationClaim;
  /** The prompt's tokens, as the worker's tokenizer gives them. */
  prompt: number[];
}

/** One verdict per claim, in order, from a single prefill of every prompt followed by its claimed tokens. */
export async function checkClaims(
  session: InferenceSession,
  shape: DecoderShape,
  decode: Decode,
  claims: readonly ClaimToCheck[],
): Promise<GenerationVerdict[]> {
  if (claims.length === 0) return [];
  // Never more than max_new_tokens are read: the prompt and those fit the context (checked before).
  const read = claims.map((c) => c.claim.tokens.slice(0, c.item.params.max_new_tokens));
  const { logits, at } = await prefill(
    session,
    shape,
    claims.map((c, i) => [...c.prompt, ...(read[i] as number[])]),
  );
  return claims.map((c, row) => {
    // The logits that choose generated token i sit at the place of the token before it.
    const promptAt = (k: number) => at(row, k - 1);
    const generatedAt = (i: number) => at(row, c.prompt.length - 1 + i);
    return (
      promptProblem(c, promptAt, logits, decode) ?? judge(c, read[row] as number[], generatedAt, logits, shape, decode)
    );
  });
}

/** A claim's prompt log probabilities against the model's: a mismatch (at place 0, before any token), or null. */
function promptProblem(
  c: ClaimToCheck,
  at: (k: number) => { from: number; to: number },
  logits: Float32Array,
  decode: Decode,
): GenerationVerdict | null {
  const asked = c.item.params.prompt_logprobs;
  const claimed = c.claim.prompt_logprobs;
  const reason =
    asked === undefined || claimed === undefined
      ? asked === claimed
        ? null
        : `the claim's prompt_logprobs were ${asked === undefined ? "not asked for" : "left out"}`
      : promptLogprobsProblem(claimed, logits, at, c.prompt, asked, c.claim.tolerance, decode);
  return reason === null ? null : { verdict: "mismatch", checked: 0, first_mismatch: 0, reason };
}

function judge(
  c: ClaimToCheck,
  read: readonly number[],
  at: (i: number) => { from: number; to: number },
  logits: Float32Array,
  shape: DecoderShape,
  decode: Decode,
): GenerationVerdict {
  const { claim, item } = c;
  const params = item.params;
  const n = claim.tokens.length;
  const mismatch = (i: number, checked: number, reason: string): GenerationVerdict => ({
    verdict: "mismatch",
    checked,
    first_mismatch: i,
    reason,
  });
  // Each row is read for one position, shaped as in a run: the penalties over the tokens before it, and before
  // min_new_tokens its end-of-text tokens held back.
  const row = (i: number) => {
    const { from, to } = at(i);
    shapeRow(logits, from, to - from, shape.eos, params, c.prompt, read, i, decode);
    return { from, to };
  };
  // A repetition penalty scales logits by up to itself (or its inverse), and with them the runtimes' differences;
  // it is bounded to 0.1..10 (RepetitionPenalty), so the tolerance grows tenfold at most.
  const r = params.repetition_penalty ?? 1;
  const tolerance = claim.tolerance * Math.max(r, 1 / r);
  const modelPick = (i: number) => {
    const { from, to } = at(i);
    return pickToken(logits, from, to, params, i);
  };
  const resumed = item.resume?.tokens ?? [];
  const off = resumed.findIndex((t, i) => claim.tokens[i] !== t);
  if (off >= 0) return mismatch(off, 0, `the claim does not start with the ${resumed.length} tokens already accepted`);
  const seq = startSequence(0, { ...item, resume: undefined }, c.prompt, decode);
  // Log probabilities: one entry a claimed token when asked for, none when not; each read before its row is shaped.
  const asked = params.logprobs;
  if ((asked === undefined) !== (claim.logprobs === undefined) || (claim.logprobs && claim.logprobs.length !== n)) {
    return mismatch(
      0,
      0,
      asked === undefined
        ? "the claim's logprobs were not asked for"
        : `the claim's logprobs are not one a token (${claim.logprobs?.length ?? 0} for ${n})`,
    );
  }
  for (const [i, token] of read.entries()) {
    if (seq.finish) return mismatch(i, i, `the run ends before token ${i} (finish_reason ${seq.finish})`);
    const claimed = claim.logprobs?.[i];
    if (asked !== undefined && claimed) {
      const { from, to } = at(i);
      const problem = logprobProblem(
        claimed,
        rowLogprobs(logits, from, to, asked),
        token,
        asked,
        claim.tolerance,
        decode,
      );
      if (problem) return mismatch(i, i + 1, `token ${i}'s log probabilities: ${problem}`);
    }
    const { from, to } = row(i);
    if (shape.eos.includes(token)) return mismatch(i, i + 1, `token ${i} is an end-of-text token inside the output`);
    if (!tokenAllowed(logits, from, to, params, i, token, tolerance)) {
      return mismatch(i, i + 1, `token ${i} is ${token}; the model picks ${modelPick(i)} there`);
    }
    takeToken(seq, token, shape.eos, decode);
  }
  let checked = read.length;
  if (n > read.length) return mismatch(read.length, checked, `${n} tokens, more than max_new_tokens (${read.length})`);
  let endEntry: string | null = claim.end_logprob ? "the claim has an end_logprob it should not have" : null;
  if (!seq.finish) {
    // Ended by end-of-text: the model must allow one right after the last token (and min_new_tokens there).
    const raw = asked === undefined ? undefined : rowLogprobs(logits, at(n).from, at(n).to, asked);
    const { from, to } = row(n);
    checked++;
    const drawn = modelPick(n);
    const eos = shape.eos.includes(drawn)
      ? drawn
      : shape.eos.find((e) => tokenAllowed(logits, from, to, params, n, e, tolerance));
    if (eos === undefined) {
      return mismatch(n, checked, `the output ends after ${n} tokens; the model goes on with ${drawn}`);
    }
    takeToken(seq, eos, shape.eos, decode);
    // With logprobs, the end-of-text token's entry comes too, held to the model's like a token's.
    endEntry =
      raw === undefined
        ? endEntry
        : claim.end_logprob === undefined
          ? "the claim has no end_logprob for the end-of-text token that ends it"
          : logprobProblem(claim.end_logprob, raw, eos, asked as number, claim.tolerance, decode);
  }
  if (endEntry !== null) return mismatch(n, checked, `the end's log probabilities: ${endEntry}`);
  if (claim.finish_reason !== seq.finish) {
    return mismatch(n, checked, `finish_reason is ${claim.finish_reason}; these tokens end with ${seq.finish}`);
  }
  if (claim.generated_text !== seq.text) return mismatch(n, checked, "generated_text is not the text of its tokens");
  // A run stuck under its format answers an error, not such an output.
  const stuck = seq.finish === "stop" ? unfinishedReply(c.item.params, seq.text) : null;
  if (stuck) return mismatch(n, checked, `an unfinished object is no output: ${stuck}`);
  if (claim.prompt_tokens !== c.prompt.length) {
    return mismatch(n, checked, `prompt_tokens is ${claim.prompt_tokens}; the prompt is ${c.prompt.length} tokens`);
  }
  return { verdict: "agreed", checked, first_mismatch: null, reason: null };
}
