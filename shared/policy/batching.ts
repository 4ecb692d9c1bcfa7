// Dynamic batching (Triton's rule): a batch goes out when it is full or when its oldest eligible
// item has waited max_queue_delay_ms, whichever comes first. Pure; the model queue object calls it.

export interface BatchState {
  /** Items eligible now (queued and past any retry backoff). */
  eligible: number;
  /** When the oldest eligible item was enqueued (ms epoch); null when none is eligible. */
  oldestEnqueuedAt: number | null;
  now: number;
  /** The most items the batch may hold: min(model max_batch_size, the worker's capacity). */
  maxBatchSize: number;
  maxQueueDelayMs: number;
}

export type BatchDecision =
  | { kind: "send"; size: number; reason: "full" | "delay" }
  | { kind: "wait"; until: number }
  | { kind: "empty" };

export function decideBatch(s: BatchState): BatchDecision {
  if (s.eligible <= 0 || s.oldestEnqueuedAt === null) return { kind: "empty" };
  if (s.eligible >= s.maxBatchSize) return { kind: "send", size: s.maxBatchSize, reason: "full" };
  const due = s.oldestEnqueuedAt + s.maxQueueDelayMs;
  if (s.now >= due) return { kind: "send", size: s.eligible, reason: "delay" };
  return { kind: "wait", until: due };
}
