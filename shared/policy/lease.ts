// Lease and retry policy (SQS visibility timeout, BullMQ lock renewal and backoff). Pure functions.

export interface RetryPolicy {
  maxAttempts: number;
  backoffMs: number;
  backoffMaxMs: number;
}

/** Workers renew at half the lease, as BullMQ's lockRenewTime = lockDuration / 2. */
export function renewAfterMs(leaseMs: number): number {
  return Math.max(1, Math.floor(leaseMs / 2));
}

export function leaseDeadline(now: number, leaseMs: number): number {
  return now + leaseMs;
}

/** Exponential backoff before attempt `attempts + 1`: base * 2^(attempts-1), capped. */
export function retryBackoffMs(attempts: number, policy: RetryPolicy): number {
  if (attempts <= 0 || policy.backoffMs === 0) return 0;
  const raw = policy.backoffMs * 2 ** Math.min(attempts - 1, 30);
  return Math.min(raw, policy.backoffMaxMs);
}

export type AfterFailure = { kind: "retry"; availableAt: number } | { kind: "dead-letter" };

/**
 * What happens to an item whose delivery failed (lease expired, worker released it, or a retryable error).
 * `attempts` counts deliveries so far, the one that just failed included.
 */
export function afterFailedDelivery(attempts: number, now: number, policy: RetryPolicy): AfterFailure {
  if (attempts >= policy.maxAttempts) return { kind: "dead-letter" };
  return { kind: "retry", availableAt: now + retryBackoffMs(attempts, policy) };
}
