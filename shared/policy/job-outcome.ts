// How a job ends once its items are settled, and the summary a caller reads on an unsuccessful job.
// Pure; the model queue's job store calls it when an item settles and when a job's deadline passes.
import type { JobStatus } from "../protocol/caller.ts";

/** A job's items by state: `open` is queued or leased, `failed` is failed for good. */
export interface ItemCounts {
  open: number;
  failed: number;
}

export type JobOutcome = "open" | Extract<JobStatus, "succeeded" | "failed">;

/** Open while any item is; then succeeded when every item did, else failed (one failure fails the job). */
export function jobOutcome(counts: ItemCounts): JobOutcome {
  if (counts.open > 0) return "open";
  return counts.failed > 0 ? "failed" : "succeeded";
}

/** The first failed input (lowest index) stands for all of them, with the count so none is hidden. */
export function failedJobMessage(failed: number, total: number, first: { index: number; message: string }): string {
  return `${failed} of ${total} inputs failed; input ${first.index}: ${first.message}`;
}

export function expiredJobMessage(timeoutMs: number, done: number, total: number): string {
  return `not served within its timeout of ${timeoutMs} ms (${done} of ${total} inputs done); retry with a longer timeout_ms or when the queue is shorter`;
}
