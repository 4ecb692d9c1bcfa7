// The queue's side of verifying donated generation by a verdict (shared/policy/generation-verdict.ts): which
// runs answer a verdict, the claim they are sent, what a verdict says about the held output, and the shapes
// accepted from a first run, a donor's check and a trusted worker's check.
import { describe, expect, it } from "vitest";
import {
  candidateDiffers,
  checksClaim,
  claimOf,
  generationProblem,
  heldOutputOf,
  readClaimRun,
  verdictOf,
} from "../../shared/policy/generation-verdict.ts";
import { outputProblem } from "../../shared/policy/output-shape.ts";

const held = { generated_text: " good food", tokens: [7, 9], finish_reason: "stop" as const, prompt_tokens: 3 };
const tol = { abs: 1e-3, rel: 1e-3 };
const agreed = { verdict: "agreed", checked: 3, first_mismatch: null, reason: null };
const mismatch = {
  verdict: "mismatch",
  checked: 2,
  first_mismatch: 1,
  reason: "token 1 is 9; the model picks 8 there",
};

describe("generation verdicts", () => {
  it("sends a held text-generation item out as a check of the held output, with the logit slack", () => {
    expect(checksClaim("text-generation", 1)).toBe(true);
    expect(checksClaim("text-generation", 0)).toBe(false);
    expect(checksClaim("text-classification", 1)).toBe(false);
    expect(claimOf(held, tol)).toEqual({ ...held, tolerance: 1e-3 });
  });

  it("reads agreement from the verdict, and a full output (a trusted worker that generated) compared whole", () => {
    expect(readClaimRun(held, agreed, tol)).toEqual({ agreed: true, reason: null, generated: false });
    expect(readClaimRun(held, mismatch, tol)).toEqual({
      agreed: false,
      reason: "token 1: token 1 is 9; the model picks 8 there",
      generated: false,
    });
    expect(readClaimRun(held, held, tol)).toEqual({ agreed: true, reason: null, generated: true });
    expect(readClaimRun(held, { ...held, tokens: [7, 8] }, tol).reason).toMatch(/tokens\[1\]: 9 vs 8/);
    expect(verdictOf(held)).toBeNull();
    // agreed with a mismatch index, or a mismatch without one, is no verdict
    expect(verdictOf({ ...agreed, first_mismatch: 0 })).toBeNull();
    expect(verdictOf({ ...mismatch, first_mismatch: null })).toBeNull();
  });

  it("judges the held output by what the run says, and a donor's verdict held beside it by whether it said the same", () => {
    const says = readClaimRun(held, agreed, tol);
    const refutes = readClaimRun(held, mismatch, tol);
    expect(candidateDiffers(held, says)).toBeNull();
    expect(candidateDiffers(held, refutes)).toBe("token 1: token 1 is 9; the model picks 8 there");
    expect(candidateDiffers(mismatch, says)).toBe("its check said mismatch, and the output is the model's");
    expect(candidateDiffers(mismatch, refutes)).toBeNull();
    expect(candidateDiffers(agreed, refutes)).toMatch(/^its check said agreed, and token 1: /);
    const rows = [{ output: JSON.stringify(mismatch) }, { output: JSON.stringify(held) }];
    expect(heldOutputOf(rows)).toBe(rows[1]);
    expect(heldOutputOf([rows[0] as { output: string }])).toBeUndefined();
  });

  it("wants an output from a first run, a verdict from a donor's check, either from a trusted worker's check", () => {
    expect(generationProblem(held, false)).toBeNull();
    expect(generationProblem(agreed, false)).toMatch(/^not \{generated_text/);
    expect(generationProblem({ ...held, tokens: [-1] }, false)).toMatch(/tokens\.0/);
    expect(generationProblem(agreed, true, false)).toBeNull();
    expect(generationProblem(held, true, false)).toMatch(/^a run sent verify answers \{verdict/);
    expect(generationProblem(held, true)).toBeNull();
    expect(generationProblem({ verdict: "yes" }, true)).toMatch(/^a run sent verify answers/);
    expect(outputProblem("text-generation", held)).toBeNull();
    expect(outputProblem("text-generation", agreed)).not.toBeNull();
    expect(outputProblem("text-generation", agreed, { verifying: true })).toBeNull();
  });
});
