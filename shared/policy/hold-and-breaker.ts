// How long an untrusted worker may hold a batch before it is hedged, how many it may hold, and the circuit
// breaker every worker goes through: pure decisions the model queue applies ("The Tail at Scale"'s hedged
// requests; the closed / open / half-open breaker of Hystrix and Envoy's outlier detection). Tested in Node.

export interface HedgeRule {
  /** An untrusted batch is hedged after this multiple of the time such a batch is expected to take. */
  factor: number;
  /** ...but never sooner than this, so a model whose batches take microseconds is not hedged on jitter. */
  minMs: number;
  /** ...and never later than a lease, which also bounds an untrusted worker's extends. */
  maxMs: number;
}

/** Expected time of a batch of `items` at `msPerItem` (observed), or null before anything was observed. */
export function expectedBatchMs(msPerItem: number | null, items: number): number | null {
  return msPerItem === null ? null : msPerItem * Math.max(1, items);
}

/**
 * When an untrusted lease taken at `leasedAt` is hedged: its items become the trusted pool's as well and
 * the lease's holder may extend it no further. Before the pool's speed is known, after `maxMs`.
 */
export function hedgeAt(leasedAt: number, expectedMs: number | null, rule: HedgeRule): number {
  const after = expectedMs === null ? rule.maxMs : Math.min(rule.maxMs, Math.max(rule.minMs, rule.factor * expectedMs));
  return leasedAt + after;
}

/** Per-item compute, smoothed (EWMA) over completed batches; the first observation is taken as it is. */
export function smoothedMsPerItem(previous: number | null, batchMs: number, items: number, weight = 0.2): number {
  const sample = Math.max(0, batchMs) / Math.max(1, items);
  return previous === null ? sample : previous + weight * (sample - previous);
}

export interface HoldCaps {
  /** Active leases one donor identity may hold at once, whatever concurrency it claims. */
  perDonor: number;
  /** Active leases all donors of one client network may hold at once. */
  perNetwork: number;
}

/** Whether a donor holding `donorHeld` leases, on a network holding `networkHeld`, may take one more. */
export function mayHoldMore(donorHeld: number, networkHeld: number | null, caps: HoldCaps): boolean {
  return donorHeld < caps.perDonor && (networkHeld === null || networkHeld < caps.perNetwork);
}

// ---- circuit breaker ------------------------------------------------------------------------------

export interface BreakerRule {
  /** Failed batches in a row that open the breaker. */
  failures: number;
  /** How long an open breaker gives the worker nothing before one probe batch. */
  cooldownMs: number;
}

/** closed: leases as usual; open: none until `until`; half-open: one probe batch (of one item) in flight. */
export type BreakerState =
  | { state: "closed"; failures: number }
  | { state: "open"; failures: number; until: number }
  | { state: "half-open"; failures: number; probing: boolean };

export const BREAKER_CLOSED: BreakerState = Object.freeze({ state: "closed", failures: 0 }) as BreakerState;

/** The breaker as it stands at `now`: an open one whose cooldown is over lets one probe through. */
export function breakerAt(b: BreakerState, now: number): BreakerState {
  return b.state === "open" && b.until <= now ? { state: "half-open", failures: b.failures, probing: false } : b;
}

/** Whether the worker may be given a batch now, and of how many items at most (a probe is one item). */
export function breakerAllows(b: BreakerState, now: number): { allowed: boolean; maxItems: number | null } {
  const at = breakerAt(b, now);
  if (at.state === "closed") return { allowed: true, maxItems: null };
  if (at.state === "open") return { allowed: false, maxItems: 0 };
  return { allowed: !at.probing, maxItems: 1 };
}

/** A batch was handed to the worker: a half-open breaker's probe is now in flight. */
export function breakerLeased(b: BreakerState, now: number): BreakerState {
  const at = breakerAt(b, now);
  return at.state === "half-open" ? { ...at, probing: true } : at;
}

/**
 * A batch of the worker ended. Success closes the breaker; a failure (expired, lost, hedged, or every item
 * an error) counts, and opens it after `failures` in a row — at once when the probe of a half-open one fails.
 */
export function breakerAfter(b: BreakerState, ok: boolean, now: number, rule: BreakerRule): BreakerState {
  if (ok) return BREAKER_CLOSED;
  const at = breakerAt(b, now);
  const failures = at.failures + 1;
  if (at.state === "half-open" || failures >= rule.failures)
    return { state: "open", failures, until: now + rule.cooldownMs };
  return { state: "closed", failures };
}

// ---- what a failure costs an item -----------------------------------------------------------------

/**
 * Which budget an item's failed delivery is charged to. A trusted worker's failure spends an attempt (it
 * is the evidence that an input is poison). An untrusted worker's failure (a closed tab, a hoarder, a donor
 * error) spends the item's donor-fault budget instead, so no donor can dead-letter an honest item; once that
 * budget is spent, the item runs on the trusted pool only.
 */
export function chargeFor(
  trusted: boolean,
  donorFaults: number,
  budget: number,
): "attempt" | "donor-fault" | "trusted-only" {
  if (trusted) return "attempt";
  return donorFaults + 1 >= budget ? "trusted-only" : "donor-fault";
}
