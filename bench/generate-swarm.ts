// bench:generate's swarm side: the same prompts as the direct rows sent through the real coordinator (workerd
// through Miniflare's API, as deployed: scripts/lib/miniflare-server.ts; BENCH_COORDINATOR=wrangler: `wrangler dev`) as `POST /v1/infer` with `stream: true`, read as Server-Sent Events, with one real
// `edgeswarm-worker` (onnxruntime-node) or one Chromium tab (the demo page's donor worker, wasm or WebGPU) as
// the only worker. TTFT is the caller's: request sent → first `token` event. Used by bench/generate.ts.
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { createParser } from "eventsource-parser";
import { startMiniflare } from "../scripts/lib/miniflare-server.ts";
import { startWorker, type WorkerProcess } from "../scripts/lib/worker-process.ts";
import { type Server, startCoordinator } from "../scripts/lib/wrangler-dev.ts";
import type { DonorStatus } from "../shared/index.ts";

/** The worker's --max-batch-size (BENCH_MAX_BATCH_SIZE; 16, the models' own). */
export const WORKER_BATCH = Number(process.env.BENCH_MAX_BATCH_SIZE ?? 16);

/**
 * How the coordinator runs: workerd through Miniflare's API, no dev proxy in front (as deployed; the default), or
 * `wrangler dev` (BENCH_COORDINATOR=wrangler), whose proxy relays every streamed event once more.
 */
export const COORDINATOR_PATH = process.env.BENCH_COORDINATOR === "wrangler" ? "wrangler dev" : "workerd (Miniflare)";

/** One streamed request, times in ms from performance.now(). */
export interface Streamed {
  sent: number;
  first: number;
  end: number;
  tokens: number;
  /** `token` events the tokens came in. */
  events: number;
}

/**
 * `POST /v1/infer` with one generation input and `stream: true`; resolves at the job's end event, or with what
 * went wrong (a stream that closes early: wrangler dev reloads the coordinator when others edit edge/ or shared/).
 */
export async function streamOne(base: string, model: string, input: unknown): Promise<Streamed | { error: string }> {
  try {
    return await streamOrThrow(base, model, input);
  } catch (error) {
    return { error: String(error).split("\n")[0] as string };
  }
}

async function streamOrThrow(base: string, model: string, input: unknown): Promise<Streamed> {
  const sent = performance.now();
  const res = await fetch(`${base}/v1/infer`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({ model, inputs: [input], stream: true, timeout_ms: 300_000 }),
  });
  if (res.status !== 200 || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  let first = 0;
  let tokens = 0;
  let events = 0;
  let ended: string | undefined;
  const parser = createParser({
    onEvent: (m) => {
      if (m.event === "token") {
        first ||= performance.now();
        events++;
        tokens += (JSON.parse(m.data) as { tokens: number[] }).tokens.length;
      } else if (["completed", "failed", "expired", "cancelled"].includes(m.event ?? "")) ended = m.event;
    },
  });
  const decoder = new TextDecoder();
  for await (const chunk of res.body) {
    parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }));
    if (ended) break;
  }
  if (ended !== "completed") throw new Error(`the job ended ${ended ?? "without an end event"}`);
  return { sent, first: first || performance.now(), end: performance.now(), tokens, events };
}

/** Items over batches the coordinator has leased for `model` so far (`edgeswarm_batch_size_sum` and `_count`). */
export async function batchCounts(base: string, model: string): Promise<{ items: number; batches: number }> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const sum = (metric: string) =>
    text
      .split("\n")
      .filter((l) => l.startsWith(`${metric}{`) && l.includes(`model="${model}"`))
      .reduce((t, l) => t + Number(l.split(" ").pop()), 0);
  return { items: sum("edgeswarm_batch_size_sum"), batches: sum("edgeswarm_batch_size_count") };
}

/**
 * A coordinator (COORDINATOR_PATH) serving `models` with open auth and any page allowed to donate (its own demo
 * page's origin is known only once it serves), in a temporary folder.
 */
export async function generationCoordinator(
  models: readonly unknown[],
): Promise<Server & { cleanup(): Promise<void> }> {
  const persistTo = await mkdtemp(`${os.tmpdir()}/edgeswarm-bench-generate-`);
  const start = COORDINATOR_PATH === "wrangler dev" ? startCoordinator : startMiniflare;
  const coordinator = await start({
    persistTo,
    vars: {
      AUTH: "open",
      MODELS: JSON.stringify({ models }),
      SITE_KEYS: JSON.stringify({ demo: { origins: ["*"] } }),
    },
  });
  return {
    ...coordinator,
    async cleanup() {
      await coordinator.stop();
      await rm(persistTo, { recursive: true, force: true });
    },
  };
}

/**
 * One edgeswarm-worker serving `model` from `modelBase` (a folder with registry.json), connected; with
 * `concurrency` or `threads`, that --concurrency or --threads, else the worker's default.
 */
export async function generationWorker(
  coordinator: Server,
  model: string,
  modelBase: string,
  concurrency?: number,
  threads?: number,
): Promise<WorkerProcess> {
  const worker = startWorker([
    ...["--coordinator", coordinator.url, "--models", model, "--model-base", modelBase, "--device", "cpu"],
    ...["--worker-id", `bench-${model}`, "--max-batch-size", String(WORKER_BATCH), "--port", "0"],
    ...(concurrency === undefined ? [] : ["--concurrency", String(concurrency)]),
    ...(threads === undefined ? [] : ["--threads", String(threads)]),
    ...["--status-interval-ms", "0"],
  ]);
  await worker.waitFor(new RegExp(`\\[${model}\\] connected`), 120_000);
  return worker;
}

export async function stopProcess(worker: WorkerProcess): Promise<void> {
  if (worker.child.exitCode !== null) return;
  worker.child.kill("SIGTERM");
  await worker.exited;
}

/** The demo page in a fresh Chromium (WebGPU: SwiftShader here) until it donates `model`; resolves its device. */
export async function donatingTab(
  coordinator: Server,
  model: string,
  webgpu: boolean,
): Promise<{ device: string; close(): Promise<void> }> {
  const { launchChromium } = await import("../test/support/chromium.ts");
  const chromium = await launchChromium({ webgpu });
  try {
    const page = await chromium.context.newPage();
    await page.goto(`${coordinator.url}/demo/`);
    let status: DonorStatus | undefined;
    const until = Date.now() + 180_000;
    while (!(status?.state === "running" && status.models.some((m) => m.name === model && m.connected))) {
      if (Date.now() > until) throw new Error(`the tab did not start donating ${model}: ${JSON.stringify(status)}`);
      await new Promise((r) => setTimeout(r, 250));
      status = (await page.evaluate("window.EdgeSwarm?.status()")) as DonorStatus | undefined;
    }
    const device = status.models.find((m) => m.name === model)?.device ?? "?";
    return { device, close: () => chromium.close() };
  } catch (error) {
    await chromium.close().catch(() => {});
    throw error;
  }
}
