import { describe, expect, it } from "vitest";
import { type BatchState, decideBatch, workerRoom } from "../../shared/policy/batching.ts";

const state = (over: Partial<BatchState>): BatchState => ({
  eligible: 1,
  oldestEnqueuedAt: 1_000,
  now: 1_000,
  maxBatchSize: 8,
  maxQueueDelayMs: 5,
  ...over,
});

describe("decideBatch (Triton's dynamic batching rule)", () => {
  it("is empty when nothing is eligible", () => {
    expect(decideBatch(state({ eligible: 0, oldestEnqueuedAt: null }))).toEqual({ kind: "empty" });
  });

  it("is empty when eligible is 0 even if a stale oldest timestamp is passed", () => {
    expect(decideBatch(state({ eligible: 0, oldestEnqueuedAt: 1_000, now: 99_999 }))).toEqual({ kind: "empty" });
  });

  it("is empty when no oldest timestamp is known", () => {
    expect(decideBatch(state({ eligible: 3, oldestEnqueuedAt: null }))).toEqual({ kind: "empty" });
  });

  it("sends a full batch as soon as exactly max_batch_size items are eligible, without waiting", () => {
    expect(decideBatch(state({ eligible: 8, now: 1_000 }))).toEqual({ kind: "send", size: 8, reason: "full" });
  });

  it("sends only max_batch_size when more items are eligible", () => {
    expect(decideBatch(state({ eligible: 20, now: 1_000 }))).toEqual({ kind: "send", size: 8, reason: "full" });
  });

  it("prefers 'full' over 'delay' when both hold", () => {
    expect(decideBatch(state({ eligible: 9, now: 5_000 }))).toEqual({ kind: "send", size: 8, reason: "full" });
  });

  it("waits until the oldest item has waited max_queue_delay_ms", () => {
    expect(decideBatch(state({ eligible: 3, oldestEnqueuedAt: 1_000, now: 1_002 }))).toEqual({
      kind: "wait",
      until: 1_005,
    });
  });

  it("sends a partial batch exactly when the delay is reached", () => {
    expect(decideBatch(state({ eligible: 3, oldestEnqueuedAt: 1_000, now: 1_005 }))).toEqual({
      kind: "send",
      size: 3,
      reason: "delay",
    });
  });

  it("sends a partial batch after the delay has passed", () => {
    expect(decideBatch(state({ eligible: 3, oldestEnqueuedAt: 1_000, now: 1_500 }))).toEqual({
      kind: "send",
      size: 3,
      reason: "delay",
    });
  });

  it("with delay 0 sends whatever is eligible at once", () => {
    expect(decideBatch(state({ eligible: 1, maxQueueDelayMs: 0, now: 1_000 }))).toEqual({
      kind: "send",
      size: 1,
      reason: "delay",
    });
  });

  it("waits until oldest + delay when the clock reads earlier than the oldest item", () => {
    expect(decideBatch(state({ eligible: 2, oldestEnqueuedAt: 1_000, now: 990, maxQueueDelayMs: 0 }))).toEqual({
      kind: "wait",
      until: 1_000,
    });
  });

  it("with a batch size of 1 every single item is a full batch", () => {
    expect(decideBatch(state({ eligible: 1, maxBatchSize: 1, maxQueueDelayMs: 1_000 }))).toEqual({
      kind: "send",
      size: 1,
      reason: "full",
    });
  });
});

describe("workerRoom", () => {
  const worker = { max_batch_size: 8, max_concurrent_batches: 4 };

  it("is the worker's max_batch_size until it holds max_concurrent_batches, then none", () => {
    expect(workerRoom(worker, 0, 0)).toBe(8);
    expect(workerRoom(worker, 3, 24)).toBe(8);
    expect(workerRoom(worker, 4, 4)).toBe(0);
  });

  it("is what is left of max_items_in_flight when that is less, and none once it is reached or passed", () => {
    const rows = { ...worker, max_items_in_flight: 10 };
    expect(workerRoom(rows, 0, 0)).toBe(8);
    expect(workerRoom(rows, 1, 6)).toBe(4);
    expect(workerRoom(rows, 2, 10)).toBe(0);
    // A batch a shard sent before the worker paused it can leave it over its limit for a while.
    expect(workerRoom(rows, 2, 13)).toBe(0);
    expect(workerRoom(rows, 4, 0)).toBe(0);
  });
});
