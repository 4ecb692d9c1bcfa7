// The embed on a page of its own origin, in a real Chromium against the real coordinator (`wrangler dev`):
// a page on an origin its site key lists (as `npm start -- --site-origin` adds) joins; a page on another
// origin, or with an unknown key, gets one console error saying why and what to do, asks no more, and
// nothing is thrown into the page.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import type { DonorStatus } from "../../shared/index.ts";
import { sleep, waitForStatus } from "../support/browser-swarm.ts";
import { type Chromium, launchChromium } from "../support/chromium.ts";

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-embed-origin-"));
let coordinator: Coordinator;
let chromium: Chromium;
let allowed = "";
let refused = "";
const servers: Server[] = [];

/**
 * A real server for the host page: Chromium's local network access checks let a page on a loopback address
 * load the coordinator's script from another loopback port, but not a page the test fulfils itself.
 */
async function servePage(): Promise<string> {
  const server = createServer((req, res) => {
    const key = new URL(req.url ?? "/", "http://x").searchParams.get("key") ?? "demo";
    res.writeHead(200, { "Content-Type": "text/html" });
    res.end(`<!doctype html><title>my page</title>
<script src="${coordinator.url}/embed.js" data-site-key="${key}" async></script>`);
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  const port = await freePort();
  allowed = await servePage();
  refused = await servePage();
  coordinator = await startCoordinator({
    persistTo,
    port,
    vars: {
      API_KEYS: "k",
      SITE_KEYS: JSON.stringify({ demo: { origins: [`http://127.0.0.1:${port}`, allowed] } }),
      DONOR_TOKEN_SECRET: "embed-origin-secret",
    },
  });
  chromium = await launchChromium();
});

afterAll(async () => {
  await chromium?.close();
  await coordinator?.stop();
  for (const server of servers) server.close();
  rmSync(persistTo, { recursive: true, force: true });
});

interface Visit {
  page: Page;
  /** Console errors the embed wrote (Chromium's own lines about failed requests are left out). */
  errors: string[];
  pageErrors: string[];
  tokenRequests: () => number;
}

/** The page on `origin` with the coordinator's embed snippet for `siteKey`. */
async function visit(origin: string, siteKey = "demo"): Promise<Visit> {
  const page = await chromium.context.newPage();
  const errors: string[] = [];
  const pageErrors: string[] = [];
  let tokens = 0;
  page.on("console", (m) => {
    if (m.type() === "error" && m.text().startsWith("EdgeSwarm")) errors.push(m.text());
  });
  page.on("pageerror", (e) => pageErrors.push(e.message));
  // Context-wide: the token is asked for by the donor's Web Worker, not by the page itself.
  chromium.context.on("request", (r) => {
    if (r.url().startsWith(`${coordinator.url}/v1/donors/token`) && r.method() === "POST") tokens++;
  });
  await page.goto(`${origin}/page.html?key=${encodeURIComponent(siteKey)}`);
  return { page, errors, pageErrors, tokenRequests: () => tokens };
}

const state = (page: Page) => page.evaluate("window.EdgeSwarm?.status()") as Promise<DonorStatus | undefined>;

async function untilFailed(page: Page, timeoutMs = 60_000): Promise<DonorStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: DonorStatus | undefined;
  while (Date.now() < deadline) {
    last = await state(page);
    if (last?.state === "failed") return last;
    await sleep(100);
  }
  throw new Error(`the embed did not give up in time; last status: ${JSON.stringify(last)}`);
}

describe("the embed on a page of its own origin", () => {
  it("joins from an origin its site key lists", async () => {
    const { page, errors, pageErrors } = await visit(allowed);
    await waitForStatus(page, (s) => s.models.length > 0 && s.models.every((m) => m.connected), 90_000);
    const res = await fetch(`${coordinator.url}/v1/models`, { headers: { Authorization: "Bearer k" } });
    const { models } = (await res.json()) as { models: { workers: { browser: number } | null }[] };
    expect(models.some((m) => (m.workers?.browser ?? 0) > 0)).toBe(true);
    expect(errors).toEqual([]);
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it("logs one console error naming the origin and --site-origin when the key is refused there, and stops", async () => {
    const { page, errors, pageErrors, tokenRequests } = await visit(refused);
    const status = await untilFailed(page);
    expect(status.error).toContain(`site key "demo" is not allowed on ${refused}`);
    // Whatever else the worker reports from here on, the console gets no second message and the edge no second ask.
    await sleep(3_000);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain(
      `EdgeSwarm: the coordinator at ${coordinator.url} refused site key "demo" on ${refused}`,
    );
    expect(errors[0]).toContain(`(403: site key "demo" is not allowed on ${refused}`);
    expect(errors[0]).toContain(`npm start -- --site-origin ${refused}`);
    expect(tokenRequests()).toBe(1);
    expect(pageErrors).toEqual([]);
    expect((await state(page))?.state).toBe("failed");
    await page.close();
  });

  it("says to check data-site-key when the key is unknown", async () => {
    const { page, errors, pageErrors } = await visit(allowed, "no-such-key");
    await untilFailed(page);
    await sleep(500);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toContain('(403: unknown site key "no-such-key"');
    expect(errors[0]).toContain("Check data-site-key");
    expect(pageErrors).toEqual([]);
    await page.close();
  });
});
