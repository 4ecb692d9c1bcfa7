// When the SDK asks again after a 429 (queue_full) or 503 (queue unavailable): after the answer's
// Retry-After when it has one, else after a capped exponential backoff with jitter, the policy the
// workers reconnect with (shared/policy/lease.ts). Used by transport.ts.
import { retryBackoffMs } from "../../shared/policy/lease.ts";

/** The answers worth asking again: the coordinator says "retry later" with each. */
export const RETRY_STATUSES: ReadonlySet<number> = new Set([429, 503]);

export const RETRY_DEFAULTS = {
  /** Further tries after the first; 0 turns retrying off. */
  maxRetries: 3,
  /** Backoff without Retry-After: 500 ms doubling to 8 s, each scaled by a random 0.5 to 1. */
  backoffMs: 500,
  backoffMaxMs: 8_000,
  /** A Retry-After longer than this is not waited out: the error is thrown at once, with retryAfterS. */
  maxRetryAfterMs: 60_000,
} as const;

/** Retry-After (RFC 9110 section 10.2.3) in seconds: delay-seconds or an HTTP-date; undefined if absent or unreadable. */
export function parseRetryAfter(header: string | null, now = Date.now()): number | undefined {
  const text = header?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

/**
 * How long to wait before retry number `retry` (1 for the first): Retry-After to the millisecond
 * when the server gave one, never less; otherwise the jittered backoff. null: too long to wait.
 */
export function retryDelayMs(retry: number, retryAfterS: number | undefined, random = Math.random): number | null {
  if (retryAfterS !== undefined) {
    const ms = retryAfterS * 1000;
    return ms > RETRY_DEFAULTS.maxRetryAfterMs ? null : ms;
  }
  const backoff = retryBackoffMs(retry, { ...RETRY_DEFAULTS, maxAttempts: Number.POSITIVE_INFINITY });
  // Jitter, so callers refused together do not come back together.
  return Math.round(backoff * (0.5 + random() / 2));
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
