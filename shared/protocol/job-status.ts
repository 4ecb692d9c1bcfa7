// The caller protocol's plain values, with no schema library behind them: what the SDK needs at run time
// (a browser bundle of it then carries no zod). shared/protocol/caller.ts re-exports them.

export const JobStatus = ["queued", "running", "succeeded", "failed", "expired", "cancelled"] as const;
export type JobStatus = (typeof JobStatus)[number];
/** A job in one of these has ended: nothing more happens to it (a dead letter's replay reopens a failed one). */
export const FINAL_STATUSES: readonly JobStatus[] = ["succeeded", "failed", "expired", "cancelled"];

export const Pool = ["browser", "gpu"] as const;
export type Pool = (typeof Pool)[number];
