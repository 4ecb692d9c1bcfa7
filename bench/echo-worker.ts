// bench/coordinator.ts's workers: each answers every batch at once with its inputs, over the worker protocol's
// WebSocket, so a bench measures the queue's cost and not a model's; it counts batches and items and keeps what
// went wrong (error frames, a socket the coordinator closed) for the report. Not a test.

import { performance } from "node:perf_hooks";
import { WebSocket } from "ws";
import type { CoordinatorFrame, ItemResult, WorkerFrame } from "../shared/index.ts";

export const WORKER_MAX_BATCH = 64;
export const WORKER_CONCURRENT_BATCHES = 4;

type Output = Extract<ItemResult, { output: unknown }>["output"];

/** A worker in this process that answers each batch at once with its inputs: the queue's cost, not a model's. */
export class EchoWorker {
  batches = 0;
  items = 0;
  readonly problems: string[] = [];
  closing = false;
  private constructor(private readonly ws: WebSocket) {}

  /** Connects to `model`'s queue, or to one shard of it. */
  static connect(base: string, model: string, workerId: string, shard = 0): Promise<EchoWorker> {
    const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/workers/connect?model=${model}&shard=${shard}`);
    const worker = new EchoWorker(ws);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${workerId}: no welcome within 10 s`)), 10_000);
      ws.on("error", (error) => reject(error));
      // A closed socket mid-run (wrangler dev reloads the worker when a source file changes) must show in the report.
      ws.on("close", (code) => {
        if (!worker.closing) worker.problems.push(`socket closed by the coordinator (code ${code})`);
      });
      ws.on("open", () => {
        const hello: WorkerFrame = {
          type: "hello",
          worker_id: workerId,
          pool: "gpu",
          device: "cpu",
          max_batch_size: WORKER_MAX_BATCH,
          max_concurrent_batches: WORKER_CONCURRENT_BATCHES,
        };
        ws.send(JSON.stringify(hello));
      });
      ws.on("message", (data) => {
        // The coordinator is the process under test, not an untrusted peer; a malformed frame would show as errors.
        const frame = JSON.parse(data.toString()) as CoordinatorFrame;
        if (frame.type === "welcome") {
          clearTimeout(timer);
          resolve(worker);
        } else worker.onFrame(frame);
      });
    });
  }

  private onFrame(frame: CoordinatorFrame): void {
    if (frame.type === "batch") {
      const started = performance.now();
      const results: ItemResult[] = frame.items.map((item) => ({ output: item.input as Output }));
      const complete: WorkerFrame = {
        type: "complete",
        lease_id: frame.lease_id,
        results,
        compute_ms: performance.now() - started,
      };
      this.ws.send(JSON.stringify(complete));
      this.batches++;
      this.items += frame.items.length;
    } else if (frame.type === "ack" && frame.status !== "ok") {
      this.problems.push(`${frame.op} ${frame.status}: ${frame.message ?? ""}`);
    } else if (frame.type === "error") {
      this.problems.push(`${frame.code}: ${frame.message}`);
    }
  }

  close(): void {
    this.closing = true;
    this.ws.close(1000, "benchmark done");
  }
}

/** Batches and items all `workers` got so far. */
export function workerTotals(workers: EchoWorker[]): { batches: number; items: number } {
  return workers.reduce((t, w) => ({ batches: t.batches + w.batches, items: t.items + w.items }), {
    batches: 0,
    items: 0,
  });
}
