// The browser swarm end to end: a real Chromium opens the demo page the real coordinator (`wrangler dev`)
// serves; its embed script starts the donor Web Worker, which joins with a site-key token and answers
// callers' requests with onnxruntime-web. Answers are checked against the same models in onnxruntime-node.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { type DonorStatus, ModelRegistry } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import {
  API,
  callerApi,
  expectMatchesNode as expectMatchesApi,
  itemsDone,
  sleep,
  waitForStatus,
} from "../support/browser-swarm.ts";
import { type Chromium, launchChromium } from "../support/chromium.ts";
import { loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";

const REGISTRY_URL = new URL("../../models/registry.json", import.meta.url);
const bundled = ModelRegistry.parse(JSON.parse(readFileSync(REGISTRY_URL, "utf8")));
// The tab's own answers reach callers unchecked here (trust has its own suites), except on
// "sentiment-verified", which keeps the default: a browser's answers wait for a trusted run's agreement.
const registry = {
  models: [
    // The encoders only: this suite is about serving them from a tab (generation in a tab is not covered here).
    ...bundled.models
      .filter((m) => m.task !== "text-generation")
      .map((m) => ({ ...m, verification: { enabled: false } })),
    {
      ...bundled.models.find((m) => m.name === "sentiment"),
      name: "sentiment-verified",
      files: { ...bundled.models.find((m) => m.name === "sentiment")?.files, base_url: "./sentiment/" },
    },
  ],
};
const ARTIFACTS = new URL("../../test-results/", import.meta.url);

const TEXTS = REVIEW_TEXTS;

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-browser-"));
let coordinator: Coordinator;
let reference = new Map<string, LoadedModel>();
const nodeWorkers: WorkerProcess[] = [];

beforeAll(async () => {
  const port = await freePort();
  coordinator = await startCoordinator({
    persistTo,
    port,
    vars: {
      API_KEYS: "k",
      WORKER_TOKENS: "w",
      MODELS: JSON.stringify(registry),
      SITE_KEYS: JSON.stringify({ demo: { origins: [`http://127.0.0.1:${port}`] } }),
      DONOR_TOKEN_SECRET: "browser-test-secret",
    },
  });
  reference = await loadReferenceModels(registry);
});

afterAll(async () => {
  for (const w of nodeWorkers) w.child.kill("SIGKILL");
  await coordinator?.stop();
  for (const m of reference.values()) await m.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

const { infer, job } = callerApi(() => coordinator.url);
const expectMatchesNode = (model: string, inputs: unknown[], outputs: unknown[], tolerance: number) =>
  expectMatchesApi(reference, model, inputs, outputs, tolerance);

const allConnected = (s: DonorStatus) =>
  s.state === "running" && s.models.length === registry.models.length && s.models.every((m) => m.connected);

/** Long tasks on the page's main thread, recorded from before any page script runs. */
const LONG_TASKS = `
  window.__longTasks = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push({ start: e.startTime, duration: e.duration });
  }).observe({ type: "longtask", buffered: true });
`;

/** The page says it is hidden, as when its tab goes to the background, and tells its listeners. */
const setHidden = (page: Page, hidden: boolean) =>
  page.evaluate(`(() => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => ${hidden ? '"hidden"' : '"visible"'} });
    Object.defineProperty(document, "hidden", { configurable: true, get: () => ${hidden} });
    document.dispatchEvent(new Event("visibilitychange"));
  })()`);

describe("a tab on WASM", () => {
  let chromium: Chromium;
  let page: Page;
  const modelRequests: string[] = [];

  beforeAll(async () => {
    chromium = await launchChromium();
    chromium.context.on("request", (r) => {
      if (r.url().includes("/models/")) modelRequests.push(r.url());
    });
    await chromium.context.addInitScript(LONG_TASKS);
    page = await chromium.context.newPage();
    await page.goto(`${coordinator.url}/demo/#key=k`);
    await waitForStatus(page, allConnected);
  });

  afterAll(async () => {
    await chromium?.close();
  });

  it("answers callers with what onnxruntime-node computes, on wasm, with no long task on the page", async () => {
    const runningSince = (await page.evaluate("performance.now()")) as number;
    for (const model of ["sentiment", "embedder"]) {
      const inputs = [...TEXTS, ...TEXTS.map((t) => `${t}!`)];
      const answer = await infer(model, inputs);
      expect(answer.status).toBe(200);
      await expectMatchesNode(model, inputs, answer.body.outputs, 1e-4);
    }
    const status = await waitForStatus(page, (s) => itemsDone(s) >= 2 * 2 * TEXTS.length);
    expect(status.models.map((m) => m.device)).toEqual(["wasm", "wasm", "wasm"]);
    // A long run of batches, then the page's main thread: nothing over 50 ms while the worker ran them.
    // The suites share two cores, so a task of the page can be stretched past 50 ms by another process
    // now and then; a script that blocks the page does it in every run, so one clean run of three is asked.
    const seen: { start: number; duration: number }[][] = [];
    for (let run = 0; run < 3; run++) {
      const since = run === 0 ? runningSince : ((await page.evaluate("performance.now()")) as number);
      await Promise.all(Array.from({ length: 8 }, () => infer("embedder", [...TEXTS, ...TEXTS, ...TEXTS])));
      const longTasks = (await page.evaluate("window.__longTasks")) as { start: number; duration: number }[];
      seen.push(longTasks.filter((t) => t.start > since && t.duration > 50));
      if (seen.at(-1)?.length === 0) break;
    }
    expect(seen.at(-1), `long tasks in each run: ${JSON.stringify(seen)}`).toEqual([]);
    // The first run also spans the first batches of each model: nothing then may block the page for long. A
    // task stretched past 200 ms by another process (seen once in a full run under load) is looked at again on
    // the page reloaded, whose first batches run again (the models from its cache); a script that blocks the
    // page does it both times.
    let firstLong = seen[0]?.filter((t) => t.duration > 200) ?? [];
    if (firstLong.length > 0) {
      await page.reload();
      await waitForStatus(page, allConnected);
      const since = (await page.evaluate("performance.now()")) as number;
      for (const model of ["sentiment", "embedder"]) expect((await infer(model, TEXTS)).status).toBe(200);
      await Promise.all(Array.from({ length: 8 }, () => infer("embedder", [...TEXTS, ...TEXTS, ...TEXTS])));
      const longTasks = (await page.evaluate("window.__longTasks")) as { start: number; duration: number }[];
      firstLong = longTasks.filter((t) => t.start > since && t.duration > 200);
    }
    expect(firstLong, `first run's long tasks: ${JSON.stringify(seen[0])}`).toEqual([]);
  });

  it("shows the swarm live on the demo page", async () => {
    await page.waitForFunction(
      `[...document.querySelectorAll("#models tr")].some((tr) => tr.cells[0].textContent === "sentiment" && tr.cells[3].textContent.startsWith("1 /"))`,
      undefined,
      { timeout: 10_000 },
    );
    expect(await page.textContent("#state")).toBe("running");
    expect(await page.textContent("#provider")).toContain("sentiment@wasm");
    expect(Number(await page.textContent("#batches"))).toBeGreaterThan(0);
    // A page a site owner would show: the line to embed, the pools named, an answer in words.
    expect(await page.textContent("#snippet")).toBe(
      `<script src="${coordinator.url}/embed.js" data-site-key="demo" async></script>`,
    );
    expect(await page.textContent("thead")).toContain("workers (browser pool / trusted pool)");
    await page.fill("#text", "I love this");
    await page.click("#ask");
    await page.waitForFunction(`document.querySelector("#answer").textContent !== ""`, undefined, { timeout: 30_000 });
    expect(await page.textContent("#answer")).toMatch(/^POSITIVE \d{2}\.\d% — in \d+ ms$/);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL("demo-page.png", ARTIFACTS).pathname, fullPage: true });
  });

  it("loads the models from IndexedDB on the second visit, not from the network", async () => {
    const first = modelRequests.length;
    expect(first).toBeGreaterThan(0);
    await page.reload();
    const status = await waitForStatus(page, allConnected);
    expect(status.cache).toMatchObject({ hits: 12, misses: 0 });
    expect(modelRequests.length).toBe(first);
    const answer = await infer("sentiment", TEXTS);
    await expectMatchesNode("sentiment", TEXTS, answer.body.outputs, 1e-4);
  });

  it("pauses while the page is hidden and picks the work up when it is shown", async () => {
    await setHidden(page, true);
    let body: any;
    try {
      const paused = await waitForStatus(page, (s) => s.state === "paused");
      expect(paused.pausedFor).toContain("hidden");
      const before = itemsDone(paused);
      body = (await infer("sentiment", TEXTS, false)).body;
      await sleep(1_500);
      expect((await job(body.id)).status).toBe("queued");
      expect(itemsDone((await page.evaluate("window.EdgeSwarm.status()")) as DonorStatus)).toBe(before);
    } finally {
      // Shown again whatever happened, so the tests after this one start from a visible page.
      await setHidden(page, false);
    }
    await waitForStatus(page, (s) => s.state === "running");
    let done: any;
    for (let i = 0; i < 100 && done?.status !== "succeeded"; i++) {
      await sleep(100);
      done = await job(body.id);
    }
    expect(done.status).toBe("succeeded");
    await expectMatchesNode("sentiment", TEXTS, done.outputs, 1e-4);
  });

  it("with verification on, the tab's answers reach callers only once a trusted run agrees", async () => {
    const metric = async (name: string) => {
      const text = await (await fetch(`${coordinator.url}/metrics`, { headers: API })).text();
      const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes('model="sentiment-verified"'));
      return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
    };
    // Pinned to the browser pool with no trusted worker connected: refused at once, as nothing could check it.
    const pin = (body: Record<string, unknown>) =>
      fetch(`${coordinator.url}/v1/infer`, {
        method: "POST",
        headers: API,
        body: JSON.stringify({
          model: "sentiment-verified",
          inputs: TEXTS,
          pool: "browser",
          timeout_ms: 60_000,
          ...body,
        }),
      });
    const refused = await pin({});
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as any).error.code).toBe("no_verifier");
    const checker = startWorker([
      "--coordinator",
      coordinator.url,
      "--token",
      "w",
      "--worker-id",
      "checker",
      "--port",
      "0",
      "--models",
      "sentiment-verified",
    ]);
    nodeWorkers.push(checker);
    await checker.waitFor(/\[sentiment-verified\] connected/, 60_000);
    const answer = await pin({});
    expect(answer.status).toBe(200);
    const done = (await answer.json()) as any;
    await expectMatchesNode("sentiment-verified", TEXTS, done.outputs, 1e-4);
    // The tab ran them first; the checker's run agreed with every one before any was given out.
    const status = await waitForStatus(
      page,
      (s) => (s.models.find((m) => m.name === "sentiment-verified")?.items ?? 0) >= TEXTS.length,
    );
    expect(status.models.find((m) => m.name === "sentiment-verified")?.items).toBeGreaterThanOrEqual(TEXTS.length);
    expect(await metric("edgeswarm_verification_agreements_total")).toBeGreaterThanOrEqual(TEXTS.length);
    expect(await metric("edgeswarm_workers_quarantined_total")).toBe(0);
    checker.child.kill("SIGTERM");
    await checker.exited;
  });

  it("when the tab closes, its work is answered elsewhere", async () => {
    const inputs = Array.from({ length: 20 }, (_, i) => `${TEXTS[i % TEXTS.length]} ${i}`);
    const ids: string[] = [];
    const batchSeen = page.evaluate(
      `new Promise((resolve) => window.EdgeSwarm.addEventListener("batch", () => resolve(true), { once: true }))`,
    );
    for (let i = 0; i < 20; i++) ids.push((await infer("embedder", inputs, false)).body.id);
    await batchSeen;
    await page.close();
    const worker = startWorker([
      "--coordinator",
      coordinator.url,
      "--token",
      "w",
      "--worker-id",
      "after-tab",
      "--port",
      "0",
    ]);
    nodeWorkers.push(worker);
    for (const id of ids) {
      let view: any;
      for (let i = 0; i < 300 && !["succeeded", "failed", "expired"].includes(view?.status); i++) {
        await sleep(100);
        view = await job(id);
      }
      expect(view.status).toBe("succeeded");
      await expectMatchesNode("embedder", inputs, view.outputs, 1e-4);
    }
    worker.child.kill("SIGTERM");
    await worker.exited;
  });
});

describe("a tab with WebGPU (headless Chromium's software adapter)", () => {
  let chromium: Chromium;
  let page: Page;

  beforeAll(async () => {
    chromium = await launchChromium({ webgpu: true });
    page = await chromium.context.newPage();
    await page.goto(`${coordinator.url}/demo/#key=k`);
    await waitForStatus(page, allConnected, 120_000);
  }, 150_000);

  afterAll(async () => {
    await chromium?.close();
  });

  it("runs the models on webgpu and agrees with onnxruntime-node", async () => {
    const status = (await page.evaluate("window.EdgeSwarm.status()")) as DonorStatus;
    expect(status.models.map((m) => m.device)).toEqual(["webgpu", "webgpu", "webgpu"]);
    for (const model of ["sentiment", "embedder"]) {
      const answer = await infer(model, TEXTS);
      expect(answer.status).toBe(200);
      await expectMatchesNode(model, TEXTS, answer.body.outputs, 1e-3);
    }
  }, 120_000);

  it("falls back to wasm when the GPU device is lost, and still answers", async () => {
    expect(await page.evaluate("window.EdgeSwarm.loseGpuDevice()")).toBe(true);
    const answer = await infer("embedder", TEXTS);
    expect(answer.status).toBe(200);
    await expectMatchesNode("embedder", TEXTS, answer.body.outputs, 1e-4);
    const status = await waitForStatus(page, (s) => s.models.find((m) => m.name === "embedder")?.device === "wasm");
    expect(status.gpuDeviceLost).toBeTruthy();
  }, 120_000);
});
