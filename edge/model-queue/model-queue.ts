// One Durable Object per model, called by edge/routes: jobs, leases and metrics in SQLite, so a restart
// loses nothing accepted, and every deadline in a table driving the one alarm. It wires JobStore,
// LeaseTable, LeaseSettlement and WorkerSlots; decisions come from the pure policies in shared/.
import { DurableObject } from "cloudflare:workers";
import {
  type CompleteBody,
  decideBatch,
  ErrorCode,
  type JobView,
  type LeaseAck,
  type LeaseRequest,
  type ModelConfig,
  modelOfId,
  type Pool,
  ProtocolError,
} from "../../shared/index.ts";
import { loadConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { Sql } from "../sql.ts";
import { JobStore, OPEN, type SubmitInput, type SubmitResult } from "./job-store.ts";
import { type CompleteResult, LeaseSettlement } from "./lease-settlement.ts";
import { type LeaseLookup, LeaseTable, notFoundAck } from "./lease-table.ts";
import { type MetricsSnapshot, MetricsStore } from "./metrics-store.ts";
import { MODEL_QUEUE_MIGRATIONS } from "./schema.ts";
import {
  type OutgoingFrame,
  readFrame,
  sendFrame,
  setSocketWorker,
  socketWorker,
  WorkerSlots,
} from "./worker-slots.ts";

export type { SubmitInput, SubmitResult } from "./job-store.ts";
export type { CompleteResult } from "./lease-settlement.ts";

export interface QueueStats {
  model: string;
  queued: number;
  in_flight: Record<Pool, number>;
  leases: Record<Pool, number>;
  workers: Record<Pool, number>;
}

export class ModelQueue extends DurableObject<Env> {
  private readonly sql: Sql;
  private readonly metrics: MetricsStore;
  private readonly jobs: JobStore;
  private readonly leases: LeaseTable;
  private readonly settlement: LeaseSettlement;
  private readonly slots: WorkerSlots;
  private model: string | undefined;
  /** The alarm time last set, to skip redundant setAlarm calls; re-read from storage after a restart. */
  private alarmAt: number | null | undefined;
  private batchDueAt: number | null = null;
  /** Wakes pump() when a partial batch falls due. Only a nudge: the alarm is armed for the same time. */
  private batchTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage.sql);
    this.metrics = new MetricsStore(this.sql);
    this.jobs = new JobStore(this.sql, this.metrics, () => this.model);
    const config = () => this.config();
    this.leases = new LeaseTable(this.sql, this.metrics, this.jobs, config);
    this.settlement = new LeaseSettlement(this.sql, this.metrics, ctx.storage, this.jobs, config);
    this.slots = new WorkerSlots(ctx);
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
    if (this.jobs.exists(req.id)) return this.jobs.answer(req.id, waitMs); // a retried submit of an accepted job
    const refusal = this.jobs.accept(cfg, req, now);
    if (refusal) return refusal;
    this.pumpAndSchedule(now);
    return this.jobs.answer(req.id, waitMs);
  }

  job(id: string): JobView | null {
    return this.jobs.view(id);
  }

  /** Resolves with the job once it has ended, or with its state as it is after waitMs. */
  waitJob(id: string, waitMs: number): Promise<JobView | null> {
    return this.jobs.wait(id, waitMs);
  }

  stats(model: string): QueueStats {
    this.bind(model);
    const workers = this.slots.countByPool(Date.now());
    const { leases, inFlight } = this.leases.activeByPool();
    return { model, queued: this.jobs.queuedCount(), in_flight: inFlight, leases, workers };
  }

  metricsSnapshot(model: string): MetricsSnapshot {
    this.bind(model);
    return this.metrics.snapshot();
  }

  // ---- worker side ---------------------------------------------------------------------------

  /** HTTP long-poll lease: a batch as JSON text, or null when none formed within wait_ms. */
  async lease(req: LeaseRequest): Promise<string | null> {
    this.bind(req.model);
    const { model: _model, wait_ms, ...info } = req;
    return this.slots.poll(info, wait_ms, Date.now(), () => this.pumpAndSchedule());
  }

  extend(leaseId: string, extendMs?: number): LeaseAck {
    const found = this.activeLease(leaseId);
    if ("ack" in found) return found.ack;
    const now = Date.now();
    const ack = this.leases.extend(found.lease, extendMs, now);
    this.schedule(now);
    return ack;
  }

  complete(leaseId: string, body: CompleteBody): CompleteResult {
    const found = this.activeLease(leaseId);
    if ("ack" in found) return found.ack;
    const now = Date.now();
    const result = this.settlement.complete(found.lease, body, now);
    if (!("error" in result)) this.pumpAndSchedule(now);
    return result;
  }

  release(leaseId: string, reason?: string): LeaseAck {
    const found = this.activeLease(leaseId);
    if ("ack" in found) return found.ack;
    const now = Date.now();
    const ack = this.settlement.release(found.lease, now, reason);
    this.pumpAndSchedule(now);
    return ack;
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
      const reply = this.answerFrame(ws, message);
      if (reply) sendFrame(ws, reply);
    } catch (error) {
      // Whatever went wrong, the worker hears of it rather than waiting on an answer that never comes.
      console.error("worker frame failed", error);
      sendFrame(ws, { type: "error", code: ErrorCode.internal, message: `frame not processed: ${String(error)}` });
    }
  }

  /** The reply to one worker frame; none for a hello, whose welcome must go out before any batch. */
  private answerFrame(ws: WebSocket, message: string | ArrayBuffer): OutgoingFrame | null {
    const frame = readFrame(message);
    if (frame instanceof ProtocolError) return { type: "error", code: frame.code, message: frame.message };
    const info = socketWorker(ws);
    if (frame.type === "hello") {
      const { type: _type, version: _version, ...hello } = frame;
      setSocketWorker(ws, hello);
      const cfg = this.config();
      sendFrame(ws, { type: "welcome", model: cfg.name, worker_id: hello.worker_id, lease_ms: cfg.lease_ms });
      this.pumpAndSchedule();
      return null;
    }
    if (!info) return { type: "error", code: ErrorCode.badRequest, message: "send a hello frame before any other" };
    if (frame.type === "drain") {
      setSocketWorker(ws, { ...info, draining: true });
      return { type: "draining", leases_held: this.leases.heldBy(info.worker_id) };
    }
    if (modelOfId(frame.lease_id) !== this.model) {
      return { type: "ack", op: frame.type, ...notFoundAck(frame.lease_id, "lease id is not one of this model's") };
    }
    let result: CompleteResult;
    if (frame.type === "extend") result = this.extend(frame.lease_id, frame.extend_ms);
    else if (frame.type === "complete") result = this.complete(frame.lease_id, frame);
    else result = this.release(frame.lease_id, frame.reason);
    if ("error" in result) return { type: "error", ...result.error, lease_id: frame.lease_id };
    return { type: "ack", op: frame.type, ...result };
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

  private workerGone(ws: WebSocket, message: string): void {
    const workerId = this.slots.forget(ws);
    if (workerId === null || !this.model) return;
    const now = Date.now();
    this.settlement.abandonWorker(workerId, now, message);
    this.pumpAndSchedule(now);
  }

  // ---- alarm: every deadline ------------------------------------------------------------------

  override async alarm(): Promise<void> {
    this.alarmAt = null;
    if (!this.model) return;
    const now = Date.now();
    this.settlement.expire(now);
    this.jobs.expire(now);
    const ttl = this.config().result_ttl_ms;
    this.jobs.dropFinished(now - ttl);
    this.leases.dropEnded(now - ttl);
    this.pumpAndSchedule(now);
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

  /** Binds to the model a lease id names, and looks the lease up. */
  private activeLease(leaseId: string): LeaseLookup {
    const model = modelOfId(leaseId);
    if (!model) throw new Error(`"${leaseId}" is not an EdgeSwarm id`);
    this.bind(model);
    return this.leases.lookup(leaseId);
  }

  private config(): ModelConfig {
    const cfg = loadConfig(this.env).models.get(this.model ?? "");
    if (!cfg) throw new Error(`model "${this.model}" is no longer configured`);
    return cfg;
  }

  /** After any change: hand out what is due, then re-arm the alarm. */
  private pumpAndSchedule(now = Date.now()): void {
    this.pump(now);
    this.schedule(now);
  }

  /** Hands out batches while a worker is free and Triton's rule says a batch is due. */
  private pump(now: number): void {
    const cfg = this.config();
    this.batchDueAt = null;
    for (;;) {
      const slot = this.slots.free(this.leases.heldByWorker());
      if (!slot) return;
      const head = this.leases.eligible(now);
      const decision = decideBatch({
        eligible: head?.n ?? 0,
        oldestEnqueuedAt: head?.oldest ?? null,
        now,
        maxBatchSize: Math.min(cfg.max_batch_size, slot.info.max_batch_size),
        maxQueueDelayMs: cfg.max_queue_delay_ms,
      });
      if (decision.kind === "wait") this.armBatchTimer(decision.until, now);
      if (decision.kind !== "send") return;
      const { leaseId, batchJson } = this.leases.handOut(slot.info, decision.size, now, cfg);
      if (!this.slots.deliver(slot, batchJson)) this.release(leaseId, "could not be sent to the worker");
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
        try {
          this.pumpAndSchedule();
        } catch (error) {
          // The alarm armed for the same moment retries; a failed nudge must not be an uncaught exception.
          console.error("batch timer: pump failed", error);
        }
      },
      Math.max(0, until - now),
    );
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
