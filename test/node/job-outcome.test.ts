import { describe, expect, it } from "vitest";
import { expiredJobMessage, failedJobMessage, jobOutcome } from "../../shared/policy/job-outcome.ts";

describe("jobOutcome", () => {
  it("stays open while any item is queued or leased", () => {
    expect(jobOutcome({ open: 1, failed: 0 })).toBe("open");
    expect(jobOutcome({ open: 2, failed: 3 })).toBe("open");
  });

  it("succeeds when no item is open and none failed", () => {
    expect(jobOutcome({ open: 0, failed: 0 })).toBe("succeeded");
  });

  it("fails when any item failed, however many succeeded", () => {
    expect(jobOutcome({ open: 0, failed: 1 })).toBe("failed");
    expect(jobOutcome({ open: 0, failed: 5 })).toBe("failed");
  });
});

describe("failedJobMessage", () => {
  it("counts the failures and quotes the first", () => {
    expect(failedJobMessage(2, 5, { index: 1, message: "bad token" })).toBe("2 of 5 inputs failed; input 1: bad token");
  });
});

describe("expiredJobMessage", () => {
  it("gives the timeout and how much was done", () => {
    expect(expiredJobMessage(150, 1, 3)).toBe(
      "not served within its timeout of 150 ms (1 of 3 inputs done); retry with a longer timeout_ms or when the queue is shorter",
    );
  });
});
