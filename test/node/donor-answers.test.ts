// The hostile donors' answers (test/support/donor-answers.ts): lies are wrong but well shaped, colluders
// agree with each other and liars do not, and the canary guesses pick what they say they pick.
import { describe, expect, it } from "vitest";
import type { Batch, ItemResult } from "../../shared/index.ts";
import {
  type AnswerPolicy,
  answerBatch,
  COLLUSION_SALT,
  guessedCanary,
  sameOutput,
  substitutedItem,
  wrongOutput,
} from "../support/donor-answers.ts";

const labels = [
  { label: "POSITIVE", score: 0.8 },
  { label: "NEGATIVE", score: 0.2 },
];
const vector = [0.6, 0.8, 0];

const batch: Batch = {
  lease_id: "l",
  model: "m",
  deadline: 0,
  renew_after_ms: 1,
  items: [
    { id: "a", input: "one", attempt: 1, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    { id: "b", input: "two", attempt: 1, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203332-01" },
    { id: "c", input: "three", attempt: 1 },
  ],
};
const honest: ItemResult[] = batch.items.map(() => ({ output: labels }));
const policy = (over: Partial<AnswerPolicy>): AnswerPolicy => ({
  mode: "lie",
  honestBatches: 0,
  canaryGuess: [],
  salt: "mine",
  ...over,
});

describe("wrong outputs", () => {
  it("swap a classifier's labels, keep scores that sum to 1 and best first", () => {
    const wrong = wrongOutput(labels, "x", "s") as typeof labels;
    expect(wrong.map((w) => w.label)).toEqual(["NEGATIVE", "POSITIVE"]);
    expect(wrong[0]?.score).toBeGreaterThan(wrong[1]?.score ?? 1);
    expect((wrong[0]?.score ?? 0) + (wrong[1]?.score ?? 0)).toBeCloseTo(1, 10);
  });

  it("turn a vector away from the truth, keeping its length and unit norm", () => {
    const wrong = wrongOutput(vector, "x", "s") as number[];
    expect(wrong).toHaveLength(3);
    expect(Math.hypot(...wrong)).toBeCloseTo(1, 10);
    expect(wrong.reduce((dot, w, i) => dot + w * (vector[i] ?? 0), 0)).toBeLessThan(0);
  });

  it("are the same for two colluders and differ between two liars", () => {
    expect(wrongOutput(labels, "x", COLLUSION_SALT)).toEqual(wrongOutput(labels, "x", COLLUSION_SALT));
    expect(sameOutput(wrongOutput(labels, "x", "liar-1"), wrongOutput(labels, "x", "liar-2"), 1e-4)).toBe(false);
    expect(sameOutput(wrongOutput(labels, "x", "s"), labels, 1e-4)).toBe(false);
  });
});

describe("answerBatch", () => {
  it("canary-aware: truthful on the items its rules pick, lies on the rest", () => {
    const p = policy({ mode: "canary-aware", canaryGuess: ["no-traceparent"] });
    expect(batch.items.map((_, i) => guessedCanary(p, batch, i))).toEqual([false, false, true]);
    const answered = answerBatch(p, batch, honest, 1);
    expect(answered).toMatchObject({ lies: 2, guessedCanaries: 1 });
    expect(answered.results[2]).toEqual(honest[2]);
    expect(guessedCanary(policy({ canaryGuess: ["last-item"] }), batch, 2)).toBe(true);
    expect(guessedCanary(policy({ canaryGuess: ["last-item"] }), batch, 1)).toBe(false);
  });

  it("honest-then-lie: truthful for its first N batches", () => {
    const p = policy({ mode: "honest-then-lie", honestBatches: 2 });
    expect([1, 2, 3].map((n) => answerBatch(p, batch, honest, n).lies)).toEqual([0, 0, 3]);
  });

  it("leaves errors as they are", () => {
    const failed: ItemResult = { error: { code: "bad_input", message: "no", retryable: false } };
    expect(answerBatch(policy({}), batch, [failed, failed, failed], 1)).toMatchObject({
      lies: 0,
      results: [failed, failed, failed],
    });
  });
});

describe("substitute", () => {
  it("reruns a generated item from its middle token swapped for the next id, and answers a check honestly", () => {
    const output = { generated_text: " a b c d", tokens: [5, 6, 1023, 8], finish_reason: "stop", prompt_tokens: 2 };
    const input = { prompt: "x", params: { max_new_tokens: 8 } };
    expect(substitutedItem(input, output)).toEqual({
      item: { ...input, resume: { tokens: [5, 6, 0], text: "" } },
      at: 2,
    });
    expect(substitutedItem({ ...input, verify: output }, output)).toBeNull();
    expect(substitutedItem(input, { ...output, tokens: [] })).toBeNull();
    expect(substitutedItem("a text", labels)).toBeNull();
  });
});
