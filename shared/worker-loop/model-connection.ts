// One model's WebSocket to the coordinator, for every kind of worker (the Node worker with the `ws`
// package, the browser's Web Worker with its native WebSocket): hello, run each pushed batch as one
// batched inference, extend its lease while it runs, complete it with per-item results; reconnect with
// backoff when the socket drops; pause (take no new work, keep the socket) and resume; on drain,
// take no new work, finish or release what it holds, then close; a lease the coordinator cancels is
// dropped: no more extends, its results are never sent, and its run's signal is aborted (a generating run
// takes its sequences out of the running batch), as for a lease released or lost with the socket. A text-generation batch streams its tokens as
// they come, coalesced per item (token-coalescer.ts) and sent for all its batches together (delta-frames.ts).
import { retryBackoffMs } from "../policy/lease.ts";
import type { DeltasFrame, LeaseDeltasFrame, TokensFrame } from "../protocol/generation.ts";
import { childTraceparent } from "../protocol/trace.ts";
import type { Batch, CoordinatorFrame, ItemResult, WorkerFrame, WorkerInfo } from "../protocol/worker.ts";
import type { LoadedModel, RunOptions, TokenDelta } from "../runner/model-runner.ts";
import { type DeltaFraming, deltaFrames } from "./delta-frames.ts";
import { CLOSED, OPEN, type OpenSocket, quietTimeout, type SocketLike, sleep } from "./socket-like.ts";
import { FlushWindow, TokenCoalescer } from "./token-coalescer.ts";

export type { OpenSocket, SocketLike } from "./socket-like.ts";

/** Reconnect backoff: 250 ms doubling to 10 s, with jitter so a fleet does not reconnect in step. */
const RECONNECT = { backoffMs: 250, backoffMaxMs: 10_000, maxAttempts: Number.POSITIVE_INFINITY };

export interface BatchReport {
  model: string;
  device: string;
  leaseId: string;
  ok: number;
  failed: number;
  ms: number;
}

export interface ConnectionHooks {
  log(line: string): void;
  onConnected?(model: string, connected: boolean): void;
  onBatchStart?(model: string, leaseId: string, items: number): void;
  /** A batch has run; called just before its completion is sent, so a pause it makes is read first. */
  onBatch?(report: BatchReport): void;
  /**
   * The span a traced item is answered with (a traceparent in its trace), given the item's traceparent and
   * how its batch ran; default: a new span id in that trace. worker-gpu records it with OpenTelemetry.
   */
  traceItem?(parent: string, run: ItemRun): string | null;
}

/** How one item of a batch ran, for its compute span: times in ms since the epoch. */
export interface ItemRun {
  model: string;
  device: string;
  leaseId: string;
  /** The item's place in its batch, and the batch's size. */
  index: number;
  batchSize: number;
  startedAt: number;
  endedAt: number;
  error?: { code: string; message: string };
}

export interface ConnectionOptions {
  coordinator: string;
  /** The credential, asked for at every (re)connect so a short-lived one can be renewed. */
  token: () => string | undefined | Promise<string | undefined>;
  openSocket: OpenSocket;
  model: LoadedModel;
  info: WorkerInfo;
  hooks: ConnectionHooks;
  /** Runs a batch's inputs; defaults to model.run. The browser wraps it to fall back when its GPU device is lost. */
  run?: (inputs: readonly unknown[], opts?: RunOptions) => Promise<ItemResult[]>;
  /** Which shard of the model's queue this socket serves (sharded-connection.ts); 0 by default. */
  shard?: number;
  /** The coordinator welcomed this socket and said how many shards the model's queue has. */
  onWelcome?: (shards: number) => void;
  /** The batches held changed (one came, ended, was cancelled or released, or the socket dropped them). */
  onBusy?: () => void;
}

type WorkerFrameOut = WorkerFrame | TokensFrame | DeltasFrame | LeaseDeltasFrame | Record<string, unknown>;

export class ModelConnection {
  private ws: SocketLike | undefined;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private stopping = false;
  private paused = false;
  /** Paused with release: a batch that still arrives (pushed before the coordinator saw the drain) goes straight back. */
  private releaseWhilePaused = false;
  private welcomed = false;
  /** The frames of token deltas the coordinator takes (its welcome said which). */
  private framing: DeltaFraming = "tokens";
  /**
   * Token deltas to send, by lease, in order: those that leave together (the window's, or one decode step's
   * first tokens, of every batch) go in one frame where the coordinator takes it, sent in the task they came in.
   */
  private readonly deltasOut = new Map<string, TokenDelta[]>();
  /** The coalescing window every batch of this connection shares, so their deltas leave together. */
  private readonly tokenWindow = new FlushWindow();
  private readonly running = new Map<string, Promise<void>>();
  /** Each batch's item count, read for the running ones (busyItems). */
  private readonly sizes = new Map<string, number>();
  /** Each running batch's extend timer, stopped when the batch ends or its lease is cancelled. */
  private readonly extenders = new Map<string, ReturnType<typeof setInterval>>();
  /** Each running batch's abort: its results are no longer wanted (cancelled, released, or the socket lost). */
  private readonly aborts = new Map<string, AbortController>();
  private onDraining: (() => void) | undefined;

  constructor(private readonly opts: ConnectionOptions) {}

  get connected(): boolean {
    return this.welcomed && this.ws?.readyState === OPEN;
  }

  get model(): string {
    return this.opts.model.name;
  }

  /** The model, and the shard for a shard other than 0, as logs name this connection. */
  private get label(): string {
    return this.opts.shard ? `${this.model}~${this.opts.shard}` : this.model;
  }

  /** Batches this connection is running now. */
  get busy(): number {
    return this.running.size;
  }

  /** Items in the batches this connection is running now. */
  get busyItems(): number {
    let n = 0;
    for (const leaseId of this.running.keys()) n += this.sizes.get(leaseId) ?? 0;
    return n;
  }

  start(): void {
    void this.connect();
  }

  /**
   * Take no new batches (the coordinator stops sending them) but keep the socket; held batches finish.
   * With `release`, held batches are handed back at once instead (the page went away or asked to stop).
   */
  pause(release = false): void {
    this.paused = true;
    this.releaseWhilePaused = release;
    // Sent as soon as the socket is open (its hello went first), not only once welcomed: a pause in
    // between must reach the coordinator too.
    this.send({ type: "drain" });
    if (release) this.releaseHeld("worker paused");
  }

  /** Take batches again after pause(). */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.releaseWhilePaused = false;
    this.send({ type: "resume" });
  }

  /** Stop taking work; finish held batches within timeoutMs, release the rest, close. */
  async drain(timeoutMs: number): Promise<{ finished: number; released: number }> {
    this.stopping = true;
    if (this.reconnectTimer !== undefined) clearTimeout(this.reconnectTimer);
    const deadline = Date.now() + timeoutMs;
    if (this.connected) {
      // Batches pushed before the coordinator saw the drain arrive before its "draining" answer, and
      // none after it: so wait for that answer (or the socket's close) within the deadline, however
      // slow the coordinator is, before counting what is held.
      const acknowledged = new Promise<void>((resolve) => {
        this.onDraining = resolve;
      });
      this.send({ type: "drain" });
      await Promise.race([acknowledged, sleep(timeoutMs)]);
    }
    const seen = new Set(this.running.keys());
    while (this.running.size > 0 && Date.now() < deadline) {
      await Promise.race([
        Promise.all(this.running.values()),
        sleep(Math.max(1, Math.min(100, deadline - Date.now()))),
      ]);
    }
    const released = this.releaseHeld("worker shutting down");
    await this.close();
    return { finished: seen.size - released, released };
  }

  private releaseHeld(reason: string): number {
    let released = 0;
    for (const leaseId of this.running.keys()) {
      this.send({ type: "release", lease_id: leaseId, reason });
      this.running.delete(leaseId);
      this.aborts.get(leaseId)?.abort();
      released++;
    }
    if (released > 0) this.opts.onBusy?.();
    return released;
  }

  private async connect(): Promise<void> {
    let token: string | undefined;
    try {
      token = await this.opts.token();
    } catch (error) {
      this.opts.hooks.log(`[${this.label}] no credential: ${(error as Error).message}`);
      this.scheduleReconnect();
      return;
    }
    if (this.stopping) return;
    const shard = this.opts.shard ? `&shard=${this.opts.shard}` : "";
    const url = `${this.opts.coordinator.replace(/^http/, "ws")}/v1/workers/connect?model=${encodeURIComponent(this.model)}${shard}`;
    const ws = this.opts.openSocket(url, token);
    this.ws = ws;
    ws.addEventListener("open", () => {
      this.send({ type: "hello", version: 1, ...this.opts.info });
      if (this.paused) this.send({ type: "drain" });
    });
    ws.addEventListener("message", (event) => this.onFrame(String(event.data)));
    ws.addEventListener("error", (event) => {
      if (!this.stopping) this.opts.hooks.log(`[${this.label}] connection error: ${event.message ?? "socket error"}`);
    });
    ws.addEventListener("close", (event) => {
      if (this.ws !== ws) return;
      const wasConnected = this.welcomed;
      this.welcomed = false;
      // The next coordinator says what it takes in its own welcome (it may be an older one, after a deploy).
      this.framing = "tokens";
      this.opts.hooks.onConnected?.(this.model, false);
      // Leases held on a closed socket are put back by the coordinator; results for them would be stale.
      this.running.clear();
      for (const abort of this.aborts.values()) abort.abort();
      this.opts.onBusy?.();
      this.onDraining?.();
      if (this.stopping) return;
      if (wasConnected) this.opts.hooks.log(`[${this.label}] disconnected (${event.code}); reconnecting`);
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    const delay = retryBackoffMs(++this.attempt, RECONNECT) * (0.5 + Math.random() / 2);
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
  }

  private onFrame(text: string): void {
    let frame: CoordinatorFrame;
    try {
      frame = JSON.parse(text) as CoordinatorFrame;
    } catch {
      this.opts.hooks.log(`[${this.label}] unreadable frame from the coordinator`);
      return;
    }
    switch (frame.type) {
      case "welcome":
        this.welcomed = true;
        this.framing = frame.lease_deltas === true ? "lease_deltas" : frame.deltas === true ? "deltas" : "tokens";
        this.attempt = 0;
        this.opts.hooks.onConnected?.(this.model, true);
        this.opts.onWelcome?.(frame.shards ?? 1);
        this.opts.hooks.log(
          `[${this.label}] connected to ${this.opts.coordinator} as ${frame.worker_id} (${this.opts.model.device})`,
        );
        return;
      case "batch": {
        const { type: _type, ...batch } = frame;
        if (this.releaseWhilePaused) {
          // Sent before the coordinator read our drain (or on a hello that came before it): hand it back.
          this.send({ type: "release", lease_id: batch.lease_id, reason: "worker paused" });
          return;
        }
        const run = this.runBatch(batch).finally(() => {
          // Only this run's entry: a cancelled lease's entry is already gone.
          if (this.running.get(batch.lease_id) === run) this.running.delete(batch.lease_id);
          this.sizes.delete(batch.lease_id);
          this.opts.onBusy?.();
        });
        this.running.set(batch.lease_id, run);
        this.sizes.set(batch.lease_id, batch.items.length);
        this.opts.onBusy?.();
        return;
      }
      case "ack":
        if (frame.status === "stale" || frame.status === "not_found") {
          this.opts.hooks.log(
            `[${this.label}] ${frame.op} of ${frame.lease_id} was ${frame.status}: ${frame.message ?? ""}`,
          );
        }
        return;
      case "draining":
        this.onDraining?.();
        return;
      case "cancel":
        // Read by hand, not with the protocol's zod schema: the browser bundle of this loop carries no zod.
        if (typeof frame.lease_id === "string") this.cancelled(frame.lease_id, frame.reason);
        return;
      case "error":
        // A coordinator that does not know a frame (an older one, sent `tokens`) answers this; work goes on.
        this.opts.hooks.log(`[${this.label}] coordinator error ${frame.code}: ${frame.message}`);
        return;
      default:
        return;
    }
  }

  /**
   * A lease taken back (its job cancelled): nothing more is sent for it, and its run is told to stop (a
   * generating run leaves the running batch at its next step; a one-shot inference runs to its end).
   */
  private cancelled(leaseId: string, reason: string | undefined): void {
    if (!this.running.delete(leaseId)) return;
    this.aborts.get(leaseId)?.abort();
    this.opts.onBusy?.();
    const extend = this.extenders.get(leaseId);
    if (extend !== undefined) clearInterval(extend);
    this.extenders.delete(leaseId);
    this.opts.hooks.log(
      `[${this.label}] lease ${leaseId} cancelled by the coordinator (${reason ?? "no reason given"}); its results will not be sent`,
    );
  }

  private async runBatch(batch: Batch): Promise<void> {
    const started = performance.now();
    this.opts.hooks.onBatchStart?.(this.model, batch.lease_id, batch.items.length);
    const extend = setInterval(() => this.send({ type: "extend", lease_id: batch.lease_id }), batch.renew_after_ms);
    this.extenders.set(batch.lease_id, extend);
    const run = this.opts.run ?? ((inputs: readonly unknown[], opts?: RunOptions) => this.opts.model.run(inputs, opts));
    const tokens = new TokenCoalescer((delta) => this.queueDelta(batch.lease_id, delta), this.tokenWindow);
    /** Items settled ahead of the lease's completion, with the result each was sent with. */
    const settled = new Map<number, ItemResult>();
    // A run retried on another thread (--runtime web) goes over items settled already: their deltas are not sent.
    const onTokens: RunOptions["onTokens"] = (delta) => {
      if (!settled.has(delta.pos)) tokens.add(delta);
    };
    const abort = new AbortController();
    this.aborts.set(batch.lease_id, abort);
    // Each traced input is answered with this worker's own span of its trace.
    const startedAt = performance.timeOrigin + started;
    const traced = (r: ItemResult, index: number): ItemResult => {
      const parent = batch.items[index]?.traceparent;
      if (!parent) return r;
      const span = (this.opts.hooks.traceItem ?? childTraceparent)(parent, {
        model: this.model,
        device: this.opts.model.device,
        leaseId: batch.lease_id,
        index,
        batchSize: batch.items.length,
        startedAt,
        endedAt: performance.timeOrigin + performance.now(),
        ...("error" in r ? { error: r.error } : {}),
      });
      return span ? { ...r, traceparent: span } : r;
    };
    // Items settled ahead and not yet sent: those that end in one decode step leave as one `results` frame (each
    // frame is an event and a storage commit at the coordinator; a batch whose replies all hit one length sent
    // one frame an item).
    let early: { pos: number; result: ItemResult }[] = [];
    const sendEarly = () => {
      if (early.length === 0) return;
      const results = early;
      early = [];
      if (!this.running.has(batch.lease_id)) return;
      this.sendDeltas(); // their tokens first
      this.send({ type: "results", lease_id: batch.lease_id, results });
      this.sizes.set(batch.lease_id, Math.max(0, (this.sizes.get(batch.lease_id) ?? 0) - results.length));
      this.opts.onBusy?.();
    };
    // An item that ends before the rest (a short reply) is settled at once, its tokens first: its caller does
    // not wait for the batch's longest, and its room is free for the next. The last one goes with the completion.
    const onResult: RunOptions["onResult"] = (pos, result) => {
      if (!this.running.has(batch.lease_id) || settled.has(pos)) return;
      if (settled.size >= batch.items.length - 1) return;
      tokens.flushItem(pos);
      const answer = traced(result, pos);
      settled.set(pos, answer);
      if (early.length === 0) queueMicrotask(sendEarly);
      early.push({ pos, result: answer });
    };
    let results: ItemResult[];
    try {
      results = await run(
        batch.items.map((i) => i.input),
        { onTokens, signal: abort.signal, ...(batch.item_results ? { onResult } : {}) },
      );
    } catch (error) {
      // The whole run failed (runtime or device error): every item may succeed elsewhere, so retry them.
      const message = `inference failed on ${this.opts.info.worker_id}: ${(error as Error).message}`;
      results = batch.items.map(() => ({ error: { code: "runtime_error", message, retryable: true } }));
    } finally {
      sendEarly();
      tokens.flush(); // every delta before the completion
      this.sendDeltas();
      clearInterval(extend);
      this.extenders.delete(batch.lease_id);
      this.aborts.delete(batch.lease_id);
    }
    // Released meanwhile (pause with release, socket lost) or cancelled: the coordinator has taken the items back.
    if (!this.running.has(batch.lease_id)) return;
    const ms = performance.now() - started;
    // An item settled early keeps the span it was sent with.
    results = results.map((r, i) => settled.get(i) ?? traced(r, i));
    const failed = results.filter((r) => "error" in r).length;
    // Told before the completion goes out: a hook that pauses (a duty-cycle rest) has its drain read
    // first, so the coordinator does not hand over the next batch in answer to this completion.
    try {
      this.opts.hooks.onBatch?.({
        model: this.model,
        device: this.opts.model.device,
        leaseId: batch.lease_id,
        ok: results.length - failed,
        failed,
        ms,
      });
    } catch (error) {
      // A hook that throws must not cost the batch its results.
      this.opts.hooks.log(`[${this.label}] onBatch hook failed: ${(error as Error).message}`);
    }
    this.send({ type: "complete", lease_id: batch.lease_id, results, compute_ms: ms });
  }

  private queueDelta(leaseId: string, delta: TokenDelta): void {
    if (this.deltasOut.size === 0) queueMicrotask(() => this.sendDeltas());
    const queued = this.deltasOut.get(leaseId);
    if (queued) queued.push(delta);
    else this.deltasOut.set(leaseId, [delta]);
  }

  /** Sends the deltas queued (before any result or completion of their lease), but a lease's no longer held. */
  private sendDeltas(): void {
    if (this.deltasOut.size === 0) return;
    // Deltas of a lease released or cancelled meanwhile are not sent: the items are someone else's now.
    for (const leaseId of this.deltasOut.keys()) if (!this.running.has(leaseId)) this.deltasOut.delete(leaseId);
    const frames = deltaFrames(this.deltasOut, this.framing);
    this.deltasOut.clear();
    for (const frame of frames) this.send(frame);
  }

  private send(frame: WorkerFrameOut): void {
    if (this.ws?.readyState === OPEN) this.ws.send(JSON.stringify(frame));
  }

  private async close(): Promise<void> {
    const ws = this.ws;
    if (!ws || ws.readyState === CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.addEventListener("close", () => resolve());
      ws.close(1000, "worker stopping");
      quietTimeout(resolve, 2_000);
    });
  }
}
