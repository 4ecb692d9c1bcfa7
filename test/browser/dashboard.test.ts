// The operator's dashboard in a real Chromium against the real coordinator (`wrangler dev`, OPERATOR_KEYS
// set) with a real Node worker: a caller key is told an operator key is needed, the operator key draws
// every chart, and the charts move while callers send work. Its screenshot goes to test-results/, and to
// docs/dashboard.png (the README's picture) when run with EDGESWARM_UPDATE_DOCS=1.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PANELS } from "../../client/dashboard/metric-history.ts";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { callerApi } from "../support/browser-swarm.ts";
import { type Chromium, launchChromium } from "../support/chromium.ts";
import { REVIEW_TEXTS } from "../support/reference-models.ts";

const ARTIFACTS = new URL("../../test-results/", import.meta.url).pathname;
const SCREENSHOT = join(ARTIFACTS, "dashboard.png");
const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-dashboard-"));
let coordinator: Coordinator;
let worker: WorkerProcess;
let chromium: Chromium;
const { infer } = callerApi(() => coordinator.url);

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", OPERATOR_KEYS: "op" },
  });
  worker = startWorker([
    ...["--coordinator", coordinator.url, "--token", "w", "--device", "cpu", "--models", "sentiment,embedder"],
    ...["--port", "0", "--status-interval-ms", "0", "--worker-id", "dashboard-gpu-1"],
  ]);
  await worker.waitFor(/\[sentiment\] connected/, 60_000);
  await worker.waitFor(/\[embedder\] connected/, 60_000);
  chromium = await launchChromium();
});

afterAll(async () => {
  worker?.child.kill("SIGKILL");
  await chromium?.close();
  await coordinator?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

interface ChartView {
  id: string;
  keys: string[];
  data?: (number | null)[][];
}
const charts = (page: Page) => page.evaluate("window.edgeswarmDashboard.charts()") as Promise<ChartView[]>;
const readings = (page: Page) => page.evaluate("window.edgeswarmDashboard.readings") as Promise<number>;

/** The latest value of one series of one chart (null when it has none yet). */
async function latest(page: Page, id: string, key: string): Promise<number | null> {
  const chart = (await charts(page)).find((c) => c.id === id);
  const column = chart?.keys.indexOf(key) ?? -1;
  const values = column >= 0 ? chart?.data?.[column + 1] : undefined;
  return values?.filter((v) => v !== null).at(-1) ?? null;
}

async function waitUntil(check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("the dashboard", () => {
  let page: Page;

  it("tells a caller key that it needs an operator key, and takes one in its form", async () => {
    page = await chromium.context.newPage();
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.goto(`${coordinator.url}/dashboard#key=k&every=500`);
    await page.waitForSelector("#key-form:not([hidden])", { timeout: 15_000 });
    // The page reads /metrics and /v1/scaling at once: whichever refusal comes first is the one it shows.
    expect(await page.textContent("#problem")).toMatch(
      /^\/(metrics|v1\/scaling) needs an operator key \(an OPERATOR_KEYS entry\); this is a caller key$/,
    );
    await page.fill("#key", "op");
    await page.click("#key-form button");
    await page.waitForFunction("window.edgeswarmDashboard.readings >= 2", undefined, { timeout: 15_000 });
    expect(await page.isHidden("#key-form")).toBe(true);
  });

  it("draws every panel as a chart with pixels on its canvas", async () => {
    const views = await charts(page);
    expect(views.map((c) => c.id)).toEqual(PANELS.map((p) => p.id));
    const painted = (await page.evaluate(`[...document.querySelectorAll("#panels canvas")].map((canvas) => {
      const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
      let n = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
      return n;
    })`)) as number[];
    expect(painted).toHaveLength(PANELS.length);
    for (const pixels of painted) expect(pixels).toBeGreaterThan(0);
    expect(await latest(page, "replicas", "desired")).toBeGreaterThanOrEqual(1);
    expect(await latest(page, "workers", "sentiment · gpu")).toBe(1);
    expect(await page.textContent("#queues")).toContain("sentiment");
    // The roster: the one gpu worker, on cpu, serving both models.
    await page.waitForFunction(`document.querySelector("#workers tr")`, undefined, { timeout: 10_000 });
    const cells = (await page.evaluate(
      `[...document.querySelectorAll("#workers tr")].map((tr) => [...tr.cells].map((td) => td.textContent))`,
    )) as string[][];
    expect(cells).toEqual([["dashboard-gpu-1", "gpu", "cpu", "sentiment, embedder", "0", "trusted"]]);
  });

  it("moves under load: items/s, latency and batch sizes appear, and the time axis grows", async () => {
    const before = await readings(page);
    const pointsBefore = (await charts(page))[0]?.data?.[0]?.length ?? 0;
    let sent = 0;
    await waitUntil(async () => {
      const answers = await Promise.all(
        Array.from({ length: 6 }, () => infer("sentiment", [...REVIEW_TEXTS, ...REVIEW_TEXTS])),
      );
      for (const a of answers) expect(a.status).toBe(200);
      sent += answers.length;
      return ((await latest(page, "throughput", "sentiment · gpu")) ?? 0) > 0;
    });
    expect(sent).toBeGreaterThan(0);
    await waitUntil(async () => (await latest(page, "latency", "sentiment · gpu p99")) !== null);
    expect(await latest(page, "latency", "sentiment · gpu p50")).toBeGreaterThan(0);
    expect(await latest(page, "batch-size", "sentiment · gpu")).toBeGreaterThanOrEqual(1);
    expect(await readings(page)).toBeGreaterThan(before);
    expect((await charts(page))[0]?.data?.[0]?.length ?? 0).toBeGreaterThan(pointsBefore);
    // A few seconds more of uneven load, so the README's picture shows lines rather than dots.
    const until = (await readings(page)) + 16;
    for (let wave = 1; (await readings(page)) < until; wave++) {
      const calls = Array.from({ length: 1 + (wave % 5) }, (_, i) =>
        infer(i % 2 ? "embedder" : "sentiment", REVIEW_TEXTS.slice(0, 1 + ((wave * 3 + i) % REVIEW_TEXTS.length))),
      );
      await Promise.all(calls);
    }
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: SCREENSHOT, fullPage: true });
    if (process.env.EDGESWARM_UPDATE_DOCS === "1") {
      copyFileSync(SCREENSHOT, new URL("../../docs/dashboard.png", import.meta.url).pathname);
    }
  });
});
