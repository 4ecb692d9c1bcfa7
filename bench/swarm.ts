// The swarm benchmark (`node --import tsx bench/swarm.ts`): the bundled sentiment classifier run directly in
// onnxruntime-node against the same model served through the real coordinator (`wrangler dev`) and one real
// local worker (`edgeswarm-worker`), then single-input callers with and without dynamic batching. Prints
// Markdown (also written to bench/results/swarm.md). `-- --model bench`: the benchmark-size encoder instead
// (bench/swarm-bench-model.ts). Not a test.

import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import os from "node:os";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { startWorker, type WorkerProcess } from "../scripts/lib/worker-process.ts";
import { type Coordinator, freePort } from "../scripts/lib/wrangler-dev.ts";
import { type ModelConfig, ModelRegistry, type Timings } from "../shared/index.ts";
import { loadModel } from "../shared/runner/load-model.ts";
import { REVIEW_TEXTS } from "../test/support/reference-models.ts";
import { nodeFetch } from "../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../worker-gpu/runner/ort-node-session.ts";
import {
  BenchRow,
  BenchSession,
  closedLoop,
  fmt,
  fmtRate,
  HttpClient,
  newestSourceMtime,
  percentile,
  processTree,
  readProcs,
  TICKS_PER_S,
} from "./bench-kit.ts";
import { type CpuProfile, startCpuProfile, topSelfTime, writeCpuProfile } from "./cpu-profile.ts";

/** Items per call and per batch, for the direct run and the batched swarm calls alike. */
const BATCH = 32;
const BATCHED_CALLERS = 8;
/** Inputs per bulk call (run as batches of BATCH), and how many bulk callers at once. */
const BULK = 512;
const BULK_CALLERS = 4;
const SINGLE_CALLERS = 32;
const WORKER_CONCURRENCY = 2;
const DYNAMIC_DELAY_MS = 5;
/** Each closed loop: a warm-up, then the measured window. */
const WINDOW = { warmupMs: 3_000, measureMs: 8_000 };
/** A call unanswered this long counts as an error, so a stuck swarm shows in the table, not as a hang. */
const CALL_TIMEOUT_MS = 30_000;
/** Outputs through the swarm must match the direct run's for the same sentence within this. */
const SCORE_TOLERANCE = 1e-3;
const REGISTRY_URL = new URL("../models/registry.json", import.meta.url);
const RESULTS_FILE = new URL("./results/swarm.md", import.meta.url);
/** A folder to write a CPU profile of the coordinator over each measured window to (and print its hot spots). */
const PROFILE_DIR = process.env.BENCH_PROFILE;

/** Short reviews of mixed length and sentiment; calls and direct batches take them in rotation. */
const SENTENCES = [
  ...REVIEW_TEXTS,
  "the battery lasts all day and charges fast",
  "it broke after two days",
  "delivery was quick and the packaging was neat",
  "worst purchase I have made this year",
  "the staff were friendly and helpful",
  "cold food, rude waiter, never again",
  "does exactly what it says",
  "the instructions made no sense",
  "my kids adore it",
  "too expensive for what you get",
  "the sound quality is superb",
  "it stopped working and support never answered",
  "comfortable shoes, I wear them every day",
  "the screen scratches far too easily",
  "a pleasant surprise from start to finish",
  "boring plot and wooden acting",
  "excellent build quality",
  "the app crashes every time I open it",
  "fresh ingredients and generous portions",
  "the room smelled of smoke",
  "setup took five minutes, very easy",
  "I want my money back",
  "beautiful design and it feels solid in the hand",
  "cheap plastic that cracked on the first drop",
  "highly recommended",
  "a complete waste of time",
  "the hotel was clean and the view was lovely",
  "the noise from the fan is unbearable",
  "works perfectly with my laptop",
  "arrived late and the box was damaged",
  "one of the best books I have read",
  "the coffee tasted burnt",
  "great customer service, they fixed it the same day",
  "the colours faded after one wash",
  "simple, fast and reliable",
  "disappointing sequel",
  "the concert was amazing",
  "the seats were cramped and uncomfortable",
  "I would happily buy it again",
  "misleading description, not as pictured",
  "a lovely little cafe with great cake",
  "terrible, just terrible",
] as const;

/** inputsPerCall and latencies: for the direct run, per run of the model. */
class Row extends BenchRow {
  /** Batches the coordinator leased in the window and their mean size, from its /metrics. */
  batches?: number;
  meanBatch?: number;
  /** Seconds the worker spent in batches during the window, from its /metrics. */
  workerBusyS?: number;
  cpu?: CpuShares;
  /** The coordinator's sources changed while this scenario ran, so wrangler dev may have reloaded it. */
  sourcesChanged?: boolean;
  /** The coordinator's `timings` of each answered call (queued_ms is in BenchRow). */
  readonly computeMs: number[] = [];
  readonly totalMs: number[] = [];
}

/** Cores in use over a window (1.0 = one core flat out). */
interface CpuShares {
  bench: number;
  coordinator: number;
  worker: number;
  /** Everything else on the machine: other users' processes, the kernel. */
  others: number;
  /** Time the hypervisor gave our cores to someone else. */
  steal: number;
}

type LabelScore = { label: string; score: number };
type Reference = Map<string, LabelScore[]>;

const client = new HttpClient(CALL_TIMEOUT_MS);

type CallResult = { ok: true; timings: Timings | undefined } | { ok: false; error: string };

/** `POST /v1/infer` with wait: true, checked against the direct run. */
async function infer(base: URL, model: string, inputs: string[], reference: Reference): Promise<CallResult> {
  const res = await client.request(base, "POST", "/v1/infer", JSON.stringify({ model, inputs, wait: true }));
  if ("error" in res) return { ok: false, error: res.error };
  if (res.status !== 200) {
    let detail: string;
    try {
      const { error } = JSON.parse(res.text) as { error?: { code?: string; message?: string } };
      detail = `${error?.code}: ${error?.message}`;
    } catch {
      // Not the coordinator's JSON error shape: workerd's own page, e.g. while wrangler dev reloads.
      detail = `not JSON: ${res.text.replace(/\s+/g, " ")}`;
    }
    return { ok: false, error: `HTTP ${res.status} ${detail.slice(0, 120)}` };
  }
  const body = JSON.parse(res.text) as { outputs?: unknown[]; timings?: Timings };
  const error = checkOutputs(body.outputs, inputs, reference);
  return error ? { ok: false, error } : { ok: true, timings: body.timings };
}

/** Every output present and equal to the direct run's for its sentence: a result in the wrong slot shows here. */
function checkOutputs(outputs: unknown[] | undefined, inputs: string[], reference: Reference): string | undefined {
  if (!Array.isArray(outputs) || outputs.length !== inputs.length) return "wrong number of outputs";
  for (const [i, output] of outputs.entries()) {
    const expected = reference.get(inputs[i] as string) as LabelScore[];
    const got = output as LabelScore[];
    const same =
      Array.isArray(got) &&
      got.length === expected.length &&
      got.every(
        (g, j) => g.label === expected[j]?.label && Math.abs(g.score - (expected[j]?.score ?? 0)) < SCORE_TOLERANCE,
      );
    if (!same) return "output differs from the direct run";
  }
  return undefined;
}

let rotation = 0;
/** The next `n` sentences in rotation, so every call mixes lengths the same way. */
function nextInputs(n: number): string[] {
  const start = rotation;
  rotation = (rotation + n) % SENTENCES.length;
  return Array.from({ length: n }, (_, i) => SENTENCES[(start + i) % SENTENCES.length] as string);
}

function newRow(scenario: string, callers: number, inputsPerCall: number): Row {
  return new Row(scenario, callers, inputsPerCall, WINDOW.measureMs / 1000);
}

/** Sums the samples of `metric` whose labels include model="<model>", from Prometheus text. */
function metricSum(text: string, metric: string, model: string): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${metric}{`) && line.includes(`model="${model}"`)) sum += Number(line.split(" ").pop());
  }
  return sum;
}

async function scrape(base: URL): Promise<string> {
  const res = await client.request(base, "GET", "/metrics");
  return "error" in res ? "" : res.text;
}

// CPU accounting from /proc (Linux only; elsewhere the shares read n/a): on two cores, which process burns
// them is the bottleneck question.

interface CpuSample {
  at: number;
  bench: number;
  coordinator: number;
  worker: number;
  /** Seconds of the whole machine, all cores, from /proc/stat: busy (steal excluded) and stolen. */
  machineBusy: number;
  machineSteal: number;
}

function sampleCpu(workerPid: number | undefined): CpuSample {
  const procs = readProcs();
  const sum = (pids: Iterable<number>) => [...pids].reduce((t, pid) => t + (procs.get(pid)?.ticks ?? 0), 0);
  const workerTree = workerPid === undefined ? new Set<number>() : processTree(procs, workerPid);
  // The coordinator is wrangler and its workerd: our descendants that are not the worker.
  const ours = processTree(procs, process.pid);
  ours.delete(process.pid);
  const coordinator = [...ours].filter((pid) => !workerTree.has(pid));
  let machineBusy = 0;
  let machineSteal = 0;
  try {
    // user nice system idle iowait irq softirq steal
    const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
    const at = (i: number) => cpu[i] ?? 0;
    machineBusy = (at(0) + at(1) + at(2) + at(5) + at(6)) / TICKS_PER_S;
    machineSteal = at(7) / TICKS_PER_S;
  } catch {
    // not Linux
  }
  const usage = process.cpuUsage();
  return {
    at: performance.now(),
    bench: (usage.user + usage.system) / 1e6,
    coordinator: sum(coordinator) / TICKS_PER_S,
    worker: sum(workerTree) / TICKS_PER_S,
    machineBusy,
    machineSteal,
  };
}

/** Cores in use by each side over the window; others is the machine's busy time less ours. */
function cpuShares(a: CpuSample, b: CpuSample): CpuShares {
  const wall = (b.at - a.at) / 1000;
  const bench = (b.bench - a.bench) / wall;
  const coordinator = (b.coordinator - a.coordinator) / wall;
  const worker = (b.worker - a.worker) / wall;
  const machine = (b.machineBusy - a.machineBusy) / wall;
  return {
    bench,
    coordinator,
    worker,
    others: Math.max(0, machine - bench - coordinator - worker),
    steal: (b.machineSteal - a.machineSteal) / wall,
  };
}

/** The model straight in onnxruntime-node, in this process: one batch of BATCH at a time, as fast as it goes. */
async function runDirect(spec: ModelConfig): Promise<{ row: Row; reference: Reference }> {
  const model = await loadModel(spec, createOrtNodeFactory({ warn: () => {} }), {
    registryUrl: REGISTRY_URL,
    fetch: nodeFetch,
    devices: ["cpu"],
  });
  try {
    // The reference answers the swarm is checked against: each sentence, within one batch of all of them.
    const reference: Reference = new Map();
    const all = await model.run(SENTENCES);
    for (const [i, result] of all.entries()) {
      if (!("output" in result)) throw new Error(`the direct run failed on "${SENTENCES[i]}"`);
      reference.set(SENTENCES[i] as string, result.output as LabelScore[]);
    }
    const row = newRow(`direct onnxruntime-node (${model.device}), batches of ${BATCH}`, 1, BATCH);
    const measureFrom = performance.now() + WINDOW.warmupMs;
    const measureTo = measureFrom + WINDOW.measureMs;
    let cpuFrom: CpuSample | undefined;
    while (performance.now() < measureTo) {
      if (!cpuFrom && performance.now() >= measureFrom) cpuFrom = sampleCpu(undefined);
      const inputs = nextInputs(BATCH);
      const started = performance.now();
      const results = await model.run(inputs);
      const ended = performance.now();
      if (ended < measureFrom || ended > measureTo) continue;
      const outputs = results.map((r) => ("output" in r ? r.output : undefined));
      const error = checkOutputs(outputs, inputs, reference);
      if (error) row.recordError(error);
      else row.latencies.push(ended - started);
    }
    if (cpuFrom) row.cpu = cpuShares(cpuFrom, sampleCpu(undefined));
    row.meanBatch = BATCH;
    return { row, reference };
  } finally {
    await model.dispose();
  }
}

/** Workers not yet stopped, so Ctrl-C or a failed start does not leave one running. */
const liveWorkers = new Set<WorkerProcess>();

async function spawnWorker(coordinator: Coordinator, model: string): Promise<{ w: WorkerProcess; port: number }> {
  const port = await freePort();
  const w = startWorker([
    "--coordinator",
    coordinator.url,
    "--models",
    model,
    "--worker-id",
    `bench-${model}`,
    "--max-batch-size",
    String(BATCH),
    "--concurrency",
    String(WORKER_CONCURRENCY),
    "--port",
    String(port),
    "--host",
    "127.0.0.1",
    "--status-interval-ms",
    "0",
    "--device",
    "cpu",
  ]);
  liveWorkers.add(w);
  try {
    await w.waitFor(new RegExp(`\\[${model}\\] connected`), 60_000);
  } catch (error) {
    await stopWorker(w);
    throw error;
  }
  return { w, port };
}

async function stopWorker(w: WorkerProcess): Promise<void> {
  liveWorkers.delete(w);
  if (w.child.exitCode !== null) return;
  w.child.kill("SIGTERM");
  const timer = setTimeout(() => w.child.kill("SIGKILL"), 10_000);
  await w.exited;
  clearTimeout(timer);
}

/**
 * Closed loop through the swarm: `row.callers` callers each send a call of `row.inputsPerCall` inputs as soon
 * as their last one is answered, against a fresh worker serving `model`. Calls that end inside the measured
 * window count; the warm-up and calls still open when it closes do not.
 */
async function swarmLoop(coordinator: Coordinator, model: string, row: Row, reference: Reference): Promise<Row> {
  const base = new URL(coordinator.url);
  const { w, port } = await spawnWorker(coordinator, model);
  const workerBase = new URL(`http://127.0.0.1:${port}`);
  const sourcesBefore = newestSourceMtime();
  try {
    const mark = async () => ({
      cpu: sampleCpu(w.child.pid),
      coordinator: await scrape(base),
      worker: await scrape(workerBase),
    });
    let from: Promise<Awaited<ReturnType<typeof mark>>> | undefined;
    let to: Promise<Awaited<ReturnType<typeof mark>>> | undefined;
    let profiling: Promise<() => Promise<CpuProfile>> | undefined;
    await closedLoop({
      callers: row.callers,
      ...WINDOW,
      call: () => infer(base, model, nextInputs(row.inputsPerCall), reference),
      record: (result, latencyMs) => {
        if (!result.ok) row.recordError(result.error);
        else {
          row.latencies.push(latencyMs);
          row.queuedMs.push(result.timings?.queued_ms ?? Number.NaN);
          row.computeMs.push(result.timings?.compute_ms ?? Number.NaN);
          row.totalMs.push(result.timings?.total_ms ?? Number.NaN);
        }
      },
      atStart: () => {
        from = mark();
        if (PROFILE_DIR) profiling = startCpuProfile(coordinator.inspectorPort);
      },
      atEnd: () => {
        to = mark();
      },
    });
    if (profiling && PROFILE_DIR) {
      const profile = await (await profiling)();
      const file = `${PROFILE_DIR}/${model}.cpuprofile`;
      await writeCpuProfile(file, profile);
      console.error(
        [`coordinator CPU profile of ${model}: ${file}; most self time:`, ...topSelfTime(profile)].join("\n"),
      );
    }
    row.sourcesChanged = newestSourceMtime() !== sourcesBefore;
    if (w.child.exitCode !== null) row.recordError(`the worker exited mid-run (code ${w.child.exitCode})`);
    const a = await from;
    const b = await to;
    if (a && b) {
      row.cpu = cpuShares(a.cpu, b.cpu);
      const items =
        metricSum(b.coordinator, "edgeswarm_batch_size_sum", model) -
        metricSum(a.coordinator, "edgeswarm_batch_size_sum", model);
      const batches =
        metricSum(b.coordinator, "edgeswarm_batch_size_count", model) -
        metricSum(a.coordinator, "edgeswarm_batch_size_count", model);
      row.batches = batches;
      row.meanBatch = batches > 0 ? items / batches : Number.NaN;
      row.workerBusyS =
        metricSum(b.worker, "edgeswarm_worker_batch_seconds_sum", model) -
        metricSum(a.worker, "edgeswarm_worker_batch_seconds_sum", model);
    }
    return row;
  } finally {
    await stopWorker(w);
  }
}

interface Scenario {
  row: Row;
  /** "% of direct" or "× batch size 1", against the baseline row; the baseline itself says so. */
  against: string;
  batchSize: string;
}

function report(scenarios: Scenario[], registry: ModelConfig[], session: BenchSession): string {
  const lines = [
    ...session.reportHeader("Swarm benchmark", ", onnxruntime-node on cpu", "`node --import tsx bench/swarm.ts`"),
    `- Model: the bundled \`sentiment\` classifier; the swarm serves it under these entries: ${registry
      .map((m) => `\`${m.name}\` (max_batch_size ${m.max_batch_size}, max_queue_delay_ms ${m.max_queue_delay_ms})`)
      .join(", ")}`,
    `- Worker: one \`edgeswarm-worker\` process per scenario (\`--device cpu --max-batch-size ${BATCH} --concurrency ${WORKER_CONCURRENCY}\`), serving only that scenario's entry`,
    `- Callers: node:http with keep-alive, \`wait: true\`; every answer checked (200, one output per input, label and score within ${SCORE_TOLERANCE} of the direct run); ${WINDOW.warmupMs / 1000} s warm-up then ${WINDOW.measureMs / 1000} s measured per scenario`,
    "",
    "| scenario | callers | batch size | items/s | vs baseline | p50 ms | p99 ms | errors |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const { row: r, against, batchSize } of scenarios) {
    lines.push(
      `| ${r.scenario}${r.sourcesChanged ? " †" : ""} | ${r.callers} | ${batchSize} | ${fmtRate(r.itemsPerS())} | ${against} | ${fmt(percentile(r.latencies, 50))} | ${fmt(percentile(r.latencies, 99))} | ${r.errorCount()} |`,
    );
  }
  lines.push(
    "",
    "Batch size is items per call (direct: per run) and, through the swarm, the mean items per leased batch from the",
    "coordinator's `/metrics` (`edgeswarm_batch_size_sum / _count`) over the measured window. p50 and p99 are per call",
    "(direct: per run). CPU is cores in use over the measured window (1.00 = one core flat out), from /proc: others",
    "is the rest of the machine (other users' processes, the kernel), stolen is time the hypervisor took.",
  );
  if (scenarios.some((s) => s.row.sourcesChanged)) {
    lines.push(
      "† The coordinator's sources changed during the scenario, so wrangler dev reloaded it mid-run: discard that row.",
    );
  }
  lines.push("");
  for (const { row: r } of scenarios) {
    const parts = [
      `${r.latencies.length} ${r.scenario.startsWith("direct") ? "runs" : "calls"} in ${fmt(r.seconds)} s`,
    ];
    if (r.queuedMs.length > 0) {
      parts.push(
        `median \`timings\`: queued ${fmt(percentile(r.queuedMs, 50))} ms, compute ${fmt(percentile(r.computeMs, 50))} ms, total ${fmt(percentile(r.totalMs, 50))} ms`,
      );
    }
    if (r.workerBusyS !== undefined && r.batches) {
      parts.push(
        `${r.batches} batches, ${fmt((r.workerBusyS * 1000) / r.batches)} ms each in the worker (${fmt(r.workerBusyS)} s of the ${fmt(r.seconds * WORKER_CONCURRENCY, 0)} s its ${WORKER_CONCURRENCY} slots had)`,
      );
    }
    if (r.cpu) {
      parts.push(
        `CPU cores: bench ${fmt(r.cpu.bench, 2)}, coordinator ${fmt(r.cpu.coordinator, 2)}, worker ${fmt(r.cpu.worker, 2)}, others ${fmt(r.cpu.others, 2)}, stolen ${fmt(r.cpu.steal, 2)} (of ${os.cpus().length})`,
      );
    }
    const errors = r.errorList();
    if (errors) parts.push(`errors: ${errors}`);
    if (r.sourcesChanged)
      parts.push(
        "**edge/ or shared/ changed during this scenario: wrangler dev reloaded the coordinator; discard it**",
      );
    lines.push(`- ${r.scenario}: ${parts.join("; ")}`);
  }
  return `${lines.join("\n")}\n`;
}

async function main(): Promise<number> {
  const bundled = ModelRegistry.parse(JSON.parse(await readFile(REGISTRY_URL, "utf8")));
  const sentiment = bundled.models.find((m) => m.name === "sentiment");
  if (!sentiment) {
    console.error("models/registry.json has no sentiment entry");
    return 1;
  }
  const entry = (name: string, maxBatch: number, delayMs: number, maxInputs = BATCH): ModelConfig => ({
    ...sentiment,
    name,
    max_batch_size: maxBatch,
    max_queue_delay_ms: delayMs,
    max_inputs_per_request: maxInputs,
    max_queue_size: 100_000,
    files: sentiment.files ? { ...sentiment.files, base_url: "./sentiment/" } : undefined,
  });
  const batched = entry("sentiment", BATCH, DYNAMIC_DELAY_MS);
  const b1 = entry("sentiment-b1", 1, 0);
  const dynamic = entry(`sentiment-b${BATCH}`, BATCH, DYNAMIC_DELAY_MS);
  const bulk = entry("sentiment-bulk", BATCH, DYNAMIC_DELAY_MS, BULK);
  const registry = [batched, bulk, b1, dynamic];
  const stopWorkers = () => Promise.all([...liveWorkers].map(stopWorker));
  return BenchSession.run("edgeswarm-bench-swarm-", client, stopWorkers, async (session) => {
    console.error(`direct onnxruntime-node, batches of ${BATCH}…`);
    const { row: directRow, reference } = await runDirect(batched);
    const coordinator = await session.startCoordinator(registry);
    if (!coordinator) return 1;
    console.error(`coordinator at ${coordinator.url}`);
    console.error(`swarm, ${BATCHED_CALLERS} callers × ${BATCH} inputs…`);
    const swarmRow = await swarmLoop(
      coordinator,
      batched.name,
      newRow(`swarm, calls of ${BATCH}`, BATCHED_CALLERS, BATCH),
      reference,
    );
    console.error(`swarm, ${BULK_CALLERS} callers × ${BULK} inputs…`);
    const bulkRow = await swarmLoop(
      coordinator,
      bulk.name,
      newRow(`swarm, calls of ${BULK} (run in batches of ${BATCH})`, BULK_CALLERS, BULK),
      reference,
    );
    console.error(`swarm, ${SINGLE_CALLERS} single-input callers, max_batch_size 1…`);
    const b1Row = await swarmLoop(
      coordinator,
      b1.name,
      newRow("swarm, single-input calls, max_batch_size 1", SINGLE_CALLERS, 1),
      reference,
    );
    console.error(`swarm, ${SINGLE_CALLERS} single-input callers, dynamic batching…`);
    const dynamicRow = await swarmLoop(
      coordinator,
      dynamic.name,
      newRow(
        `swarm, single-input calls, dynamic batching (max_batch_size ${BATCH}, ${DYNAMIC_DELAY_MS} ms)`,
        SINGLE_CALLERS,
        1,
      ),
      reference,
    );
    const directRate = directRow.itemsPerS();
    const single = b1Row.itemsPerS();
    const text = report(
      [
        { row: directRow, against: "100% (baseline)", batchSize: String(BATCH) },
        {
          row: swarmRow,
          against: `${fmt((swarmRow.itemsPerS() / directRate) * 100, 0)}% of direct`,
          batchSize: fmt(swarmRow.meanBatch),
        },
        {
          row: bulkRow,
          against: `${fmt((bulkRow.itemsPerS() / directRate) * 100, 0)}% of direct`,
          batchSize: fmt(bulkRow.meanBatch),
        },
        { row: b1Row, against: "1.0× (baseline)", batchSize: fmt(b1Row.meanBatch) },
        {
          row: dynamicRow,
          against: `${fmt(dynamicRow.itemsPerS() / single)}× batch size 1`,
          batchSize: fmt(dynamicRow.meanBatch),
        },
      ],
      registry,
      session,
    );
    await session.publish(text, RESULTS_FILE);
    return 0;
  });
}

// `-- --model bench` (or another models/bench entry): the benchmark-size model instead (bench/swarm-bench-model.ts).
const { values: args } = parseArgs({ options: { model: { type: "string" } }, strict: true });
process.exitCode =
  typeof args.model === "string"
    ? await (await import("./swarm-bench-model.ts")).benchModelSwarm(args.model)
    : await main();
