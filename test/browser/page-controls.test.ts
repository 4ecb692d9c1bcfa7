// The host page stays in charge of what its tab donates, in a real Chromium against the real coordinator
// (`wrangler dev`): the duty cycle caps the worker's busy share, the tab rests on battery, it stops and
// starts again when the page says, the model cache drops files the registry no longer names, and a full
// IndexedDB (Chromium's own quota, lowered through the DevTools protocol) leaves the models in memory.
// Each test serves its own small page, on the coordinator's origin, that embeds the script.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import type { DonorStatus } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { callerApi, expectMatchesNode, sleep, waitForStatus } from "../support/browser-swarm.ts";
import { type Chromium, launchChromium } from "../support/chromium.ts";
import { BUNDLED_REGISTRY_URL, loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";

const registry = JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8"));
for (const m of registry.models) m.verification = { enabled: false };
const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-page-controls-"));
let coordinator: Coordinator;
let reference = new Map<string, LoadedModel>();
let chromium: Chromium;
const { infer, job, settled } = callerApi(() => coordinator.url);

beforeAll(async () => {
  const port = await freePort();
  coordinator = await startCoordinator({
    persistTo,
    port,
    vars: {
      API_KEYS: "k",
      MODELS: JSON.stringify(registry),
      SITE_KEYS: JSON.stringify({ demo: { origins: [`http://127.0.0.1:${port}`] } }),
      DONOR_TOKEN_SECRET: "page-controls-secret",
    },
  });
  reference = await loadReferenceModels(registry);
  chromium = await launchChromium();
});

afterAll(async () => {
  await chromium?.close();
  await coordinator?.stop();
  for (const m of reference.values()) await m.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

/** A page on the coordinator's origin embedding the script with `attrs`; it records the worker's batch events. */
async function embedPage(attrs: string, init?: string, browser = chromium): Promise<Page> {
  const page = await browser.context.newPage();
  const url = `${coordinator.url}/test/embed.html`;
  await page.route(url, (route) =>
    route.fulfill({
      contentType: "text/html",
      body: `<!doctype html><title>embed</title>
<script src="/embed.js" data-site-key="demo" ${attrs}></script>
<script>
  window.__batches = [];
  window.__logs = [];
  window.EdgeSwarm.addEventListener("batch", (e) => window.__batches.push(e.detail));
  window.EdgeSwarm.addEventListener("log", (e) => window.__logs.push(e.detail.line));
</script>`,
    }),
  );
  if (init) await page.addInitScript(init);
  await page.goto(url);
  return page;
}

const connected = (s: DonorStatus) => s.models.length > 0 && s.models.every((m) => m.connected);

/** The keys of the donor's model cache, read with plain IndexedDB from a page of the same origin. */
const CACHE_KEYS = `new Promise((resolve, reject) => {
  const open = indexedDB.open("edgeswarm-models");
  open.onupgradeneeded = () => open.result.createObjectStore("files");
  open.onerror = () => reject(open.error);
  open.onsuccess = () => {
    const keys = open.result.transaction("files").objectStore("files").getAllKeys();
    keys.onsuccess = () => { open.result.close(); resolve(keys.result); };
    keys.onerror = () => reject(keys.error);
  };
})`;

describe("the page in charge of its tab's worker", () => {
  it("keeps the worker's busy share to the duty cycle: after each batch it rests", async () => {
    const duty = 0.25;
    const page = await embedPage(`data-models="embedder" data-duty-cycle="${duty}" data-max-batch-size="16"`);
    await waitForStatus(page, (s) => s.state === "running" && connected(s));
    const long = REVIEW_TEXTS.map((t) => `${t} ${t} ${t}`);
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push((await infer("embedder", [...long, ...long], false)).body.id);
    for (const id of ids) expect((await settled(id)).status).toBe("succeeded");
    const batches = (await page.evaluate("window.__batches")) as { ms: number; endedAt: number; restMs: number }[];
    expect(batches.length).toBeGreaterThanOrEqual(6);
    for (const [i, b] of batches.entries()) {
      // Rest = ms × (1 − duty) / duty, so busy time is `duty` of each batch plus its rest.
      expect(b.restMs).toBeCloseTo((b.ms * (1 - duty)) / duty, 6);
      const next = batches[i + 1];
      // The next batch starts no sooner than this one's rest is over (endedAt is whole milliseconds).
      if (next) expect(next.endedAt - next.ms - b.endedAt).toBeGreaterThanOrEqual(b.restMs - 2);
    }
    await page.close();
  });

  it("rests while the browser says the device runs on battery, and works again once it charges", async () => {
    // Headless Chromium reports a mains-powered device and offers no way to unplug it: the page's
    // navigator.getBattery answers for a laptop on battery instead.
    const page = await embedPage(
      `data-models="sentiment"`,
      `const battery = Object.assign(new EventTarget(), { charging: false, level: 0.4 });
       window.__battery = battery;
       Object.defineProperty(Navigator.prototype, "getBattery", { configurable: true, value: () => Promise.resolve(battery) });`,
    );
    const paused = await waitForStatus(page, (s) => s.state === "paused" && connected(s));
    expect(paused.pausedFor).toEqual(["battery"]);
    const { body } = await infer("sentiment", REVIEW_TEXTS, false);
    await sleep(1_000);
    expect((await job(body.id)).status).toBe("queued");
    await page.evaluate(
      `window.__battery.charging = true; window.__battery.dispatchEvent(new Event("chargingchange"))`,
    );
    await waitForStatus(page, (s) => s.state === "running");
    const done = await settled(body.id);
    expect(done.status).toBe("succeeded");
    await expectMatchesNode(reference, "sentiment", REVIEW_TEXTS, done.outputs, 1e-4);
    await page.close();
  });

  it("starts when the coordinator answers its first donor token requests with 503, and serves", async () => {
    // The first two token requests never reach the coordinator: a 503 as an unavailable edge (or wrangler dev's
    // proxy) answers, which the worker asks again after.
    let refused = 0;
    const tokens = `${coordinator.url}/v1/donors/token`;
    await chromium.context.route(tokens, (route) => {
      if (refused >= 2) return route.continue();
      refused++;
      return route.fulfill({ status: 503, headers: { "Retry-After": "0" }, body: "unavailable" });
    });
    try {
      const page = await embedPage(`data-models="sentiment"`);
      await waitForStatus(page, (s) => s.state === "running" && connected(s));
      expect(refused).toBe(2);
      const logs = (await page.evaluate("window.__logs")) as string[];
      expect(logs.filter((l) => l.startsWith("donor token: 503; asking again"))).toHaveLength(2);
      const { body } = await infer("sentiment", REVIEW_TEXTS, false);
      const done = await settled(body.id);
      expect(done.status).toBe("succeeded");
      await page.close();
    } finally {
      await chromium.context.unroute(tokens);
    }
  });

  it("stops when the page asks, hands nothing to it while stopped, and serves again after start()", async () => {
    const page = await embedPage(`data-models="sentiment"`);
    await waitForStatus(page, (s) => s.state === "running" && connected(s));
    const stopped = (await page.evaluate("window.EdgeSwarm.stop()")) as DonorStatus;
    expect(stopped.state).toBe("stopped");
    const { body } = await infer("sentiment", REVIEW_TEXTS, false);
    await sleep(1_000);
    expect((await job(body.id)).status).toBe("queued");
    await page.evaluate("window.EdgeSwarm.start()");
    const done = await settled(body.id);
    expect(done.status).toBe("succeeded");
    await expectMatchesNode(reference, "sentiment", REVIEW_TEXTS, done.outputs, 1e-4);
    await page.close();
  });

  it("drops cached files the registry no longer names, and keeps the ones it does", async () => {
    const page = await embedPage(`data-autostart="false"`);
    const retired = `${"0".repeat(64)} ${coordinator.url}/models/retired/model.onnx`;
    await page.evaluate(`new Promise((resolve, reject) => {
      const open = indexedDB.open("edgeswarm-models");
      open.onupgradeneeded = () => open.result.createObjectStore("files");
      open.onsuccess = () => {
        const tx = open.result.transaction("files", "readwrite");
        tx.objectStore("files").put(new Uint8Array([1, 2, 3]), ${JSON.stringify(retired)});
        tx.oncomplete = () => { open.result.close(); resolve(true); };
        tx.onerror = () => reject(tx.error);
      };
    })`);
    expect(await page.evaluate(CACHE_KEYS)).toContain(retired);
    await page.evaluate("window.EdgeSwarm.start()");
    const status = await waitForStatus(page, (s) => s.state === "running" && connected(s));
    const keys = (await page.evaluate(CACHE_KEYS)) as string[];
    expect(keys).not.toContain(retired);
    // Every file the models loaded is kept (the earlier tests' visits had stored them).
    expect(keys.length).toBe(status.cache.hits + status.cache.misses);
    expect(status.cache.memoryOnly).toBe(0);
    await page.close();
  });

  it("keeps the models in memory when IndexedDB is over quota, and still answers", async () => {
    // A browser of its own: Chromium applies a quota override only to an origin it has not stored for yet.
    const fresh = await launchChromium();
    try {
      const cdp = await fresh.context.newCDPSession(await fresh.context.newPage());
      await cdp.send("Storage.overrideQuotaForOrigin", { origin: coordinator.url, quotaSize: 16 * 1024 });
      const page = await embedPage(`data-models="sentiment"`, undefined, fresh);
      const status = await waitForStatus(page, (s) => s.state === "running" && connected(s));
      expect(status.cache.hits).toBe(0);
      expect(status.cache.misses).toBeGreaterThan(0);
      // What IndexedDB refused (all but the smallest files) stayed in memory; nothing was lost between the two.
      expect(status.cache.memoryOnly).toBeGreaterThan(0);
      const stored = (await page.evaluate(CACHE_KEYS)) as string[];
      expect(stored.length + status.cache.memoryOnly).toBe(status.cache.misses);
      const answer = await infer("sentiment", REVIEW_TEXTS);
      expect(answer.status).toBe(200);
      await expectMatchesNode(reference, "sentiment", REVIEW_TEXTS, answer.body.outputs, 1e-4);
    } finally {
      await fresh.close();
    }
  });
});
