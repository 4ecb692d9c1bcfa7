// The phases of one call as the coordinator saw them, read from the request's own clock and the job view
// the queue answers (created_at and timings: queued until its last lease, finished at total_ms). Pure, so
// edge/telemetry/call-trace.ts turns them into spans and test/node checks them without a runtime.
import { FINAL_STATUSES, type JobView } from "../../shared/index.ts";

export type PhaseName = "accept" | "queue wait" | "lease" | "answer";

/** One phase, in ms since the epoch. */
export interface Phase {
  name: PhaseName;
  start: number;
  end: number;
}

/**
 * accept: the request's arrival to the job's creation in its queue; queue wait: creation to the last lease
 * (or to the end, for a job no worker took); lease: that lease to the job's end; answer: the job's end to
 * the moment the coordinator answers. A job still open (a call that does not wait, or one answered 504) has
 * only the phases that have ended. A replayed Idempotency-Key job was run for an earlier call: none.
 */
export function callPhases(job: JobView, receivedAt: number, answeredAt: number, replayed = false): Phase[] {
  if (replayed) return [];
  const created = Math.max(job.created_at, receivedAt);
  const phases: Phase[] = [{ name: "accept", start: receivedAt, end: created }];
  const t = job.timings;
  if (!t || !FINAL_STATUSES.includes(job.status)) return phases;
  const leasedAt = job.created_at + t.queued_ms;
  const finishedAt = job.created_at + t.total_ms;
  // queued_ms runs to the end when no lease was ever taken; a lease that ended in the ms it began has compute.
  const leased = t.queued_ms < t.total_ms || t.compute_ms > 0;
  phases.push({ name: "queue wait", start: created, end: Math.max(created, leasedAt) });
  if (leased) phases.push({ name: "lease", start: Math.max(created, leasedAt), end: Math.max(created, finishedAt) });
  phases.push({ name: "answer", start: Math.max(created, finishedAt), end: Math.max(created, finishedAt, answeredAt) });
  return phases;
}
