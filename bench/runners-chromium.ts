// bench:runners' Chromium rows: onnxruntime-web in the embed's donor Web Worker of a headless Chromium tab, on
// wasm (one thread: the coordinator's pages are not cross-origin isolated) or on WebGPU (SwiftShader here:
// software, a correctness path). Timed inside the page, so the DevTools round trip of this harness is not counted.
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import { fileURLToPath } from "node:url";
import type { ModelConfig } from "../shared/index.ts";

/** What one model measured: per batch size, items/s and batches measured (or why none), and the first outputs. */
export interface ModelMeasure {
  device: string;
  cells: Map<number, { rate: number; reps: number } | { skipped: string }>;
  /** Outputs of the first measured run of the smallest batch, for agreement with onnxruntime-node. */
  first: unknown[];
}

export interface MeasurePlan {
  batches: string[][];
  warmupMs: number;
  measureMs: number;
  /** A larger batch whose one run would, scaled from the last size, take longer than this is skipped. */
  slowLimitS: number;
}

/**
 * The registry's files over plain HTTP with CORS and CORP, so the tab's worker fetches them straight from disk
 * (Playwright's route.fulfill sends a body over the DevTools protocol: the 86 MiB model closed the tab that way).
 */
export async function serveFolder(root: URL): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer(async (req, res) => {
    const headers = { "Access-Control-Allow-Origin": "*", "Cross-Origin-Resource-Policy": "cross-origin" };
    const file = fileURLToPath(new URL(`.${decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname)}`, root));
    const size = await stat(file)
      .then((s) => (s.isFile() ? s.size : -1))
      .catch(() => -1);
    if (size < 0 || !file.startsWith(fileURLToPath(root))) {
      res.writeHead(404, headers).end();
      return;
    }
    res.writeHead(200, { ...headers, "Content-Length": size });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** In the page: warm up, then each batch size for the window (at least one run), skipping sizes too slow to wait for. */
const PAGE_MEASURE = `async ({ name, batches, warmupMs, measureMs, slowLimitS }) => {
  const check = (results, n) => {
    if (results.length !== n || results.some((r) => !("output" in r))) throw new Error("a batch came back wrong: " + JSON.stringify(results.find((r) => !("output" in r))));
    return results;
  };
  const run = async (batch) => check(await window.EdgeSwarm.runModel(name, batch), batch.length);
  const warmEnd = performance.now() + warmupMs;
  let first;
  do first = await run(batches[0]); while (performance.now() < warmEnd);
  const cells = [];
  let perItemS = 0;
  for (const batch of batches) {
    if (perItemS * batch.length > slowLimitS) {
      cells.push({ size: batch.length, skipped: "one batch would take about " + Math.round(perItemS * batch.length) + " s" });
      continue;
    }
    let reps = 0;
    const started = performance.now();
    do { await run(batch); reps++; } while (performance.now() < started + measureMs);
    const seconds = (performance.now() - started) / 1000;
    perItemS = seconds / (reps * batch.length);
    cells.push({ size: batch.length, rate: (reps * batch.length) / seconds, reps });
  }
  return { cells, first: first.map((r) => r.output) };
}`;

/** Measures `specs` in one Chromium tab on `device`; `registryUrl` is where their files are (any registry). */
export async function measureInChromium(
  device: "wasm" | "webgpu",
  specs: readonly ModelConfig[],
  registryUrl: URL,
  plan: MeasurePlan,
): Promise<Map<string, ModelMeasure>> {
  // Loaded here only: a bare GPU machine (scripts/gpu-check.sh) has neither wrangler nor Chromium.
  const { startCoordinator } = await import("../scripts/lib/wrangler-dev.ts");
  const { launchChromium } = await import("../test/support/chromium.ts");
  const { mkdtemp, rm } = await import("node:fs/promises");
  const persistTo = await mkdtemp(`${os.tmpdir()}/edgeswarm-bench-runners-`);
  const coordinator = await startCoordinator({ persistTo, vars: { AUTH: "open" } });
  const files = await serveFolder(new URL("./", registryUrl));
  const chromium = await launchChromium({ webgpu: device === "webgpu" });
  try {
    const page = await chromium.context.newPage();
    const url = `${coordinator.url}/bench/runner.html`;
    await page.route(url, (route) =>
      route.fulfill({
        contentType: "text/html",
        body: `<!doctype html><script src="/embed.js" data-site-key="none" data-autostart="false" data-devices="${device}"></script>`,
      }),
    );
    await page.goto(url);
    await page.waitForFunction("window.EdgeSwarm !== undefined");
    const out = new Map<string, ModelMeasure>();
    for (const spec of specs) {
      const loaded = (await page.evaluate(
        `window.EdgeSwarm.loadModel(${JSON.stringify(spec)}, "${files.url}registry.json")`,
      )) as { device: string };
      const args = { name: spec.name, ...plan };
      const got = (await page.evaluate(`(${PAGE_MEASURE})(${JSON.stringify(args)})`)) as {
        cells: ({ size: number; rate: number; reps: number } | { size: number; skipped: string })[];
        first: unknown[];
      };
      out.set(spec.name, {
        device: loaded.device,
        cells: new Map(got.cells.map(({ size, ...cell }) => [size, cell])),
        first: got.first,
      });
    }
    return out;
  } finally {
    await chromium.close().catch(() => {});
    await files.close();
    await coordinator.stop();
    await rm(persistTo, { recursive: true, force: true });
  }
}
