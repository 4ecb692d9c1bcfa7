// Deep comparison for model outputs: every number within `tolerance` (batches of other sizes, or other
// runtimes, may differ in the last bits), everything else equal.
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
