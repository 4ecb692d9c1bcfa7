// Comparisons the e2e suites share: model outputs with every number within a tolerance (batches of other
// sizes, or other runtimes, may differ in the last bits) and everything else equal; a call that must fail.
import { expect } from "vitest";

export function expectClose(actual: unknown, expected: unknown, tolerance = 1e-4): void {
  if (typeof expected === "number") {
    expect(typeof actual).toBe("number");
    expect(Math.abs((actual as number) - expected)).toBeLessThan(tolerance);
  } else if (Array.isArray(expected)) {
    expect(Array.isArray(actual) && actual.length === expected.length).toBe(true);
    for (const [i, e] of expected.entries()) expectClose((actual as unknown[])[i], e, tolerance);
  } else if (expected && typeof expected === "object") {
    for (const [k, v] of Object.entries(expected)) expectClose((actual as Record<string, unknown>)[k], v, tolerance);
  } else {
    expect(actual).toEqual(expected);
  }
}

/** The promise's rejection, which must be one. */
export async function rejection(promise: Promise<unknown>): Promise<any> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("expected the call to fail");
}
