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

/** What a worker's hello says of its capacity (shared/protocol's WorkerInfo). */
export interface WorkerCapacity {
  max_batch_size: number;
  max_concurrent_batches: number;
  max_items_in_flight?: number | undefined;
}

/**
 * The most items a worker holding `leases` batches of `items` items in all may take in its next batch: none
 * once it holds max_concurrent_batches or max_items_in_flight, else max_batch_size or what is left of
 * max_items_in_flight, whichever is less. A worker whose batches join one run (text generation) thus gets
 * only what that run has rows for, and the rest stays queued where other workers and scaling see it.
 */
export function workerRoom(w: WorkerCapacity, leases: number, items: number): number {
  if (leases >= w.max_concurrent_batches) return 0;
  if (w.max_items_in_flight === undefined) return w.max_batch_size;
  return Math.max(0, Math.min(w.max_batch_size, w.max_items_in_flight - items));
}
