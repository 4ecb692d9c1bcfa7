// A model queue's jobs and their items in SQLite: accepting a job within the model's limits, the view
// callers read, ending a job once its items are settled or its deadline passes, and dropping old
// results. Used by ModelQueue and the lease modules; how a job ends is shared/policy/job-outcome.ts.
import {
  ErrorCode,
  expiredJobMessage,
  FINAL_STATUSES,
  failedJobMessage,
  type ItemError,
  type JobStatus,
  type JobView,
  jobOutcome,
  type ModelConfig,
  type Pool,
} from "../../shared/index.ts";
import { NO_POOL } from "../metrics/definitions.ts";
import { BOUND_LIMIT, type Sql } from "../sql.ts";
import { finishedGenerationStats, generationStats } from "./generation-stats.ts";
import type { WatchRequest } from "./job-events.ts";
import type { MetricsStore } from "./metrics-store.ts";

export interface SubmitInput {
  id: string;
  inputs: unknown[];
  priority?: number | undefined;
  timeout_ms?: number | undefined;
  session?: string | undefined;
  /** The pool the caller pinned the call to; none: routed (browser first, gpu on overflow). */
  pool?: Pool | undefined;
  /** The call's W3C traceparent. */
  traceparent?: string | undefined;
  /** The session the call runs in: its object's id, and its state (JSON text) for the worker. */
  session_link?: { ref: string; state: string } | undefined;
  /** A hash of the caller key that made the call (edge/submit.ts): only it reads or cancels the job. */
  owner?: string | undefined;
  /** With an Idempotency-Key: a hash of the request, so the key reused with another body is refused. */
  request_hash?: string | undefined;
  /** A full queue's refusal is not the call's end (edge/submit.ts offers it to another shard): not counted as rejected. */
  passed_on_if_full?: boolean | undefined;
  /** A streamed call: its answer carries the job's events from now (job-events.ts), as asked. */
  watch?: WatchRequest | undefined;
}

export type SubmitResult =
  | {
      ok: true;
      job: JobView /** The call repeated an Idempotency-Key: this is the first call's job. */;
      replayed?: boolean;
      /** With SubmitInput.watch: the job's events. */
      events?: ReadableStream<Uint8Array>;
    }
  | { ok: false; code: string; message: string; retryAfterS?: number };

export type Refusal = Extract<SubmitResult, { ok: false }>;

function refuse(code: string, message: string): Refusal {
  return { ok: false, code, message };
}

interface JobRow extends Record<string, SqlStorageValue> {
  id: string;
  created_at: number;
  deadline: number;
  n_items: number;
  status: string;
  last_leased_at: number | null;
  compute_ms: number;
  finished_at: number | null;
  traceparent: string | null;
  error_code: string | null;
  error_message: string | null;
}

/** The columns of a job JobRow reads: not its session state, which may be large and is for the workers. */
const JOB_COLUMNS =
  "id, created_at, deadline, n_items, status, last_leased_at, compute_ms, finished_at, traceparent, error_code, error_message";

/** The columns of an item an ended job's view reads. */
const VIEW_ITEM_COLUMNS =
  "idx, state, output, error_code, error_message, worker_traceparent, first_token_at, gen_count";

interface ViewItem extends Record<string, SqlStorageValue> {
  idx: number;
  state: string;
  output: string | null;
  error_code: string | null;
  error_message: string | null;
  worker_traceparent: string | null;
  first_token_at: number | null;
  gen_count: number;
}

/** The job statuses that still have work to do. */
export const OPEN = "('queued', 'running')";
/** A set bound as one JSON parameter (`IN (SELECT value FROM json_each(?))`): SQLite caps bound parameters at 100. */
export const IN_SET = "(SELECT value FROM json_each(?))";

export class JobStore {
  /**
   * Callers waiting on a job (wait: true), each woken with the ended job's view where its settlement built one.
   * In memory: they are live requests, gone with the object anyway.
   */
  private readonly waiters = new Map<string, Set<(view?: JobView) => void>>();
  /** Known that no job waits to join its session's history (so the question costs no query); unknown after a restart. */
  private noSessionAppends = false;

  constructor(
    private readonly sql: Sql,
    private readonly metrics: MetricsStore,
    /** The model this object serves, for the view; read late, as it is bound on first use. */
    private readonly model: () => string | undefined,
    /** Why no worker could have served a job that none took before its deadline (job-admin.ts), or null. */
    private readonly noWorker: (jobId: string) => string | null = () => null,
  ) {}

  exists(id: string): boolean {
    return this.sql.one("SELECT 1 AS found FROM jobs WHERE id = ?", id) !== undefined;
  }

  /**
   * Checks a new request against the model's limits and queues its items: "accepted", "exists" for a job
   * already accepted under this id (a retried submit, answered as it stands even if the limits or the
   * queue have changed since), or a refusal.
   */
  accept(cfg: ModelConfig, req: SubmitInput, now: number): "accepted" | "exists" | Refusal {
    const priority = req.priority ?? cfg.default_priority;
    const timeout = req.timeout_ms ?? cfg.default_timeout_ms;
    const refusal = this.refusal(cfg, req, priority, timeout);
    if (refusal) return this.exists(req.id) ? "exists" : refusal;
    // A sharded queue shares the model's room out between its shards.
    const room = Math.ceil(cfg.max_queue_size / cfg.shards);
    if (this.insert(req, priority, timeout, now, room)) return "accepted";
    // Nothing written: a job of this id exists already, or the queue has no room for these items.
    if (this.exists(req.id)) return "exists";
    if (!req.passed_on_if_full) this.metrics.inc("rejected", NO_POOL);
    const queued = this.queuedCount();
    return {
      ok: false,
      code: ErrorCode.queueFull,
      message: `queue for model "${cfg.name}" is full (${queued} of ${room} items waiting${cfg.shards > 1 ? " in this shard" : ""}); retry later`,
      retryAfterS: 1,
    };
  }

  /** Why the model's limits refuse this request (a full queue is found by insert); null when they take it. */
  private refusal(cfg: ModelConfig, req: SubmitInput, priority: number, timeout: number): Refusal | null {
    if (priority >= cfg.priority_levels) {
      return refuse(
        ErrorCode.validation,
        `priority must be 0..${cfg.priority_levels - 1} for model "${cfg.name}" (higher is served first)`,
      );
    }
    if (timeout > cfg.max_timeout_ms) {
      return refuse(
        ErrorCode.timeoutTooLong,
        `timeout_ms ${timeout} exceeds this model's max_timeout_ms ${cfg.max_timeout_ms}`,
      );
    }
    if (req.inputs.length > cfg.max_inputs_per_request) {
      return refuse(
        ErrorCode.tooManyInputs,
        `${req.inputs.length} inputs sent; model "${cfg.name}" takes at most ${cfg.max_inputs_per_request} per request`,
      );
    }
    return null;
  }

  /**
   * Queues the job's items; false, and nothing written, when a job of this id exists already or the queue
   * has no room for them (one statement checks both, as a submit's common case needs neither answered).
   */
  private insert(req: SubmitInput, priority: number, timeoutMs: number, now: number, maxQueued: number): boolean {
    const inserted = this.sql.run(
      `INSERT INTO jobs (id, created_at, deadline, priority, session, n_items, n_open, status, traceparent, session_ref, session_state, owner, request_hash)
       SELECT ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?
       WHERE (SELECT COUNT(*) FROM items WHERE state = 'queued') + ? <= ?
       ON CONFLICT (id) DO NOTHING`,
      req.id,
      now,
      now + timeoutMs,
      priority,
      req.session ?? null,
      req.inputs.length,
      req.inputs.length,
      req.traceparent ?? null,
      req.session_link?.ref ?? null,
      req.session_link?.state ?? null,
      req.owner ?? null,
      req.request_hash ?? null,
      req.inputs.length,
      maxQueued,
    );
    if (inserted === 0) return false;
    // One statement for all inputs: each element is the input's JSON text, its array index the item's idx.
    this.sql.run(
      "INSERT INTO items (job_id, idx, priority, enqueued_at, available_at, state, input, pool) SELECT ?, key, ?, ?, ?, 'queued', value, ? FROM json_each(?)",
      req.id,
      priority,
      now,
      now,
      req.pool ?? null,
      JSON.stringify(req.inputs.map((input) => JSON.stringify(input))),
    );
    // Generation items that ask for log probabilities start their kept array (token-stream.ts reads it as the ask).
    const asking = req.inputs.flatMap((input, idx) => (asksLogprobs(input) ? [idx] : []));
    if (asking.length > 0) {
      this.sql.run(
        `UPDATE items SET gen_logprobs = '[]' WHERE job_id = ? AND idx IN ${IN_SET}`,
        req.id,
        JSON.stringify(asking),
      );
    }
    return true;
  }

  /** Jobs queued or running. */
  openCount(): number {
    return this.sql.one<{ n: number }>(`SELECT COUNT(*) AS n FROM jobs WHERE status IN ${OPEN}`)?.n ?? 0;
  }

  queuedCount(): number {
    return this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM items WHERE state = 'queued'")?.n ?? 0;
  }

  /**
   * Resolves with the job once it has ended, or with its state as it is after waitMs. `fresh`: the job was
   * accepted in this very call, so it cannot have ended yet and is not looked up before waiting.
   */
  async wait(id: string, waitMs: number, fresh = false): Promise<JobView | null> {
    if (!fresh || waitMs <= 0) {
      const view = this.view(id);
      if (!view || FINAL_STATUSES.includes(view.status) || waitMs <= 0) return view;
    }
    const woken = await new Promise<JobView | undefined>((resolve) => {
      const done = (view?: JobView) => {
        clearTimeout(timer);
        this.waiters.get(id)?.delete(done);
        resolve(view);
      };
      const timer = setTimeout(done, waitMs);
      const set = this.waiters.get(id) ?? new Set();
      this.waiters.set(id, set);
      set.add(done);
    });
    return woken ?? this.view(id);
  }

  /** The answer to a submit: the job once it has ended, or as it is after waitMs (`fresh`: see wait). */
  async answer(id: string, waitMs: number, fresh = false): Promise<SubmitResult> {
    let job = await this.wait(id, waitMs, fresh);
    if (job && waitMs > 0 && !FINAL_STATUSES.includes(job.status)) {
      // The wait outlasted the job's deadline, so its alarm is late: expire what is due now.
      this.expire(Date.now());
      job = this.view(id);
    }
    if (!job) return refuse(ErrorCode.jobNotFound, `job ${id} not found`);
    return { ok: true, job };
  }

  view(id: string): JobView | null {
    const job = this.sql.one<JobRow>(`SELECT ${JOB_COLUMNS} FROM jobs WHERE id = ?`, id);
    if (!job) return null;
    if (!FINAL_STATUSES.includes(job.status as JobStatus)) {
      const view: JobView = {
        id: job.id,
        model: this.model() ?? "",
        status: job.status as JobStatus,
        created_at: job.created_at,
      };
      const generation = generationStats(this.sql, id, job.created_at, Date.now());
      if (generation) view.generation = generation;
      return view;
    }
    return this.endedView(
      job,
      this.sql.all<ViewItem>(`SELECT ${VIEW_ITEM_COLUMNS} FROM items WHERE job_id = ? ORDER BY idx`, id),
    );
  }

  /** An ended job's view, from its row and its items (in order). */
  private endedView(job: JobRow, items: readonly ViewItem[]): JobView {
    const view: JobView = {
      id: job.id,
      model: this.model() ?? "",
      status: job.status as JobStatus,
      created_at: job.created_at,
    };
    const end = job.finished_at ?? Date.now();
    const errors: ItemError[] = [];
    const outputs = items.map((item) => {
      if (item.state === "succeeded" && item.output !== null) return JSON.parse(item.output) as unknown;
      if (item.state === "failed") {
        errors.push({ index: item.idx, code: item.error_code ?? ErrorCode.failed, message: item.error_message ?? "" });
      }
      return null;
    });
    // Read from the items already here, not with a query of its own (a job of any task ends through this view).
    const generation = finishedGenerationStats(
      items.map((item, i) => ({ ...item, output: outputs[i] })),
      job.created_at,
      end,
    );
    if (generation) view.generation = generation;
    view.outputs = outputs;
    if (errors.length > 0) view.errors = errors;
    if (job.error_code) view.error = { code: job.error_code, message: job.error_message ?? "" };
    if (job.traceparent) {
      view.trace = {
        traceparent: job.traceparent,
        workers: items.flatMap((i) =>
          i.worker_traceparent ? [{ index: i.idx, traceparent: i.worker_traceparent }] : [],
        ),
      };
    }
    view.timings = {
      queued_ms: (job.last_leased_at ?? end) - job.created_at,
      compute_ms: job.compute_ms,
      total_ms: end - job.created_at,
    };
    return view;
  }

  /** The jobs of a batch just handed out are running from now. */
  markRunning(jobIds: readonly string[], now: number): void {
    this.sql.run(
      `UPDATE jobs SET status = 'running', last_leased_at = ? WHERE id IN ${IN_SET}`,
      now,
      JSON.stringify(jobIds),
    );
  }

  /** A job's compute time is its slowest batch; its pool is the one that last completed a batch of it. */
  recordCompute(jobIds: ReadonlySet<string>, computeMs: number, pool: string): void {
    this.sql.run(
      `UPDATE jobs SET compute_ms = MAX(compute_ms, ?), pool = ? WHERE id IN ${IN_SET}`,
      computeMs,
      pool,
      JSON.stringify([...jobIds]),
    );
  }

  /** Jobs whose items all went back to the queue are `queued` again, not `running`. */
  reopen(jobIds: ReadonlySet<string>): void {
    if (jobIds.size === 0) return;
    this.sql.run(
      `UPDATE jobs SET status = 'queued' WHERE status = 'running' AND id IN ${IN_SET} AND NOT EXISTS (SELECT 1 FROM items WHERE items.job_id = jobs.id AND items.state != 'queued')`,
      JSON.stringify([...jobIds]),
    );
  }

  /**
   * Ends the jobs of `jobIds` that have no item open: succeeded when every item did, else failed. One read and
   * one write for them all, whatever their number, and the views their waiting callers get from one read of
   * their items.
   */
  settleDone(jobIds: ReadonlySet<string>, now: number): void {
    if (jobIds.size === 0) return;
    // Items are leased in order, so an open one is most likely near the end: looked for from there, a job of
    // many batches is not read whole each time one of its batches ends.
    const done = this.sql
      .all<{
        id: string;
        created_at: number;
        n_items: number;
        pool: string | null;
        session_ref: string | null;
        failed: number;
      }>(
        `SELECT id, created_at, n_items, pool, session_ref,
           (SELECT COUNT(*) FROM items WHERE job_id = jobs.id AND state = 'failed') AS failed
         FROM jobs WHERE id IN ${IN_SET} AND status IN ${OPEN}
           AND (SELECT 1 FROM items WHERE job_id = jobs.id AND state IN ('queued', 'leased') ORDER BY idx DESC LIMIT 1) IS NULL`,
        JSON.stringify([...jobIds]),
      )
      .flatMap((job) => {
        const status = jobOutcome({ open: 0, failed: job.failed });
        return status === "open" ? [] : [{ ...job, status }];
      });
    if (done.length === 0) return;
    const ends = done.map((job) => {
      const first =
        job.status === "failed"
          ? this.sql.one<{ idx: number; error_code: string; error_message: string }>(
              "SELECT idx, error_code, error_message FROM items WHERE job_id = ? AND state = 'failed' ORDER BY idx LIMIT 1",
              job.id,
            )
          : undefined;
      return {
        id: job.id,
        status: job.status,
        code: first ? first.error_code : null,
        message: first
          ? failedJobMessage(job.failed, job.n_items, { index: first.idx, message: first.error_message })
          : null,
        session: job.status === "succeeded" && job.session_ref !== null ? 1 : 0,
      };
    });
    const ended = this.sql.all<JobRow>(
      `UPDATE jobs SET status = e.value ->> 'status', n_open = 0, finished_at = ?2, error_code = e.value ->> 'code',
         error_message = e.value ->> 'message', session_pending = e.value ->> 'session'
       FROM json_each(?1) AS e WHERE jobs.id = e.value ->> 'id'
       RETURNING ${JOB_COLUMNS}`,
      JSON.stringify(ends),
      now,
    );
    if (ends.some((e) => e.session === 1)) this.noSessionAppends = false;
    for (const job of done)
      this.metrics.observe("request_duration", job.pool ?? NO_POOL, [(now - job.created_at) / 1000]);
    const waited = ended.filter((job) => this.waiters.has(job.id));
    if (waited.length === 0) return;
    const itemsOf = this.sql.grouped<ViewItem & { job_id: string }, "job_id">(
      "job_id",
      `SELECT job_id, ${VIEW_ITEM_COLUMNS} FROM items WHERE job_id IN ${IN_SET} ORDER BY job_id, idx`,
      JSON.stringify(waited.map((job) => job.id)),
    );
    for (const job of waited) this.wake(job.id, this.endedView(job, itemsOf.get(job.id) ?? []));
  }

  /**
   * Ends a job's open items (cancelled or expired). A lease that goes on with other jobs' items counts them
   * done (leases.n_done), so its worker's room (max_items_in_flight) is free again as its worker drops them.
   */
  endOpenItems(jobId: string, state: "cancelled" | "expired"): void {
    this.sql.run(
      `UPDATE leases SET n_done = n_done + (SELECT COUNT(*) FROM items WHERE items.lease_id = leases.id AND items.job_id = ?1)
       WHERE state = 'active' AND id IN (SELECT lease_id FROM items WHERE job_id = ?1 AND state = 'leased')`,
      jobId,
    );
    this.sql.run(
      "UPDATE items SET state = ?, lease_id = NULL WHERE job_id = ? AND state IN ('queued', 'leased')",
      state,
      jobId,
    );
  }

  /** Ends every open job past its deadline: its open items expire, what is done stays readable. */
  expire(now: number): void {
    for (const job of this.sql.all<JobRow>(
      `SELECT ${JOB_COLUMNS} FROM jobs WHERE status IN ${OPEN} AND deadline <= ?`,
      now,
    )) {
      const { open, held } = this.sql.one<{ open: number; held: number | null }>(
        "SELECT COUNT(*) AS open, SUM(n_candidates > 0) AS held FROM items WHERE job_id = ? AND state IN ('queued', 'leased')",
        job.id,
      ) ?? { open: 0, held: 0 };
      this.endOpenItems(job.id, "expired");
      const expired = expiredJobMessage(job.deadline - job.created_at, job.n_items - open, job.n_items);
      // A job no worker ever took, with none connected that could run it, says so: that is the cause to fix.
      const noWorker = job.last_leased_at === null ? this.noWorker(job.id) : null;
      const message = noWorker ? `${noWorker}; ${expired}` : expired;
      this.sql.run(
        "UPDATE jobs SET status = 'expired', finished_at = ?, error_code = ?, error_message = ? WHERE id = ?",
        now,
        ErrorCode.expired,
        // An output held for verification was computed, but never checked: it is not given out.
        held
          ? `${message}; ${held} of the inputs not done were computed by a browser worker but not yet verified`
          : message,
        job.id,
      );
      this.metrics.inc("expired", NO_POOL, open);
      this.metrics.observe("request_duration", NO_POOL, [(now - job.created_at) / 1000]);
      this.wake(job.id);
    }
  }

  /** Succeeded jobs of a session whose inputs and outputs are not yet in the session's history. */
  sessionAppends(
    limit: number,
  ): { ref: string; entry: { model: string; job_id: string; input: unknown[]; output: unknown[] } }[] {
    return this.sql
      .all<{ id: string; session_ref: string }>(
        `SELECT id, session_ref FROM jobs WHERE session_pending = 1 ORDER BY finished_at, id ${BOUND_LIMIT}`,
        limit,
      )
      .map((row) => {
        const items = this.sql.all<{ input: string; output: string | null }>(
          "SELECT input, output FROM items WHERE job_id = ? ORDER BY idx",
          row.id,
        );
        return {
          ref: row.session_ref,
          entry: {
            model: this.model() ?? "",
            job_id: row.id,
            input: items.map((i) => JSON.parse(i.input)),
            // A reply's log probabilities are the call's answer, not the conversation's (and would crowd its size).
            output: items.map((i) => (i.output === null ? null : withoutLogprobs(JSON.parse(i.output)))),
          },
        };
      });
  }

  sessionAppended(jobId: string): void {
    this.sql.run("UPDATE jobs SET session_pending = 0 WHERE id = ?", jobId);
  }

  /** Forgets jobs, with their items and results, that finished at or before `before`. */
  dropFinished(before: number): void {
    // A job whose inputs and outputs still wait to join its session's history is kept until they have.
    const done = "finished_at IS NOT NULL AND finished_at <= ? AND session_pending = 0";
    this.sql.run(`DELETE FROM items WHERE job_id IN (SELECT id FROM jobs WHERE ${done})`, before);
    this.sql.run(`DELETE FROM jobs WHERE ${done}`, before);
  }

  /** Whether some succeeded session job still waits to be appended to its session's history. */
  hasSessionAppends(): boolean {
    if (this.noSessionAppends) return false;
    const found = this.sql.one("SELECT 1 AS found FROM jobs WHERE session_pending = 1 LIMIT 1") !== undefined;
    this.noSessionAppends = !found;
    return found;
  }

  /**
   * Answers the callers waiting on a job (it has ended). `view`, the ended job's, goes to the first of them, so
   * none reads the job again; any others read their own (a view is the caller's to change).
   */
  wake(jobId: string, view?: JobView): void {
    const set = this.waiters.get(jobId);
    if (!set) return;
    this.waiters.delete(jobId);
    let given = view;
    for (const done of set) {
      done(given);
      given = undefined;
    }
  }
}

/** A generation output less its log probabilities, the prompt's too (any other output as it is). */
function withoutLogprobs(output: unknown): unknown {
  if (typeof output !== "object" || output === null || Array.isArray(output)) return output;
  if (!("logprobs" in output || "prompt_logprobs" in output)) return output;
  const { logprobs: _, prompt_logprobs: __, ...rest } = output as Record<string, unknown>;
  return rest;
}

/** Whether an input is a generation item whose params ask for log probabilities. */
function asksLogprobs(input: unknown): boolean {
  if (typeof input !== "object" || input === null) return false;
  const params = (input as { params?: unknown }).params;
  return typeof params === "object" && params !== null && (params as { logprobs?: unknown }).logprobs !== undefined;
}
