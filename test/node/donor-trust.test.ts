// The pure donor-pool policies: independence and standing (shared/policy/donor-trust.ts), and the hedge
// time, hold caps, circuit breaker and failure budgets (shared/policy/hold-and-breaker.ts).
import { describe, expect, it } from "vitest";
import {
  BREAKER_CLOSED,
  breakerAfter,
  breakerAllows,
  breakerLeased,
  chargeFor,
  donorsCanRelease,
  hedgeAt,
  independent,
  judgeStrict,
  mayHoldMore,
  networkOfKey,
  type RunSource,
  smoothedMsPerItem,
} from "../../shared/index.ts";

const src = (identity: string, network: string | null, agreed = 5): RunSource => ({ identity, network, agreed });
const rule = { trustAfter: 5 };
const differ = (a: unknown, b: unknown) => (a === b ? null : `${String(a)} vs ${String(b)}`);

describe("independence and standing", () => {
  it("counts donors independent only as other identities on other known networks", () => {
    expect(independent(src("a", "n1"), src("b", "n2"))).toBe(true);
    expect(independent(src("a", "n1"), src("b", "n1"))).toBe(false);
    expect(independent(src("a", "n1"), src("a", "n2"))).toBe(false);
    expect(independent(src("a", null), src("b", "n2"))).toBe(false);
  });

  it("lets donors release work alone only with two in good standing on different networks", () => {
    expect(donorsCanRelease([src("a", "n1"), src("b", "n1")], rule)).toBe(false);
    expect(donorsCanRelease([src("a", "n1"), src("b", "n2", 4)], rule)).toBe(false);
    expect(donorsCanRelease([src("a", "n1"), src("b", "n2")], rule)).toBe(true);
  });

  it("keys an IPv4 address by its /24 and an IPv6 one by its /48", () => {
    expect(networkOfKey("192.0.2.77")).toBe("192.0.2.0/24");
    expect(networkOfKey("2001:db8:1:2::/64")).toBe("2001:db8:1::/48");
    expect(networkOfKey("2001:db8:1:ffff::/64")).toBe("2001:db8:1::/48");
    expect(networkOfKey(undefined)).toBeNull();
  });
});

describe("judgeStrict", () => {
  const c = (worker: string, s: RunSource, output: unknown) => ({ worker, source: s, output });

  it("lets a trusted run decide alone, and names whoever disagreed", () => {
    const v = judgeStrict(
      [c("x", src("a", "n1"), 1), c("y", src("b", "n2"), 2)],
      { output: 1, source: null },
      differ,
      rule,
    );
    expect(v).toMatchObject({ kind: "final", output: 1, agree: ["x"], disagree: ["y"], trusted: true });
  });

  it("never releases on the word of donors that are not independent, however many agree", () => {
    const colluders = [c("x", src("a", "n1"), 9), c("y", src("b", "n1"), 9)];
    expect(judgeStrict(colluders, { output: 9, source: src("c", "n1") }, differ, rule).kind).toBe("undecided");
  });

  it("releases on an independent donor in good standing, and blames nobody for a disagreement", () => {
    const v = judgeStrict(
      [c("x", src("a", "n1"), 1), c("y", src("b", "n3"), 2)],
      { output: 1, source: src("c", "n2") },
      differ,
      rule,
    );
    expect(v).toMatchObject({ kind: "final", agree: ["x"], disagree: [], trusted: false });
    expect(judgeStrict([c("x", src("a", "n1", 0), 1)], { output: 1, source: src("c", "n2") }, differ, rule).kind).toBe(
      "undecided",
    );
  });
});

describe("hedging and holding", () => {
  const hedge = { factor: 4, minMs: 1_000, maxMs: 30_000 };

  it("hedges at a multiple of the expected time, within [minMs, maxMs], and at maxMs before anything was observed", () => {
    expect(hedgeAt(0, 500, hedge)).toBe(2_000);
    expect(hedgeAt(0, 10, hedge)).toBe(1_000);
    expect(hedgeAt(0, 60_000, hedge)).toBe(30_000);
    expect(hedgeAt(100, null, hedge)).toBe(30_100);
  });

  it("smooths the per-item time, taking the first observation as it is", () => {
    expect(smoothedMsPerItem(null, 100, 10)).toBe(10);
    expect(smoothedMsPerItem(10, 200, 10)).toBeCloseTo(12);
  });

  it("caps what one donor and one network hold", () => {
    const caps = { perDonor: 2, perNetwork: 3 };
    expect(mayHoldMore(1, 2, caps)).toBe(true);
    expect(mayHoldMore(2, 0, caps)).toBe(false);
    expect(mayHoldMore(0, 3, caps)).toBe(false);
    expect(mayHoldMore(0, null, caps)).toBe(true);
  });

  it("charges a trusted failure to attempts and an untrusted one to the donor budget, then trusted-only", () => {
    expect(chargeFor(true, 5, 2)).toBe("attempt");
    expect(chargeFor(false, 0, 2)).toBe("donor-fault");
    expect(chargeFor(false, 1, 2)).toBe("trusted-only");
  });
});

describe("circuit breaker", () => {
  const breaker = { failures: 2, cooldownMs: 100 };

  it("opens after failures in a row, lets one probe of one item through after the cooldown, and closes on success", () => {
    let b = breakerAfter(BREAKER_CLOSED, false, 0, breaker);
    expect(breakerAllows(b, 0)).toEqual({ allowed: true, maxItems: null });
    b = breakerAfter(b, false, 10, breaker);
    expect(breakerAllows(b, 50).allowed).toBe(false);
    expect(breakerAllows(b, 110)).toEqual({ allowed: true, maxItems: 1 });
    b = breakerLeased(b, 110);
    expect(breakerAllows(b, 120).allowed).toBe(false); // one probe at a time
    expect(breakerAfter(b, true, 130, breaker)).toEqual(BREAKER_CLOSED);
  });

  it("opens again at once when the probe fails, and a success in between resets the count", () => {
    const open = breakerAfter(breakerAfter(BREAKER_CLOSED, false, 0, breaker), false, 0, breaker);
    const probing = breakerLeased(open, 200);
    expect(breakerAfter(probing, false, 210, breaker)).toMatchObject({ state: "open", until: 310 });
    const once = breakerAfter(BREAKER_CLOSED, false, 0, breaker);
    expect(breakerAfter(breakerAfter(once, true, 1, breaker), false, 2, breaker)).toEqual({
      state: "closed",
      failures: 1,
    });
  });
});
