// A model queue's admin and safety operations on jobs (issue 17): who may read a job, what a repeated
// Idempotency-Key or a model with no worker answers at submit, cancelling a job (its queued items dropped,
// leases holding only its items taken back and their workers told), and dead letters listed and replayed.
// ModelQueue calls it; the decisions are shared/policy/queue-admin.ts.
import {
  cancelledMessage,
  ErrorCode,
  type JobView,
  leasesToStop,
  type ModelConfig,
  noWorkerExpiry,
  noWorkerReason,
  noWorkerRefusal,
  type Pool,
  poolsThatCanRun,
} from "../../shared/index.ts";
import { BOUND_LIMIT, type Sql } from "../sql.ts";
import { IN_SET, type JobStore, type Refusal, type SubmitInput } from "./job-store.ts";
import { sendFrame, socketCredential, type WorkerSlots } from "./worker-slots.ts";

/** How long a caller refused for want of a worker is told to wait before trying again. */
export const NO_WORKER_RETRY_AFTER_S = 5;

/** The items that are dead letters (lease-settlement.ts failDelivery), as their partial index (schema.ts) reads. */
const DEAD = "items.state = 'failed' AND items.error_code = 'max_attempts_exceeded'";

export interface DeadLetter {
  job_id: string;
  index: number;
  attempts: number;
  /** The last delivery's error, as "failed after N attempts; last error (code): message". */
  error: { code: string; message: string };
  job_status: string;
  created_at: number;
}

export type CancelResult = { ok: true; job: JobView } | { ok: false; status: 404 | 409; code: string; message: string };

export class JobAdmin {
  constructor(
    private readonly sql: Sql,
    private readonly jobs: JobStore,
    private readonly slots: WorkerSlots,
  ) {}

  /** Whether `owner` may read or cancel the job: the key that made it, or anyone for a job made before owners. */
  visible(id: string, owner: string | undefined): boolean {
    const row = this.sql.one<{ owner: string | null }>("SELECT owner FROM jobs WHERE id = ?", id);
    return row !== undefined && (row.owner === null || owner === undefined || row.owner === owner);
  }

  /** A repeated Idempotency-Key (the job id is made from it) sent with another request than the first: refused. */
  idempotencyConflict(req: SubmitInput): Refusal | null {
    if (req.request_hash === undefined) return null;
    const prior = this.sql.one<{ request_hash: string | null }>("SELECT request_hash FROM jobs WHERE id = ?", req.id);
    if (!prior || prior.request_hash === req.request_hash) return null;
    return {
      ok: false,
      code: ErrorCode.idempotencyConflict,
      message: `this Idempotency-Key was first used with a different request (job ${req.id}); use a new key for a new request`,
    };
  }

  /** For a model with reject_without_workers: the refusal of a new job when no worker that could run it is connected. */
  withoutWorkers(cfg: ModelConfig, req: SubmitInput, connected: () => Record<Pool, number>): Refusal | null {
    if (!cfg.reject_without_workers) return null;
    const reason = noWorkerReason(cfg.name, poolsThatCanRun(req.pool), connected());
    if (reason === null) return null;
    return {
      ok: false,
      code: ErrorCode.noWorker,
      message: noWorkerRefusal(reason, NO_WORKER_RETRY_AFTER_S),
      retryAfterS: NO_WORKER_RETRY_AFTER_S,
    };
  }

  /** For a job no worker took by its deadline: the reason, when no worker that could run it is connected now. */
  noWorker(cfg: ModelConfig, jobId: string, connected: Record<Pool, number>): string | null {
    const pinned = this.sql.one<{ pool: string | null }>("SELECT pool FROM items WHERE job_id = ? LIMIT 1", jobId);
    const reason = noWorkerReason(cfg.name, poolsThatCanRun(pinned?.pool as Pool | null), connected);
    return reason === null ? null : noWorkerExpiry(reason);
  }

  /**
   * Cancels an open job: its queued and leased items end `cancelled`, a lease that held only its items is
   * taken back and its worker sent a cancel frame (a lease shared with other jobs runs on; the cancelled
   * items' results are dropped), waiting callers are answered. Cancelling a cancelled job answers it again.
   */
  cancel(id: string, owner: string | undefined, by: "caller" | "hung_up", now: number): CancelResult {
    if (!this.visible(id, owner)) {
      return { ok: false, status: 404, code: ErrorCode.jobNotFound, message: `no job ${id} for this key` };
    }
    const job = this.sql.one<{ status: string; n_items: number }>("SELECT status, n_items FROM jobs WHERE id = ?", id);
    if (!job) return { ok: false, status: 404, code: ErrorCode.jobNotFound, message: `no job ${id}` };
    if (job.status !== "cancelled" && job.status !== "queued" && job.status !== "running") {
      return {
        ok: false,
        status: 409,
        code: ErrorCode.jobFinished,
        message: `job ${id} has already ended (${job.status}); nothing to cancel`,
      };
    }
    if (job.status === "cancelled") return { ok: true, job: this.jobs.view(id) as JobView };
    const leased = this.sql.all<{ lease_id: string; job_id: string }>(
      `SELECT lease_id, job_id FROM items WHERE state = 'leased' AND lease_id IN
         (SELECT DISTINCT lease_id FROM items WHERE job_id = ? AND state = 'leased')`,
      id,
    );
    const { stop } = leasesToStop(leased, id);
    const done =
      this.sql.one<{ n: number }>(
        "SELECT COUNT(*) AS n FROM items WHERE job_id = ? AND state IN ('succeeded', 'failed')",
        id,
      )?.n ?? 0;
    this.jobs.endOpenItems(id, "cancelled");
    const stopped = this.sql.all<{ id: string; worker_id: string; holder: string | null }>(
      `UPDATE leases SET state = 'cancelled', ended_at = ? WHERE state = 'active' AND id IN ${IN_SET}
       RETURNING id, worker_id, holder`,
      now,
      JSON.stringify(stop),
    );
    this.sql.run(
      "UPDATE jobs SET status = 'cancelled', n_open = 0, finished_at = ?, error_code = ?, error_message = ? WHERE id = ?",
      now,
      ErrorCode.cancelled,
      cancelledMessage(by, done, job.n_items),
      id,
    );
    for (const lease of stopped) this.tellStop(lease, by);
    this.jobs.wake(id);
    return { ok: true, job: this.jobs.view(id) as JobView };
  }

  /** Sends a cancel frame to the sockets of the worker (and credential) that held a lease taken back. */
  private tellStop(lease: { id: string; worker_id: string; holder: string | null }, by: "caller" | "hung_up"): void {
    const reason = by === "hung_up" ? "the caller hung up" : "the job was cancelled";
    for (const ws of this.slots.socketsOf(lease.worker_id, null)) {
      if (lease.holder !== null && socketCredential(ws).holder !== lease.holder) continue;
      try {
        sendFrame(ws, { type: "cancel", lease_id: lease.id, reason });
      } catch {
        // A socket closing anyway: its worker's results for the lease will be answered stale.
      }
    }
  }

  /** Dead letters (items that ran out of attempts), newest first, with their last errors; and how many there are. */
  deadLetters(limit: number): { total: number; dead_letters: DeadLetter[] } {
    const total = this.sql.one<{ n: number }>(`SELECT COUNT(*) AS n FROM items WHERE ${DEAD}`)?.n ?? 0;
    const rows = this.sql.all<{
      job_id: string;
      idx: number;
      attempts: number;
      error_message: string | null;
      status: string;
      created_at: number;
    }>(
      `SELECT items.job_id, items.idx, items.attempts, items.error_message, jobs.status, jobs.created_at
       FROM items JOIN jobs ON jobs.id = items.job_id WHERE ${DEAD}
       ORDER BY items.seq DESC ${BOUND_LIMIT}`,
      limit,
    );
    return {
      total,
      dead_letters: rows.map((r) => ({
        job_id: r.job_id,
        index: r.idx,
        attempts: r.attempts,
        error: { code: ErrorCode.maxAttempts, message: r.error_message ?? "" },
        job_status: r.status,
        created_at: r.created_at,
      })),
    };
  }

  /**
   * Puts dead letters back in the queue with fresh attempts: all of them, or those of the given jobs. A job
   * that had failed is open again, with a new deadline as long as its first; its result is read as before
   * (GET /v1/jobs/{id}). Jobs cancelled or expired meanwhile stay as they are. Answers the jobs reopened.
   */
  replay(jobIds: readonly string[] | null, now: number): { items: number; jobs: string[] } {
    const which = jobIds === null ? "" : " AND job_id IN (SELECT value FROM json_each(?2))";
    const items = this.sql.all<{ job_id: string }>(
      `UPDATE items SET state = 'queued', attempts = 0, donor_faults = 0, enqueued_at = ?1, available_at = ?1,
         lease_id = NULL, lease_pos = NULL, error_code = NULL, error_message = NULL
       WHERE ${DEAD}${which}
         AND job_id IN (SELECT id FROM jobs WHERE status IN ('failed', 'queued', 'running'))
       RETURNING job_id`,
      now,
      ...(jobIds === null ? [] : [JSON.stringify(jobIds)]),
    );
    const jobs = [...new Set(items.map((i) => i.job_id))];
    this.sql.run(
      `UPDATE jobs SET status = 'queued', deadline = ?1 + (deadline - created_at), finished_at = NULL,
         error_code = NULL, error_message = NULL
       WHERE status = 'failed' AND id IN (SELECT value FROM json_each(?2))`,
      now,
      JSON.stringify(jobs),
    );
    return { items: items.length, jobs };
  }
}
