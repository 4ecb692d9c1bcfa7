// The donor pool against hostile donors that are real processes (test/support/donor-process.ts) speaking
// the real protocol to `wrangler dev`, each from its own loopback address, with a real gpu-pool worker
// behind them and verification as shipped (strict): colluders from one address and from one /24, a donor
// that guesses canaries, one honest until trusted, and hoarders over the socket and over HTTP.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelRegistry } from "../../shared/index.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { sameOutput } from "../support/donor-answers.ts";
import {
  DONOR_ORIGIN,
  type DonorOptions,
  type DonorProcess,
  donorCoordinatorVars,
  startDonor,
} from "../support/donor-launcher.ts";
import { BUNDLED_REGISTRY_URL, loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";

const bundled = ModelRegistry.parse(JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8")));
const sentiment = bundled.models.find((m) => m.name === "sentiment");
// Verification as shipped, but standing after 2 agreements and a canary in most batches, so a short test
// reaches the cases; hedged within 300 ms once the pool's speed is known.
const registry = {
  models: [
    {
      ...sentiment,
      max_batch_size: 4,
      verification: { trust_after: 2, canary_rate: 0.5, hedge_min_ms: 300, quarantine_ms: 600_000 },
    },
  ],
};
const API = { Authorization: "Bearer k", "Content-Type": "application/json" };
const OPERATOR = { Authorization: "Bearer op" };

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-donor-pool-"));
let coordinator: Coordinator;
let gpu: WorkerProcess;
let reference = new Map<string, LoadedModel>();
const donors: DonorProcess[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { ...donorCoordinatorVars(registry), OPERATOR_KEYS: "op" },
  });
  gpu = startWorker(["--coordinator", coordinator.url, "--token", "w", "--worker-id", "gpu-1", "--port", "0"]);
  await gpu.waitFor(/\[sentiment\] connected/, 120_000);
  reference = await loadReferenceModels(registry);
}, 180_000);

afterAll(async () => {
  await Promise.all(donors.map((d) => d.stop().catch(() => undefined)));
  gpu?.child.kill("SIGTERM");
  await gpu?.exited;
  await coordinator?.stop();
  for (const m of reference.values()) await m.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

async function donor(opts: Omit<DonorOptions, "coordinator" | "siteKey" | "origin" | "model">): Promise<DonorProcess> {
  const d = startDonor({
    coordinator: coordinator.url,
    siteKey: "site",
    origin: DONOR_ORIGIN,
    model: "sentiment",
    ...opts,
  });
  donors.push(d);
  await d.ready();
  return d;
}

async function infer(inputs: string[], extra: Record<string, unknown> = {}) {
  const res = await fetch(`${coordinator.url}/v1/infer`, {
    method: "POST",
    headers: API,
    body: JSON.stringify({ model: "sentiment", inputs, timeout_ms: 20_000, ...extra }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

/** Calls of every input (routed, and pinned to the browser pool so donors run them), each answer checked. */
async function wrongAnswers(calls: number): Promise<number> {
  let wrong = 0;
  const answers = await Promise.all(
    Array.from({ length: calls }, (_, i) => {
      const inputs = [
        REVIEW_TEXTS[i % REVIEW_TEXTS.length] as string,
        `${REVIEW_TEXTS[(i + 3) % REVIEW_TEXTS.length]} ${i}`,
      ];
      return infer(inputs, i % 2 === 0 ? { pool: "browser" } : {}).then((a) => ({ inputs, a }));
    }),
  );
  for (const { inputs, a } of answers) {
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    const expected = await (reference.get("sentiment") as LoadedModel).run(inputs);
    a.body.outputs.forEach((o: unknown, i: number) => {
      if (!sameOutput(o, (expected[i] as { output: unknown }).output, 1e-3)) wrong++;
    });
  }
  return wrong;
}

/** The coordinator's count of quarantined donors, once it exceeds `above` (counters are written about once a second). */
async function quarantined(above = -1): Promise<number> {
  let n = 0;
  for (let i = 0; i < 30; i++) {
    const text = await (await fetch(`${coordinator.url}/metrics`, { headers: OPERATOR })).text();
    const line = text.split("\n").find((l) => l.startsWith('edgeswarm_workers_quarantined_total{model="sentiment"'));
    n = line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
    if (n > above) return n;
    await new Promise((r) => setTimeout(r, 200));
  }
  return n;
}

describe("hostile donor processes against strict verification", () => {
  it.each([
    ["two colluders from one address", ["127.0.20.1", "127.0.20.1"]],
    ["three colluders from one /24", ["127.0.21.1", "127.0.21.2", "127.0.21.3"]],
  ])("%s deliver no wrong answer, and are caught", async (_name, addresses) => {
    const before = await quarantined();
    const colluders = [];
    for (const [i, address] of addresses.entries()) {
      colluders.push(await donor({ mode: "collude", localAddress: address, workerId: `colluder-${address}-${i}` }));
    }
    expect(await wrongAnswers(16)).toBe(0);
    const reports = await Promise.all(colluders.map((d) => d.stop()));
    // They ran pinned work and lied on it, and were caught doing so.
    expect(reports.reduce((n, r) => n + r.lies, 0)).toBeGreaterThan(0);
    expect(await quarantined(before)).toBeGreaterThan(before);
  });

  it("an operator sees the gpu worker and the colluders' quarantines, and lifts them; a caller key may not", async () => {
    const roster = async (headers: Record<string, string> = OPERATOR) => {
      const res = await fetch(`${coordinator.url}/v1/models/sentiment/workers`, { headers });
      return { status: res.status, body: (await res.json()) as any };
    };
    expect((await roster(API)).status).toBe(403);
    const listed = await roster();
    expect(listed.status).toBe(200);
    expect(listed.body.workers.find((w: { worker_id: string }) => w.worker_id === "gpu-1")).toMatchObject({
      pool: "gpu",
      transport: "socket",
      quarantine: null,
    });
    const quarantines = listed.body.quarantines as { kind: string; id: string; reason: string }[];
    // The tests above caught colluders from 127.0.20.1 and from 127.0.21.0/24: their networks among them.
    expect(quarantines.filter((q) => q.kind === "network").map((q) => q.id)).toEqual(
      expect.arrayContaining([expect.stringMatching(/^127\.0\.20\./), expect.stringMatching(/^127\.0\.21\./)]),
    );
    for (const q of quarantines) {
      expect(q.reason).not.toBe("");
      const lift = await fetch(`${coordinator.url}/v1/models/sentiment/quarantine/${q.kind}/${q.id}`, {
        method: "DELETE",
        headers: OPERATOR,
      });
      expect({ status: lift.status, body: await lift.json() }).toEqual({
        status: 200,
        body: { model: "sentiment", kind: q.kind, id: q.id, lifted: true },
      });
    }
    expect((await roster()).body.quarantines).toEqual([]);
    const again = quarantines[0] as { kind: string; id: string };
    const gone = await fetch(`${coordinator.url}/v1/models/sentiment/quarantine/${again.kind}/${again.id}`, {
      method: "DELETE",
      headers: OPERATOR,
    });
    expect(gone.status).toBe(404);
  });

  it("a donor that guesses canaries the way they once could be told apart, and one honest until trusted, deliver no wrong answer", async () => {
    const guesser = await donor({ mode: "canary-aware", localAddress: "127.0.22.1" });
    const turncoat = await donor({ mode: "honest-then-lie", honestBatches: 3, localAddress: "127.0.23.1" });
    expect(await wrongAnswers(16)).toBe(0);
    const [g, t] = [await guesser.stop(), await turncoat.stop()];
    expect(g.lies + t.lies).toBeGreaterThan(0);
  });

  it("with hoarders on the socket and over HTTP, every honest routed call ends 200 with the right answer", async () => {
    await donor({ mode: "hoard-ws", localAddress: "127.0.24.1", concurrency: 64 });
    await donor({ mode: "hoard-http", localAddress: "127.0.25.1", concurrency: 64 });
    let wrong = 0;
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        infer([`${REVIEW_TEXTS[i % REVIEW_TEXTS.length]} #${i}`], { timeout_ms: 10_000 }),
      ),
    );
    for (const [i, a] of answers.entries()) {
      expect(a.status, JSON.stringify(a.body)).toBe(200);
      const expected = await (reference.get("sentiment") as LoadedModel).run([
        `${REVIEW_TEXTS[i % REVIEW_TEXTS.length]} #${i}`,
      ]);
      if (!sameOutput(a.body.outputs[0], (expected[0] as { output: unknown }).output, 1e-3)) wrong++;
    }
    expect(wrong).toBe(0);
  });
});
