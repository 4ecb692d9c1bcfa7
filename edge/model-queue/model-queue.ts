// One Durable Object per model queue (or shard of one), called by edge/routes: jobs, leases and metrics in
// SQLite, so a restart loses nothing accepted, and every deadline in a table driving the one alarm
// (queue-clock.ts). It wires JobStore, LeaseTable, LeaseSettlement, WorkerSlots and the trust in browser
// workers (Verifier, TrustStore); decisions come from the pure policies in shared/.
import { DurableObject } from "cloudflare:workers";
import {
  type CompleteBody,
  type DeltasFrame,
  ErrorCode,
  type ItemResultsBody,
  type JobView,
  type LeaseAck,
  type LeaseDeltasFrame,
  type LeaseRequest,
  type ModelConfig,
  type Pool,
  ProtocolError,
  parseQueueName,
  queueName,
  queueOfId,
  type TokensBody,
  type TokensFrame,
  type WorkerFrame,
} from "../../shared/index.ts";
import { loadConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { NO_POOL } from "../metrics/definitions.ts";
import { Sql } from "../sql.ts";
import { BreakerStore } from "./breaker-store.ts";
import { HandOut } from "./hand-out.ts";
import { type CancelResult, type DeadLetter, JobAdmin } from "./job-admin.ts";
import { JobEvents, type StreamRefusal, streamRefusalMessage, type WatchRequest } from "./job-events.ts";
import { JobStore, type Refusal, type SubmitInput, type SubmitResult } from "./job-store.ts";
import { type CompleteResult, LeaseSettlement, quarantineMessage } from "./lease-settlement.ts";
import { type LeaseRow, LeaseTable, notFoundAck } from "./lease-table.ts";
import { type MetricsSnapshot, MetricsStore } from "./metrics-store.ts";
import { PoolRouter, type RoutePlan } from "./pool-router.ts";
import { QueueClock } from "./queue-clock.ts";
import { MODEL_QUEUE_MIGRATIONS } from "./schema.ts";
import { SessionAppender } from "./session-appender.ts";
import { ShardRecord } from "./shard-record.ts";
import { GENERATION_TASK, TokenStream } from "./token-stream.ts";
import { type Kind, type Quarantine, TrustStore, type WorkerRef } from "./trust-store.ts";
import { Verifier } from "./verification.ts";
import { type Roster, WorkerRoster } from "./worker-roster.ts";
import {
  type Credential,
  type LeaseHolder,
  type OutgoingFrame,
  readFrame,
  sendFrame,
  setSocketCredential,
  setSocketWorker,
  socketCredential,
  socketWorker,
  WorkerSlots,
} from "./worker-slots.ts";

/** Headers edge/routes/workers.ts sets on a worker's socket from its credential (and strips from what a client sent). */
export const POOL_HEADER = "X-EdgeSwarm-Pool";
export const DONOR_HEADER = "X-EdgeSwarm-Donor";
export const NETWORK_HEADER = "X-EdgeSwarm-Network";
export const HOLDER_HEADER = "X-EdgeSwarm-Holder";
/** Sockets one donor keeps open to one model's queue (a page needs one). */
const DONOR_MAX_SOCKETS = 2;

export type { CancelResult, DeadLetter } from "./job-admin.ts";
export type { SubmitInput, SubmitResult } from "./job-store.ts";
export type { CompleteResult } from "./lease-settlement.ts";
export type { Roster } from "./worker-roster.ts";

export interface QueueStats {
  model: string;
  /** Which of the model's queue objects answered (0 unless its queue is sharded). */
  shard: number;
  queued: number;
  /** Queued items each pool may lease now: the browser pool all routed ones, the GPU pool its overflow. */
  eligible: Record<Pool, number>;
  in_flight: Record<Pool, number>;
  leases: Record<Pool, number>;
  workers: Record<Pool, number>;
  /** Browser workers quarantined now (caught answering wrongly). */
  quarantined: number;
  /** Items whose output is held until a run on another worker agrees. */
  awaiting_verification: number;
  /** Workers whose circuit breaker keeps leases from them now (open, or half-open with its probe out). */
  breaker_open: Record<Pool, number>;
  /** Shard 0 of a sharded queue: how many shards workers serve (more than configured while dropped ones drain). */
  served_shards?: number;
}

/**
 * A worker as the queue leases to it: what it said of itself, with what its credential vouched for in
 * place of its claims. What a donor may hold is capped where leases are given (hand-out.ts, donor_max_leases).
 */
function holderFrom(info: Omit<LeaseHolder, "donor" | "network" | "holder">, credential: Credential): LeaseHolder {
  const holder: LeaseHolder = { ...info, pool: credential.pool ?? info.pool };
  if (credential.donor !== undefined) holder.donor = credential.donor;
  if (credential.network !== undefined) holder.network = credential.network;
  if (credential.holder !== undefined) holder.holder = credential.holder;
  return holder;
}

export class ModelQueue extends DurableObject<Env> {
  private readonly sql: Sql;
  private readonly metrics: MetricsStore;
  private readonly jobs: JobStore;
  private readonly leases: LeaseTable;
  private readonly settlement: LeaseSettlement;
  private readonly slots: WorkerSlots;
  private readonly trust: TrustStore;
  private readonly verifier: Verifier;
  private readonly router: PoolRouter;
  private readonly breakers: BreakerStore;
  private readonly handOut: HandOut;
  private readonly events: JobEvents;
  private readonly admin: JobAdmin;
  private readonly roster: WorkerRoster;
  private readonly tokens: TokenStream;
  private readonly sessions: SessionAppender;
  private readonly clock: QueueClock;
  /** The model this object serves, and its queue name (the model, or `<model>~<shard>`: ids.ts queueName). */
  private model: string | undefined;
  private queue: string | undefined;
  private shard = 0;
  /** Shard 0's record of the model's other shards (shard-record.ts). */
  private readonly shards: ShardRecord;
  /** A shard other than 0 has told shard 0 it exists (once per start), so a shrink never strands its work. */
  private shardNoted: Promise<void> | true | undefined;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage.sql);
    this.metrics = new MetricsStore(this.sql, (run) => ctx.storage.transactionSync(run));
    this.jobs = new JobStore(
      this.sql,
      this.metrics,
      () => this.model,
      (jobId) => this.admin.noWorker(this.config(), jobId, this.slots.countByPool(Date.now())),
    );
    const config = () => this.config();
    this.leases = new LeaseTable(this.sql, this.metrics, this.jobs, config, () => this.queue ?? "");
    this.trust = new TrustStore(this.sql);
    this.breakers = new BreakerStore(this.sql, this.metrics);
    this.verifier = new Verifier(this.sql, this.metrics, this.trust);
    this.settlement = new LeaseSettlement(
      this.sql,
      this.metrics,
      ctx.storage,
      this.jobs,
      this.verifier,
      this.trust,
      this.breakers,
      config,
      (ref, q) => this.tellQuarantined(ref, q),
    );
    this.slots = new WorkerSlots(ctx);
    this.router = new PoolRouter(this.sql);
    this.handOut = new HandOut(
      this.leases,
      this.slots,
      this.trust,
      this.verifier,
      this.router,
      this.breakers,
      (leaseId) => this.release(leaseId, "could not be sent to the worker"),
    );
    this.events = new JobEvents(this.sql, this.jobs, () => this.model ?? "");
    this.admin = new JobAdmin(this.sql, this.jobs, this.slots);
    this.roster = new WorkerRoster(this.slots, this.leases, this.trust, this.breakers);
    this.tokens = new TokenStream(this.sql, this.metrics, this.leases, config);
    this.shards = new ShardRecord(
      this.sql,
      (k) => ({ queue: queueName(this.model ?? "", k), probe: this.sibling(k) }),
      (work) => ctx.waitUntil(work),
    );
    this.sessions = new SessionAppender(
      this.jobs,
      (ref, entry) => env.SESSION.get(env.SESSION.idFromString(ref)).append(entry),
      (work) => ctx.waitUntil(work),
      () => {
        this.clock.schedule(Date.now());
        // A session's job's stream ends once its turn is appended (job-events.ts).
        this.events.flush();
      },
    );
    this.clock = new QueueClock(
      this.sql,
      ctx.storage,
      config,
      (now) => [this.sessions.retryAt(now), this.breakers.nextProbeAt(now)],
      () => this.pumpAndSchedule(),
    );
    ctx.blockConcurrencyWhile(async () => {
      this.sql.migrate(MODEL_QUEUE_MIGRATIONS);
      this.trust.load(Date.now());
      const stored = this.sql.getMeta("model");
      if (stored !== undefined) this.adopt(stored);
      await this.clock.load();
    });
  }

  // ---- caller side -------------------------------------------------------------------------

  /** Accepts a request (its id made by the edge, so a retry after a lost reply can find it). */
  submit(queue: string, req: SubmitInput, waitMs = 0): Promise<SubmitResult> | SubmitResult {
    const cfg = this.bind(queue);
    if (this.shard > 0 && this.shardNoted !== true) {
      // This shard's first call since it started: shard 0 records it before anything is accepted here.
      this.shardNoted ??= this.sibling(0)
        .noteShard(queueName(cfg.name, 0), this.shard)
        .then(
          () => {
            this.shardNoted = true;
          },
          (error: unknown) => {
            this.shardNoted = undefined;
            throw error;
          },
        );
      return this.shardNoted.then(() => this.submit(queue, req, waitMs));
    }
    const now = Date.now();
    const noStream = req.watch ? this.events.refusal(req.owner, req.watch.key) : null;
    if (noStream) return this.noStreamRoom(cfg, req, noStream);
    const answered = this.accept(cfg, req, waitMs, now);
    if (!req.watch) return answered;
    const watch = req.watch;
    const withEvents = (a: SubmitResult): SubmitResult =>
      a.ok ? { ...a, events: this.events.watch(req.id, watch, req.owner) } : a;
    return answered instanceof Promise ? answered.then(withEvents) : withEvents(answered);
  }

  /** A streamed call this object has no room to stream: refused before anything is queued. */
  private noStreamRoom(cfg: ModelConfig, req: SubmitInput, why: StreamRefusal): Refusal {
    if (!req.passed_on_if_full) this.metrics.inc("rejected", NO_POOL);
    return {
      ok: false,
      code: ErrorCode.queueFull,
      message: `${streamRefusalMessage(why, cfg.name)}; retry shortly, or call without "stream"`,
      retryAfterS: 5,
    };
  }

  /** A new job queued (or a retried one answered as it stands), or why not. */
  private accept(
    cfg: ModelConfig,
    req: SubmitInput,
    waitMs: number,
    now: number,
  ): Promise<SubmitResult> | SubmitResult {
    // Who is connected decides for a new job only: a retry of an accepted one is answered as it stands.
    const refused =
      this.admin.withoutWorkers(cfg, req, () => this.slots.countByPool(now)) ??
      (req.pool === "browser" ? this.noVerifier(cfg, now) : null);
    const accepted = refused ? (this.jobs.exists(req.id) ? "exists" : refused) : this.jobs.accept(cfg, req, now);
    if (accepted === "exists") return this.admin.idempotencyConflict(req) ?? this.answerAgain(req, waitMs);
    if (accepted !== "accepted") return accepted;
    // What a submit adds to the deadlines: its own, and a lease if the pump starts one.
    const addedNoEarlierThan = Math.min(now + (req.timeout_ms ?? cfg.default_timeout_ms), now + cfg.lease_ms);
    // A call that fills a batch alone goes out now; smaller ones share the pump of the submits around them.
    if (req.inputs.length >= cfg.max_batch_size) this.pumpAndSchedule(now, addedNoEarlierThan);
    else {
      this.clock.schedule(now, addedNoEarlierThan);
      this.clock.pumpSoon();
    }
    return this.jobs.answer(req.id, waitMs, true);
  }

  /**
   * Why a call pinned to the browser pool could not end now, or null: a donor's output is given out only once
   * a trusted run or an independent donor in good standing agrees, and nothing connected could be either.
   */
  private noVerifier(cfg: ModelConfig, now: number): Refusal | null {
    if (!cfg.verification.enabled || this.slots.countByPool(now).gpu > 0) return null;
    if (this.handOut.firstRunners(cfg, now).donorsRelease) return null;
    return {
      ok: false,
      retryAfterS: 5,
      code: ErrorCode.noVerifier,
      message: `a browser worker's output for "${cfg.name}" is given out only once a trusted (gpu-pool) run or an independent donor in good standing agrees, and neither is connected; leave out "pool" (the queue routes the call) or retry when a gpu worker is connected`,
    };
  }

  /** A retried submit of an accepted job (the edge retried, or the caller repeated its Idempotency-Key). */
  private async answerAgain(req: SubmitInput, waitMs: number): Promise<SubmitResult> {
    const answer = await this.jobs.answer(req.id, waitMs);
    return answer.ok && req.request_hash !== undefined ? { ...answer, replayed: true } : answer;
  }

  /** The job, for the key that made it (`owner`, edge/submit.ts ownerOf); null for any other. */
  job(id: string, owner?: string): JobView | null {
    return this.admin.visible(id, owner) ? this.jobs.view(id) : null;
  }

  /** Cancels a job of this key's (job-admin.ts); `hung_up`: its caller went away from a waiting call. */
  cancelJob(queue: string, id: string, owner: string | undefined, by: "caller" | "hung_up" = "caller"): CancelResult {
    this.bind(queue);
    const now = Date.now();
    const result = this.admin.cancel(id, owner, by, now);
    // The workers freed take other work; watchers of the job hear its end.
    if (result.ok) this.pumpAndSchedule(now);
    return result;
  }

  deadLetters(queue: string, limit: number): { total: number; dead_letters: DeadLetter[] } {
    this.bind(queue);
    return this.admin.deadLetters(limit);
  }

  replayDeadLetters(queue: string, jobIds: readonly string[] | null): { items: number; jobs: string[] } {
    this.bind(queue);
    const now = Date.now();
    const replayed = this.admin.replay(jobIds, now);
    if (replayed.items > 0) this.pumpAndSchedule(now);
    return replayed;
  }

  workers(queue: string): Roster {
    const cfg = this.bind(queue);
    return this.roster.list(cfg, Date.now());
  }

  /** Lifts a quarantine (an operator's call); false when none of that kind and id is running. */
  liftQuarantine(queue: string, kind: Kind, id: string): boolean {
    this.bind(queue);
    const now = Date.now();
    const lifted = this.roster.lift(kind, id, now);
    if (lifted) this.pumpAndSchedule(now);
    return lifted;
  }

  /**
   * The job's events (job-events.ts), as Server-Sent Events or OpenAI's chunks, until it ends; "not_found" for a job
   * this queue does not have, "full" when it serves as many event streams as it will, "owner_full" when `owner`
   * holds as many of them as one key may.
   */
  watchJob(
    queue: string,
    id: string,
    owner: string | undefined,
    watch: WatchRequest,
  ): ReadableStream<Uint8Array> | "not_found" | StreamRefusal {
    this.bind(queue);
    if (!this.admin.visible(id, owner)) return "not_found";
    return this.events.refusal(owner, watch.key) ?? this.events.watch(id, watch, owner);
  }

  /** Ends a stream of watchJob's or submit's (WatchRequest.key) whose caller hung up. */
  unwatch(queue: string, key: string): void {
    this.bind(queue);
    this.events.unwatch(key);
  }

  /** Resolves with the job once it has ended, or with its state as it is after waitMs. */
  waitJob(id: string, waitMs: number): Promise<JobView | null> {
    return this.jobs.wait(id, waitMs);
  }

  stats(queue: string): QueueStats {
    const cfg = this.bind(queue);
    const now = Date.now();
    const workers = this.slots.countByPool(now);
    const { leases, inFlight } = this.leases.activeByPool();
    const plan = this.routePlan(cfg, now, inFlight);
    const served = this.shard === 0 ? this.shards.served(cfg, now) : 1;
    return {
      model: this.model ?? "",
      shard: this.shard,
      ...(served > 1 ? { served_shards: served } : {}),
      queued: this.jobs.queuedCount(),
      eligible: { browser: plan.browser, gpu: plan.gpu },
      in_flight: inFlight,
      leases,
      workers,
      quarantined: this.trust.quarantinedWorkers(now),
      awaiting_verification: this.verifier.awaiting(),
      breaker_open: this.breakers.openByPool(now),
    };
  }

  /** Shard 0 hears that shard `shard` of its model is taking calls (submit, on that shard's first). */
  noteShard(queue: string, shard: number): void {
    this.bind(queue);
    this.shards.note(shard + 1);
  }

  /** Shard 0: how many shards workers serve now (shard-record.ts); more than configured while dropped ones drain. */
  servedShards(queue: string): number {
    const cfg = this.bind(queue);
    return this.shard === 0 ? this.shards.served(cfg, Date.now()) : cfg.shards;
  }

  /** Jobs not ended yet: what a shard dropped from its model's `shards` still owes (shard-record.ts). */
  openWork(queue: string): number {
    this.bind(queue);
    return this.jobs.openCount();
  }

  metricsSnapshot(queue: string): MetricsSnapshot {
    this.bind(queue);
    return this.metrics.snapshot();
  }

  // ---- worker side ---------------------------------------------------------------------------

  /**
   * HTTP long-poll lease: a batch as JSON text, or null when none formed within wait_ms. The route passes
   * what a browser donor token vouched for: the pool it is pinned to, and the donor id quarantine is keyed by.
   */
  async lease(queue: string, req: LeaseRequest, credential: Credential = {}): Promise<string | null> {
    this.bind(queue);
    const { model: _model, wait_ms, ...info } = req;
    return this.slots.poll(holderFrom(info, credential), wait_ms, Date.now(), () => this.pumpAndSchedule());
  }

  /** Ends a worker's waiting long-polls here with no batch: it was given one by another shard (routes/workers.ts). */
  endPolls(queue: string, workerId: string, credential: Credential = {}): void {
    this.bind(queue);
    this.slots.endPolls({ worker_id: workerId, holder: credential.holder });
  }

  /** `holder`: the credential the route saw (workers.ts holderOf); only the one a lease was given to may act on it. */
  extend(leaseId: string, extendMs?: number, holder?: string): LeaseAck {
    return this.onLease(leaseId, { holder }, (lease, now) => this.extendLease(lease, extendMs, now));
  }

  complete(leaseId: string, body: CompleteBody, holder?: string): CompleteResult {
    return this.onLease(leaseId, { holder }, (lease, now) => this.completeLease(lease, body, now));
  }

  /** An HTTP worker's results of some items ahead of its lease's completion (POST /v1/leases/{id}/results). */
  itemResults(leaseId: string, body: ItemResultsBody, holder?: string): CompleteResult {
    return this.onLease<CompleteResult>(leaseId, { holder }, (lease, now) => this.settleItems(lease, body, now));
  }

  release(leaseId: string, reason?: string, holder?: string): LeaseAck {
    return this.onLease(leaseId, { holder }, (lease, now) => this.releaseLease(lease, now, reason));
  }

  /** An HTTP worker's token deltas (POST /v1/leases/{id}/tokens), kept as a socket's frames are; a refused one ends the rest. */
  acceptTokens(leaseId: string, body: TokensBody, holder?: string): CompleteResult {
    const jobs = new Set<string>();
    const result = this.onLease<CompleteResult>(leaseId, { holder }, (lease, now) =>
      this.keepDeltas(lease, body, now, jobs),
    );
    this.events.flushTokens([...jobs]);
    return result;
  }

  /**
   * Keeps several token deltas of a lease in order (token-stream.ts), adding their jobs to `told`, whose
   * watchers the caller tells once all its leases' are kept (nothing else changed: no pump, no other watcher).
   * A refused delta ends the rest of its own item's in the body, not other items' (the lease may hold other
   * jobs' items, which go on when one job is cancelled). Answers the first refusal, if any.
   */
  private keepDeltas(lease: LeaseRow, body: TokensBody, now: number, told: Set<string>): CompleteResult {
    const untrusted = this.verifier.checks(this.config(), lease.pool);
    const { refused, jobs } = this.tokens.accept(lease, body, untrusted, now);
    for (const job of jobs) told.add(job);
    return refused ?? { lease_id: lease.id, status: "ok" };
  }

  private extendLease(lease: LeaseRow, extendMs: number | undefined, now: number): LeaseAck {
    const ack = this.leases.extend(lease, extendMs, now);
    this.clock.schedule(now);
    return ack;
  }

  private completeLease(lease: LeaseRow, body: CompleteBody, now: number): CompleteResult {
    // An untrusted lease's outputs wait for verification: its figures are not the service's.
    const trusted = !this.verifier.checks(this.config(), lease.pool);
    // A generating item's output must go on from the tokens already relayed (token-stream.ts).
    const generation =
      trusted && this.config().task === GENERATION_TASK ? this.tokens.beforeSettle(lease, body.results, now) : null;
    // beforeSettle answers a result for each one it was given.
    const results = (generation?.results ?? body.results) as CompleteBody["results"];
    const result = this.settlement.complete(lease, { ...body, results }, now);
    if (generation && !("error" in result)) generation.measure();
    if (!("error" in result)) this.router.observe(lease, now);
    if (!("error" in result) || result.error.code === ErrorCode.quarantined) this.pumpAndSchedule(now);
    return result;
  }

  /** Some items of a trusted lease settled before it completes: their jobs may end, and the worker has room. */
  private settleItems(lease: LeaseRow, body: ItemResultsBody, now: number): CompleteResult {
    const given = this.settlement.earlyResults(lease, body);
    if (!Array.isArray(given)) return given;
    const generation = this.config().task === GENERATION_TASK ? this.tokens.beforeSettle(lease, given, now) : null;
    const result = this.settlement.settleEarly(lease, generation?.results ?? given, now);
    if (generation && !("error" in result)) generation.measure();
    if (!("error" in result)) this.pumpAndSchedule(now);
    return result;
  }

  private releaseLease(lease: LeaseRow, now: number, reason?: string): LeaseAck {
    const ack = this.settlement.release(lease, now, reason);
    this.pumpAndSchedule(now);
    return ack;
  }

  // ---- WebSocket workers (hibernation API) ---------------------------------------------------

  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
      return new Response("expected a WebSocket upgrade", { status: 426 });
    }
    const params = new URL(request.url).searchParams;
    const cfg = this.bind(queueName(params.get("model") ?? "", Number(params.get("shard") ?? 0)));
    // Only the route sets these (it strips them from what a client sent), so they can be trusted here.
    const credential: Credential = request.headers.get(POOL_HEADER) === "browser" ? { pool: "browser" } : {};
    const donor = request.headers.get(DONOR_HEADER);
    const network = request.headers.get(NETWORK_HEADER);
    const holder = request.headers.get(HOLDER_HEADER);
    if (donor) credential.donor = donor;
    if (network) credential.network = network;
    if (holder) credential.holder = holder;
    const refused = donor ? this.socketRefusal(cfg, donor, network) : null;
    if (refused) {
      return Response.json(
        { error: { code: ErrorCode.rateLimited, message: refused } },
        { status: 429, headers: { "Retry-After": "30" } },
      );
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    setSocketCredential(server, credential);
    return new Response(null, { status: 101, webSocket: client });
  }

  /** Why a donor may open no more sockets to this queue (per donor, per network), or null. */
  private socketRefusal(cfg: ModelConfig, donor: string, network: string | null): string | null {
    if (this.slots.countSockets((c) => c.donor === donor) >= DONOR_MAX_SOCKETS) {
      return `this donor already holds ${DONOR_MAX_SOCKETS} connections to "${cfg.name}"; close one before opening another`;
    }
    const cap = cfg.verification.network_max_sockets;
    if (network && this.slots.countSockets((c) => c.pool === "browser" && c.network === network) >= cap) {
      return `donors on ${network} already hold ${cap} connections to "${cfg.name}"; try again later`;
    }
    return null;
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    try {
      const reply = this.answerFrame(ws, message);
      for (const frame of Array.isArray(reply) ? reply : [reply]) if (frame) sendFrame(ws, frame);
    } catch (error) {
      // Whatever went wrong, the worker hears of it rather than waiting on an answer that never comes.
      console.error("worker frame failed", error);
      sendFrame(ws, { type: "error", code: ErrorCode.internal, message: `frame not processed: ${String(error)}` });
    }
  }

  /**
   * The reply to one worker frame (several for a frame about several leases); none for a hello, whose welcome
   * must go out before any batch.
   */
  private answerFrame(ws: WebSocket, message: string | ArrayBuffer): OutgoingFrame | readonly OutgoingFrame[] | null {
    const frame = readFrame(message);
    if (frame instanceof ProtocolError) return { type: "error", code: frame.code, message: frame.message };
    const info = socketWorker(ws);
    if (frame.type === "hello") {
      this.hello(ws, frame);
      return null;
    }
    if (!info) return { type: "error", code: ErrorCode.badRequest, message: "send a hello frame before any other" };
    if (frame.type === "drain") {
      setSocketWorker(ws, { ...info, draining: true });
      return { type: "draining", leases_held: this.leases.heldBy(info.worker_id) };
    }
    if (frame.type === "resume") {
      // The worker takes batches again (a browser tab shown again, or done resting for its duty cycle).
      setSocketWorker(ws, { ...info, draining: false });
      this.pumpAndSchedule();
      return null;
    }
    // Over a socket a worker acts only on its own leases, given to its own credential.
    const holder = socketCredential(ws).holder;
    const by = { worker: info.worker_id, holder };
    if (frame.type === "tokens" || frame.type === "deltas") return this.tokenDelta(frame, by);
    if (frame.type === "lease_deltas") return this.leaseDeltas(frame.leases, by);
    if (frame.type === "results") return this.resultsFrame(frame, by);
    if (queueOfId(frame.lease_id) !== this.queue) {
      return { type: "ack", op: frame.type, ...notFoundAck(frame.lease_id, "lease id is not one of this model's") };
    }
    const result = this.onLease<CompleteResult>(frame.lease_id, by, (lease, now) =>
      frame.type === "extend"
        ? this.extendLease(lease, frame.extend_ms, now)
        : frame.type === "complete"
          ? this.completeLease(lease, frame, now)
          : this.releaseLease(lease, now, frame.reason),
    );
    if ("error" in result) return { type: "error", ...result.error, lease_id: frame.lease_id };
    return { type: "ack", op: frame.type, ...result };
  }

  /**
   * A generating worker's token delta, or several (a `deltas` frame; token-stream.ts). Kept deltas are not
   * acknowledged (one per few tokens would double the traffic); a refused one, or one for a lease this worker
   * does not hold, is.
   */
  private tokenDelta(
    frame: TokensFrame | DeltasFrame,
    by: { worker: string; holder: string | undefined },
  ): OutgoingFrame | null {
    const { type: _type, lease_id, ...delta } = frame;
    const { deltas } = "deltas" in delta ? delta : { deltas: [delta] };
    return this.leaseDeltas([{ lease_id, deltas }], by)[0] ?? null;
  }

  /**
   * Token deltas of one lease or several (a `lease_deltas` frame): each lease's kept as its own `deltas`
   * frame's would be, and their watchers told once. Answers an `error` frame for each lease refused.
   */
  private leaseDeltas(
    leases: LeaseDeltasFrame["leases"],
    by: { worker: string; holder: string | undefined },
  ): OutgoingFrame[] {
    const jobs = new Set<string>();
    const answers: OutgoingFrame[] = [];
    try {
      for (const { lease_id, deltas } of leases) {
        try {
          const refused = this.answeredIfRefused(lease_id, by, (lease, now) =>
            this.keepDeltas(lease, { deltas }, now, jobs),
          );
          if (refused) answers.push(refused);
        } catch (error) {
          // One lease's failure is that lease's: its worker hears which, and the other leases' deltas go on.
          console.error(`deltas of lease ${lease_id} failed`, error);
          const message = `deltas not processed: ${String(error)}`;
          answers.push({ type: "error", code: ErrorCode.internal, message, lease_id });
        }
      }
    } finally {
      // The deltas kept reach their watchers whatever happened to the rest.
      this.events.flushTokens([...jobs]);
    }
    return answers;
  }

  /** Some items' results ahead of the lease's completion: answered only when refused, as token deltas are. */
  private resultsFrame(
    frame: Extract<WorkerFrame, { type: "results" }>,
    by: { worker: string; holder: string | undefined },
  ): OutgoingFrame | null {
    return this.answeredIfRefused(frame.lease_id, by, (lease, now) => this.settleItems(lease, frame, now));
  }

  /** Acts on a lease of this worker's for a frame that is answered only when refused: an `error` frame, or none. */
  private answeredIfRefused(
    leaseId: string,
    by: { worker: string; holder: string | undefined },
    act: (lease: LeaseRow, now: number) => CompleteResult,
  ): OutgoingFrame | null {
    const answer =
      queueOfId(leaseId) !== this.queue
        ? notFoundAck(leaseId, "lease id is not one of this model's")
        : this.onLease<CompleteResult>(leaseId, by, act);
    if ("error" in answer) return { type: "error", ...answer.error, lease_id: leaseId };
    if (answer.status === "ok") return null;
    const message = answer.message ?? `lease ${leaseId} is ${answer.status}`;
    return { type: "error", code: ErrorCode.leaseNotFound, message, lease_id: leaseId };
  }

  /**
   * A worker says who it is. A socket opened with a browser donor token joins the browser pool only: a
   * claim to the gpu pool is refused and the socket closed (1008). A quarantined worker is told so; its
   * socket stays open, but it gets no batches until the quarantine ends.
   */
  private hello(ws: WebSocket, frame: Extract<WorkerFrame, { type: "hello" }>): void {
    const { type: _type, version: _version, ...hello } = frame;
    const credential = socketCredential(ws);
    if (credential.pool === "browser" && hello.pool !== "browser") {
      sendFrame(ws, {
        type: "error",
        code: ErrorCode.forbidden,
        message: `this connection was opened with a browser donor token: it may join the browser pool only, not "${hello.pool}"`,
      });
      setSocketWorker(ws, null);
      ws.close(1008, "forbidden: browser pool only");
      return;
    }
    const holder = holderFrom(hello, credential);
    setSocketWorker(ws, holder);
    const cfg = this.config();
    // Shard 0 tells the worker how many shards to serve: the model's, or more while shards it had drain.
    const shards = this.shard === 0 ? this.shards.served(cfg, Date.now()) : cfg.shards;
    sendFrame(ws, {
      type: "welcome",
      model: cfg.name,
      worker_id: hello.worker_id,
      lease_ms: cfg.lease_ms,
      shards,
      deltas: true,
      lease_deltas: true,
    });
    const now = Date.now();
    const q = holder.pool === "browser" ? this.trust.quarantinedUntil(holder, now) : null;
    if (q) sendFrame(ws, { type: "error", code: ErrorCode.quarantined, message: quarantineMessage(q) });
    this.pumpAndSchedule(now);
  }

  /** Tells a quarantined browser worker's sockets (of it, or of its donor) why it gets no more batches. */
  private tellQuarantined(ref: WorkerRef, q: Quarantine): void {
    for (const ws of this.slots.socketsOf(ref.worker_id, ref.donor, ref.network ?? null)) {
      if (socketWorker(ws)?.pool !== "browser") continue;
      try {
        sendFrame(ws, { type: "error", code: ErrorCode.quarantined, message: quarantineMessage(q) });
      } catch {
        // closing anyway
      }
    }
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
    const gone = this.slots.forget(ws);
    if (gone === null || !this.model) return;
    const now = Date.now();
    this.settlement.abandonWorker(gone, now, message);
    this.pumpAndSchedule(now);
  }

  // ---- alarm: every deadline ------------------------------------------------------------------

  override async alarm(): Promise<void> {
    this.clock.alarmFired();
    if (!this.model) return;
    const now = Date.now();
    this.metrics.flush();
    this.settlement.expire(now);
    this.jobs.expire(now);
    const ttl = this.config().result_ttl_ms;
    this.jobs.dropFinished(now - ttl);
    this.leases.dropEnded(now - ttl);
    this.verifier.collectGarbage();
    this.trust.dropExpired(now);
    this.breakers.dropIdle(now);
    this.pumpAndSchedule(now);
  }

  // ---- internals ------------------------------------------------------------------------------

  /** Binds this object to the queue it is (a model, or one shard of it) on first use; it never serves another. */
  private bind(queue: string): ModelConfig {
    if (this.queue === undefined) {
      this.adopt(queue);
      this.sql.setMeta("model", queue);
    } else if (this.queue !== queue) {
      throw new Error(`queue object of "${this.queue}" was asked about "${queue}"`);
    }
    return this.config();
  }

  private adopt(queue: string): void {
    const parsed = parseQueueName(queue);
    if (!parsed) throw new Error(`"${queue}" names no model queue`);
    this.queue = queue;
    this.model = parsed.model;
    this.shard = parsed.shard;
  }

  /** Another shard of this object's model (or this one): shard 0 keeps the record of the others. */
  private sibling(shard: number): DurableObjectStub<ModelQueue> {
    const name = queueName(this.model ?? "", shard);
    return this.env.MODEL_QUEUE.get(this.env.MODEL_QUEUE.idFromName(name));
  }

  /**
   * Acts on an active lease, binding to the model its id names; otherwise answers why not. `holder`, when
   * given, must be the worker that holds it.
   */
  private onLease<T extends CompleteResult>(
    leaseId: string,
    by: { worker?: string; holder?: string | undefined },
    act: (lease: LeaseRow, now: number) => T,
  ): T | LeaseAck {
    const queue = queueOfId(leaseId);
    if (!queue) throw new Error(`"${leaseId}" is not an EdgeSwarm id`);
    this.bind(queue);
    const found = this.leases.lookup(leaseId);
    if ("ack" in found) return found.ack;
    // The same answer as for a lease that does not exist: nothing tells another worker whose lease it is.
    if (by.worker !== undefined && found.lease.worker_id !== by.worker)
      return notFoundAck(leaseId, "this worker holds no such lease");
    if (found.lease.holder !== null && by.holder !== undefined && found.lease.holder !== by.holder)
      return notFoundAck(leaseId, "this worker holds no such lease");
    return act(found.lease, Date.now());
  }

  private config(): ModelConfig {
    const cfg = loadConfig(this.env).models.get(this.model ?? "");
    if (!cfg) throw new Error(`model "${this.model}" is no longer configured`);
    return cfg;
  }

  /**
   * After any change: hand out what is due, then re-arm the alarm. `addedNoEarlierThan`, when the caller
   * knows it: no deadline this change added is earlier (see schedule).
   */
  private pumpAndSchedule(now = Date.now(), addedNoEarlierThan?: number): void {
    this.pump(now);
    this.clock.schedule(now, addedNoEarlierThan);
    this.events.flush();
    this.sessions.run();
  }

  /** Hands out batches while a worker is free and Triton's rule says a batch is due (hand-out.ts). */
  private pump(now: number): void {
    this.clock.pumping();
    const lookAgainAt = this.handOut.pump(this.config(), now);
    if (lookAgainAt !== null) this.clock.armBatchTimer(lookAgainAt, now);
  }

  /** What each pool may take from the queue now (pool-router.ts). */
  private routePlan(cfg: ModelConfig, now: number, inFlight = this.leases.activeByPool().inFlight): RoutePlan {
    return this.router.plan(cfg, now, this.handOut.firstRunners(cfg, now).firstRunners, inFlight);
  }
}
