// The coordinator benchmark (`npm run bench:coordinator`): runs the real coordinator under `wrangler dev`
// on loopback with echo workers that answer at once, drives one model queue with keep-alive callers, and
// prints items/s, the added latency and the coordinator's CPU per item and per call (from /proc) as Markdown
// (also written to bench/results/coordinator.md), next to BullMQ on Redis doing the same work in the same run
// (bench/bullmq-peer.ts). `-- --no-peer` leaves the peer out; `-- --profile FILE` writes the coordinator's CPU
// profile over EdgeSwarm's scenarios (bench/cpu-profile.ts). Not a test.

import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { isDeepStrictEqual } from "node:util";
import { WebSocket } from "ws";
import type { CoordinatorFrame, ItemResult, ModelConfig, Timings, WorkerFrame } from "../shared/index.ts";
import {
  BenchRow,
  BenchSession,
  closedLoop,
  commandLine,
  descendantCpuBy,
  fmt,
  fmtRate,
  HttpClient,
  percentile,
} from "./bench-kit.ts";
import { BULLMQ_CONCURRENCY, BULLMQ_WORKERS, BullmqPeer, type RedisServer, startRedis } from "./bullmq-peer.ts";
import { startCpuProfile, topSelfTime, writeCpuProfile } from "./cpu-profile.ts";

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
/** `-- --profile FILE`: a CPU profile of the coordinator over EdgeSwarm's scenarios (its hot spots printed). */
const PROFILE_FILE = ((i) => (i >= 0 ? process.argv[i + 1] : undefined))(process.argv.indexOf("--profile"));

type Output = Extract<ItemResult, { output: unknown }>["output"];
type CallResult = { ok: true; queuedMs: number } | { ok: false; error: string };

class Row extends BenchRow {
  /** Batches the echo workers got in the window, and the items in them. */
  batches = 0;
  batchItems = 0;
  /** CPU seconds the server used in the window: workerd (the queue object and the edge) or redis-server. */
  serverCpuS = Number.NaN;
  /** CPU seconds of wrangler's dev proxy (its node and proxy workerd) in the window: a hop a deployed coordinator does not have. */
  proxyCpuS = Number.NaN;

  constructor(
    readonly system: "EdgeSwarm" | "BullMQ",
    scenario: string,
    callers: number,
    inputsPerCall: number,
  ) {
    super(scenario, callers, inputsPerCall, 0);
  }

  /** Server CPU µs per answered item and per answered call. */
  cpuPerItemUs(): number {
    return (this.serverCpuS * 1e6) / (this.latencies.length * this.inputsPerCall);
  }
  cpuPerCallUs(): number {
    return (this.serverCpuS * 1e6) / this.latencies.length;
  }
}

/** Where a row's calls go and how its batches and CPU are counted. */
interface System {
  call(inputs: unknown[]): Promise<CallResult>;
  batches(): { batches: number; items: number };
  /** The server's (and proxy's) CPU seconds so far. */
  cpu(): { server: number; proxy: number };
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

/** What a row measures over its window: batches handed out (and their items), server and proxy CPU seconds. */
type WindowTotals = { batches: number; items: number; cpu: number; proxy: number };

function windowEnd(system: System): () => WindowTotals {
  const batches = system.batches();
  const cpu = system.cpu();
  return () => {
    const b = system.batches();
    const c = system.cpu();
    return {
      batches: b.batches - batches.batches,
      items: b.items - batches.items,
      cpu: c.server - cpu.server,
      proxy: c.proxy - cpu.proxy,
    };
  };
}

/** `row.callers` callers in a closed loop (see closedLoop), with batches and CPU counted over the window. */
async function loaded(system: System, row: Row): Promise<Row> {
  let end: (() => WindowTotals) | undefined;
  let measured: WindowTotals = { batches: 0, items: 0, cpu: Number.NaN, proxy: Number.NaN };
  await closedLoop({
    callers: row.callers,
    ...WINDOW,
    call: () => system.call(makeInputs(row.inputsPerCall)),
    record: (result, latencyMs) => record(row, result, latencyMs),
    atStart: () => {
      end = windowEnd(system);
    },
    atEnd: () => {
      if (end) measured = end();
    },
  });
  row.seconds = WINDOW.measureMs / 1000;
  fill(row, measured);
  return row;
}

/** One caller, one call at a time: with workers that compute nothing, the round trip is the server's cost. */
async function lowLoad(system: System, row: Row): Promise<Row> {
  const deadline = performance.now() + LOW_LOAD_MAX_MS;
  for (let i = 0; i < LOW_LOAD_WARMUP_CALLS && performance.now() < deadline; i++) {
    await system.call(makeInputs(1));
  }
  const end = windowEnd(system);
  const started = performance.now();
  for (let i = 0; i < LOW_LOAD_CALLS && performance.now() < deadline; i++) {
    const t0 = performance.now();
    const result = await system.call(makeInputs(1));
    record(row, result, performance.now() - t0);
  }
  row.seconds = (performance.now() - started) / 1000;
  fill(row, end());
  return row;
}

function fill(row: Row, m: WindowTotals): void {
  row.batches = m.batches;
  row.batchItems = m.items;
  row.serverCpuS = m.cpu;
  row.proxyCpuS = m.proxy;
}

function report(rows: Row[], problems: string[], session: BenchSession, redis: RedisServer | undefined): string {
  const lines = [
    ...session.reportHeader(
      "Coordinator benchmark",
      redis ? `, Redis ${redis.version} + bullmq ${BULLMQ_VERSION}` : "",
      "`npm run bench:coordinator` (`node --import tsx bench/coordinator.ts`)",
    ),
    `- Model: \`${JSON.stringify(MODEL)}\``,
    `- EdgeSwarm: ${WORKERS} echo workers in the bench process (WebSocket, pool gpu, max_batch_size ${WORKER_MAX_BATCH}, max_concurrent_batches ${WORKER_CONCURRENT_BATCHES}), answering at once`,
    redis
      ? `- BullMQ: one job per input (\`add\`, or \`addBulk\` for a call of several), ${BULLMQ_WORKERS} workers in the bench process with concurrency ${BULLMQ_CONCURRENCY} answering at once, each call awaiting its jobs (\`waitUntilFinished\`); Redis with \`appendonly yes\`, \`appendfsync everysec\``
      : "- BullMQ peer: not run (`--no-peer`)",
    `- Callers: keep-alive, waiting for the answer; ${WINDOW.warmupMs / 1000} s warm-up then ${WINDOW.measureMs / 1000} s measured (low load: ${LOW_LOAD_CALLS} sequential calls)`,
    "- Server CPU: from /proc, workerd running the coordinator for EdgeSwarm (wrangler's dev proxy, its own workerd and node: a hop deployed Workers do not have, apart) and redis-server for BullMQ, over each measured window",
    "",
    "| system | scenario | concurrency | calls/s | items/s | p50 ms | p99 ms | server CPU µs/item | µs/call | errors |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.system} | ${r.scenario} | ${r.callers} | ${fmtRate(r.latencies.length / r.seconds)} | ${fmtRate(r.itemsPerS())} | ${fmt(percentile(r.latencies, 50))} | ${fmt(percentile(r.latencies, 99))} | ${fmt(r.cpuPerItemUs(), 0)} | ${fmt(r.cpuPerCallUs(), 0)} | ${r.errorCount()} |`,
    );
  }
  lines.push("");
  for (const r of rows.filter((r) => r.system === "EdgeSwarm")) {
    const peer = rows.find((p) => p.system === "BullMQ" && p.scenario === r.scenario);
    if (peer) {
      lines.push(
        `- ${r.scenario}: EdgeSwarm / BullMQ items/s ${fmt(r.itemsPerS() / peer.itemsPerS(), 2)}×, p50 ${fmt(percentile(r.latencies, 50) / percentile(peer.latencies, 50), 2)}×, server CPU per item ${fmt(r.cpuPerItemUs() / peer.cpuPerItemUs(), 2)}×`,
      );
    }
  }
  for (const r of rows) {
    const meanBatch = r.batches > 0 ? r.batchItems / r.batches : Number.NaN;
    const errors = r.errorList();
    const detail =
      r.system === "EdgeSwarm"
        ? `median \`timings.queued_ms\` ${fmt(percentile(r.queuedMs, 50))} ms; ${r.batches} batches, mean ${fmt(meanBatch)} items; dev proxy CPU ${fmt((r.proxyCpuS * 1e6) / r.latencies.length, 0)} µs/call`
        : "";
    lines.push(
      `- ${r.system}, ${r.scenario}: ${r.latencies.length} calls answered in ${fmt(r.seconds)} s${detail ? `; ${detail}` : ""}${errors ? `; errors: ${errors}` : ""}`,
    );
  }
  const low = rows.find((r) => r.system === "EdgeSwarm" && r.callers === 1);
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

const SCENARIOS = [
  { scenario: "single-input calls", callers: 32, inputs: 1 },
  { scenario: "batched calls of 64", callers: 8, inputs: 64 },
] as const;
const LOW_LOAD = "low load, sequential single-input";

/** The three rows on one system: loaded single and batched calls, then sequential calls. */
async function measure(system: System, name: Row["system"]): Promise<Row[]> {
  const rows: Row[] = [];
  for (const s of SCENARIOS) {
    console.error(`${name}: ${s.scenario}…`);
    rows.push(await loaded(system, new Row(name, s.scenario, s.callers, s.inputs)));
  }
  console.error(`${name}: low load…`);
  rows.push(await lowLoad(system, new Row(name, LOW_LOAD, 1, 1)));
  return rows;
}

const BULLMQ_VERSION = (
  JSON.parse(readFileSync(new URL("../node_modules/bullmq/package.json", import.meta.url), "utf8")) as {
    version: string;
  }
).version;

async function main(): Promise<number> {
  const withPeer = !process.argv.includes("--no-peer");
  let workers: EchoWorker[] = [];
  let redis: RedisServer | undefined;
  let peer: BullmqPeer | undefined;
  const stopAll = async () => {
    for (const w of workers) w.close();
    await peer?.close();
    await redis?.stop();
  };
  return BenchSession.run("edgeswarm-bench-", client, stopAll, async (session) => {
    const coordinator = await session.startCoordinator([MODEL], async (c) => {
      workers = await Promise.all(
        Array.from({ length: WORKERS }, (_, i) => EchoWorker.connect(c.url, `bench-echo-${i}`)),
      );
    });
    if (!coordinator) return 1;
    const base = new URL(coordinator.url);
    console.error(`coordinator at ${base}; ${WORKERS} echo workers connected`);
    const edgeswarm: System = {
      call: (inputs) => infer(base, inputs),
      batches: () => workerTotals(workers),
      // wrangler dev runs two workerd: its proxy worker on the public port (the hop) and ours behind it.
      cpu: () => {
        const proxyEntry = `entry=127.0.0.1:${base.port} `;
        const sums = descendantCpuBy((pid, name) =>
          name === "workerd" && !`${commandLine(pid)} `.includes(proxyEntry) ? "server" : "proxy",
        );
        return { server: sums.get("server") ?? 0, proxy: sums.get("proxy") ?? 0 };
      },
    };
    const profiling = PROFILE_FILE ? await startCpuProfile(coordinator.inspectorPort) : undefined;
    const rows = await measure(edgeswarm, "EdgeSwarm");
    if (profiling && PROFILE_FILE) {
      const profile = await profiling();
      await writeCpuProfile(PROFILE_FILE, profile);
      console.error([`coordinator CPU profile: ${PROFILE_FILE}; most self time:`, ...topSelfTime(profile)].join("\n"));
    }
    if (withPeer) {
      redis = await startRedis();
      peer = await BullmqPeer.start(redis, CALL_TIMEOUT_MS);
      const bullmq: System = {
        call: (inputs) =>
          (peer as BullmqPeer).call(inputs).then((r) => (r.ok ? { ok: true, queuedMs: Number.NaN } : r)),
        batches: () => ({ batches: 0, items: 0 }),
        cpu: () => ({
          server: descendantCpuBy((_pid, name) => name).get("redis-server") ?? 0,
          proxy: Number.NaN,
        }),
      };
      rows.push(...(await measure(bullmq, "BullMQ")));
    }
    const text = report(
      rows,
      workers.flatMap((w) => w.problems),
      session,
      redis,
    );
    await session.publish(text, RESULTS_FILE);
    return 0;
  });
}

process.exitCode = await main();
