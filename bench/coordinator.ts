// The coordinator benchmark (`npm run bench:coordinator`): runs the real coordinator under `wrangler dev`
// on loopback with echo workers that answer at once, drives one model queue with keep-alive callers, and
// prints items/s and the added latency as Markdown (also written to bench/results/coordinator.md). Not a test.

import { performance } from "node:perf_hooks";
import { isDeepStrictEqual } from "node:util";
import { WebSocket } from "ws";
import type { CoordinatorFrame, ItemResult, ModelConfig, Timings, WorkerFrame } from "../shared/index.ts";
import { BenchRow, BenchSession, closedLoop, fmt, fmtRate, HttpClient, percentile } from "./bench-kit.ts";

const MODEL = {
  name: "echo",
  task: "tensor",
  max_batch_size: 64,
  max_queue_delay_ms: 2,
  max_queue_size: 100_000,
  max_inputs_per_request: 64,
} satisfies Partial<ModelConfig>;
const WORKERS = 2;
const WORKER_MAX_BATCH = 64;
const WORKER_CONCURRENT_BATCHES = 4;
/** Each closed loop: a warm-up, then the measured window. */
const WINDOW = { warmupMs: 2_000, measureMs: 8_000 };
const LOW_LOAD_WARMUP_CALLS = 20;
const LOW_LOAD_CALLS = 200;
/** A call unanswered this long counts as an error, so a stuck coordinator shows in the table, not as a hang. */
const CALL_TIMEOUT_MS = 10_000;
/** Low load (warm-up included) stops early past this, whatever the count. */
const LOW_LOAD_MAX_MS = 20_000;
const RESULTS_FILE = new URL("./results/coordinator.md", import.meta.url);

type Output = Extract<ItemResult, { output: unknown }>["output"];
type CallResult = { ok: true; queuedMs: number } | { ok: false; error: string };

class Row extends BenchRow {
  /** Batches the echo workers got in the window, and the items in them. */
  batches = 0;
  batchItems = 0;
}

/** A worker in this process that answers each batch at once with its inputs: the queue's cost, not a model's. */
class EchoWorker {
  batches = 0;
  items = 0;
  readonly problems: string[] = [];
  closing = false;
  private constructor(private readonly ws: WebSocket) {}

  static connect(base: string, workerId: string): Promise<EchoWorker> {
    const ws = new WebSocket(`${base.replace(/^http/, "ws")}/v1/workers/connect?model=${MODEL.name}`);
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

const client = new HttpClient(CALL_TIMEOUT_MS);

/** One `POST /v1/infer` with wait: true, checked: 200 and every output equal to its input. */
async function infer(base: URL, inputs: unknown[]): Promise<CallResult> {
  const res = await client.request(
    base,
    "POST",
    "/v1/infer",
    JSON.stringify({ model: MODEL.name, inputs, wait: true }),
  );
  return "error" in res ? { ok: false, error: res.error } : checkAnswer(res.status, res.text, inputs);
}

function checkAnswer(status: number, text: string, inputs: unknown[]): CallResult {
  if (status !== 200) {
    let code = "";
    try {
      code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? "";
    } catch {
      // not our JSON error shape: the status says enough
    }
    return { ok: false, error: `HTTP ${status} ${code}`.trim() };
  }
  const body = JSON.parse(text) as { outputs?: unknown[]; timings?: Timings };
  if (!isDeepStrictEqual(body.outputs, inputs)) return { ok: false, error: "outputs differ from inputs" };
  return { ok: true, queuedMs: body.timings?.queued_ms ?? Number.NaN };
}

let callSeq = 0;
function makeInputs(n: number): unknown[] {
  const call = callSeq++;
  // Distinct values per call and item, so a result delivered to the wrong caller or slot is caught.
  return Array.from({ length: n }, (_, item) => ({ call, item, x: [0.25, 0.5, 0.75] }));
}

function record(row: Row, result: CallResult, latencyMs: number): void {
  if (result.ok) {
    row.latencies.push(latencyMs);
    row.queuedMs.push(result.queuedMs);
  } else row.recordError(result.error);
}

function workerTotals(workers: EchoWorker[]): { batches: number; items: number } {
  return workers.reduce((t, w) => ({ batches: t.batches + w.batches, items: t.items + w.items }), {
    batches: 0,
    items: 0,
  });
}

/** `row.callers` callers in a closed loop (see closedLoop), with the workers' batches counted over the window. */
async function loaded(base: URL, workers: EchoWorker[], row: Row): Promise<Row> {
  let before = workerTotals(workers);
  let after = before;
  await closedLoop({
    callers: row.callers,
    ...WINDOW,
    call: () => infer(base, makeInputs(row.inputsPerCall)),
    record: (result, latencyMs) => record(row, result, latencyMs),
    atStart: () => {
      before = workerTotals(workers);
    },
    atEnd: () => {
      after = workerTotals(workers);
    },
  });
  row.seconds = WINDOW.measureMs / 1000;
  row.batches = after.batches - before.batches;
  row.batchItems = after.items - before.items;
  return row;
}

/** One caller, one call at a time: with workers that compute nothing, the round trip is the coordinator's cost. */
async function lowLoad(base: URL, workers: EchoWorker[], row: Row): Promise<Row> {
  const deadline = performance.now() + LOW_LOAD_MAX_MS;
  for (let i = 0; i < LOW_LOAD_WARMUP_CALLS && performance.now() < deadline; i++) await infer(base, makeInputs(1));
  const before = workerTotals(workers);
  const started = performance.now();
  for (let i = 0; i < LOW_LOAD_CALLS && performance.now() < deadline; i++) {
    const t0 = performance.now();
    const result = await infer(base, makeInputs(1));
    record(row, result, performance.now() - t0);
  }
  row.seconds = (performance.now() - started) / 1000;
  const after = workerTotals(workers);
  row.batches = after.batches - before.batches;
  row.batchItems = after.items - before.items;
  return row;
}

function report(rows: Row[], problems: string[], session: BenchSession): string {
  const lines = [
    ...session.reportHeader(
      "Coordinator benchmark",
      "",
      "`npm run bench:coordinator` (`node --import tsx bench/coordinator.ts`)",
    ),
    `- Model: \`${JSON.stringify(MODEL)}\``,
    `- Workers: ${WORKERS} echo workers in the bench process (WebSocket, pool gpu, max_batch_size ${WORKER_MAX_BATCH}, max_concurrent_batches ${WORKER_CONCURRENT_BATCHES}), answering at once`,
    `- Callers: node:http with keep-alive, \`wait: true\`; ${WINDOW.warmupMs / 1000} s warm-up then ${WINDOW.measureMs / 1000} s measured (low load: ${LOW_LOAD_CALLS} sequential calls)`,
    "",
    "| scenario | concurrency | calls/s | items/s | p50 ms | p99 ms | errors |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.scenario} | ${r.callers} | ${fmtRate(r.latencies.length / r.seconds)} | ${fmtRate(r.itemsPerS())} | ${fmt(percentile(r.latencies, 50))} | ${fmt(percentile(r.latencies, 99))} | ${r.errorCount()} |`,
    );
  }
  lines.push("");
  for (const r of rows) {
    const meanBatch = r.batches > 0 ? r.batchItems / r.batches : Number.NaN;
    const errors = r.errorList();
    lines.push(
      `- ${r.scenario}: ${r.latencies.length} calls answered in ${fmt(r.seconds)} s; median \`timings.queued_ms\` ${fmt(percentile(r.queuedMs, 50))} ms; ${r.batches} batches, mean ${fmt(meanBatch)} items${errors ? `; errors: ${errors}` : ""}`,
    );
  }
  const low = rows.find((r) => r.callers === 1);
  if (low) {
    lines.push(
      `- Added latency at low load (round trip; the workers compute nothing): p50 ${fmt(percentile(low.latencies, 50))} ms, p99 ${fmt(percentile(low.latencies, 99))} ms, of which max_queue_delay_ms is ${MODEL.max_queue_delay_ms} ms by configuration`,
    );
  }
  const grouped = new Map<string, number>();
  for (const p of problems) grouped.set(p, (grouped.get(p) ?? 0) + 1);
  for (const [problem, n] of grouped) lines.push(`- Worker side: ${n} × ${problem}`);
  return `${lines.join("\n")}\n`;
}

async function main(): Promise<number> {
  let workers: EchoWorker[] = [];
  const closeWorkers = () => {
    for (const w of workers) w.close();
  };
  return BenchSession.run("edgeswarm-bench-", client, closeWorkers, async (session) => {
    const coordinator = await session.startCoordinator([MODEL], async (c) => {
      workers = await Promise.all(
        Array.from({ length: WORKERS }, (_, i) => EchoWorker.connect(c.url, `bench-echo-${i}`)),
      );
    });
    if (!coordinator) return 1;
    const base = new URL(coordinator.url);
    console.error(`coordinator at ${base}; ${WORKERS} echo workers connected`);
    const rows: Row[] = [];
    console.error("single-input calls…");
    rows.push(await loaded(base, workers, new Row("single-input calls", 32, 1, 0)));
    console.error("batched calls of 64…");
    rows.push(await loaded(base, workers, new Row("batched calls of 64", 8, 64, 0)));
    console.error("low load…");
    rows.push(await lowLoad(base, workers, new Row("low load, sequential single-input", 1, 1, 0)));
    const text = report(
      rows,
      workers.flatMap((w) => w.problems),
      session,
    );
    await session.publish(text, RESULTS_FILE);
    return 0;
  });
}

process.exitCode = await main();
