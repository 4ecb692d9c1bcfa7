import { describe, expect, it } from "vitest";
import {
  afterFailedDelivery,
  leaseDeadline,
  type RetryPolicy,
  renewAfterMs,
  retryBackoffMs,
} from "../../shared/policy/lease.ts";

const policy: RetryPolicy = { maxAttempts: 3, backoffMs: 100, backoffMaxMs: 5_000 };

describe("renewAfterMs", () => {
  it("renews at half the lease", () => {
    expect(renewAfterMs(30_000)).toBe(15_000);
    expect(renewAfterMs(150)).toBe(75);
  });

  it("rounds down odd leases", () => {
    expect(renewAfterMs(151)).toBe(75);
  });

  it("never answers less than 1 ms", () => {
    expect(renewAfterMs(1)).toBe(1);
    expect(renewAfterMs(0)).toBe(1);
  });
});

describe("leaseDeadline", () => {
  it("is now plus the lease", () => {
    expect(leaseDeadline(1_000, 150)).toBe(1_150);
  });
});

describe("retryBackoffMs", () => {
  it("is 0 before any delivery", () => {
    expect(retryBackoffMs(0, policy)).toBe(0);
    expect(retryBackoffMs(-1, policy)).toBe(0);
  });

  it("doubles with every attempt: base * 2^(attempts-1)", () => {
    expect([1, 2, 3, 4, 5].map((a) => retryBackoffMs(a, policy))).toEqual([100, 200, 400, 800, 1_600]);
  });

  it("is capped at backoffMaxMs", () => {
    expect(retryBackoffMs(6, policy)).toBe(3_200);
    expect(retryBackoffMs(7, policy)).toBe(5_000);
    expect(retryBackoffMs(50, policy)).toBe(5_000);
  });

  it("stays finite and capped for absurd attempt counts", () => {
    const big = { ...policy, backoffMaxMs: Number.MAX_SAFE_INTEGER };
    const v = retryBackoffMs(10_000, big);
    expect(Number.isFinite(v)).toBe(true);
    expect(v).toBe(100 * 2 ** 30);
  });

  it("is 0 for every attempt when the base is 0", () => {
    const none = { ...policy, backoffMs: 0 };
    expect([1, 2, 10].map((a) => retryBackoffMs(a, none))).toEqual([0, 0, 0]);
  });

  it("is 0 when the cap is 0", () => {
    expect(retryBackoffMs(3, { ...policy, backoffMaxMs: 0 })).toBe(0);
  });
});

describe("afterFailedDelivery", () => {
  it("retries after the backoff while attempts remain", () => {
    expect(afterFailedDelivery(1, 10_000, policy)).toEqual({ kind: "retry", availableAt: 10_100 });
    expect(afterFailedDelivery(2, 10_000, policy)).toEqual({ kind: "retry", availableAt: 10_200 });
  });

  it("dead-letters once the failed delivery was the max_attempts-th", () => {
    expect(afterFailedDelivery(3, 10_000, policy)).toEqual({ kind: "dead-letter" });
  });

  it("dead-letters past max_attempts too", () => {
    expect(afterFailedDelivery(4, 10_000, policy)).toEqual({ kind: "dead-letter" });
  });

  it("with max_attempts 1 never retries", () => {
    expect(afterFailedDelivery(1, 0, { ...policy, maxAttempts: 1 })).toEqual({ kind: "dead-letter" });
  });

  it("with zero backoff the retry is available immediately", () => {
    expect(afterFailedDelivery(1, 42, { ...policy, backoffMs: 0 })).toEqual({ kind: "retry", availableAt: 42 });
  });
});
