// `npm run bench:generate`: time to first token (TTFT) and tokens/s of the text-generation task at 1 prompt and 16
// at once, on the bundled decoder (models/gpt-tiny) and the benchmark decoder (models/bench/gpt-bench: `npm run
// build:models -- --bench`; skipped when absent): straight on onnxruntime-node (16 prompts decoded as one batch),
// and through the swarm (bench/generate-swarm.ts: the real coordinator, one real edgeswarm-worker, each prompt its
// own streamed call), direct and swarm rounds alternating so a shared machine's drifting load falls on both; then
// gpt-tiny with a Chromium tab (the demo page's donor worker) as the only worker, on wasm and on WebGPU
// (SwiftShader here: software). BENCH_SWARM=0, BENCH_CHROMIUM=0, BENCH_WEBGPU=0 drop those rows;
// BENCH_CONCURRENCY=N runs the worker with --concurrency N (default: the worker's own default), BENCH_MAX_BATCH_SIZE=N
// with --max-batch-size N (default 16); BENCH_THREADS=N gives onnxruntime N threads per model, direct and in the
// worker (--threads N; default onnxruntime's own); the coordinator
// runs on workerd through Miniflare's API, as deployed (BENCH_COORDINATOR=wrangler: under `wrangler dev`).
// Writes bench/results/generate.md.
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import os from "node:os";
import { fileURLToPath } from "node:url";
import type { WorkerProcess } from "../scripts/lib/worker-process.ts";
import { ModelConfig, ModelRegistry } from "../shared/config/model-config.ts";
import { loadModel } from "../shared/runner/load-model.ts";
import { nodeFetch } from "../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../worker-gpu/runner/ort-node-session.ts";
import { descendantCpuBy, fmt, loadAverage, newestSourceMtime } from "./bench-kit.ts";
import {
  batchCounts,
  COORDINATOR_PATH,
  donatingTab,
  generationCoordinator,
  generationWorker,
  type Streamed,
  stopProcess,
  streamOne,
  WORKER_BATCH,
} from "./generate-swarm.ts";

const RESULTS_FILE = new URL("./results/generate.md", import.meta.url);
const MODELS = [
  { name: "gpt-tiny", base: new URL("../models/", import.meta.url) },
  { name: "gpt-bench", base: new URL("../models/bench/", import.meta.url) },
];
const NEW_TOKENS = Number(process.env.BENCH_NEW_TOKENS ?? 64);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
/** A tab is slower (one wasm thread; software WebGPU): fewer rounds there. */
const TAB_ROUNDS = { wasm: Number(process.env.BENCH_TAB_ROUNDS ?? 3), webgpu: 1 };
const SWARM = process.env.BENCH_SWARM !== "0";
const CONCURRENCY = process.env.BENCH_CONCURRENCY ? Number(process.env.BENCH_CONCURRENCY) : undefined;
const THREADS = process.env.BENCH_THREADS ? Number(process.env.BENCH_THREADS) : undefined;
if (THREADS !== undefined && !(Number.isInteger(THREADS) && THREADS >= 1)) {
  throw new Error(`BENCH_THREADS must be an integer >= 1, got "${process.env.BENCH_THREADS}"`);
}
const PROMPTS = ["the pizza was", "the film", "how was the trip", "the new phone", "the weather today"];

interface Row {
  model: string;
  path: string;
  concurrent: number;
  /** Per round (direct: the batch's first token; through the swarm: every call's). */
  ttft: number[];
  perSequence: number[];
  /** Per round, tokens of all its sequences over its wall time: the rounds of a direct row and its swarm row pair up. */
  aggregate: number[];
  rounds: number;
  /** Streamed calls that failed (not in the figures). */
  errors: number;
  /** Through the swarm: tokens and the `token` events they came in; batches leased and their items (warm-up included). */
  tokens: number;
  events: number;
  batches: number;
  batchItems: number;
  /** Through the swarm (the edgeswarm-worker rows): CPU seconds of the coordinator's workerd and of the worker over the rounds. */
  cpu?: { coordinator: number; worker: number };
  /** The direct row this one is compared with. */
  against?: Row;
}

function newRow(model: string, path: string, concurrent: number, against?: Row): Row {
  const row: Row = {
    model,
    path,
    concurrent,
    ttft: [],
    perSequence: [],
    aggregate: [],
    rounds: 0,
    errors: 0,
    tokens: 0,
    events: 0,
    batches: 0,
    batchItems: 0,
  };
  return against ? { ...row, against } : row;
}

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? Number.NaN;

/** Seeded sampling: every round draws the same tokens, directly and through the swarm, so rounds compare. */
const itemsFor = (concurrent: number) =>
  Array.from({ length: concurrent }, (_, i) => ({
    prompt: `${PROMPTS[i % PROMPTS.length]} (${i})`,
    // Every reply NEW_TOKENS long (min_new_tokens, as vLLM's benchmark sets ignore_eos): tokens/s is then streaming's.
    params: { max_new_tokens: NEW_TOKENS, min_new_tokens: NEW_TOKENS, temperature: 1, seed: i + 1 },
  }));

/** Mixed lengths: 16 prompts at once, the even ones asking for SHORT_TOKENS tokens, the odd ones for NEW_TOKENS. */
const SHORT_TOKENS = 8;
const mixedItems = () =>
  itemsFor(16).map((item, i) =>
    i % 2 === 0
      ? { ...item, params: { ...item.params, max_new_tokens: SHORT_TOKENS, min_new_tokens: SHORT_TOKENS } }
      : item,
  );

/** When each reply of a mixed round ended (ms from the start): short ones, and long ones. */
interface MixedRow {
  model: string;
  path: string;
  short: number[];
  long: number[];
}
const mixedRows: MixedRow[] = [];

/** One mixed round through the swarm: each prompt its own streamed call, timed to its job's end. */
async function mixedSwarmRound(base: string, model: string, row: MixedRow | undefined): Promise<void> {
  const answers = await Promise.all(mixedItems().map((item) => streamOne(base, model, item)));
  for (const a of answers) if ("error" in a) console.error(`${model}: a streamed call failed: ${a.error}`);
  if (!row) return;
  const start = Math.min(...answers.flatMap((a) => ("error" in a ? [] : [a.sent])));
  answers.forEach((a, i) => {
    if (!("error" in a)) (i % 2 === 0 ? row.short : row.long).push(a.end - start);
  });
}

/** `concurrent` streamed calls at once; one round's figures into `row`. */
async function swarmRound(base: string, model: string, concurrent: number, row: Row | undefined): Promise<void> {
  const answers = await Promise.all(itemsFor(concurrent).map((item) => streamOne(base, model, item)));
  const calls = answers.filter((a): a is Streamed => !("error" in a));
  for (const a of answers) if ("error" in a) console.error(`${model}: a streamed call failed: ${a.error}`);
  if (!row) return;
  row.errors += answers.length - calls.length;
  row.tokens += calls.reduce((t, c) => t + c.tokens, 0);
  row.events += calls.reduce((t, c) => t + c.events, 0);
  if (calls.length === 0) return;
  const tokens = calls.reduce((t, c) => t + c.tokens, 0);
  const wall = (Math.max(...calls.map((c) => c.end)) - Math.min(...calls.map((c) => c.sent))) / 1000;
  row.ttft.push(...calls.map((c) => c.first - c.sent));
  row.perSequence.push(calls.reduce((t, c) => t + c.tokens / ((c.end - c.first) / 1000), 0) / concurrent);
  row.aggregate.push(tokens / wall);
  row.rounds++;
}

/** CPU seconds so far of the coordinator (this process's workerd) and of the worker process (/proc; Linux). */
function swarmCpu(worker: WorkerProcess | undefined): { coordinator: number; worker: number } {
  const sums = descendantCpuBy((pid, name) =>
    name === "workerd" ? "coordinator" : pid === worker?.child.pid ? "worker" : "other",
  );
  return { coordinator: sums.get("coordinator") ?? 0, worker: sums.get("worker") ?? 0 };
}

/** The batches the coordinator leased for the row's model since `from`. */
async function countBatches(base: string, row: Row, from: { items: number; batches: number }): Promise<void> {
  const to = await batchCounts(base, row.model);
  row.batches = to.batches - from.batches;
  row.batchItems = to.items - from.items;
}

const rows: Row[] = [];
const loadAtStart = loadAverage();
const started = performance.now();
const sourcesBefore = newestSourceMtime();
const entries: ModelConfig[] = [];
for (const { name, base } of MODELS) {
  const registry = new URL("registry.json", base);
  if (!existsSync(registry)) continue;
  const entry = ModelRegistry.parse(JSON.parse(await readFile(registry, "utf8"))).models.find((m) => m.name === name);
  if (entry) entries.push(ModelConfig.parse(entry));
}
// BENCH_MAX_QUEUE_DELAY_MS: the swarm's entries wait this long to fill a batch instead of the registry's delay.
const delay = process.env.BENCH_MAX_QUEUE_DELAY_MS;
const served = delay ? entries.map((e) => ({ ...e, max_queue_delay_ms: Number(delay) })) : entries;
const coordinator = SWARM ? await generationCoordinator(served) : undefined;
try {
  for (const spec of entries) {
    const base = (MODELS.find((m) => m.name === spec.name) as (typeof MODELS)[number]).base;
    const device = (process.env.BENCH_DEVICE ?? "cpu") as "cpu" | "cuda";
    const factory = createOrtNodeFactory(THREADS === undefined ? {} : { intraOpNumThreads: THREADS });
    const model = await loadModel(spec, factory, {
      registryUrl: new URL("registry.json", base),
      fetch: nodeFetch,
      devices: [device],
    });
    let worker: WorkerProcess | undefined;
    if (coordinator) worker = await generationWorker(coordinator, spec.name, fileURLToPath(base), CONCURRENCY, THREADS);
    for (const concurrent of [1, 16]) {
      const row = newRow(spec.name, `direct onnxruntime-node (${model.device})`, concurrent);
      const swarm = coordinator
        ? newRow(spec.name, "swarm: coordinator + edgeswarm-worker (cpu), SSE", concurrent, row)
        : undefined;
      const items = itemsFor(concurrent);
      const leased = coordinator ? await batchCounts(coordinator.url, spec.name) : undefined;
      for (let round = 0; round <= ROUNDS; round++) {
        const t0 = performance.now();
        let first = 0;
        let tokens = 0;
        await model.run(items, {
          onTokens: (d) => {
            first ||= performance.now() - t0;
            tokens += d.tokens.length;
          },
        });
        const seconds = (performance.now() - t0) / 1000;
        if (coordinator) {
          const before = swarmCpu(worker);
          await swarmRound(coordinator.url, spec.name, concurrent, round === 0 ? undefined : swarm);
          const after = swarmCpu(worker);
          if (swarm && round > 0) {
            swarm.cpu ??= { coordinator: 0, worker: 0 };
            swarm.cpu.coordinator += after.coordinator - before.coordinator;
            swarm.cpu.worker += after.worker - before.worker;
          }
        }
        if (round === 0) continue; // warm-up
        row.ttft.push(first);
        row.aggregate.push(tokens / seconds);
        row.perSequence.push(tokens / concurrent / (seconds - first / 1000));
        row.rounds++;
      }
      if (coordinator && swarm && leased) await countBatches(coordinator.url, swarm, leased);
      rows.push(row, ...(swarm ? [swarm] : []));
      for (const r of [row, swarm]) {
        if (r)
          console.log(
            `${r.model} ${r.path} x${concurrent}: TTFT p50 ${fmt(pct(r.ttft, 0.5))} ms, ${fmt(pct(r.aggregate, 0.5), 0)} tok/s in all`,
          );
      }
    }
    // Mixed lengths: when each reply ends, straight (one batch, each sequence's own end) and through the swarm.
    const direct: MixedRow = {
      model: spec.name,
      path: `direct onnxruntime-node (${model.device})`,
      short: [],
      long: [],
    };
    const swarmMixed: MixedRow = {
      model: spec.name,
      path: "swarm: coordinator + edgeswarm-worker (cpu), SSE",
      short: [],
      long: [],
    };
    for (let round = 0; round <= ROUNDS; round++) {
      const t0 = performance.now();
      const ended: number[] = [];
      const results = await model.run(mixedItems(), {
        onResult: (pos) => {
          ended[pos] = performance.now() - t0;
        },
      });
      const last = performance.now() - t0;
      if (coordinator) await mixedSwarmRound(coordinator.url, spec.name, round === 0 ? undefined : swarmMixed);
      if (round === 0) continue; // warm-up
      // A sequence the run answered without calling onResult ended with the run.
      results.forEach((_, i) => {
        (i % 2 === 0 ? direct.short : direct.long).push(ended[i] ?? last);
      });
    }
    mixedRows.push(direct, ...(coordinator ? [swarmMixed] : []));
    if (worker) await stopProcess(worker);
    await model.dispose();
  }
} finally {
  await coordinator?.cleanup();
}

// A tab as the only worker of gpt-tiny: verification off (it would wait for a trusted worker to check each answer).
const tiny = entries.find((e) => e.name === "gpt-tiny");
const tabNotes: string[] = [];
if (tiny && process.env.BENCH_CHROMIUM !== "0") {
  const tabCoordinator = await generationCoordinator([{ ...tiny, verification: { enabled: false } }]);
  try {
    for (const webgpu of process.env.BENCH_WEBGPU === "0" ? [false] : [false, true]) {
      const tab = await donatingTab(tabCoordinator, tiny.name, webgpu).catch((e: unknown) => String(e));
      if (typeof tab === "string") {
        tabNotes.push(`Chromium tab (${webgpu ? "webgpu" : "wasm"}): ${tab.split("\n")[0]}`);
        continue;
      }
      try {
        for (const concurrent of [1, 16]) {
          const against = rows.find(
            (r) => r.model === tiny.name && r.concurrent === concurrent && r.path.startsWith("direct"),
          );
          const path = `swarm: a Chromium tab (${tab.device}${webgpu ? ", SwiftShader" : ", 1 thread"}), SSE`;
          const row = newRow(tiny.name, path, concurrent, against);
          const rounds = webgpu ? TAB_ROUNDS.webgpu : TAB_ROUNDS.wasm;
          const leased = await batchCounts(tabCoordinator.url, tiny.name);
          for (let round = 0; round <= rounds; round++)
            await swarmRound(tabCoordinator.url, tiny.name, concurrent, round === 0 ? undefined : row);
          await countBatches(tabCoordinator.url, row, leased);
          rows.push(row);
          console.log(
            `${row.path} x${concurrent}: TTFT p50 ${fmt(pct(row.ttft, 0.5))} ms, ${fmt(pct(row.aggregate, 0.5), 0)} tok/s in all`,
          );
        }
      } finally {
        await tab.close();
      }
    }
  } finally {
    await tabCoordinator.cleanup();
  }
}

/** Through the swarm: tokens/s in all over the direct row's, the median of round-by-round ratios where rounds alternated. */
function versus(r: Row): string {
  if (!r.against) return "—";
  const d = r.against;
  const paired =
    r.aggregate.length === d.aggregate.length &&
    r.against.path.startsWith("direct") &&
    r.path.includes("edgeswarm-worker");
  const ratio = paired
    ? pct(
        r.aggregate.map((a, i) => a / (d.aggregate[i] as number)),
        0.5,
      )
    : pct(r.aggregate, 0.5) / pct(d.aggregate, 0.5);
  return `${fmt(ratio, 2)}×, TTFT +${fmt(pct(r.ttft, 0.5) - pct(d.ttft, 0.5))} ms`;
}

const cpu = os.cpus();
const table = rows.map(
  (r) =>
    `| ${r.model} | ${r.path} | ${r.concurrent} | ${r.rounds} | ${fmt(pct(r.ttft, 0.5))} | ${fmt(pct(r.ttft, 0.99))} | ${fmt(pct(r.perSequence, 0.5), 0)} | ${fmt(pct(r.aggregate, 0.5), 0)} | ${versus(r)} | ${r.batches ? `${fmt(r.batchItems / r.batches)} · ${fmt(r.tokens / r.events)}` : "—"} | ${r.cpu && r.tokens > 0 ? `${fmt((r.cpu.coordinator * 1e6) / r.tokens, 0)} · ${fmt((r.cpu.worker * 1e6) / r.tokens, 0)}` : "—"} | ${r.errors} |`,
);
const text = [
  "# Text generation: direct onnxruntime-node, through the swarm, and a Chromium tab",
  "",
  `- Machine: ${cpu[0]?.model.trim() ?? "unknown CPU"} × ${cpu.length}, Node ${process.version}; load average (1, 5, 15 min) ${loadAtStart} at the start, ${loadAverage()} at the end (others' work shares these cores)`,
  `- Date: ${new Date().toISOString()}; the run took ${fmt((performance.now() - started) / 60_000)} min`,
  `- Command: \`${delay ? `BENCH_MAX_QUEUE_DELAY_MS=${delay} ` : ""}${CONCURRENCY ? `BENCH_CONCURRENCY=${CONCURRENCY} ` : ""}${WORKER_BATCH !== 16 ? `BENCH_MAX_BATCH_SIZE=${WORKER_BATCH} ` : ""}${THREADS ? `BENCH_THREADS=${THREADS} ` : ""}${COORDINATOR_PATH === "wrangler dev" ? "BENCH_COORDINATOR=wrangler " : ""}npm run bench:generate\``,
  `- Coordinator: ${COORDINATOR_PATH === "wrangler dev" ? "`wrangler dev` (its dev proxy relays every streamed event once more)" : "the Worker bundled by `wrangler deploy --dry-run`, on workerd through Miniflare's API with wrangler.toml's bindings: no dev proxy, as deployed"}`,
  `- ${NEW_TOKENS} new tokens a sequence (min_new_tokens and max_new_tokens both ${NEW_TOKENS}: no reply ends early), seeded sampling (temperature 1, a seed per prompt: the same tokens every round and every path); a warm-up round, then the rounds shown; p50 / p99 over rounds (TTFT through the swarm: over every call)`,
  `- onnxruntime's threads per model, direct and in the worker: ${THREADS === undefined ? "its own default" : `${THREADS} (BENCH_THREADS; the worker's --threads)`}`,
  `- Direct: the prompts as one batch in this process, TTFT to the batch's first token. Swarm: each prompt its own \`POST /v1/infer\` with \`stream: true\` at once, read as Server-Sent Events, TTFT from sending to the first \`token\` event; the coordinator batches them (max_batch_size 16, max_queue_delay_ms ${delay ? `${delay} (BENCH_MAX_QUEUE_DELAY_MS)` : `${entries[0]?.max_queue_delay_ms} (the registry's)`}), one \`edgeswarm-worker --device cpu --max-batch-size ${WORKER_BATCH} ${CONCURRENCY ? `--concurrency ${CONCURRENCY}` : "(--concurrency and --max-items-in-flight: their defaults, the decode's rows for text-generation)"}\` runs them, a batch that comes while one generates joining its decode (continuous batching) where it takes more than one; a direct round and a swarm round alternate`,
  "- Chromium tab: the demo page's donor worker as the only worker of gpt-tiny (verification off), onnxruntime-web on wasm (one thread: the page is not cross-origin isolated) or WebGPU on SwiftShader (software: a correctness path, not a speed)",
  "- Items a batch: the coordinator's `edgeswarm_batch_size_sum / _count` over the row's rounds, warm-up included (16 prompts in one batch is what direct runs); tokens an event: tokens over the SSE `token` events they came in",
  "- vs direct: tokens/s in all over the direct row's at the same concurrency (rows that alternated: the median of round-by-round ratios), and TTFT p50 added",
  "- CPU a token (edgeswarm-worker rows): CPU time over the measured swarm rounds (from /proc) of the coordinator's workerd and of the worker process, over the tokens streamed",
  "",
  "| model | path | concurrent prompts | rounds | TTFT p50 (ms) | TTFT p99 (ms) | tokens/s per sequence | tokens/s in all | vs direct | items a batch · tokens an event | CPU µs a token: coordinator · worker | failed calls |",
  "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
  ...table,
  "",
  ...tabNotes.map((n) => `- ${n}`),
  "",
  `Replies of mixed lengths: 16 prompts at once, 8 asking for ${SHORT_TOKENS} tokens and 8 for ${NEW_TOKENS}; when a reply has ended (its caller's answer, the stream's \`completed\` event), in ms from the round's first call, p50 over the rounds' replies. Direct: one batch, each sequence's own end.`,
  "",
  `| model | path | rounds | ${SHORT_TOKENS}-token replies end p50 (ms) | ${NEW_TOKENS}-token replies end p50 (ms) |`,
  "|---|---|---:|---:|---:|",
  ...mixedRows.map(
    (r) => `| ${r.model} | ${r.path} | ${ROUNDS} | ${fmt(pct(r.short, 0.5))} | ${fmt(pct(r.long, 0.5))} |`,
  ),
  ...(newestSourceMtime() === sourcesBefore || COORDINATOR_PATH !== "wrangler dev"
    ? []
    : [
        "- **edge/ or shared/ changed during the run (others editing): wrangler dev may have reloaded the coordinator mid-run, closing streams (failed calls)**",
      ]),
  "",
].join("\n");
await writeFile(RESULTS_FILE, text);
process.stdout.write(text);
process.exit(0);
