// `npm run bench:runners`: items/s of the bundled models on each model runner, with no coordinator in
// the way: onnxruntime-node here, onnxruntime-web on this thread, onnxruntime-web in the --runtime web
// thread pool at 1 and 2 threads, the pool of 1 thread on WebGPU through Dawn (the adapter named, "software"
// for SwiftShader: a correctness path, not a speed; BENCH_WEBGPU=0 skips it), and onnxruntime-web in
// Chromium's Web Worker (the embed's donor worker). scripts/gpu-check.sh runs this on a GPU machine.
// Each runs batches of 32 reviews back to back (as many at once as it has threads) for a measured window
// after a warm-up; every batch's results are checked to be 32 outputs. `--registry R --model M --batch N
// --seq S` measure another registry's models (bench/bench-models.ts), e.g. the benchmark-size encoder.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import { fileURLToPath } from "node:url";
import type { ItemResult } from "../shared/index.ts";
import { loadModel } from "../shared/runner/load-model.ts";
import type { SessionFactory } from "../shared/runner/model-runner.ts";
import { createOrtWebFactory, describeGpu } from "../shared/runner/ort-web-session.ts";
import { nodeFetch } from "../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../worker-gpu/runner/ort-node-session.ts";
import { probeDawn } from "../worker-gpu/web/dawn-gpu.ts";
import { WebThreadPool } from "../worker-gpu/web/thread-pool.ts";
import { fmtRate } from "./bench-kit.ts";
import { benchModels } from "./bench-models.ts";

const BENCH = benchModels("bench:runners");
const MODELS = BENCH.specs.map((s) => s.name);
const SPEC = new Map(BENCH.specs.map((s) => [s.name, s]));
const BATCH = BENCH.batch;
const REGISTRY_URL = BENCH.registryUrl;
const BUNDLED = MODELS.join() === "sentiment,embedder" && REGISTRY_URL.pathname.endsWith("/models/registry.json");
const RESULTS_FILE = new URL(`./results/runners${BUNDLED ? "" : `-${MODELS.join("-")}`}.md`, import.meta.url);
const WARMUP_MS = 1_000;
const MEASURE_MS = Number(process.env.BENCH_MEASURE_MS ?? 5_000);

type Run = (inputs: unknown[]) => Promise<ItemResult[]>;

/** Items/s of `lanes` loops each running a batch as soon as its last one ended, over the measured window. */
async function measure(run: Run, lanes: number): Promise<number> {
  const check = (results: ItemResult[]) => {
    if (results.length !== BATCH.length || results.some((r) => !("output" in r))) {
      throw new Error(`a batch came back wrong: ${JSON.stringify(results.find((r) => !("output" in r)))}`);
    }
  };
  const warmEnd = performance.now() + WARMUP_MS;
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (performance.now() < warmEnd) check(await run(BATCH));
    }),
  );
  let items = 0;
  const started = performance.now();
  const end = started + MEASURE_MS;
  await Promise.all(
    Array.from({ length: lanes }, async () => {
      while (performance.now() < end) {
        check(await run(BATCH));
        items += BATCH.length;
      }
    }),
  );
  return items / ((performance.now() - started) / 1000);
}

interface Row {
  runner: string;
  rates: Record<string, number>;
}

async function inProcess(label: string, factory: SessionFactory, device: string): Promise<Row> {
  const rates: Record<string, number> = {};
  for (const name of MODELS) {
    const model = await loadModel(SPEC.get(name) as (typeof BENCH.specs)[number], factory, {
      registryUrl: REGISTRY_URL,
      fetch: nodeFetch,
      devices: [device],
    });
    rates[name] = await measure((inputs) => model.run(inputs), 1);
    await model.dispose();
  }
  return { runner: label, rates };
}

async function threadPool(threads: number, device: "wasm" | "webgpu" = "wasm", label = "wasm"): Promise<Row> {
  const pool = await WebThreadPool.start(
    { size: threads, device, runTimeoutMs: 600_000, registryUrl: REGISTRY_URL.href, log: () => {} },
    BENCH.specs,
  );
  const rates: Record<string, number> = {};
  try {
    for (const model of pool.models()) rates[model.name] = await measure((inputs) => model.run(inputs), threads);
  } finally {
    await pool.close();
  }
  return {
    runner: `onnxruntime-web, --runtime web pool of ${threads} thread${threads > 1 ? "s" : ""} (${label})`,
    rates,
  };
}

async function chromiumWorker(): Promise<Row> {
  // Loaded here only: a bare GPU machine (scripts/gpu-check.sh) has neither wrangler nor Chromium.
  const { startCoordinator } = await import("../scripts/lib/wrangler-dev.ts");
  const { launchChromium } = await import("../test/support/chromium.ts");
  const persistTo = await mkdtemp(`${os.tmpdir()}/edgeswarm-bench-runners-`);
  const coordinator = await startCoordinator({ persistTo, vars: { AUTH: "open" } });
  const chromium = await launchChromium();
  try {
    const page = await chromium.context.newPage();
    const url = `${coordinator.url}/bench/runner.html`;
    await page.route(url, (route) =>
      route.fulfill({
        contentType: "text/html",
        body: `<!doctype html><script src="/embed.js" data-site-key="none" data-autostart="false" data-devices="wasm"></script>`,
      }),
    );
    // Another registry's files (the benchmark model is not in the coordinator's bundle) come from disk.
    const served = `${coordinator.url}/bench-registry/`;
    await chromium.context.route(`${served}**`, (route) =>
      route.fulfill({ path: fileURLToPath(new URL(route.request().url().slice(served.length), REGISTRY_URL)) }),
    );
    const registry = BUNDLED ? `${coordinator.url}/models/registry.json` : `${served}registry.json`;
    await page.goto(url);
    await page.waitForFunction("window.EdgeSwarm !== undefined");
    const rates: Record<string, number> = {};
    for (const name of MODELS) {
      const spec = JSON.stringify(SPEC.get(name));
      await page.evaluate(`window.EdgeSwarm.loadModel(${spec}, "${registry}")`);
      // Timed inside the page (page -> Web Worker through comlink, as the pool's main thread -> thread), so
      // the DevTools protocol round trip of this harness is not counted.
      rates[name] = (await page.evaluate(`(async () => {
        const batch = ${JSON.stringify(BATCH)};
        const run = async () => {
          const results = await window.EdgeSwarm.runModel(${JSON.stringify(name)}, batch);
          if (results.length !== batch.length || results.some((r) => !("output" in r))) throw new Error("a batch came back wrong");
        };
        const warmEnd = performance.now() + ${WARMUP_MS};
        while (performance.now() < warmEnd) await run();
        let items = 0;
        const started = performance.now();
        while (performance.now() < started + ${MEASURE_MS}) { await run(); items += batch.length; }
        return items / ((performance.now() - started) / 1000);
      })()`)) as number;
    }
    return { runner: "onnxruntime-web in Chromium's Web Worker (wasm, 1 thread)", rates };
  } finally {
    await chromium.close().catch(() => {});
    await coordinator.stop();
    await rm(persistTo, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  const step = async (what: string, row: () => Promise<Row>) => {
    process.stderr.write(`measuring ${what}…\n`);
    // One runner failing (a tab running out of memory on a large model) costs its row, not the others'.
    rows.push(
      await row().catch((e: unknown) => ({ runner: `${what}: failed (${String(e).split("\n")[0]})`, rates: {} })),
    );
  };
  await step("onnxruntime-node", () =>
    inProcess("onnxruntime-node in this process (cpu)", createOrtNodeFactory(), "cpu"),
  );
  await step("onnxruntime-web on this thread", () =>
    inProcess("onnxruntime-web on the main thread (wasm)", createOrtWebFactory({ numThreads: 1 }), "wasm"),
  );
  await step("the thread pool at 1 thread", () => threadPool(1));
  await step("the thread pool at 2 threads", () => threadPool(2));
  if (process.env.BENCH_WEBGPU !== "0") {
    // A machine with no GPU: SwiftShader, where Debian's chromium package puts it (see README).
    const swiftShader = "/usr/lib/chromium/vk_swiftshader_icd.json";
    if (!process.env.VK_ICD_FILENAMES && !process.env.VK_DRIVER_FILES) process.env.VK_ICD_FILENAMES = swiftShader;
    const adapter = await probeDawn();
    if ("reason" in adapter) process.stderr.write(`no WebGPU row: ${adapter.reason}\n`);
    else
      await step(`WebGPU on ${describeGpu(adapter)}`, () => threadPool(1, "webgpu", `webgpu: ${describeGpu(adapter)}`));
  }
  if (process.env.BENCH_CHROMIUM !== "0") await step("Chromium", () => chromiumWorker());

  const cpus = os.cpus();
  const lines = [
    `# Model runners: items/s of ${MODELS.join(", ")}, no coordinator`,
    "",
    `- Machine: ${cpus[0]?.model.trim() ?? "unknown CPU"} × ${cpus.length}, ${os.type()} ${os.release()}, Node ${process.version}`,
    `- Batches of ${BATCH.length} reviews${BENCH.seq ? ` of ${BENCH.seq} tokens` : ""}, back to back (one per thread at once), ${WARMUP_MS} ms warm-up, ${MEASURE_MS} ms measured`,
    `- Date: ${new Date().toISOString()}`,
    `- Command: \`${BENCH.command}\``,
    "",
    `| runner | ${MODELS.join(" items/s | ")} items/s |`,
    `| --- | ${MODELS.map(() => "---:").join(" | ")} |`,
    ...rows.map((r) => `| ${r.runner} | ${MODELS.map((m) => fmtRate(r.rates[m] ?? Number.NaN)).join(" | ")} |`),
    "",
  ];
  const text = lines.join("\n");
  process.stdout.write(text);
  await mkdir(new URL("./", RESULTS_FILE), { recursive: true });
  await writeFile(RESULTS_FILE, text);
}

await main();
process.exit(0);
