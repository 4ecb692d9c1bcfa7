// One model's WebSocket to the coordinator: hello, run each pushed batch as one batched inference,
// extend its lease while it runs, complete it with per-item results; reconnect with backoff when the
// socket drops; on drain, take no new work, finish or release what it holds, then close.
import WebSocket from "ws";
import {
  type Batch,
  type CoordinatorFrame,
  type ItemResult,
  retryBackoffMs,
  type WorkerFrame,
  type WorkerInfo,
} from "../shared/index.ts";
import type { LoadedModel } from "../shared/runner/model-runner.ts";
import type { WorkerMetrics } from "./worker-metrics.ts";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

/** Reconnect backoff: 250 ms doubling to 10 s, with jitter so a fleet does not reconnect in step. */
const RECONNECT = { backoffMs: 250, backoffMaxMs: 10_000, maxAttempts: Number.POSITIVE_INFINITY };

export interface ConnectionOptions {
  coordinator: string;
  token: string | undefined;
  model: LoadedModel;
  info: WorkerInfo;
  metrics: WorkerMetrics;
  log: (line: string) => void;
}

type WorkerFrameOut = WorkerFrame | { type: "hello"; version: number } | Record<string, unknown>;

export class ModelConnection {
  private ws: WebSocket | undefined;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private stopping = false;
  private welcomed = false;
  private readonly running = new Map<string, Promise<void>>();
  private onDraining: (() => void) | undefined;

  constructor(private readonly opts: ConnectionOptions) {}

  get connected(): boolean {
    return this.welcomed && this.ws?.readyState === WebSocket.OPEN;
  }

  get model(): string {
    return this.opts.model.name;
  }

  start(): void {
    this.connect();
  }

  /** Stop taking work; finish held batches within timeoutMs, release the rest, close. */
  async drain(timeoutMs: number): Promise<{ finished: number; released: number }> {
    this.stopping = true;
    clearTimeout(this.reconnectTimer);
    const deadline = Date.now() + timeoutMs;
    if (this.connected) {
      // Batches pushed before the coordinator saw the drain arrive before its "draining" answer.
      const acknowledged = new Promise<void>((resolve) => {
        this.onDraining = resolve;
      });
      this.send({ type: "drain" });
      await Promise.race([acknowledged, sleep(Math.min(2_000, timeoutMs))]);
    }
    const seen = new Set(this.running.keys());
    while (this.running.size > 0 && Date.now() < deadline) {
      await Promise.race([
        Promise.all(this.running.values()),
        sleep(Math.max(1, Math.min(100, deadline - Date.now()))),
      ]);
    }
    let released = 0;
    for (const leaseId of this.running.keys()) {
      this.send({ type: "release", lease_id: leaseId, reason: "worker shutting down" });
      released++;
    }
    await this.close();
    return { finished: seen.size - released, released };
  }

  private connect(): void {
    const url = `${this.opts.coordinator.replace(/^http/, "ws")}/v1/workers/connect?model=${encodeURIComponent(this.model)}`;
    const ws = new WebSocket(url, {
      headers: this.opts.token ? { Authorization: `Bearer ${this.opts.token}` } : {},
      perMessageDeflate: false,
    });
    this.ws = ws;
    ws.on("open", () => {
      this.send({ type: "hello", version: 1, ...this.opts.info });
    });
    ws.on("message", (data) => this.onFrame(String(data)));
    ws.on("error", (error) => {
      if (!this.stopping) this.opts.log(`[${this.model}] connection error: ${error.message}`);
    });
    ws.on("close", (code) => {
      const wasConnected = this.welcomed;
      this.welcomed = false;
      this.opts.metrics.connected.set({ model: this.model }, 0);
      if (this.stopping) return;
      // Leases held on a closed socket are put back by the coordinator; results for them would be stale.
      const delay = retryBackoffMs(++this.attempt, RECONNECT) * (0.5 + Math.random() / 2);
      if (wasConnected) this.opts.log(`[${this.model}] disconnected (${code}); reconnecting`);
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
    });
  }

  private onFrame(text: string): void {
    let frame: CoordinatorFrame;
    try {
      frame = JSON.parse(text) as CoordinatorFrame;
    } catch {
      this.opts.log(`[${this.model}] unreadable frame from the coordinator`);
      return;
    }
    switch (frame.type) {
      case "welcome":
        this.welcomed = true;
        this.attempt = 0;
        this.opts.metrics.connected.set({ model: this.model }, 1);
        this.opts.log(
          `[${this.model}] connected to ${this.opts.coordinator} as ${frame.worker_id} (${this.opts.model.device})`,
        );
        return;
      case "batch": {
        const { type: _type, ...batch } = frame;
        const run = this.runBatch(batch).finally(() => this.running.delete(batch.lease_id));
        this.running.set(batch.lease_id, run);
        return;
      }
      case "ack":
        if (frame.status === "stale" || frame.status === "not_found") {
          this.opts.log(`[${this.model}] ${frame.op} of ${frame.lease_id} was ${frame.status}: ${frame.message ?? ""}`);
        }
        return;
      case "draining":
        this.onDraining?.();
        return;
      case "error":
        this.opts.log(`[${this.model}] coordinator error ${frame.code}: ${frame.message}`);
        return;
      default:
        return;
    }
  }

  private async runBatch(batch: Batch): Promise<void> {
    const started = performance.now();
    const extend = setInterval(() => this.send({ type: "extend", lease_id: batch.lease_id }), batch.renew_after_ms);
    let results: ItemResult[];
    try {
      results = await this.opts.model.run(batch.items.map((i) => i.input));
    } catch (error) {
      // The whole run failed (runtime or device error): every item may succeed elsewhere, so retry them.
      const message = `inference failed on ${this.opts.info.worker_id}: ${(error as Error).message}`;
      results = batch.items.map(() => ({ error: { code: "runtime_error", message, retryable: true } }));
    } finally {
      clearInterval(extend);
    }
    const computeMs = performance.now() - started;
    this.send({ type: "complete", lease_id: batch.lease_id, results, compute_ms: computeMs });
    const failed = results.filter((r) => "error" in r).length;
    this.opts.metrics.recordBatch(this.model, this.opts.model.device, results.length - failed, failed, computeMs);
  }

  private send(frame: WorkerFrameOut): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  private async close(): Promise<void> {
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return;
    await new Promise<void>((resolve) => {
      ws.once("close", () => resolve());
      ws.close(1000, "worker stopping");
      setTimeout(() => {
        ws.terminate();
        resolve();
      }, 2_000).unref();
    });
  }
}
