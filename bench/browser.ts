// `npm run bench:browser`: items/s of the bundled models through the swarm when the only worker is
// (a) the Node worker (onnxruntime-node, cpu), (b) a Chromium tab's donor worker on WASM, (c) a tab on
// WebGPU (headless Chromium's software adapter: it shows the path works, not what a GPU does).
// Same coordinator, callers and calls for each; every answer is checked for status and output count.
// `-- --model bench`: the benchmark-size encoder, fp32 and int8, seq 128 (models/bench; `npm run build:models --
// --bench`), its files served to the tab from disk; WebGPU rows are left out there (SwiftShader takes minutes a call).
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startWorker } from "../scripts/lib/worker-process.ts";
import { freePort, startCoordinator } from "../scripts/lib/wrangler-dev.ts";
import type { DonorStatus } from "../shared/index.ts";
import { launchChromium } from "../test/support/chromium.ts";
import { REVIEW_TEXTS } from "../test/support/reference-models.ts";
import { closedLoop, fmt, fmtRate, HttpClient, loadAverage } from "./bench-kit.ts";
import { benchModels } from "./bench-models.ts";
import { serveFolder } from "./runners-chromium.ts";

const BENCH_MODEL = parseArgs({ options: { model: { type: "string" } }, strict: true }).values.model === "bench";
const RESULTS_FILE = new URL(`./results/browser${BENCH_MODEL ? "-bench" : ""}.md`, import.meta.url);
const MODEL_DIR = new URL(BENCH_MODEL ? "../models/bench/" : "../models/", import.meta.url);
const REGISTRY = fileURLToPath(new URL("registry.json", MODEL_DIR));
const BENCH_NAMES = ["minilm-l6-h384", "minilm-l6-h384-int8"];
// The benchmark model runs some 5 to 40 items/s here: fewer, smaller calls over a longer window.
const CALLERS = BENCH_MODEL ? 2 : 8;
const PER_CALL = BENCH_MODEL ? 8 : 32;
const WARMUP_MS = BENCH_MODEL ? 5_000 : 2_000;
const MEASURE_MS = Number(process.env.BENCH_MEASURE_MS ?? (BENCH_MODEL ? 20_000 : 6_000));
const INPUTS = BENCH_MODEL
  ? (benchModels("bench:browser", ["--bench", "--batch", String(PER_CALL)]).batches[0] as string[])
  : Array.from({ length: PER_CALL }, (_, i) => `${REVIEW_TEXTS[i % REVIEW_TEXTS.length]} ${i}`);

interface Row {
  worker: string;
  model: string;
  device: string;
  items: number;
  errors: number;
}

async function measure(base: URL, client: HttpClient, model: string): Promise<{ items: number; errors: number }> {
  let items = 0;
  let errors = 0;
  const inputs = INPUTS;
  await closedLoop({
    callers: CALLERS,
    warmupMs: WARMUP_MS,
    measureMs: MEASURE_MS,
    call: () => client.request(base, "POST", "/v1/infer", JSON.stringify({ model, inputs, timeout_ms: 120_000 })),
    record: (answer) => {
      const ok = "status" in answer && answer.status === 200;
      if (ok && (JSON.parse(answer.text) as { outputs: unknown[] }).outputs.length === PER_CALL) items += PER_CALL;
      else errors++;
    },
  });
  return { items: items / (MEASURE_MS / 1000), errors };
}

async function main(): Promise<number> {
  const models = (JSON.parse(await await readFile(REGISTRY, "utf8")) as { models: { name: string }[] }).models;
  const registry = {
    models: models
      .filter((m) => !BENCH_MODEL || BENCH_NAMES.includes(m.name))
      .map((m) => ({ ...m, max_batch_size: 32, verification: { enabled: false } })),
  };
  // The tab fetches the benchmark model's files from disk (they are not in the coordinator's bundle).
  const files = BENCH_MODEL ? await serveFolder(MODEL_DIR) : undefined;
  const port = await freePort();
  const persistTo = await mkdtemp(`${os.tmpdir()}/edgeswarm-bench-browser-`);
  const coordinator = await startCoordinator({
    persistTo,
    port,
    vars: {
      AUTH: "open",
      MODELS: JSON.stringify(registry),
      SITE_KEYS: JSON.stringify({ demo: { origins: [`http://127.0.0.1:${port}`] } }),
      ...(files ? { MODEL_REGISTRY_URL: `${files.url}registry.json` } : {}),
    },
  });
  const base = new URL(coordinator.url);
  const client = new HttpClient(150_000);
  const rows: Row[] = [];
  try {
    console.error("Node worker…");
    const node = startWorker([
      "--coordinator",
      coordinator.url,
      "--worker-id",
      "bench-node",
      "--port",
      "0",
      "--device",
      "cpu",
      "--max-batch-size",
      "32",
      ...(BENCH_MODEL ? ["--model-base", fileURLToPath(MODEL_DIR), "--models", BENCH_NAMES.join(",")] : []),
    ]);
    await node.waitFor(/health and metrics on|connected/, 120_000);
    for (const m of registry.models)
      rows.push({
        worker: "Node worker (onnxruntime-node)",
        model: m.name,
        device: "cpu",
        ...(await measure(base, client, m.name)),
      });
    node.child.kill("SIGTERM");
    await node.exited;
    for (const webgpu of BENCH_MODEL ? [false] : [false, true]) {
      console.error(`Chromium tab (${webgpu ? "webgpu" : "wasm"})…`);
      const chromium = await launchChromium({ webgpu });
      const page = await chromium.context.newPage();
      await page.goto(`${coordinator.url}/demo/`);
      let status: DonorStatus | undefined;
      for (let i = 0; i < 600 && !(status?.state === "running" && status.models.every((m) => m.connected)); i++) {
        await new Promise((r) => setTimeout(r, 200));
        status = (await page.evaluate("window.EdgeSwarm?.status()")) as DonorStatus | undefined;
      }
      for (const m of registry.models) {
        const device = status?.models.find((x) => x.name === m.name)?.device ?? "?";
        rows.push({
          worker: "Chromium tab (onnxruntime-web, Web Worker)",
          model: m.name,
          device,
          ...(await measure(base, client, m.name)),
        });
      }
      await chromium.close();
    }
  } finally {
    client.destroy();
    await coordinator.stop();
    await files?.close();
    await rm(persistTo, { recursive: true, force: true });
  }
  const cpus = os.cpus();
  const lines = [
    "# Browser worker benchmark",
    "",
    `- Machine: ${cpus[0]?.model.trim() ?? "unknown CPU"} × ${cpus.length}, ${os.type()} ${os.release()}`,
    `- Node ${process.version}, Chromium at /usr/bin/chromium (headless; WebGPU is SwiftShader, software)`,
    `- Date: ${new Date().toISOString()}`,
    `- Command: \`npm run bench:browser${BENCH_MODEL ? " -- --model bench" : ""}\``,
    `- Load average (1, 5, 15 min) at the end: ${loadAverage()} (others' work shares these cores)`,
    `- Load: ${CALLERS} callers, calls of ${PER_CALL} inputs, ${WARMUP_MS / 1000} s warm-up then ${MEASURE_MS / 1000} s measured; one worker at a time; verification off`,
    "",
    "| worker | model | provider that ran | items/s | errors |",
    "|---|---|---|---:|---:|",
    ...rows.map((r) => `| ${r.worker} | ${r.model} | ${r.device} | ${fmtRate(r.items)} | ${fmt(r.errors, 0)} |`),
    "",
  ];
  const text = `${lines.join("\n")}\n`;
  process.stdout.write(text);
  await mkdir(new URL("./", RESULTS_FILE), { recursive: true });
  await writeFile(RESULTS_FILE, text);
  return 0;
}

main().then((code) => process.exit(code));
