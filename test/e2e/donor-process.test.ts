// The donor processes of test/support/donor-process.ts against the real coordinator (`wrangler dev`): each
// mode does what it claims, over the real protocol, from its own loopback address. Verification is off for
// the models here, so what a donor answers is what the caller gets; the coordinator's defences have their
// own suites, which use these donors.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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
import { boundRequest, jsonOf } from "../support/donor-wire.ts";
import { BUNDLED_REGISTRY_URL, loadReferenceModels, REVIEW_TEXTS } from "../support/reference-models.ts";

const bundled = ModelRegistry.parse(JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8")));
const sentiment = bundled.models.find((m) => m.name === "sentiment");
const files = sentiment?.files ? { ...sentiment.files, base_url: "./sentiment/" } : undefined;
const registry = {
  models: [
    { ...sentiment, max_batch_size: 4, verification: { enabled: false } },
    // Leases of 1 s, renewed every 500 ms: a hoarder's extensions show within a short call.
    { ...sentiment, name: "sentiment-hold", files, lease_ms: 1_000, verification: { enabled: false } },
  ],
};
const API = { Authorization: "Bearer k", "Content-Type": "application/json" };

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-donors-"));
let coordinator: Coordinator;
let reference = new Map<string, LoadedModel>();
const started: DonorProcess[] = [];

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: donorCoordinatorVars(registry),
  });
  reference = await loadReferenceModels({ models: [registry.models[0]] });
}, 120_000);

afterAll(async () => {
  await Promise.all(started.map((d) => d.stop().catch(() => undefined)));
  await coordinator?.stop();
  for (const m of reference.values()) await m.dispose();
  rmSync(persistTo, { recursive: true, force: true });
});

async function donor(opts: Omit<DonorOptions, "coordinator" | "siteKey" | "origin">): Promise<DonorProcess> {
  const d = startDonor({ coordinator: coordinator.url, siteKey: "site", origin: DONOR_ORIGIN, ...opts });
  started.push(d);
  await d.ready();
  return d;
}

async function infer(model: string, inputs: string[], timeoutMs = 60_000) {
  const res = await fetch(`${coordinator.url}/v1/infer`, {
    method: "POST",
    headers: API,
    body: JSON.stringify({ model, inputs, pool: "browser", timeout_ms: timeoutMs }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

/** For each output, whether it is onnxruntime-node's answer for its input. */
async function truthOf(inputs: string[], outputs: unknown[]): Promise<boolean[]> {
  const expected = await (reference.get("sentiment") as LoadedModel).run(inputs);
  return outputs.map((o, i) => sameOutput(o, (expected[i] as { output: unknown }).output, 1e-4));
}

describe("donor processes", () => {
  it("honest: answers every item as onnxruntime-node does", async () => {
    const d = await donor({ model: "sentiment", mode: "honest", localAddress: "127.0.5.1", maxBatchSize: 4 });
    const answer = await infer("sentiment", REVIEW_TEXTS);
    expect(answer.status).toBe(200);
    expect(await truthOf(REVIEW_TEXTS, answer.body.outputs)).toEqual(REVIEW_TEXTS.map(() => true));
    const report = await d.stop();
    expect(report).toMatchObject({ mode: "honest", items: 8, answered: 8, honest: 8, lies: 0 });
    expect(report.donor_id).toMatch(/.+/);
  });

  it("lie: answers every item wrongly, with the labels swapped", async () => {
    const d = await donor({ model: "sentiment", mode: "lie", localAddress: "127.0.6.1", maxBatchSize: 4 });
    const answer = await infer("sentiment", REVIEW_TEXTS);
    expect(answer.status).toBe(200);
    expect(await truthOf(REVIEW_TEXTS, answer.body.outputs)).toEqual(REVIEW_TEXTS.map(() => false));
    const expected = await (reference.get("sentiment") as LoadedModel).run(REVIEW_TEXTS);
    answer.body.outputs.forEach((o: { label: string; score: number }[], i: number) => {
      const truth = (expected[i] as { output: { label: string }[] }).output;
      expect(o.map((x) => x.label)).toEqual([...truth.map((x) => x.label)].reverse());
      expect(o.reduce((n, x) => n + x.score, 0)).toBeCloseTo(1, 5);
    });
    expect(await d.stop()).toMatchObject({ answered: 8, lies: 8, honest: 0 });
  });

  it("collude: two colluders, each alone, give the same wrong answers", async () => {
    const outputs: unknown[][] = [];
    for (const address of ["127.0.7.1", "127.0.7.2"]) {
      const d = await donor({ model: "sentiment", mode: "collude", localAddress: address, maxBatchSize: 4 });
      const answer = await infer("sentiment", REVIEW_TEXTS);
      expect(answer.status).toBe(200);
      outputs.push(answer.body.outputs);
      expect(await d.stop()).toMatchObject({ lies: 8 });
    }
    expect(outputs[1]).toEqual(outputs[0]);
    expect(await truthOf(REVIEW_TEXTS, outputs[0] as unknown[])).toEqual(REVIEW_TEXTS.map(() => false));
  });

  it("canary-aware: answers truthfully only the item it takes for a canary (today's guess: the last of a batch)", async () => {
    const d = await donor({ model: "sentiment", mode: "canary-aware", localAddress: "127.0.8.1", maxBatchSize: 4 });
    const inputs = REVIEW_TEXTS.slice(0, 4);
    const answer = await infer("sentiment", inputs);
    expect(answer.status).toBe(200);
    // Callers' items carry a traceparent, so only the batch's last item looks like a canary.
    expect((await truthOf(inputs, answer.body.outputs)).filter(Boolean)).toHaveLength(1);
    expect(await d.stop()).toMatchObject({ batches: 1, answered: 4, guessed_canaries: 1, honest: 1, lies: 3 });
  });

  it("honest-then-lie: truthful for its first N batches, then lies", async () => {
    const d = await donor({
      model: "sentiment",
      mode: "honest-then-lie",
      honestBatches: 2,
      localAddress: "127.0.9.1",
      maxBatchSize: 4,
    });
    const truths: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      const inputs = REVIEW_TEXTS.slice(i, i + 4);
      const answer = await infer("sentiment", inputs);
      expect(answer.status).toBe(200);
      truths.push((await truthOf(inputs, answer.body.outputs)).every(Boolean));
    }
    expect(truths).toEqual([true, true, false, false]);
    expect(await d.stop()).toMatchObject({ batches: 4, honest: 8, lies: 8 });
  });

  for (const mode of ["hoard-ws", "hoard-http"] as const) {
    it(`${mode}: takes batches, keeps extending them, never answers`, async () => {
      const d = await donor({ model: "sentiment-hold", mode, localAddress: "127.0.10.1", concurrency: 4 });
      const answers = await Promise.all(
        [0, 1, 2].map((i) => infer("sentiment-hold", [REVIEW_TEXTS[i] as string], 3_000)),
      );
      for (const a of answers) expect(a.status).not.toBe(200);
      const report = await d.stop();
      expect(report.batches).toBeGreaterThan(0);
      expect(report.extends + report.leases_lost).toBeGreaterThan(0);
      expect(report.answered).toBe(0);
    });
  }

  it("is seen by the edge from the address it binds: 127.0.5.9's donor tokens are limited, 127.0.5.10's are not", async () => {
    const mint = (localAddress: string) =>
      boundRequest(`${coordinator.url}/v1/donors/token`, {
        headers: { Origin: DONOR_ORIGIN },
        json: { site_key: "site" },
        localAddress,
      });
    // The local limiter counts in fixed windows of the wall clock's minutes (miniflare's), so a donor started
    // after a burst may ask in the next minute and be let in: that, and only that, starts over.
    const minute = () => Math.floor(Date.now() / 60_000);
    for (let attempt = 1; ; attempt++) {
      // Past the limit (60 a minute, wrangler.toml) at once, whatever the machine's speed: asked one by one on a
      // loaded machine, 130 took over the test's minute. A burst split by the window's edge is followed by another.
      // The minute a refused request was sent in: the limiter refused it in that minute or later.
      let refused: { message: string | undefined; sent: number } | undefined;
      for (let burst = 0; burst < 3 && refused === undefined; burst++) {
        const sent = minute();
        for (const answer of await Promise.all(Array.from({ length: 70 }, () => mint("127.0.5.9")))) {
          if (answer.status === 429) refused ??= { message: jsonOf(answer)?.error?.message, sent };
          else expect(answer.status).toBe(200);
        }
      }
      expect(refused?.message).toContain("127.0.5.9");
      // A donor process on that address is refused with it; one next door joins.
      const limited = startDonor({
        coordinator: coordinator.url,
        siteKey: "site",
        origin: DONOR_ORIGIN,
        model: "sentiment",
        mode: "honest",
        localAddress: "127.0.5.9",
      });
      started.push(limited);
      const joined = await Promise.race([
        limited.process.exited.then(() => false),
        limited.ready().then(
          () => true,
          () => false,
        ),
      ]);
      if (!joined) {
        expect(await limited.process.exited).toBe(3);
        expect(limited.reportOf()?.refused).toMatch(/429.*127\.0\.5\.9/);
        break;
      }
      await limited.stop();
      expect(minute(), "joined within the minute its address was refused in").not.toBe(refused?.sent);
      expect(attempt, "let in after a new minute three times running").toBeLessThan(3);
    }
    await (await donor({ model: "sentiment", mode: "honest", localAddress: "127.0.5.10" })).stop();
  }, 240_000);
});
