// Routing between the pools, inside real workerd: the browser pool first; the GPU pool for what no
// browser worker can take, what waited past overflow_after_ms, the excess over what the browser pool
// drains within latency_target_ms, and calls pinned to it. /v1/scaling reports the GPU pool's share.
import { beforeEach, describe, expect, it } from "vitest";
import { TEST_CPU_ONLY_KEY } from "../support/test-models.ts";
import { call, infer, SocketWorker, sleep, wipeQueues } from "./helpers.ts";

beforeEach(async () => {
  await wipeQueues();
});

const scaling = async () => (await call("/v1/scaling")).body;

describe("routing between the browser and gpu pools", () => {
  it("sends everything to the gpu pool while no browser worker is connected", async () => {
    const gpu = await SocketWorker.connect("delta", { pool: "gpu" });
    await infer({ model: "delta", inputs: [1, 2, 3], wait: false });
    const batch = await gpu.next("batch", 200);
    expect(batch.items.map((i) => i.input)).toEqual([1, 2, 3]);
  });

  it("gives the gpu pool nothing while a browser worker can take the work", async () => {
    const browser = await SocketWorker.connect("delta", { pool: "browser" });
    const gpu = await SocketWorker.connect("delta", { pool: "gpu" });
    for (let i = 0; i < 3; i++) {
      const answer = infer({ model: "delta", inputs: [i, i + 1] });
      browser.complete(await browser.next("batch"), (x) => x * 2);
      expect((await answer).body.outputs).toEqual([i * 2, (i + 1) * 2]);
    }
    await sleep(1_100); // past overflow_after_ms: nothing was left waiting
    expect(gpu.has("batch")).toBe(false);
  });

  it("sends an item the browser pool has not taken within overflow_after_ms to the gpu pool", async () => {
    const browser = await SocketWorker.connect("delta", { pool: "browser", max_batch_size: 2 });
    const gpu = await SocketWorker.connect("delta", { pool: "gpu" });
    await infer({ model: "delta", inputs: [1, 2], wait: false });
    await browser.next("batch"); // held: the browser worker is busy
    const queuedAt = Date.now();
    await infer({ model: "delta", inputs: [3, 4], wait: false });
    // Not yet overdue: the gpu pool's queue is empty, the browser pool's holds both.
    const before = await scaling();
    expect(before.models.delta.eligible).toEqual({ browser: 2, gpu: 0 });
    expect(gpu.has("batch")).toBe(false);
    const batch = await gpu.next("batch", 4_000);
    expect(Date.now() - queuedAt).toBeGreaterThanOrEqual(1_000);
    expect(batch.items.map((i) => i.input)).toEqual([3, 4]);
    expect((await scaling()).models.delta.in_flight).toEqual({ browser: 2, gpu: 2 });
  });

  it("counts overdue items in the gpu pool's queue length, which the replica formula reads", async () => {
    const browser = await SocketWorker.connect("delta", { pool: "browser", max_batch_size: 1 });
    await infer({ model: "delta", inputs: [0], wait: false });
    await browser.next("batch");
    await infer({ model: "delta", inputs: new Array(70).fill(1), wait: false });
    expect((await scaling()).pools.gpu).toMatchObject({ queue_length: 0 });
    await sleep(1_100);
    const after = await scaling();
    // ceil(70 / 64) = 2 gpu replicas for the 70 overdue items.
    expect(after.pools.gpu).toMatchObject({ queue_length: 70, raw_replicas: 2, desired_replicas: 2 });
  });

  it("spills the excess over what the browser pool drains within the latency target, and no more", async () => {
    const browser = await SocketWorker.connect("echo", { pool: "browser", max_batch_size: 4 });
    // The browser pool is seen serving 4 items in at least 200 ms: at most 20 items/s, 100 within 5 s.
    await infer({ model: "echo", inputs: [1, 2, 3, 4], wait: false });
    const first = await browser.next("batch");
    await sleep(200);
    browser.complete(first);
    await browser.next("ack");
    await sleep(50);
    expect(browser.has("batch")).toBe(false); // nothing else was queued

    await infer({ model: "echo", inputs: new Array(8).fill(0), wait: false }); // the browser takes 4, 4 wait
    await browser.next("batch");
    expect((await scaling()).models.echo.eligible.gpu).toBe(0);

    await infer({ model: "echo", inputs: new Array(200).fill(0), wait: false });
    const spilled = (await scaling()).models.echo.eligible.gpu;
    // 204 queued, at most 100 − 4 in flight drainable: at least 108 may go to the gpu pool.
    expect(spilled).toBeGreaterThanOrEqual(108);
    expect(spilled).toBeLessThan(204);
    const gpu = await SocketWorker.connect("echo", { pool: "gpu" });
    expect((await gpu.next("batch", 500)).items).toHaveLength(4);
  });

  it("serves a call pinned to a pool only there", async () => {
    const browser = await SocketWorker.connect("delta", { pool: "browser" });
    const gpu = await SocketWorker.connect("delta", { pool: "gpu" });
    await infer({ model: "delta", inputs: ["fast"], pool: "gpu", wait: false });
    expect((await gpu.next("batch", 200)).items.map((i) => i.input)).toEqual(["fast"]);
    expect(browser.has("batch")).toBe(false);

    browser.close();
    await infer({ model: "delta", inputs: ["cheap"], pool: "browser", wait: false });
    await sleep(1_100); // no browser worker, and overdue: still not the gpu pool's
    expect(gpu.has("batch")).toBe(false);
    expect((await scaling()).models.delta.eligible).toEqual({ browser: 1, gpu: 0 });
  });

  it("lets only the keys in GPU_POOL_KEYS pin a call to the gpu pool", async () => {
    const refused = await call("/v1/infer", {
      body: { model: "delta", inputs: [1], pool: "gpu", wait: false },
      headers: { Authorization: `Bearer ${TEST_CPU_ONLY_KEY}` },
    });
    expect(refused.status).toBe(403);
    expect(refused.body.error.message).toContain("GPU_POOL_KEYS");
    const routed = await call("/v1/infer", {
      body: { model: "delta", inputs: [1], wait: false },
      headers: { Authorization: `Bearer ${TEST_CPU_ONLY_KEY}` },
    });
    expect(routed.status).toBe(202);
    const badPool = await infer({ model: "delta", inputs: [1], pool: "tpu" });
    expect(badPool.status).toBe(400);
    expect(JSON.stringify(badPool.body.error)).toContain("pool");
  });
});
