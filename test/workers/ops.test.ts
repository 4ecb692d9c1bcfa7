// What operators and KEDA read: health, models with queue depth, the scaling signal, Prometheus metrics.
import { env, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { app } from "../../edge/app.ts";
import { TEST_REGISTRY } from "../support/test-models.ts";
import { call, infer, queue, SocketWorker, scrape, sleep, WORKER, waitFor, wipeQueues } from "./helpers.ts";

const MODEL_NAMES = TEST_REGISTRY.models.map((m) => m.name);

afterEach(() => wipeQueues());

/** Holds a queue object for `ms`, as one swamped by work answers late; `held` is true until it lets go. */
function holdQueue(model: string, ms: number) {
  let held = true;
  const done = runInDurableObject(queue(model), (_instance, state) =>
    state.blockConcurrencyWhile(() => sleep(ms)),
  ).finally(() => {
    held = false;
  });
  return {
    done,
    get held() {
      return held;
    },
  };
}

describe("health", () => {
  it("is live and ready, without credentials", async () => {
    expect((await call("/healthz", { headers: { Authorization: "" } })).body).toEqual({ status: "ok" });
    const ready = await call("/readyz", { headers: { Authorization: "" } });
    expect(ready.status).toBe(200);
    expect(ready.body.models).toEqual(MODEL_NAMES);
  });
});

describe("a bad configuration", () => {
  it("leaves the coordinator live but not ready, and says what is wrong", async () => {
    const broken = { ...env, MODELS: "{not json" };
    const live = await app.request("/healthz", {}, broken);
    expect(live.status).toBe(200);
    const ready = await app.request("/readyz", {}, broken);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({
      status: "not_ready",
      error: { code: "misconfigured", message: expect.stringMatching(/MODELS is not valid JSON/) },
    });
    const call = await app.request("/v1/models", { headers: { Authorization: "Bearer x" } }, broken);
    expect(call.status).toBe(500);
    expect(((await call.json()) as any).error.message).toMatch(/misconfigured: MODELS/);
    // OpenAI's models.retrieve answers in OpenAI's shape even when the configuration fails before its route.
    const one = await app.request("/v1/models/alpha", { headers: { Authorization: "Bearer x" } }, broken);
    expect(one.status).toBe(500);
    expect(((await one.json()) as any).error).toMatchObject({
      type: "server_error",
      message: expect.stringMatching(/misconfigured/),
    });
    const workers = await app.request("/v1/models/alpha/workers", { headers: { Authorization: "Bearer x" } }, broken);
    expect(((await workers.json()) as any).error).not.toHaveProperty("type");
  });
});

describe("GET /v1/models", () => {
  it("lists each model with its configuration and current queue depth", async () => {
    await infer({ model: "alpha", inputs: [1, 2, 3], wait: false });
    const res = await call("/v1/models");
    const alpha = res.body.models.find((m: { name: string }) => m.name === "alpha");
    expect(alpha).toMatchObject({
      max_batch_size: 4,
      max_queue_delay_ms: 40,
      lease_ms: 150,
      max_attempts: 2,
      queue_depth: 3,
    });
    expect(res.body.models.find((m: { name: string }) => m.name === "bravo")).toMatchObject({
      max_queue_size: 10_000, // a default filled in
      queue_depth: 0,
    });
  });
});

describe("GET /v1/workers/models", () => {
  it("gives workers the full registry, and only to workers", async () => {
    const res = await call("/v1/workers/models", { headers: WORKER });
    expect(res.status).toBe(200);
    expect(res.body.models.map((m: { name: string }) => m.name)).toEqual(MODEL_NAMES);
    expect((await call("/v1/workers/models")).status).toBe(401);
  });
});

describe("GET /v1/scaling", () => {
  it("applies the replica formula per pool and holds scale-down through the stabilisation window", async () => {
    await infer({ model: "bravo", inputs: new Array(40).fill(0), wait: false });
    const up = await call("/v1/scaling");
    expect(up.status).toBe(200);
    // browser: ceil(40 / 16) = 3; gpu: ceil(40 / 64) = 1, its floor anyway.
    expect(up.body.pools.browser).toMatchObject({
      queue_length: 40,
      raw_replicas: 3,
      desired_replicas: 3,
      active: true,
    });
    expect(up.body.pools.gpu).toMatchObject({ queue_length: 40, desired_replicas: 1 });
    expect(up.body.config.gpu.target_per_replica).toBe(64);

    const worker = await SocketWorker.connect("bravo", { pool: "browser", max_batch_size: 64 });
    worker.complete(await worker.next("batch"));
    await worker.next("ack");
    const down = await call("/v1/scaling");
    expect(down.body.pools.browser).toMatchObject({ queue_length: 0, raw_replicas: 0, active: false });
    expect(down.body.pools.browser.desired_replicas).toBe(3); // within the 60 s window
  });

  it("answers in time while a queue is busy, with that queue as last seen", async () => {
    await infer({ model: "bravo", inputs: new Array(5).fill(0), wait: false });
    expect((await call("/v1/scaling")).body.models.bravo.queued).toBe(5);
    // The queue object takes no calls for 3 s (as one swamped by work would answer late).
    const busy = holdQueue("bravo", 3_000);
    await sleep(100);
    const res = await call("/v1/scaling");
    expect(busy.held).toBe(true); // answered without waiting for the object, whatever this machine's speed
    expect(res.status).toBe(200);
    expect(res.body.stale).toEqual(["bravo"]);
    expect(res.body.models.bravo.queued).toBe(5);
    expect(res.body.pools.gpu.queue_length).toBe(5);
    await busy.done;
  });

  it("serves /metrics in time too while a queue is busy, with that queue as last seen", async () => {
    await infer({ model: "bravo", inputs: new Array(3).fill(0), wait: false });
    expect((await scrape()).body).toMatch(/edgeswarm_queue_depth\{model="bravo"\} 3/);
    const busy = holdQueue("bravo", 3_000);
    await sleep(100);
    const res = await call("/metrics");
    expect(busy.held).toBe(true); // answered without waiting for the object, whatever this machine's speed
    expect(res.status).toBe(200);
    expect(res.body).toMatch(/edgeswarm_queue_depth\{model="bravo"\} 3/);
    expect(res.body).toMatch(/^edgeswarm_queue_stale\{queue="bravo"\} 1$/m);
    expect(res.body).not.toMatch(/^edgeswarm_queue_stale\{queue="alpha"\}/m);
    await busy.done;
  });

  it("counts what a pool holds in flight for that pool only", async () => {
    const worker = await SocketWorker.connect("bravo", { pool: "gpu", max_batch_size: 64 });
    await infer({ model: "bravo", inputs: new Array(10).fill(0), wait: false });
    await worker.next("batch");
    const res = await call("/v1/scaling");
    expect(res.body.pools.gpu.queue_length).toBe(10);
    expect(res.body.pools.browser.queue_length).toBe(0);
    expect(res.body.models.bravo.in_flight).toEqual({ browser: 0, gpu: 10 });
  });
});

describe("GET /metrics", () => {
  it("serves Prometheus text with queue depth, counters and histograms by model and pool", async () => {
    const worker = await SocketWorker.connect("alpha", { pool: "gpu" });
    const answer = infer({ model: "alpha", inputs: [1, 2] });
    worker.complete(await worker.next("batch"));
    expect((await answer).status).toBe(200);
    expect((await scrape()).body).toMatch(/edgeswarm_workers\{model="alpha",pool="gpu"\} 1/);
    worker.close(); // so the next request stays queued
    await waitFor(async () => /edgeswarm_workers\{model="alpha",pool="gpu"\} 0/.test((await scrape()).body));
    await infer({ model: "alpha", inputs: [3], wait: false });
    const res = await scrape();
    expect(res.headers.get("Content-Type")).toMatch(/^text\/plain; version=0.0.4/);
    const text = res.body as string;
    expect(text).toContain('edgeswarm_queue_depth{model="alpha"} 1');
    expect(text).toContain('edgeswarm_items_completed_total{model="alpha",pool="gpu"} 2');
    expect(text).toContain('edgeswarm_batch_size_bucket{model="alpha",pool="gpu",le="2"} 1');
    expect(text).toContain('edgeswarm_queue_wait_seconds_count{model="alpha",pool="gpu"} 2');
    expect(text).toContain('edgeswarm_request_duration_seconds_count{model="alpha",pool="gpu"} 1');
    expect(text).toMatch(/edgeswarm_desired_replicas\{pool="gpu"\} 1/);
  });
});
