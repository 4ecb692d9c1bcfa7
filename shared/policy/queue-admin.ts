// Decisions behind the queue's admin and safety operations (issue 17): which leases a cancel takes back
// from their workers, which pools could run a call (and what to say when none has a worker), and what an
// Idempotency-Key may be. Pure; edge/model-queue/job-admin.ts and edge/submit.ts call them.
import type { Pool } from "../protocol/job-status.ts";

/**
 * What a cancelled job's leased items mean for their leases: a lease holding nothing but the job's items
 * (canaries aside) is taken back and its worker told to stop; a lease shared with other jobs runs on, and
 * the cancelled items' results are dropped when it completes.
 */
export function leasesToStop(
  leased: readonly { lease_id: string; job_id: string }[],
  jobId: string,
): { stop: string[]; shared: string[] } {
  const others = new Set<string>();
  const mine = new Set<string>();
  for (const item of leased) (item.job_id === jobId ? mine : others).add(item.lease_id);
  const stop = [...mine].filter((id) => !others.has(id));
  const shared = [...mine].filter((id) => others.has(id));
  return { stop, shared };
}

/**
 * The pools that could run a call: both for a routed call; the gpu pool for one pinned there; a call pinned
 * to the browser pool goes to the trusted pool too while no donor could take it (pool-router.ts).
 */
export function poolsThatCanRun(pinned: Pool | null | undefined): Pool[] {
  return pinned === "gpu" ? ["gpu"] : ["browser", "gpu"];
}

/** "the gpu pool" or "the browser or gpu pool", for messages. */
function poolNames(pools: readonly Pool[]): string {
  return `the ${pools.join(" or ")} pool`;
}

/** Why no worker could serve a call now (no worker of any pool that could run it is connected), or null. */
export function noWorkerReason(model: string, pools: readonly Pool[], connected: Record<Pool, number>): string | null {
  if (pools.some((p) => connected[p] > 0)) return null;
  return `no worker of ${poolNames(pools)} is connected for model "${model}"`;
}

/** What a call refused at once for want of a worker (a model with reject_without_workers) is told. */
export function noWorkerRefusal(reason: string, retryAfterS: number): string {
  return `${reason}; the model rejects calls while none is (reject_without_workers): start a worker (npm run worker, or a page with the embed script) and retry in ${retryAfterS} s`;
}

/** The end of an expired job's message when no worker ever took any of it and none is connected at its deadline. */
export function noWorkerExpiry(reason: string): string {
  return `${reason}, and none took any of its inputs: start a worker for it (see the README's worker section)`;
}

/** Idempotency-Key values: visible ASCII, as Stripe's and the IETF draft's keys are, at most 255 characters. */
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** What is wrong with an Idempotency-Key header's value, or null for a good one. */
export function idempotencyKeyProblem(key: string): string | null {
  return IDEMPOTENCY_KEY.test(key)
    ? null
    : "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice)";
}

/** The message a cancelled job carries, by who cancelled it. */
export function cancelledMessage(by: "caller" | "hung_up", done: number, total: number): string {
  const who = by === "hung_up" ? "the caller hung up on its waiting call" : "cancelled by DELETE /v1/jobs/{id}";
  return `${who} (${done} of ${total} inputs had finished; the rest will not run)`;
}
