// The worker protocol: the same operations over a WebSocket (frames below) and over plain HTTP
// (`POST /v1/leases`, `/v1/leases/{id}/extend|complete|release`). Coordinator and workers import these.
import { z } from "zod";
import { Pool } from "./caller.ts";
import { DeltasFrame, LeaseDeltasFrame, TokensFrame } from "./generation.ts";
import { ParsedJson } from "./validate.ts";

export const WORKER_PROTOCOL_VERSION = 1;
/** The most batches a worker may run at once per model (WorkerInfo.max_concurrent_batches). */
export const MAX_CONCURRENT_BATCHES = 64;

export const WorkerInfo = z.object({
  worker_id: z.string().min(1).max(128),
  pool: z.enum(Pool),
  device: z.string().min(1).max(64),
  /** Most items this worker runs in one batch; the coordinator sends min(this, the model's max_batch_size). */
  max_batch_size: z.int().positive().max(4096),
  /** Batches this worker runs at once. */
  max_concurrent_batches: z.int().positive().max(MAX_CONCURRENT_BATCHES).default(1),
  /**
   * Most items this worker holds across its batches at once (a text-generation worker whose batches join one
   * decode: that decode's rows); the coordinator sends a batch no larger than what is left of it, so items the
   * worker could only keep waiting stay queued, for other workers and for scaling. Absent: max_batch_size ×
   * max_concurrent_batches.
   */
  max_items_in_flight: z.int().positive().max(262_144).optional(),
  /** The GPU under a WebGPU worker, as its adapter reports it (Dawn in Node adds the backend), for operators. */
  gpu: z
    .strictObject({
      vendor: z.string().max(128),
      architecture: z.string().max(128),
      device: z.string().max(128),
      description: z.string().max(256),
      backend: z.string().max(32).optional(),
    })
    .optional(),
});
export type WorkerInfo = z.infer<typeof WorkerInfo>;

/**
 * The worker's own span of the item's trace (W3C traceparent), answering the one its batch item carried.
 * Kept only when well formed: a tracing slip never costs a result.
 */
const WorkerSpan = z.string().max(128).optional();

export const ItemResult = z.union([
  z.strictObject({ output: ParsedJson, traceparent: WorkerSpan }),
  z.strictObject({
    traceparent: WorkerSpan,
    error: z.strictObject({
      code: z.string().min(1).max(64),
      message: z.string().max(2000),
      /** A transient failure (out of memory, device lost): the item is tried again, up to max_attempts. */
      retryable: z.boolean().default(false),
    }),
  }),
]);
export type ItemResult = z.infer<typeof ItemResult>;

export const CompleteBody = z.strictObject({
  results: z.array(ItemResult),
  compute_ms: z.number().nonnegative().optional(),
});
export type CompleteBody = z.infer<typeof CompleteBody>;

/**
 * Results of some of a lease's items, sent as each is ready while the rest run on (a generated reply that
 * ended while longer ones decode): those items are settled at once, so their callers have their answers and
 * the worker's room is free again. Only to a batch that asked for it (Batch.item_results); the lease still
 * ends with `complete`, whose results for items settled here are not read again.
 */
export const ItemResultsBody = z.strictObject({
  results: z
    .array(z.strictObject({ pos: z.int().min(0), result: ItemResult }))
    .min(1)
    .max(4096),
});
export type ItemResultsBody = z.infer<typeof ItemResultsBody>;

export const ExtendBody = z.strictObject({ extend_ms: z.int().positive().optional() });
export const ReleaseBody = z.strictObject({ reason: z.string().max(500).optional() });

export const LeaseRequest = WorkerInfo.extend({
  model: z.string().min(1),
  /** Long-poll: how long to wait for a batch before answering 204. */
  wait_ms: z.int().min(0).max(60_000).default(20_000),
}).strict();
export type LeaseRequest = z.infer<typeof LeaseRequest>;

/** Frames a worker sends over its WebSocket. */
export const WorkerFrame = z.discriminatedUnion("type", [
  WorkerInfo.extend({ type: z.literal("hello"), version: z.int().optional() }).strict(),
  ExtendBody.extend({ type: z.literal("extend"), lease_id: z.string().min(1) }),
  CompleteBody.extend({ type: z.literal("complete"), lease_id: z.string().min(1) }),
  ReleaseBody.extend({ type: z.literal("release"), lease_id: z.string().min(1) }),
  ItemResultsBody.extend({ type: z.literal("results"), lease_id: z.string().min(1) }),
  /** Stop sending this socket batches (shutdown): it finishes or releases what it holds, then closes. */
  z.strictObject({ type: z.literal("drain") }),
  /** Take batches again after a drain (a worker that paused rather than shut down). */
  z.strictObject({ type: z.literal("resume") }),
  /**
   * Token deltas of a generating item (generation.ts). Not acknowledged when kept (one per few tokens would
   * double the traffic); a delta that leaves a gap, or names no item of an active lease of this worker, is
   * answered with an `error` frame naming the lease.
   */
  TokensFrame,
  /** Several items' token deltas of one lease (generation.ts), to a coordinator whose welcome says `deltas`. */
  DeltasFrame,
  /** Token deltas of several leases (generation.ts), to a coordinator whose welcome says `lease_deltas`. */
  LeaseDeltasFrame,
]);
export type WorkerFrame = z.infer<typeof WorkerFrame>;

export interface BatchItem {
  id: string;
  input: unknown;
  attempt: number;
  /** The call's W3C traceparent; a worker answers with a span of its own in the item's result. */
  traceparent?: string;
  /** The session the call runs in; its state is the batch's `sessions[id]`. */
  session?: string;
}

export interface Batch {
  lease_id: string;
  model: string;
  deadline: number;
  /** Extend before this many ms pass (half the lease, as BullMQ's lockRenewTime). */
  renew_after_ms: number;
  /** The state of each session the batch's items run in, as it was when the call was made. */
  sessions?: Record<string, unknown>;
  /**
   * Send each item's result in a `results` frame as soon as it is ready (ItemResultsBody), before the lease
   * completes. Set for trusted workers; an untrusted one's results are reviewed as a batch.
   */
  item_results?: boolean;
  items: BatchItem[];
}

export type LeaseOutcome = "ok" | "duplicate" | "stale" | "not_found";

export interface LeaseAck {
  lease_id: string;
  status: LeaseOutcome;
  /** For `ok` extends: the new deadline. */
  deadline?: number;
  message?: string;
}

/**
 * The coordinator takes a lease back because every item in it was cancelled (DELETE /v1/jobs/{id}, or the
 * caller hung up): the worker stops the batch if it can and sends nothing more for it; whatever it still
 * sends is answered `stale` and changes nothing.
 */
export const CancelFrame = z.strictObject({
  type: z.literal("cancel"),
  lease_id: z.string().min(1).max(256),
  reason: z.string().max(500).optional(),
});
export type CancelFrame = z.infer<typeof CancelFrame>;

/** Frames the coordinator sends to a worker. */
export type CoordinatorFrame =
  | CancelFrame
  /**
   * `shards`: the model's queue shards a worker serves, 0..shards-1, each over its own socket (absent: 1);
   * `deltas`: the coordinator takes `deltas` frames (absent: send each delta as its own `tokens` frame);
   * `lease_deltas`: it takes `lease_deltas` frames too (absent: a frame a lease).
   */
  | ({
      type: "welcome";
      model: string;
      lease_ms: number;
      shards?: number;
      deltas?: boolean;
      lease_deltas?: boolean;
    } & Pick<WorkerInfo, "worker_id">)
  | ({ type: "batch" } & Batch)
  | ({ type: "ack"; op: "extend" | "complete" | "release" } & LeaseAck)
  | { type: "draining"; leases_held: number }
  /** A frame the coordinator could not use; lease_id names the lease when the frame was about one. */
  | { type: "error"; code: string; message: string; lease_id?: string };
