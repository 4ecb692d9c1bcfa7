// `npm run bench:browser`: items/s of the bundled models through the swarm when the only worker is
// (a) the Node worker (onnxruntime-node, cpu), (b) a Chromium tab's donor worker on WASM, (c) a tab on
// WebGPU (headless Chromium's software adapter: it shows the path works, not what a GPU does).
// Same coordinator, callers and calls for each; every answer is checked for status and output count.
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { startWorker } from "../scripts/lib/worker-process.ts";
import { freePort, startCoordinator } from "../scripts/lib/wrangler-dev.ts";
import type { DonorStatus } from "../shared/index.ts";
import { launchChromium } from "../test/support/chromium.ts";
import { REVIEW_TEXTS } from "../test/support/reference-models.ts";
import { closedLoop, fmt, fmtRate, HttpClient } from "./bench-kit.ts";

const RESULTS_FILE = new URL("./results/browser.md", import.meta.url);
const REGISTRY = fileURLToPath(new URL("../models/registry.json", import.meta.url));
const CALLERS = 8;
const PER_CALL = 32;
const WARMUP_MS = 2_000;
const MEASURE_MS = Number(process.env.BENCH_MEASURE_MS ?? 6_000);

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
  const inputs = Array.from({ length: PER_CALL }, (_, i) => `${REVIEW_TEXTS[i % REVIEW_TEXTS.length]} ${i}`);
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
  const registry = { models: models.map((m) => ({ ...m, max_batch_size: 32, verification: { enabled: false } })) };
  const port = await freePort();
  const persistTo = await mkdtemp(`${os.tmpdir()}/edgeswarm-bench-browser-`);
  const coordinator = await startCoordinator({
    persistTo,
    port,
    vars: {
      AUTH: "open",
      MODELS: JSON.stringify(registry),
      SITE_KEYS: JSON.stringify({ demo: { origins: [`http://127.0.0.1:${port}`] } }),
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
    for (const webgpu of [false, true]) {
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
    await rm(persistTo, { recursive: true, force: true });
  }
  const cpus = os.cpus();
  const lines = [
    "# Browser worker benchmark",
    "",
    `- Machine: ${cpus[0]?.model.trim() ?? "unknown CPU"} × ${cpus.length}, ${os.type()} ${os.release()}`,
    `- Node ${process.version}, Chromium at /usr/bin/chromium (headless; WebGPU is SwiftShader, software)`,
    `- Date: ${new Date().toISOString()}`,
    "- Command: `npm run bench:browser`",
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
