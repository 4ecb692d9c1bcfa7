import { describe, expect, it } from "vitest";
import { ModelConfig, VERIFICATION_DEFAULTS } from "../../shared/config/model-config.ts";
import { outputProblem } from "../../shared/policy/output-shape.ts";
import {
  firstDifference,
  numbersAgree,
  outputsDiffer,
  shouldVerify,
  type Tolerance,
} from "../../shared/policy/verification.ts";

const tol: Tolerance = { abs: 1e-3, rel: 1e-3 };

describe("numbersAgree", () => {
  it("accepts a difference within abs + rel * the larger magnitude, and no more", () => {
    expect(numbersAgree(0.5, 0.5009, tol)).toBe(true); // 0.0009 <= 0.001 + 0.0005
    expect(numbersAgree(0.5, 0.5016, tol)).toBe(false); // 0.0016 > 0.001 + 0.0005016
    expect(numbersAgree(1000, 1001, tol)).toBe(true); // 1 <= 0.001 + 1.001
    expect(numbersAgree(1000, 1002.5, tol)).toBe(false);
    expect(numbersAgree(0, 0.0011, { abs: 1e-3, rel: 0 })).toBe(false);
  });

  it("is symmetric", () => {
    expect(numbersAgree(100, 100.15, tol)).toBe(numbersAgree(100.15, 100, tol));
  });

  it("never lets a non-finite number agree with a finite one", () => {
    expect(numbersAgree(Number.NaN, 0, tol)).toBe(false);
    expect(numbersAgree(Number.POSITIVE_INFINITY, 1e308, tol)).toBe(false);
  });
});

describe("firstDifference", () => {
  it("answers null for outputs that agree, recursively", () => {
    const a = { logits: [0.1, 0.2, [0.3]], label: "x", ok: true, none: null };
    const b = { none: null, ok: true, label: "x", logits: [0.1004, 0.2, [0.3002]] };
    expect(firstDifference(a, b, tol)).toBeNull();
  });

  it("names where outputs first differ", () => {
    expect(firstDifference([1, 2, 3], [1, 2.5, 3], tol)).toBe("[1]: 2 vs 2.5");
    expect(firstDifference([1, 2], [1, 2, 3], tol)).toBe("output: 2 vs 3 elements");
    expect(firstDifference({ a: { b: "x" } }, { a: { b: "y" } }, tol)).toBe('.a.b: "x" vs "y"');
    expect(firstDifference({ a: 1 }, { a: 1, b: 2 }, tol)).toMatch(/^output: keys/);
    expect(firstDifference([1], { 0: 1 }, tol)).not.toBeNull();
    expect(firstDifference("1", 1, tol)).not.toBeNull();
    expect(firstDifference(true, 1, tol)).not.toBeNull();
    expect(firstDifference(null, 0, tol)).not.toBeNull();
  });
});

describe("outputsDiffer", () => {
  it("compares text-classification outputs by label, so a near tie listed the other way round agrees", () => {
    const a = [
      { label: "POSITIVE", score: 0.5002 },
      { label: "NEGATIVE", score: 0.4998 },
    ];
    const b = [
      { label: "NEGATIVE", score: 0.5001 },
      { label: "POSITIVE", score: 0.4999 },
    ];
    expect(outputsDiffer("text-classification", a, b, tol)).toBeNull();
    expect(outputsDiffer("tensor", a, b, tol)).not.toBeNull();
    const swapped = [
      { label: "POSITIVE", score: 0.2 },
      { label: "NEGATIVE", score: 0.8 },
    ];
    expect(outputsDiffer("text-classification", a, swapped, tol)).toMatch(/score/);
  });
});

describe("shouldVerify (adaptive replication)", () => {
  const policy = { trustAfter: 5, sampleRate: 0.1 };

  it("verifies every batch of a worker until it has trust_after agreeing verifications", () => {
    for (let agreed = 0; agreed < 5; agreed++) expect(shouldVerify(agreed, policy, 0.99)).toBe(true);
  });

  it("then verifies only a sample_rate share of them", () => {
    expect(shouldVerify(5, policy, 0.05)).toBe(true);
    expect(shouldVerify(5, policy, 0.1)).toBe(false);
    expect(shouldVerify(50, policy, 0.99)).toBe(false);
    const draws = Array.from({ length: 1000 }, (_, i) => i / 1000);
    expect(draws.filter((r) => shouldVerify(9, policy, r))).toHaveLength(100);
  });

  it("verifies nothing with trust_after 0 and sample_rate 0, everything with sample_rate 1", () => {
    expect(shouldVerify(0, { trustAfter: 0, sampleRate: 0 }, 0)).toBe(false);
    expect(shouldVerify(1_000, { trustAfter: 0, sampleRate: 1 }, 0.999)).toBe(true);
  });
});

describe("outputProblem", () => {
  it("wants text-classification outputs as a non-empty array of {label, score in [0, 1]}", () => {
    expect(outputProblem("text-classification", [{ label: "a", score: 0.7 }])).toBeNull();
    expect(outputProblem("text-classification", [])).toMatch(/non-empty array/);
    expect(outputProblem("text-classification", "POSITIVE")).toMatch(/non-empty array/);
    expect(outputProblem("text-classification", [{ label: "a", score: 1.5 }])).toMatch(/\[0\]\.score/);
    expect(outputProblem("text-classification", [{ label: "a", score: -0.1 }])).toMatch(/\[0\]\.score/);
    expect(outputProblem("text-classification", [{ label: 3, score: 0.5 }])).toMatch(/exactly \{label/);
    expect(outputProblem("text-classification", [{ label: "a", score: 0.5, extra: 1 }])).toMatch(/exactly/);
    expect(outputProblem("text-classification", [{ label: "a", score: "0.5" }])).toMatch(/finite/);
  });

  it("wants feature-extraction outputs as finite vectors of the model's length once known", () => {
    expect(outputProblem("feature-extraction", [0.1, -0.2])).toBeNull();
    expect(outputProblem("feature-extraction", [])).toMatch(/non-empty/);
    expect(outputProblem("feature-extraction", [0.1, null])).toMatch(/\[1\] must be a finite number/);
    expect(outputProblem("feature-extraction", [0.1, 0.2], { dimensions: 2 })).toBeNull();
    expect(outputProblem("feature-extraction", [0.1, 0.2, 0.3], { dimensions: 2 })).toMatch(/3 dimensions/);
  });

  it("wants tensor outputs whose data holds the product of their shape", () => {
    const t = { name: "logits", shape: [1, 2], datatype: "FP32", data: [0.1, 0.9] };
    expect(outputProblem("tensor", [t])).toBeNull();
    expect(outputProblem("tensor", t)).toBeNull();
    expect(outputProblem("tensor", [])).toMatch(/non-empty array of tensors/);
    expect(outputProblem("tensor", [{ ...t, data: [0.1] }])).toMatch(/must hold 2 values/);
    expect(outputProblem("tensor", [{ ...t, shape: [1, -2] }])).toMatch(/non-negative integers/);
    expect(outputProblem("tensor", [{ ...t, datatype: "FP16" }])).toMatch(/datatype/);
    expect(outputProblem("tensor", [{ ...t, data: [0.1, "x"] }])).toMatch(/data\[1\]/);
    expect(outputProblem("tensor", [{ name: "x", shape: [2] }])).toMatch(/exactly \{name, shape, datatype, data\}/);
    expect(outputProblem("tensor", [{ ...t, datatype: "BOOL", data: [true, false] }])).toBeNull();
    expect(outputProblem("tensor", [{ ...t, datatype: "BOOL", data: [1, 0] }])).toMatch(/boolean/);
  });

  it("has nothing to say about tasks without a known shape", () => {
    expect(outputProblem("custom", "anything")).toBeNull();
  });
});

describe("verification defaults", () => {
  it("are safe: on, every batch of a new browser worker verified, canaries and quarantine on", () => {
    const { verification } = ModelConfig.parse({ name: "m" });
    expect(verification).toEqual(VERIFICATION_DEFAULTS);
    expect(verification.enabled).toBe(true);
    expect(verification.trust_after).toBeGreaterThan(0);
    expect(verification.sample_rate).toBeGreaterThan(0);
    expect(verification.canary_rate).toBeGreaterThan(0);
    expect(verification.quarantine_ms).toBeGreaterThan(0);
  });

  it("fill in what a partial section leaves out, and refuse what is out of range", () => {
    const { verification } = ModelConfig.parse({
      name: "m",
      verification: { sample_rate: 0.5, tolerance: { abs: 0.01 } },
    });
    expect(verification).toMatchObject({ sample_rate: 0.5, trust_after: 5, tolerance: { abs: 0.01, rel: 1e-3 } });
    expect(ModelConfig.safeParse({ name: "m", verification: { sample_rate: 2 } }).success).toBe(false);
    expect(ModelConfig.safeParse({ name: "m", verification: { trust_after: -1 } }).success).toBe(false);
    expect(ModelConfig.safeParse({ name: "m", verification: { sampling: 0.5 } }).success).toBe(false);
  });
});
