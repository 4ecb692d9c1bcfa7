// `npm run bench:runners`: items/s of models on each model runner, with no coordinator in the way:
// onnxruntime-node here, onnxruntime-web on this thread, onnxruntime-web in the --runtime web thread pool at 1
// and 2 threads, the pool of 1 thread on WebGPU through Dawn (the adapter named, "software" for SwiftShader: a
// correctness path, not a speed), and onnxruntime-web in Chromium's Web Worker on wasm and on WebGPU
// (bench/runners-chromium.ts). scripts/gpu-check.sh runs this on a GPU machine. `--runners a,b` picks rows
// (RUNNERS below); BENCH_WEBGPU=0 and BENCH_CHROMIUM=0 drop those rows. Models: bench/bench-models.ts; `--bench`
// is the benchmark-size encoder, fp32 and int8, seq 128, batches of 8 and 32 (`npm run build:models -- --bench`).
// Each batch size runs back to back (as many at once as the runner has threads) for a measured window after a
// warm-up, at least one batch per thread; a size whose one batch would take over BENCH_SLOW_LIMIT_S is skipped.
// Every runner's first outputs are compared with onnxruntime-node's, and an `-int8` model's with its fp32 twin's.
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import { parseArgs } from "node:util";
import type { ItemResult } from "../shared/index.ts";
import { loadModel } from "../shared/runner/load-model.ts";
import type { SessionFactory } from "../shared/runner/model-runner.ts";
import { createOrtWebFactory, describeGpu } from "../shared/runner/ort-web-session.ts";
import { nodeFetch } from "../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../worker-gpu/runner/ort-node-session.ts";
import { probeDawn } from "../worker-gpu/web/dawn-gpu.ts";
import { WebThreadPool } from "../worker-gpu/web/thread-pool.ts";
import { fmt, fmtRate, loadAverage } from "./bench-kit.ts";
import { benchModels } from "./bench-models.ts";
import { type MeasurePlan, type ModelMeasure, measureInChromium } from "./runners-chromium.ts";
import { agreement, int8Rows } from "./runners-report.ts";

const RUNNERS = ["node", "web-main", "web-1", "web-2", "dawn-webgpu", "chromium-wasm", "chromium-webgpu"] as const;
type RunnerId = (typeof RUNNERS)[number];
/** What `--bench` measures: the rows issue 13 asks for (the main thread and Dawn repeat the pool and the tab). */
const BENCH_RUNNERS: RunnerId[] = ["node", "web-1", "web-2", "chromium-wasm", "chromium-webgpu"];

const BENCH = benchModels("bench:runners");
const { values: own } = parseArgs({ options: { runners: { type: "string" } }, strict: false });
const chosen = (typeof own.runners === "string" ? own.runners.split(",") : BENCH.preset ? BENCH_RUNNERS : RUNNERS)
  .filter((r) => !(process.env.BENCH_WEBGPU === "0" && r.endsWith("webgpu")))
  .filter((r) => !(process.env.BENCH_CHROMIUM === "0" && r.startsWith("chromium")));
for (const r of chosen)
  if (!(RUNNERS as readonly string[]).includes(r))
    throw new Error(`--runners: no runner "${r}"; one of ${RUNNERS.join(", ")}`);

const MODELS = BENCH.specs.map((s) => s.name);
const REGISTRY_URL = BENCH.registryUrl;
const BUNDLED = MODELS.join() === "sentiment,embedder" && REGISTRY_URL.pathname.endsWith("/models/registry.json");
const NAME = BUNDLED ? "" : BENCH.preset ? "-bench" : `-${MODELS.join("-")}`;
const RESULTS_FILE = new URL(`./results/runners${NAME}.md`, import.meta.url);
const PLAN: MeasurePlan = {
  batches: BENCH.batches,
  warmupMs: 1_000,
  measureMs: Number(process.env.BENCH_MEASURE_MS ?? (BENCH.preset ? 4_000 : 5_000)),
  slowLimitS: Number(process.env.BENCH_SLOW_LIMIT_S ?? 90),
};

type Run = (inputs: unknown[]) => Promise<ItemResult[]>;

function check(results: ItemResult[], n: number): ItemResult[] {
  if (results.length !== n || results.some((r) => !("output" in r)))
    throw new Error(`a batch came back wrong: ${JSON.stringify(results.find((r) => !("output" in r)))}`);
  return results;
}

/** `lanes` loops each running a batch as soon as its last ended: warm-up, then each batch size (PAGE_MEASURE's twin). */
async function measure(run: Run, lanes: number, device: string): Promise<ModelMeasure> {
  const batches = PLAN.batches;
  const smallest = batches[0] as string[];
  const warmEnd = performance.now() + PLAN.warmupMs;
  const firsts = await Promise.all(
    Array.from({ length: lanes }, async () => {
      let first: ItemResult[];
      do first = check(await run(smallest), smallest.length);
      while (performance.now() < warmEnd);
      return first;
    }),
  );
  const cells: ModelMeasure["cells"] = new Map();
  let perItemS = 0;
  for (const batch of batches) {
    if (perItemS * batch.length > PLAN.slowLimitS) {
      cells.set(batch.length, { skipped: `one batch would take about ${Math.round(perItemS * batch.length)} s` });
      continue;
    }
    let reps = 0;
    const started = performance.now();
    const end = started + PLAN.measureMs;
    await Promise.all(
      Array.from({ length: lanes }, async () => {
        do {
          check(await run(batch), batch.length);
          reps++;
        } while (performance.now() < end);
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    perItemS = seconds / ((reps / lanes) * batch.length);
    cells.set(batch.length, { rate: (reps * batch.length) / seconds, reps });
  }
  return { device, cells, first: (firsts[0] as ItemResult[]).map((r) => ("output" in r ? r.output : undefined)) };
}

interface Row {
  runner: string;
  measures: Map<string, ModelMeasure>;
}

async function inProcess(factory: SessionFactory, device: string): Promise<Map<string, ModelMeasure>> {
  const out = new Map<string, ModelMeasure>();
  for (const spec of BENCH.specs) {
    const model = await loadModel(spec, factory, { registryUrl: REGISTRY_URL, fetch: nodeFetch, devices: [device] });
    out.set(spec.name, await measure((inputs) => model.run(inputs), 1, model.device));
    await model.dispose();
  }
  return out;
}

async function threadPool(threads: number, device: "wasm" | "webgpu" = "wasm"): Promise<Map<string, ModelMeasure>> {
  const pool = await WebThreadPool.start(
    { size: threads, device, runTimeoutMs: 600_000, registryUrl: REGISTRY_URL.href, log: () => {} },
    BENCH.specs,
  );
  const out = new Map<string, ModelMeasure>();
  try {
    for (const model of pool.models())
      out.set(model.name, await measure((inputs) => model.run(inputs), threads, device));
  } finally {
    await pool.close();
  }
  return out;
}

async function dawnRow(): Promise<Row | string> {
  // A machine with no GPU: SwiftShader, where Debian's chromium package puts it (docs/workers.md).
  const swiftShader = "/usr/lib/chromium/vk_swiftshader_icd.json";
  if (!process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES) process.env.VK_ICD_FILENAMES = swiftShader;
  const adapter = await probeDawn();
  if ("reason" in adapter) return `no WebGPU adapter through Dawn: ${adapter.reason}`;
  const label = `onnxruntime-web, --runtime web pool of 1 thread (webgpu: ${describeGpu(adapter)})`;
  return { runner: label, measures: await threadPool(1, "webgpu") };
}

const ROWS: Record<RunnerId, () => Promise<Row | string>> = {
  node: async () => ({
    runner: "onnxruntime-node in this process (cpu)",
    measures: await inProcess(createOrtNodeFactory(), "cpu"),
  }),
  "web-main": async () => ({
    runner: "onnxruntime-web on the main thread (wasm, 1 thread)",
    measures: await inProcess(createOrtWebFactory({ numThreads: 1 }), "wasm"),
  }),
  "web-1": async () => ({
    runner: "onnxruntime-web, --runtime web pool of 1 thread (wasm)",
    measures: await threadPool(1),
  }),
  "web-2": async () => ({
    runner: "onnxruntime-web, --runtime web pool of 2 threads (wasm)",
    measures: await threadPool(2),
  }),
  "dawn-webgpu": dawnRow,
  "chromium-wasm": async () => ({
    runner: "onnxruntime-web in Chromium's Web Worker (wasm, 1 thread)",
    measures: await measureInChromium("wasm", BENCH.specs, REGISTRY_URL, PLAN),
  }),
  "chromium-webgpu": async () => ({
    runner: "onnxruntime-web in Chromium's Web Worker (webgpu: SwiftShader, software)",
    measures: await measureInChromium("webgpu", BENCH.specs, REGISTRY_URL, PLAN),
  }),
};

function cellText(m: ModelMeasure | undefined, size: number): string {
  const cell = m?.cells.get(size);
  if (!cell) return "n/a";
  if ("skipped" in cell) return `skipped (${cell.skipped})`;
  return `${cell.rate < 100 ? fmt(cell.rate, 2) : fmtRate(cell.rate)} (${cell.reps})`;
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const notes: string[] = [];
  const loadAtStart = loadAverage();
  const started = performance.now();
  for (const id of chosen as RunnerId[]) {
    process.stderr.write(`measuring ${id}…\n`);
    // One runner failing (a tab running out of memory on a large model) costs its row, not the others'.
    const row = await ROWS[id]().catch((e: unknown) => `${id}: failed (${String(e).split("\n")[0]})`);
    if (typeof row === "string") notes.push(row);
    else rows.push(row);
  }
  const minutes = (performance.now() - started) / 60_000;
  const reference = rows.find((r) => r.runner.startsWith("onnxruntime-node"))?.measures;
  const sizes = PLAN.batches.map((b) => b.length);
  const cpus = os.cpus();
  const lines = [
    `# Model runners: items/s of ${MODELS.join(", ")}, no coordinator`,
    "",
    `- Machine: ${cpus[0]?.model.trim() ?? "unknown CPU"} × ${cpus.length}, ${os.type()} ${os.release()}, Node ${process.version}; load average (1, 5, 15 min) ${loadAtStart} at the start, ${loadAverage()} at the end (others' work shares these cores)`,
    `- Batches of ${sizes.join(" and ")} ${BUNDLED ? "reviews" : "texts"}${BENCH.seq ? ` of ${BENCH.seq} tokens` : ""}, back to back (one per thread at once); per model a warm-up of at least ${PLAN.warmupMs} ms and one batch per thread, then per size a ${PLAN.measureMs} ms window of at least one batch per thread; a size whose one batch would take over ${PLAN.slowLimitS} s is skipped`,
    `- Date: ${new Date().toISOString()}; the run took ${fmt(minutes)} min`,
    `- Command: \`${BENCH.command}\``,
    "",
    "items/s (batches measured); Δ: the largest difference of any output number from onnxruntime-node's on the same",
    `batch of ${sizes[0]} (the same model), cos: the least cosine similarity of an item's outputs to it.`,
    "",
    `| runner | model | provider that ran | ${sizes.map((s) => `batch ${s} items/s (batches)`).join(" | ")} | max Δ vs onnxruntime-node | min cos |`,
    `| --- | --- | --- | ${sizes.map(() => "---:").join(" | ")} | ---: | ---: |`,
  ];
  for (const r of rows) {
    for (const name of MODELS) {
      const m = r.measures.get(name);
      const ref = reference?.get(name);
      const agree = m && ref && r.measures !== reference ? agreement(ref.first, m.first) : undefined;
      lines.push(
        `| ${r.runner} | ${name} | ${m?.device ?? "n/a"} | ${sizes.map((s) => cellText(m, s)).join(" | ")} | ${agree ? agree.maxDiff.toExponential(1) : "—"} | ${agree ? agree.minCos.toFixed(6) : "—"} |`,
      );
    }
  }
  lines.push("", ...int8Rows(rows, MODELS, sizes, reference), ...notes.map((n) => `- ${n}`), "");
  const text = lines.join("\n");
  process.stdout.write(text);
  await mkdir(new URL("./", RESULTS_FILE), { recursive: true });
  await writeFile(RESULTS_FILE, text);
}

await main();
process.exit(0);
