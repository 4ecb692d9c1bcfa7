// One Durable Object per model: its queue of items, the leases workers hold, results, and metrics,
// all in SQLite so a restart loses nothing accepted. Every deadline lives in a table and drives the
// object's single alarm. Decisions (batching, retries) come from the pure policies in shared/.
import { DurableObject } from "cloudflare:workers";
import {
  afterFailedDelivery,
  type CompleteBody,
  decideBatch,
  ErrorCode,
  FINAL_STATUSES,
  type ItemError,
  type JobStatus,
  type JobView,
  type LeaseAck,
  type LeaseRequest,
  type ModelConfig,
  modelOfId,
  type Pool,
  ProtocolError,
  parseJsonText,
  parseWith,
  renewAfterMs,
  WorkerFrame,
  type WorkerInfo,
} from "../../shared/index.ts";
import { loadConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { NO_POOL } from "../metrics/definitions.ts";
import { Sql } from "../sql.ts";
import { type MetricsSnapshot, MetricsStore } from "./metrics-store.ts";
import { MODEL_QUEUE_MIGRATIONS } from "./schema.ts";

export interface SubmitInput {
  id: string;
  inputs: unknown[];
  priority?: number | undefined;
  timeout_ms?: number | undefined;
  session?: string | undefined;
}

export type SubmitResult =
  | { ok: true; job: JobView }
  | { ok: false; code: string; message: string; retryAfterS?: number };

export type CompleteResult = LeaseAck | { error: { code: string; message: string } };

export interface QueueStats {
  model: string;
  queued: number;
  in_flight: Record<Pool, number>;
  leases: Record<Pool, number>;
  workers: Record<Pool, number>;
}

/** What a socket's attachment holds: the worker's hello, and whether it asked to drain. */
type SocketWorkerInfo = WorkerInfo & { draining?: boolean };

type Slot =
  | { kind: "socket"; ws: WebSocket; info: WorkerInfo }
  | { kind: "poll"; info: WorkerInfo; resolve: (batchJson: string | null) => void };

interface JobRow extends Record<string, SqlStorageValue> {
  id: string;
  created_at: number;
  deadline: number;
  n_items: number;
  status: string;
  last_leased_at: number | null;
  compute_ms: number;
  finished_at: number | null;
  error_code: string | null;
  error_message: string | null;
}

interface ItemRow extends Record<string, SqlStorageValue> {
  seq: number;
  job_id: string;
  enqueued_at: number;
  leased_at: number | null;
  attempts: number;
  state: string;
}

interface LeaseRow extends Record<string, SqlStorageValue> {
  id: string;
  worker_id: string;
  pool: string;
  created_at: number;
  deadline: number;
  state: string;
  n_items: number;
}

const OPEN = "('queued', 'running')";
/** A set bound as one JSON parameter (`IN (SELECT value FROM json_each(?))`): SQLite caps bound parameters at 100. */
const IN_SET = "(SELECT value FROM json_each(?))";
/** SQLite rows are capped at 2 MB in Durable Objects; an output must fit in one with room to spare. */
const MAX_OUTPUT_BYTES = 1_000_000;
const OUTPUT_CHUNK_BYTES = 512 * 1024;
/** HTTP workers count as connected for this long after their last lease call. */
const HTTP_WORKER_SEEN_MS = 60_000;

export class ModelQueue extends DurableObject<Env> {
  private readonly sql: Sql;
  private readonly metrics: MetricsStore;
  private model: string | undefined;
  /** Callers waiting on a job (wait: true). In memory: they are live requests, gone with the object anyway. */
  private readonly waiters = new Map<string, Set<() => void>>();
  /** HTTP long-poll workers waiting for a batch. */
  private pollers: Extract<Slot, { kind: "poll" }>[] = [];
  private readonly httpWorkersSeen = new Map<string, { pool: Pool; at: number }>();
  /** The alarm time last set, to skip redundant setAlarm calls; re-read from storage after a restart. */
  private alarmAt: number | null | undefined;
  private batchDueAt: number | null = null;
  /** Wakes pump() when a partial batch falls due. Only a nudge: the alarm is armed for the same time. */
  private batchTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage.sql);
    this.metrics = new MetricsStore(this.sql);
    ctx.blockConcurrencyWhile(async () => {
      this.sql.migrate(MODEL_QUEUE_MIGRATIONS);
      this.model = this.sql.getMeta("model");
      this.alarmAt = await ctx.storage.getAlarm();
    });
  }

  // ---- caller side -------------------------------------------------------------------------

  /** Accepts a request (its id made by the edge, so a retry after a lost reply can find it). */
  submit(model: string, req: SubmitInput, waitMs = 0): Promise<SubmitResult> | SubmitResult {
    const cfg = this.bind(model);
    const now = Date.now();
    const existing = this.sql.one("SELECT 1 AS found FROM jobs WHERE id = ?", req.id);
    if (existing) return this.finishWaiting(req.id, waitMs); // a retried submit of an accepted job

    const priority = req.priority ?? cfg.default_priority;
    if (priority >= cfg.priority_levels) {
      return this.refuse(
        ErrorCode.validation,
        `priority must be 0..${cfg.priority_levels - 1} for model "${cfg.name}" (higher is served first)`,
      );
    }
    const timeout = req.timeout_ms ?? cfg.default_timeout_ms;
    if (timeout > cfg.max_timeout_ms) {
      return this.refuse(
        ErrorCode.timeoutTooLong,
        `timeout_ms ${timeout} exceeds this model's max_timeout_ms ${cfg.max_timeout_ms}`,
      );
    }
    if (req.inputs.length > cfg.max_inputs_per_request) {
      return this.refuse(
        ErrorCode.tooManyInputs,
        `${req.inputs.length} inputs sent; model "${cfg.name}" takes at most ${cfg.max_inputs_per_request} per request`,
      );
    }
    const queued = this.queuedCount();
    if (queued + req.inputs.length > cfg.max_queue_size) {
      this.metrics.inc("rejected", NO_POOL);
      return {
        ok: false,
        code: ErrorCode.queueFull,
        message: `queue for model "${cfg.name}" is full (${queued} of ${cfg.max_queue_size} items waiting); retry later`,
        retryAfterS: 1,
      };
    }

    this.sql.run(
      "INSERT INTO jobs (id, created_at, deadline, priority, session, n_items, n_open, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued')",
      req.id,
      now,
      now + timeout,
      priority,
      req.session ?? null,
      req.inputs.length,
      req.inputs.length,
    );
    // One statement for all inputs: each element is the input's JSON text, its array index the item's idx.
    this.sql.run(
      "INSERT INTO items (job_id, idx, priority, enqueued_at, available_at, state, input) SELECT ?, key, ?, ?, ?, 'queued', value FROM json_each(?)",
      req.id,
      priority,
      now,
      now,
      JSON.stringify(req.inputs.map((input) => JSON.stringify(input))),
    );
    this.pump(now);
    this.schedule(now);
    return this.finishWaiting(req.id, waitMs);
  }

  job(id: string): JobView | null {
    return this.jobView(id);
  }

  /** Resolves with the job once it has ended, or with its state as it is after waitMs. */
  async waitJob(id: string, waitMs: number): Promise<JobView | null> {
    const view = this.jobView(id);
    if (!view || FINAL_STATUSES.includes(view.status) || waitMs <= 0) return view;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.get(id)?.delete(done);
        resolve();
      };
      const timer = setTimeout(done, waitMs);
      const set = this.waiters.get(id) ?? new Set();
      this.waiters.set(id, set);
      set.add(done);
    });
    return this.jobView(id);
  }

  stats(model: string): QueueStats {
    this.bind(model);
    const now = Date.now();
    const zero = (): Record<Pool, number> => ({ browser: 0, gpu: 0 });
    const inFlight = zero();
    const leases = zero();
    for (const r of this.sql.all<{ pool: string; n: number; items: number }>(
      "SELECT pool, COUNT(*) AS n, SUM(n_items) AS items FROM leases WHERE state = 'active' GROUP BY pool",
    )) {
      if (r.pool === "browser" || r.pool === "gpu") {
        leases[r.pool] = r.n;
        inFlight[r.pool] = r.items;
      }
    }
    const workers = zero();
    for (const ws of this.ctx.getWebSockets()) {
      const info = ws.deserializeAttachment() as WorkerInfo | null;
      if (info) workers[info.pool]++;
    }
    for (const [id, seen] of this.httpWorkersSeen) {
      if (now - seen.at > HTTP_WORKER_SEEN_MS) this.httpWorkersSeen.delete(id);
      else workers[seen.pool]++;
    }
    return { model, queued: this.queuedCount(), in_flight: inFlight, leases, workers };
  }

  metricsSnapshot(model: string): MetricsSnapshot {
    this.bind(model);
    return this.metrics.snapshot();
  }

  // ---- worker side ---------------------------------------------------------------------------

  /** HTTP long-poll lease: a batch as JSON text, or null when none formed within wait_ms. */
  async lease(req: LeaseRequest): Promise<string | null> {
    this.bind(req.model);
    this.httpWorkersSeen.set(req.worker_id, { pool: req.pool, at: Date.now() });
    const { model: _model, wait_ms, ...info } = req;
    return new Promise<string | null>((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const poller: Extract<Slot, { kind: "poll" }> = {
        kind: "poll",
        info,
        resolve: (batch) => {
          if (timer !== undefined) clearTimeout(timer);
          this.pollers = this.pollers.filter((p) => p !== poller);
          resolve(batch);
        },
      };
      this.pollers.push(poller);
      const now = Date.now();
      this.pump(now);
      this.schedule(now);
      if (this.pollers.includes(poller)) timer = setTimeout(() => poller.resolve(null), wait_ms);
    });
  }

  extend(leaseId: string, extendMs?: number): LeaseAck {
    const cfg = this.bindFromId(leaseId);
    const lease = this.leaseRow(leaseId);
    if (!lease)
      return { lease_id: leaseId, status: "not_found", message: "no such lease (never issued, or long finished)" };
    if (lease.state !== "active") return this.settledAck(lease);
    const now = Date.now();
    const deadline = now + Math.min(extendMs ?? cfg.lease_ms, cfg.lease_ms);
    this.sql.run("UPDATE leases SET deadline = ? WHERE id = ?", deadline, leaseId);
    this.schedule(now);
    return { lease_id: leaseId, status: "ok", deadline };
  }

  complete(leaseId: string, body: CompleteBody): CompleteResult {
    this.bindFromId(leaseId);
    const lease = this.leaseRow(leaseId);
    if (!lease)
      return { lease_id: leaseId, status: "not_found", message: "no such lease (never issued, or long finished)" };
    if (lease.state !== "active") return this.settledAck(lease);
    if (body.results.length !== lease.n_items) {
      return {
        error: {
          code: ErrorCode.wrongResultCount,
          message: `lease ${leaseId} holds ${lease.n_items} items but ${body.results.length} results were sent; send one result per item, in batch order`,
        },
      };
    }
    const now = Date.now();
    const computeMs = body.compute_ms ?? now - lease.created_at;
    const items = this.sql.all<ItemRow>(
      "SELECT seq, job_id, enqueued_at, leased_at, attempts, state, lease_pos FROM items WHERE lease_id = ? ORDER BY lease_pos",
      leaseId,
    );
    const pool = lease.pool;
    const touchedJobs = new Set<string>();
    const waits: number[] = [];
    const tally = { completed: 0, failed: 0, redelivered: 0 };
    const failItem = (seq: number, code: string, message: string) => {
      this.sql.run(
        "UPDATE items SET state = 'failed', error_code = ?, error_message = ?, lease_id = NULL WHERE seq = ?",
        code,
        message,
        seq,
      );
      tally.failed++;
    };
    // Outputs by batch position as JSON text; stored together by storeOutputs.
    const outputs: (string | undefined)[] = [];
    // All of it or none of it: a completion that throws half way must not leave items half settled.
    this.ctx.storage.transactionSync(() => {
      for (const item of items) {
        const pos = item.lease_pos as number;
        const result = body.results[pos];
        if (item.state !== "leased" || !result) continue; // expired with its job meanwhile: nothing to record
        waits.push(((item.leased_at ?? now) - item.enqueued_at) / 1000);
        touchedJobs.add(item.job_id);
        if ("output" in result) {
          const output = JSON.stringify(result.output);
          if (output.length > MAX_OUTPUT_BYTES) {
            failItem(
              item.seq,
              ErrorCode.outputTooLarge,
              `output is ${output.length} bytes; the most one output may be is ${MAX_OUTPUT_BYTES}`,
            );
          } else {
            outputs[pos] = output;
            tally.completed++;
          }
        } else if (!result.error.retryable) {
          failItem(item.seq, result.error.code, result.error.message);
        } else if (this.failDelivery(item, now, result.error.code, result.error.message) === "dead-letter") {
          tally.failed++;
        } else {
          tally.redelivered++;
        }
      }
      this.storeOutputs(leaseId, outputs);
      this.sql.run("UPDATE leases SET state = 'completed', ended_at = ? WHERE id = ?", now, leaseId);
      this.sql.run(
        `UPDATE jobs SET compute_ms = MAX(compute_ms, ?), pool = ? WHERE id IN ${IN_SET}`,
        computeMs,
        pool,
        JSON.stringify([...touchedJobs]),
      );
      this.metrics.inc("completed", pool, tally.completed);
      this.metrics.inc("failed", pool, tally.failed);
      this.metrics.inc("redelivered", pool, tally.redelivered);
      this.metrics.observe("queue_wait", pool, waits);
      this.metrics.observe("compute", pool, [computeMs / 1000]);
      this.metrics.observe("batch_size", pool, [lease.n_items]);
    });
    this.reopenJobs(touchedJobs);
    for (const jobId of touchedJobs) this.settleJobIfDone(jobId, now);
    this.pump(now);
    this.schedule(now);
    return { lease_id: leaseId, status: "ok" };
  }

  release(leaseId: string, reason?: string): LeaseAck {
    this.bindFromId(leaseId);
    const lease = this.leaseRow(leaseId);
    if (!lease)
      return { lease_id: leaseId, status: "not_found", message: "no such lease (never issued, or long finished)" };
    if (lease.state !== "active") return this.settledAck(lease);
    const now = Date.now();
    const jobIds = this.jobsOfLease(leaseId);
    // A release is a worker handing work back on purpose (shutdown, pause): it does not count as an attempt.
    this.sql.run(
      "UPDATE items SET state = 'queued', attempts = attempts - 1, lease_id = NULL, lease_pos = NULL, available_at = ? WHERE lease_id = ? AND state = 'leased'",
      now,
      leaseId,
    );
    this.sql.run("UPDATE leases SET state = 'released', ended_at = ? WHERE id = ?", now, leaseId);
    this.metrics.inc("redelivered", lease.pool, lease.n_items);
    this.reopenJobs(jobIds);
    this.pump(now);
    this.schedule(now);
    return { lease_id: leaseId, status: "ok", ...(reason ? { message: `released: ${reason}` } : {}) };
  }

  // ---- WebSocket workers (hibernation API) ---------------------------------------------------

  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
      return new Response("expected a WebSocket upgrade", { status: 426 });
    }
    const model = new URL(request.url).searchParams.get("model") ?? "";
    this.bind(model);
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    return new Response(null, { status: 101, webSocket: client });
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    try {
      this.onFrame(ws, message);
    } catch (error) {
      // Whatever went wrong, the worker hears of it rather than waiting on an answer that never comes.
      console.error("worker frame failed", error);
      ws.send(
        JSON.stringify({ type: "error", code: ErrorCode.internal, message: `frame not processed: ${String(error)}` }),
      );
    }
  }

  private onFrame(ws: WebSocket, message: string | ArrayBuffer): void {
    const text = typeof message === "string" ? message : new TextDecoder().decode(message);
    const raw = parseJsonText(text, "frame");
    const frame = raw instanceof ProtocolError ? raw : parseWith(WorkerFrame, raw, "worker frame");
    if (frame instanceof ProtocolError) {
      ws.send(JSON.stringify({ type: "error", code: frame.code, message: frame.message }));
      return;
    }
    const info = ws.deserializeAttachment() as SocketWorkerInfo | null;
    if (frame.type === "hello") {
      const { type: _type, version: _version, ...hello } = frame;
      ws.serializeAttachment(hello satisfies WorkerInfo);
      const cfg = this.config();
      ws.send(JSON.stringify({ type: "welcome", model: cfg.name, worker_id: hello.worker_id, lease_ms: cfg.lease_ms }));
      const now = Date.now();
      this.pump(now);
      this.schedule(now);
      return;
    }
    if (!info) {
      ws.send(
        JSON.stringify({ type: "error", code: ErrorCode.badRequest, message: "send a hello frame before any other" }),
      );
      return;
    }
    if (frame.type === "drain") {
      ws.serializeAttachment({ ...info, draining: true } satisfies SocketWorkerInfo);
      const held = this.sql.one<{ n: number }>(
        "SELECT COUNT(*) AS n FROM leases WHERE worker_id = ? AND state = 'active'",
        info.worker_id,
      );
      ws.send(JSON.stringify({ type: "draining", leases_held: held?.n ?? 0 }));
      return;
    }
    if (modelOfId(frame.lease_id) !== this.model) {
      ws.send(
        JSON.stringify({
          type: "ack",
          op: frame.type,
          lease_id: frame.lease_id,
          status: "not_found",
          message: "lease id is not one of this model's",
        }),
      );
      return;
    }
    let result: CompleteResult;
    if (frame.type === "extend") result = this.extend(frame.lease_id, frame.extend_ms);
    else if (frame.type === "complete") result = this.complete(frame.lease_id, frame);
    else result = this.release(frame.lease_id, frame.reason);
    if ("error" in result) ws.send(JSON.stringify({ type: "error", ...result.error, lease_id: frame.lease_id }));
    else ws.send(JSON.stringify({ type: "ack", op: frame.type, ...result }));
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    this.workerGone(ws, `worker disconnected (code ${code}${reason ? `: ${reason}` : ""}) while holding the lease`);
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code, "closing");
    } catch {
      // already closed
    }
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    this.workerGone(ws, `worker connection failed while holding the lease: ${String(error)}`);
  }

  // ---- alarm: every deadline ------------------------------------------------------------------

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    if (!this.model) return;
    const now = Date.now();
    this.expireLeases(now);
    this.expireJobs(now);
    this.dropOldResults(now);
    this.pump(now);
    this.schedule(now);
  }

  // ---- internals ------------------------------------------------------------------------------

  private bind(model: string): ModelConfig {
    if (this.model === undefined) {
      this.model = model;
      this.sql.setMeta("model", model);
    } else if (this.model !== model) {
      throw new Error(`queue object of "${this.model}" was asked about "${model}"`);
    }
    return this.config();
  }

  private bindFromId(id: string): ModelConfig {
    const model = modelOfId(id);
    if (!model) throw new Error(`"${id}" is not an EdgeSwarm id`);
    return this.bind(model);
  }

  private config(): ModelConfig {
    const cfg = loadConfig(this.env).models.get(this.model ?? "");
    if (!cfg) throw new Error(`model "${this.model}" is no longer configured`);
    return cfg;
  }

  private refuse(code: string, message: string): SubmitResult {
    return { ok: false, code, message };
  }

  private queuedCount(): number {
    return this.sql.one<{ n: number }>("SELECT COUNT(*) AS n FROM items WHERE state = 'queued'")?.n ?? 0;
  }

  private leaseRow(id: string): LeaseRow | undefined {
    return this.sql.one<LeaseRow>("SELECT * FROM leases WHERE id = ?", id);
  }

  private settledAck(lease: LeaseRow): LeaseAck {
    if (lease.state === "completed") {
      return { lease_id: lease.id, status: "duplicate", message: "lease already completed; this call changed nothing" };
    }
    return {
      lease_id: lease.id,
      status: "stale",
      message: `lease was ${lease.state} before this call; its items went back to the queue, so this call changed nothing`,
    };
  }

  private async finishWaiting(id: string, waitMs: number): Promise<SubmitResult> {
    let job = await this.waitJob(id, waitMs);
    if (job && waitMs > 0 && !FINAL_STATUSES.includes(job.status)) {
      // The wait outlasted the job's deadline, so its alarm is late: expire what is due now.
      this.expireJobs(Date.now());
      job = this.jobView(id);
    }
    if (!job) return this.refuse(ErrorCode.jobNotFound, `job ${id} not found`);
    return { ok: true, job };
  }

  /** Hands out batches while a worker is free and Triton's rule says a batch is due. */
  private pump(now: number): void {
    const cfg = this.config();
    this.batchDueAt = null;
    for (;;) {
      const slot = this.freeSlot();
      if (!slot) return;
      const head = this.sql.one<{ n: number; oldest: number | null }>(
        "SELECT COUNT(*) AS n, MIN(enqueued_at) AS oldest FROM items WHERE state = 'queued' AND available_at <= ?",
        now,
      );
      const decision = decideBatch({
        eligible: head?.n ?? 0,
        oldestEnqueuedAt: head?.oldest ?? null,
        now,
        maxBatchSize: Math.min(cfg.max_batch_size, slot.info.max_batch_size),
        maxQueueDelayMs: cfg.max_queue_delay_ms,
      });
      if (decision.kind === "wait") this.armBatchTimer(decision.until, now);
      if (decision.kind !== "send") return;
      this.handOut(slot, decision.size, now, cfg);
    }
  }

  /**
   * A batch delay is a few milliseconds; an alarm round trip costs more than that. The alarm set by
   * schedule() stays the durable backstop; this timer only lets the batch go out on time.
   */
  private armBatchTimer(until: number, now: number): void {
    this.batchDueAt = until;
    if (this.batchTimer !== undefined) clearTimeout(this.batchTimer);
    this.batchTimer = setTimeout(
      () => {
        this.batchTimer = undefined;
        const at = Date.now();
        try {
          this.pump(at);
          this.schedule(at);
        } catch (error) {
          // The alarm armed for the same moment retries; a failed nudge must not be an uncaught exception.
          console.error("batch timer: pump failed", error);
        }
      },
      Math.max(0, until - now),
    );
  }

  /** The free worker with the fewest batches in hand; sockets first, then long-poll requests. */
  private freeSlot(): Slot | undefined {
    const held = new Map(
      this.sql
        .all<{ worker_id: string; n: number }>(
          "SELECT worker_id, COUNT(*) AS n FROM leases WHERE state = 'active' GROUP BY worker_id",
        )
        .map((r) => [r.worker_id, r.n]),
    );
    let best: Slot | undefined;
    let bestHeld = Number.POSITIVE_INFINITY;
    for (const ws of this.ctx.getWebSockets()) {
      const info = ws.deserializeAttachment() as SocketWorkerInfo | null;
      if (!info || info.draining || ws.readyState !== WebSocket.READY_STATE_OPEN) continue;
      const n = held.get(info.worker_id) ?? 0;
      if (n < info.max_concurrent_batches && n < bestHeld) {
        best = { kind: "socket", ws, info };
        bestHeld = n;
      }
    }
    return best ?? this.pollers[0];
  }

  private handOut(slot: Slot, size: number, now: number, cfg: ModelConfig): void {
    const rows = this.sql.all<{ seq: number; job_id: string; input: string; attempts: number }>(
      "SELECT seq, job_id, input, attempts FROM items WHERE state = 'queued' AND available_at <= ? ORDER BY priority DESC, seq LIMIT ?",
      now,
      size,
    );
    const leaseId = `${cfg.name}:${crypto.randomUUID().replaceAll("-", "")}`;
    const deadline = now + cfg.lease_ms;
    this.sql.run(
      "INSERT INTO leases (id, worker_id, pool, created_at, deadline, state, n_items) VALUES (?, ?, ?, ?, ?, 'active', ?)",
      leaseId,
      slot.info.worker_id,
      slot.info.pool,
      now,
      deadline,
      rows.length,
    );
    // One statement for the whole batch: json_each's key is each item's position in the batch.
    this.sql.run(
      `UPDATE items SET state = 'leased', lease_id = ?1, leased_at = ?2, attempts = attempts + 1,
        lease_pos = (SELECT key FROM json_each(?3) WHERE value = items.seq)
       WHERE seq IN (SELECT value FROM json_each(?3))`,
      leaseId,
      now,
      JSON.stringify(rows.map((r) => r.seq)),
    );
    const parts = rows.map((r) => `{"id":"${r.seq}","attempt":${r.attempts + 1},"input":${r.input}}`);
    const jobIds = [...new Set(rows.map((r) => r.job_id))];
    this.sql.run(
      `UPDATE jobs SET status = 'running', last_leased_at = ? WHERE id IN ${IN_SET}`,
      now,
      JSON.stringify(jobIds),
    );
    this.metrics.inc("leases", slot.info.pool);
    // The items are spliced in as stored JSON text: no parse and re-serialise on the hot path.
    const head = JSON.stringify({
      lease_id: leaseId,
      model: cfg.name,
      deadline,
      renew_after_ms: renewAfterMs(cfg.lease_ms),
    });
    const batchJson = `${head.slice(0, -1)},"items":[${parts.join(",")}]}`;
    if (slot.kind === "poll") {
      slot.resolve(batchJson);
      return;
    }
    try {
      slot.ws.send(`{"type":"batch",${batchJson.slice(1)}`);
    } catch {
      slot.ws.serializeAttachment(null); // a socket that cannot be written to gets no more batches
      this.release(leaseId, "could not be sent to the worker");
    }
  }

  /**
   * Writes a batch's outputs with one UPDATE per chunk of about 512 KB: far fewer statements than one
   * per item, and each bound parameter stays well under SQLite's size limit whatever the batch holds.
   */
  private storeOutputs(leaseId: string, outputs: readonly (string | undefined)[]): void {
    let chunk: { p: number; o: string }[] = [];
    let bytes = 0;
    const flush = () => {
      if (chunk.length === 0) return;
      this.sql.run(
        `UPDATE items SET state = 'succeeded', lease_id = NULL, output = j.o
         FROM (SELECT json_extract(value, '$.p') AS p, json_extract(value, '$.o') AS o FROM json_each(?2)) AS j
         WHERE items.lease_id = ?1 AND items.state = 'leased' AND items.lease_pos = j.p`,
        leaseId,
        JSON.stringify(chunk),
      );
      chunk = [];
      bytes = 0;
    };
    outputs.forEach((o, p) => {
      if (o === undefined) return;
      if (bytes + o.length > OUTPUT_CHUNK_BYTES) flush();
      chunk.push({ p, o });
      bytes += o.length;
    });
    flush();
  }

  /**
   * An item's delivery failed: back to the queue after a backoff, or dead-lettered as failed once it
   * has had max_attempts deliveries. Answers which.
   */
  private failDelivery(item: ItemRow, now: number, code: string, message: string): "retry" | "dead-letter" {
    const cfg = this.config();
    const next = afterFailedDelivery(item.attempts, now, {
      maxAttempts: cfg.max_attempts,
      backoffMs: cfg.retry_backoff_ms,
      backoffMaxMs: cfg.retry_backoff_max_ms,
    });
    if (next.kind === "retry") {
      this.sql.run(
        "UPDATE items SET state = 'queued', lease_id = NULL, lease_pos = NULL, available_at = ?, error_code = ?, error_message = ? WHERE seq = ?",
        next.availableAt,
        code,
        message,
        item.seq,
      );
      return "retry";
    }
    this.sql.run(
      "UPDATE items SET state = 'failed', lease_id = NULL, error_code = ?, error_message = ? WHERE seq = ?",
      ErrorCode.maxAttempts,
      `failed after ${item.attempts} attempts; last error (${code}): ${message}`,
      item.seq,
    );
    return "dead-letter";
  }

  /** Puts back or dead-letters every item still held under a lease that ended without a completion. */
  private abandonLease(lease: LeaseRow, state: "expired" | "lost", now: number, code: string, message: string): void {
    const items = this.sql.all<ItemRow>(
      "SELECT seq, job_id, enqueued_at, leased_at, attempts, state FROM items WHERE lease_id = ? AND state = 'leased'",
      lease.id,
    );
    this.sql.run("UPDATE leases SET state = ?, ended_at = ? WHERE id = ?", state, now, lease.id);
    let dead = 0;
    const jobs = new Set<string>();
    for (const item of items) {
      jobs.add(item.job_id);
      if (this.failDelivery(item, now, code, message) === "dead-letter") dead++;
    }
    this.metrics.inc("failed", lease.pool, dead);
    this.metrics.inc("redelivered", lease.pool, items.length - dead);
    if (state === "expired") this.metrics.inc("leases_expired", lease.pool);
    for (const jobId of jobs) this.settleJobIfDone(jobId, now);
    this.reopenJobs(jobs);
  }

  private workerGone(ws: WebSocket, message: string): void {
    const info = ws.deserializeAttachment() as WorkerInfo | null;
    // Forget the worker on this socket first, so the batches put back below are not handed to it again
    // (and a close after an error does not count twice).
    ws.serializeAttachment(null);
    if (!info || !this.model) return;
    // The same worker id may have reconnected on a new socket; only its leases count as lost if no
    // other socket of it is open.
    const stillThere = this.ctx
      .getWebSockets()
      .some(
        (other) => other !== ws && (other.deserializeAttachment() as WorkerInfo | null)?.worker_id === info.worker_id,
      );
    if (stillThere) return;
    const now = Date.now();
    for (const lease of this.sql.all<LeaseRow>(
      "SELECT * FROM leases WHERE worker_id = ? AND state = 'active'",
      info.worker_id,
    )) {
      this.abandonLease(lease, "lost", now, ErrorCode.workerError, message);
    }
    this.pump(now);
    this.schedule(now);
  }

  private expireLeases(now: number): void {
    for (const lease of this.sql.all<LeaseRow>("SELECT * FROM leases WHERE state = 'active' AND deadline <= ?", now)) {
      this.abandonLease(
        lease,
        "expired",
        now,
        ErrorCode.leaseExpired,
        `lease expired: worker ${lease.worker_id} neither completed nor extended it within ${this.config().lease_ms} ms`,
      );
    }
  }

  private expireJobs(now: number): void {
    for (const job of this.sql.all<JobRow>(`SELECT * FROM jobs WHERE status IN ${OPEN} AND deadline <= ?`, now)) {
      const open =
        this.sql.one<{ n: number }>(
          "SELECT COUNT(*) AS n FROM items WHERE job_id = ? AND state IN ('queued', 'leased')",
          job.id,
        )?.n ?? 0;
      this.sql.run(
        "UPDATE items SET state = 'expired', lease_id = NULL WHERE job_id = ? AND state IN ('queued', 'leased')",
        job.id,
      );
      const done = job.n_items - open;
      this.sql.run(
        "UPDATE jobs SET status = 'expired', finished_at = ?, error_code = ?, error_message = ? WHERE id = ?",
        now,
        ErrorCode.expired,
        `not served within its timeout of ${job.deadline - job.created_at} ms (${done} of ${job.n_items} inputs done); retry with a longer timeout_ms or when the queue is shorter`,
        job.id,
      );
      this.metrics.inc("expired", NO_POOL, open);
      this.metrics.observe("request_duration", NO_POOL, [(now - job.created_at) / 1000]);
      this.wake(job.id);
    }
  }

  private dropOldResults(now: number): void {
    const ttl = this.config().result_ttl_ms;
    this.sql.run(
      "DELETE FROM items WHERE job_id IN (SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at <= ?)",
      now - ttl,
    );
    this.sql.run("DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at <= ?", now - ttl);
    this.sql.run("DELETE FROM leases WHERE state != 'active' AND ended_at <= ?", now - ttl);
  }

  private jobsOfLease(leaseId: string): Set<string> {
    return new Set(
      this.sql
        .all<{ job_id: string }>("SELECT DISTINCT job_id FROM items WHERE lease_id = ?", leaseId)
        .map((r) => r.job_id),
    );
  }

  /** Jobs whose items all went back to the queue are `queued` again, not `running`. */
  private reopenJobs(jobIds: ReadonlySet<string>): void {
    if (jobIds.size === 0) return;
    this.sql.run(
      `UPDATE jobs SET status = 'queued' WHERE status = 'running' AND id IN ${IN_SET} AND NOT EXISTS (SELECT 1 FROM items WHERE items.job_id = jobs.id AND items.state != 'queued')`,
      JSON.stringify([...jobIds]),
    );
  }

  /** Ends a job once none of its items is open: succeeded when every item did, else failed. */
  private settleJobIfDone(jobId: string, now: number): void {
    const counts = this.sql.one<{ open: number; failed: number }>(
      "SELECT SUM(state IN ('queued', 'leased')) AS open, SUM(state = 'failed') AS failed FROM items WHERE job_id = ?",
      jobId,
    );
    const job = this.sql.one<JobRow>(`SELECT * FROM jobs WHERE id = ? AND status IN ${OPEN}`, jobId);
    if (!counts || !job || counts.open > 0) return;
    const failed = counts.failed ?? 0;
    const status: JobStatus = failed > 0 ? "failed" : "succeeded";
    const first = failed
      ? this.sql.one<{ idx: number; error_code: string; error_message: string }>(
          "SELECT idx, error_code, error_message FROM items WHERE job_id = ? AND state = 'failed' ORDER BY idx LIMIT 1",
          jobId,
        )
      : undefined;
    this.sql.run(
      "UPDATE jobs SET status = ?, n_open = 0, finished_at = ?, error_code = ?, error_message = ? WHERE id = ?",
      status,
      now,
      first ? first.error_code : null,
      first ? `${failed} of ${job.n_items} inputs failed; input ${first.idx}: ${first.error_message}` : null,
      jobId,
    );
    const pool = this.sql.one<{ pool: string | null }>("SELECT pool FROM jobs WHERE id = ?", jobId)?.pool ?? NO_POOL;
    this.metrics.observe("request_duration", pool, [(now - job.created_at) / 1000]);
    this.wake(jobId);
  }

  private wake(jobId: string): void {
    const set = this.waiters.get(jobId);
    if (!set) return;
    this.waiters.delete(jobId);
    for (const done of set) done();
  }

  private jobView(id: string): JobView | null {
    const job = this.sql.one<JobRow>("SELECT * FROM jobs WHERE id = ?", id);
    if (!job) return null;
    const status = job.status as JobStatus;
    const view: JobView = { id: job.id, model: this.model ?? "", status, created_at: job.created_at };
    if (!FINAL_STATUSES.includes(status)) return view;
    const items = this.sql.all<{
      idx: number;
      state: string;
      output: string | null;
      error_code: string | null;
      error_message: string | null;
    }>("SELECT idx, state, output, error_code, error_message FROM items WHERE job_id = ? ORDER BY idx", id);
    const errors: ItemError[] = [];
    view.outputs = items.map((item) => {
      if (item.state === "succeeded" && item.output !== null) return JSON.parse(item.output);
      if (item.state === "failed") {
        errors.push({ index: item.idx, code: item.error_code ?? ErrorCode.failed, message: item.error_message ?? "" });
      }
      return null;
    });
    if (errors.length > 0) view.errors = errors;
    if (job.error_code) view.error = { code: job.error_code, message: job.error_message ?? "" };
    const end = job.finished_at ?? Date.now();
    view.timings = {
      queued_ms: (job.last_leased_at ?? end) - job.created_at,
      compute_ms: job.compute_ms,
      total_ms: end - job.created_at,
    };
    return view;
  }

  /** Re-arms the one alarm at the earliest deadline in storage (and the batch delay, if one is due). */
  private schedule(now: number): void {
    const ttl = this.config().result_ttl_ms;
    const row = this.sql.one<{ lease: number | null; job: number | null; backoff: number | null; gc: number | null }>(
      `SELECT
        (SELECT MIN(deadline) FROM leases WHERE state = 'active') AS lease,
        (SELECT MIN(deadline) FROM jobs WHERE status IN ${OPEN}) AS job,
        (SELECT MIN(available_at) FROM items WHERE state = 'queued' AND available_at > ?) AS backoff,
        (SELECT MIN(finished_at) FROM jobs WHERE finished_at IS NOT NULL) + ? AS gc`,
      now,
      ttl,
    );
    const times = [row?.lease, row?.job, row?.backoff, row?.gc, this.batchDueAt].filter(
      (t): t is number => typeof t === "number",
    );
    const next = times.length > 0 ? Math.min(...times) : null;
    // Only ever move the alarm earlier: one that fires early finds nothing due and re-arms itself,
    // which is far cheaper than rewriting the alarm on every call.
    if (next === null || (this.alarmAt != null && this.alarmAt <= next && this.alarmAt > now)) return;
    this.alarmAt = next;
    void this.ctx.storage.setAlarm(next);
  }
}
