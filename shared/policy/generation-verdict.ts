// Donated generation checked by a verdict rather than a second output (issue 14, point 8): a donor's
// text-generation output held for verification goes back out as the item's `verify` claim, and the run that
// verifies it (a trusted worker, or an independent donor in good standing) answers a GenerationVerdict from one
// teacher-forced prefill (shared/tasks/text-generation-check.ts). Pure decisions the model queue applies
// (edge/model-queue/verification.ts): which runs answer a verdict, the claim they are sent, what a verdict
// says about the held output, and the shapes the queue accepts. Tested in Node.
import { type GenerationClaim, GenerationOutput, GenerationVerdict } from "../protocol/generation.ts";
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

/**
 * Where a verifying run and the held output it checked differ, or null when they agree. A verdict says it
 * itself; a full output (a trusted worker that generated after all) is compared with the held one whole.
 */
export function claimDiffers(held: unknown, run: unknown, tol: Tolerance): string | null {
  const verdict = verdictOf(run);
  if (verdict === null) return outputsDiffer(CLAIM_TASK, held, run, tol);
  return verdict.verdict === "agreed" ? null : `token ${verdict.first_mismatch}: ${verdict.reason ?? "mismatch"}`;
}

/**
 * What is wrong with a run's output of a text-generation item, or null. A first run answers the generated
 * output; a run of an item sent with `verify` answers a verdict, or, from a trusted worker only, may answer
 * the output itself (`outputToo`). A donor must run the check it was sent: a full output there is refused.
 */
export function generationProblem(output: unknown, verifying: boolean, outputToo = true): string | null {
  const asOutput = () => {
    const parsed = GenerationOutput.safeParse(output);
    return parsed.success ? null : `not {generated_text, tokens, finish_reason, prompt_tokens}: ${issue(parsed.error)}`;
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
