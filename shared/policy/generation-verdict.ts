// Donated generation checked by a verdict rather than a second output (issue 14, point 8): a donor's
// text-generation output held for verification goes back out as the item's `verify` claim, and the run that
// verifies it (a trusted worker, or an independent donor in good standing) answers a GenerationVerdict from one
// teacher-forced prefill (shared/tasks/text-generation-check.ts). Pure decisions the model queue applies
// (edge/model-queue/verification.ts): which runs answer a verdict, the claim they are sent, what a verdict
// says about the held output, and the shapes the queue accepts. Tested in Node.
import {
  type GenerationClaim,
  GenerationOutput,
  GenerationVerdict,
  logprobsMisaligned,
} from "../protocol/generation.ts";
import { outputsDiffer, type Tolerance } from "./verification.ts";

/** The task whose held outputs are checked by verdicts. */
export const CLAIM_TASK = "text-generation";

/** Whether a run of this item checks a held output (answers a verdict) instead of producing one. */
export function checksClaim(task: string, nCandidates: number): boolean {
  return task === CLAIM_TASK && nCandidates > 0;
}

/** The claim a verifying run is sent: the held output, and the model's tolerance on numbers as the logit slack. */
export function claimOf(output: GenerationOutput, tolerance: Tolerance): GenerationClaim {
  return { ...output, tolerance: tolerance.abs };
}

/** A run's output as a verdict, or null when it is not one. */
export function verdictOf(output: unknown): GenerationVerdict | null {
  const parsed = GenerationVerdict.safeParse(output);
  return parsed.success ? parsed.data : null;
}

/** What a run of a held generation item says of the held output. */
export interface ClaimReading {
  agreed: boolean;
  /** Why not, when not. */
  reason: string | null;
  /** The run generated in full (a trusted worker that did not run the check): its own output is the answer. */
  generated: boolean;
}

/**
 * What a run of a held generation item says of the held output: its verdict says it itself; a full output
 * (a trusted worker that generated after all) says it by agreeing with the held output, or not.
 */
export function readClaimRun(held: unknown, run: unknown, tol: Tolerance): ClaimReading {
  const verdict = verdictOf(run);
  if (verdict === null) {
    const difference = outputsDiffer(CLAIM_TASK, held, run, tol);
    return { agreed: difference === null, reason: difference, generated: true };
  }
  const agreed = verdict.verdict === "agreed";
  return {
    agreed,
    reason: agreed ? null : `token ${verdict.first_mismatch}: ${verdict.reason ?? "mismatch"}`,
    generated: false,
  };
}

/**
 * Where a candidate of a held generation item parts from what a run says (null: it does not). The held
 * output parts when the run says it is wrong; a donor's verdict held beside it (a check that did not decide)
 * parts when it said otherwise than the run, so a donor that disputes honest outputs is caught like a liar.
 */
export function candidateDiffers(candidate: unknown, reading: ClaimReading): string | null {
  const dispute = verdictOf(candidate);
  if (dispute === null) return reading.agreed ? null : reading.reason;
  if ((dispute.verdict === "agreed") === reading.agreed) return null;
  return `its check said ${dispute.verdict}, and ${reading.agreed ? "the output is the model's" : reading.reason}`;
}

/** The held output among a generation item's candidates (the others are donors' verdicts on it), or undefined. */
export function heldOutputOf<C extends { output: string }>(candidates: readonly C[]): C | undefined {
  return candidates.find((c) => verdictOf(JSON.parse(c.output)) === null);
}

/**
 * What is wrong with a run's output of a text-generation item, or null. A first run answers the generated
 * output; a run of an item sent with `verify` answers a verdict, or, from a trusted worker only, may answer
 * the output itself (`outputToo`). A donor must run the check it was sent: a full output there is refused.
 */
export function generationProblem(output: unknown, verifying: boolean, outputToo = true): string | null {
  const asOutput = () => {
    const parsed = GenerationOutput.safeParse(output);
    if (!parsed.success) return `not {generated_text, tokens, finish_reason, prompt_tokens}: ${issue(parsed.error)}`;
    return logprobsMisaligned(parsed.data);
  };
  if (!verifying) return asOutput();
  const parsed = GenerationVerdict.safeParse(output);
  if (parsed.success) return null;
  if (outputToo && asOutput() === null) return null;
  return `a run sent verify answers {verdict, checked, first_mismatch, reason}: ${issue(parsed.error)}`;
}

function issue(error: { issues: readonly { path: readonly PropertyKey[]; message: string }[] }): string {
  const first = error.issues[0];
  return first ? `${first.path.map(String).join(".") || "output"}: ${first.message}` : "invalid";
}
