// The model queue in real workerd: dynamic batching, priority, leases, redelivery, dead-lettering,
// timeouts, backpressure, and a restart of the object with work in flight.
import { abortAllDurableObjects, runDurableObjectAlarm } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { call, infer, queue, SocketWorker, scrape, sleep, waitFor, wipeQueues, workerCall } from "./helpers.ts";

afterEach(() => wipeQueues());

// alpha has a 150 ms lease, for expiry tests; tests that must not race a lease use bravo (5 s).
const submit = async (inputs: unknown[], extra: Record<string, unknown> = {}) => {
  const res = await infer({ model: "alpha", inputs, wait: false, ...extra });
  expect(res.status).toBe(202);
  return res.body.id as string;
};
const submitBravo = (inputs: unknown[]) => submit(inputs, { model: "bravo" });
const job = async (id: string) => (await call(`/v1/jobs/${id}`)).body;

describe("dynamic batching", () => {
  it("sends a batch as soon as it is full, and holds a partial one until its delay", async () => {
    // charlie's max_queue_delay_ms is a minute: only a full batch can go out within this test.
    const worker = await SocketWorker.connect("charlie", { max_batch_size: 8 });
    const res = await infer({ model: "charlie", inputs: [1, 2, 3, 4, 5, 6], wait: false });
    expect(res.status).toBe(202);
    const first = await worker.next("batch");
    expect(first.items.map((i) => i.input)).toEqual([1, 2, 3, 4]);
    worker.complete(first);
    await sleep(100);
    expect(worker.has("batch")).toBe(false);
  });

  it("sends a partial batch once its oldest item has waited max_queue_delay_ms", async () => {
    const worker = await SocketWorker.connect("alpha", { max_batch_size: 4 });
    const started = Date.now();
    await submit(["a", "b"]); // two of the four a batch holds
    const batch = await worker.next("batch");
    expect(Date.now() - started).toBeGreaterThanOrEqual(38);
    expect(batch.items.map((i) => i.input)).toEqual(["a", "b"]);
  });

  it("hands out a call that fills a batch before answering it, and pumps once for smaller calls after", async () => {
    const worker = await SocketWorker.connect("charlie", { max_batch_size: 4 });
    // Four inputs fill charlie's batch: leased within the submit, so the answer already says running.
    const full = await infer({ model: "charlie", inputs: [1, 2, 3, 4], wait: false });
    expect(full.body.status).toBe("running");
    worker.complete(await worker.next("batch"));
    await worker.next("ack");
    // Two calls of two are answered queued; the pump after them (in the task after a submit, not within it)
    // finds a full batch and sends it without waiting for charlie's minute of delay.
    const halves = await Promise.all([1, 2].map((n) => infer({ model: "charlie", inputs: [n, n], wait: false })));
    expect(halves.map((r) => r.body.status)).toEqual(["queued", "queued"]);
    const batch = await worker.next("batch");
    expect(batch.items.map((i) => i.input).sort()).toEqual([1, 1, 2, 2]);
  });

  it("caps a batch at the worker's own capacity", async () => {
    const worker = await SocketWorker.connect("alpha", { max_batch_size: 2 });
    await submit([1, 2, 3]);
    expect((await worker.next("batch")).items).toHaveLength(2);
  });

  it("sends a worker no more items than its max_items_in_flight leaves room for; the rest stays queued", async () => {
    // A worker whose batches join one decode of 10 rows, taking up to 4 batches of 8.
    const opts = { max_batch_size: 8, max_concurrent_batches: 4, max_items_in_flight: 10 };
    const worker = await SocketWorker.connect("bravo", opts);
    await submitBravo([1, 2, 3, 4, 5, 6]);
    const first = await worker.next("batch");
    expect(first.items.map((i) => i.input)).toEqual([1, 2, 3, 4, 5, 6]);
    await submitBravo([7, 8, 9, 10, 11, 12]);
    const second = await worker.next("batch");
    expect(second.items.map((i) => i.input)).toEqual([7, 8, 9, 10]);
    // Full at 10 items with two of its four batches: the last two wait in the queue, counted there.
    expect(await queue("bravo").stats("bravo")).toMatchObject({ queued: 2, in_flight: { gpu: 10 } });
    expect(worker.has("batch")).toBe(false);
    worker.complete(first);
    expect((await worker.next("batch")).items.map((i) => i.input)).toEqual([11, 12]);
  });

  it("gives a long-polling HTTP worker no more than its max_items_in_flight over its leases", async () => {
    await submitBravo([1, 2, 3, 4, 5, 6, 7, 8]);
    const poll = (wait_ms: number) =>
      workerCall("/v1/leases", {
        model: "bravo",
        worker_id: "rows-5",
        pool: "gpu",
        device: "cpu",
        max_batch_size: 4,
        max_items_in_flight: 5,
        wait_ms,
      });
    expect((await poll(2_000)).body.items).toHaveLength(4);
    expect((await poll(2_000)).body.items).toHaveLength(1);
    expect((await poll(0)).status).toBe(204);
    expect(await queue("bravo").stats("bravo")).toMatchObject({ queued: 3, in_flight: { gpu: 5 } });
  });

  it("answers a waiting call with one output per input, in order, and its timings", async () => {
    const worker = await SocketWorker.connect("alpha");
    const answer = infer({ model: "alpha", inputs: [1, 2, 3] });
    worker.complete(await worker.next("batch"), (x) => x * 10);
    const res = await answer;
    expect(res.status).toBe(200);
    expect(res.body.outputs).toEqual([10, 20, 30]);
    expect(res.body.timings.total_ms).toBeGreaterThanOrEqual(res.body.timings.queued_ms);
    expect(res.body.timings.compute_ms).toBe(1);
  });
});

describe("priority", () => {
  it("serves higher priority first and FIFO within a level", async () => {
    await submit(["low-1"], { priority: 0 });
    await submit(["low-2"], { priority: 0 });
    await submit(["high-1"], { priority: 2 });
    await submit(["mid-1"], { priority: 1 });
    await submit(["high-2"], { priority: 2 });
    const worker = await SocketWorker.connect("alpha", { max_batch_size: 4 });
    const batch = await worker.next("batch");
    expect(batch.items.map((i) => i.input)).toEqual(["high-1", "high-2", "mid-1", "low-1"]);
  });
});

describe("leases", () => {
  it("puts the items of an expired lease back and redelivers them to another worker", async () => {
    const silent = await SocketWorker.connect("alpha", { worker_id: "silent" });
    const id = await submit([7, 8]);
    const lost = await silent.next("batch");
    expect(lost.items.every((i) => i.attempt === 1)).toBe(true);
    const rescuer = await SocketWorker.connect("alpha", { worker_id: "rescuer" });
    const again = await rescuer.next("batch", 5_000); // after the 150 ms lease expires, via the alarm
    expect(again.items.map((i) => i.input)).toEqual([7, 8]);
    expect(again.items.every((i) => i.attempt === 2)).toBe(true);
    rescuer.complete(again);
    await waitFor(async () => (await job(id)).status === "succeeded");
    // The first worker's late completion changes nothing and says so.
    silent.complete(lost, () => "late");
    expect((await silent.next("ack")).status).toBe("stale");
    expect((await job(id)).outputs).toEqual([7, 8]);
  });

  it("keeps a lease alive while the worker extends it", async () => {
    const worker = await SocketWorker.connect("alpha");
    const id = await submit([1]);
    const batch = await worker.next("batch");
    for (let i = 0; i < 8; i++) {
      await sleep(30);
      worker.send({ type: "extend", lease_id: batch.lease_id });
      expect((await worker.next("ack")).status).toBe("ok");
    }
    expect(Date.now()).toBeGreaterThan(batch.deadline); // past the first deadline, yet still held
    worker.complete(batch);
    expect((await worker.next("ack")).status).toBe("ok");
    expect((await job(id)).status).toBe("succeeded");
  });

  it("dead-letters an item after max_attempts failed deliveries, with the last error", async () => {
    const worker = await SocketWorker.connect("alpha");
    const answer = infer({ model: "alpha", inputs: ["doomed"] });
    await worker.next("batch"); // attempt 1: never completed
    await worker.next("batch", 5_000); // attempt 2: never completed
    const res = await answer;
    expect(res.status).toBe(502);
    expect(res.body.error.code).toBe("max_attempts_exceeded");
    expect(res.body.status).toBe("failed");
    expect(res.body.errors[0].message).toMatch(/failed after 2 attempts.*lease expired/);
    expect(worker.has("batch")).toBe(false);
  });

  it("treats a completion as idempotent: a duplicate is reported and changes nothing", async () => {
    const worker = await SocketWorker.connect("bravo");
    const id = await submitBravo([1]);
    const batch = await worker.next("batch");
    worker.complete(batch, () => "first");
    expect((await worker.next("ack")).status).toBe("ok");
    worker.complete(batch, () => "second");
    expect((await worker.next("ack")).status).toBe("duplicate");
    expect((await job(id)).outputs).toEqual(["first"]);
  });

  it("retries an item whose worker error is retryable, and fails at once one that is not", async () => {
    const worker = await SocketWorker.connect("bravo");
    const answer = infer({ model: "bravo", inputs: ["ok", "flaky", "bad"] });
    const batch = await worker.next("batch");
    worker.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: [
        { output: "OK" },
        { error: { code: "device_lost", message: "GPU device lost", retryable: true } },
        { error: { code: "invalid_input", message: "input must be text" } },
      ],
    });
    const retry = await worker.next("batch");
    expect(retry.items.map((i) => [i.input, i.attempt])).toEqual([["flaky", 2]]);
    worker.complete(retry, () => "FLAKY");
    const res = await answer;
    expect(res.status).toBe(422);
    expect(res.body.outputs).toEqual(["OK", "FLAKY", null]);
    expect(res.body.errors).toEqual([{ index: 2, code: "invalid_input", message: "input must be text" }]);
    expect(res.body.error.message).toContain("1 of 3 inputs failed");
  });

  it("stops sending batches to a draining worker, which still completes what it holds", async () => {
    const leaving = await SocketWorker.connect("bravo", { worker_id: "leaving", max_batch_size: 2 });
    const held = await submitBravo([1, 2]);
    const batch = await leaving.next("batch");
    leaving.send({ type: "drain" });
    expect((await leaving.next("draining")).leases_held).toBe(1);
    const later = await submitBravo([3]);
    await sleep(100);
    expect(leaving.has("batch")).toBe(false);
    leaving.complete(batch);
    await waitFor(async () => (await job(held)).status === "succeeded");
    const staying = await SocketWorker.connect("bravo", { worker_id: "staying" });
    staying.complete(await staying.next("batch"));
    await waitFor(async () => (await job(later)).status === "succeeded");
  });

  it("puts a disconnected worker's batch back at once, to another worker, as its second attempt", async () => {
    // Put back by the disconnect, not by a lease expiry (bravo's lease is 5 s): the expiry counter says so.
    const quitter = await SocketWorker.connect("bravo", { worker_id: "quitter" });
    const other = await SocketWorker.connect("bravo", { worker_id: "other" });
    const res = await infer({ model: "bravo", inputs: [1, 2], wait: false });
    const held = await waitFor(() => (quitter.has("batch") ? quitter : other.has("batch") ? other : undefined));
    const spare = held === quitter ? other : quitter;
    held.close();
    const again = await spare.next("batch", 4_000);
    const metrics: string = (await scrape()).body;
    expect(metrics).toContain("# TYPE edgeswarm_leases_expired_total counter");
    const expired = metrics.split("\n").filter((l) => l.startsWith('edgeswarm_leases_expired_total{model="bravo"'));
    expect(expired.reduce((sum, l) => sum + Number(l.split(" ").pop()), 0)).toBe(0);
    expect(again.items.map((i) => i.attempt)).toEqual([2, 2]);
    spare.complete(again);
    await waitFor(async () => (await call(`/v1/jobs/${res.body.id}`)).body.status === "succeeded");
  });

  it("stores large outputs in chunks, and fails an output too large to keep with a clear error", async () => {
    const worker = await SocketWorker.connect("alpha");
    const answer = infer({ model: "alpha", inputs: [1, 2, 3, 4] });
    const batch = await worker.next("batch");
    const big = "x".repeat(400_000); // four of these exceed one chunk
    worker.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: [{ output: big }, { output: big }, { output: "x".repeat(1_100_000) }, { output: big }],
    });
    const res = await answer;
    expect(res.status).toBe(422);
    expect(res.body.outputs.map((o: string | null) => o?.length ?? null)).toEqual([400_000, 400_000, null, 400_000]);
    expect(res.body.errors).toEqual([
      { index: 2, code: "output_too_large", message: expect.stringMatching(/1000000/) },
    ]);
  });
  it("serves HTTP workers: long-poll lease, extend, release without using an attempt, complete", async () => {
    const empty = await workerCall("/v1/leases", {
      model: "bravo",
      worker_id: "h1",
      pool: "gpu",
      device: "cpu",
      max_batch_size: 4,
      wait_ms: 30,
    });
    expect(empty.status).toBe(204);
    const id = await submitBravo([1, 2]);
    const leased = await workerCall("/v1/leases", {
      model: "bravo",
      worker_id: "h1",
      pool: "gpu",
      device: "cpu",
      max_batch_size: 4,
      wait_ms: 1_000,
    });
    expect(leased.status).toBe(200);
    expect(leased.body.items.map((i: { input: number }) => i.input)).toEqual([1, 2]);
    const extended = await workerCall(`/v1/leases/${leased.body.lease_id}/extend`);
    expect(extended.body.status).toBe("ok");
    expect(extended.body.deadline).toBeGreaterThanOrEqual(leased.body.deadline);
    const released = await workerCall(`/v1/leases/${leased.body.lease_id}/release`, { reason: "shutting down" });
    expect(released.status).toBe(200);
    expect((await job(id)).status).toBe("queued");
    const late = await workerCall(`/v1/leases/${leased.body.lease_id}/complete`, {
      results: [{ output: 1 }, { output: 2 }],
    });
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe("lease_stale");
    const again = await workerCall("/v1/leases", {
      model: "bravo",
      worker_id: "h2",
      pool: "gpu",
      device: "cpu",
      max_batch_size: 4,
      wait_ms: 1_000,
    });
    expect(again.body.items.map((i: { attempt: number }) => i.attempt)).toEqual([1, 1]);
    const done = await workerCall(`/v1/leases/${again.body.lease_id}/complete`, {
      results: [{ output: "x" }, { output: "y" }],
    });
    expect(done.body.status).toBe("ok");
    expect(await job(id)).toMatchObject({ status: "succeeded", outputs: ["x", "y"] });
  });
});

describe("timeouts and backpressure", () => {
  it("expires a request not served within its timeout: 504 for a waiting call, expired for the job", async () => {
    const res = await infer({ model: "alpha", inputs: [1], timeout_ms: 100 });
    expect(res.status).toBe(504);
    expect(res.body.error.code).toBe("expired");
    expect(res.body.error.message).toMatch(/timeout of 100 ms \(0 of 1 inputs done\)/);
    const metrics = (await scrape()).body as string;
    expect(metrics).toContain('edgeswarm_items_expired_total{model="alpha",pool="none"} 1');
    expect((await job(res.body.id)).status).toBe("expired");
    // An expired item is never handed out afterwards.
    const worker = await SocketWorker.connect("alpha");
    await sleep(80);
    expect(worker.has("batch")).toBe(false);
  });

  it("answers 429 with Retry-After when the queue is full, and accepts again once it drains", async () => {
    await submit([1, 2, 3, 4, 5, 6, 7, 8]);
    const full = await infer({ model: "alpha", inputs: [1, 2, 3, 4, 5], wait: false });
    expect(full.status).toBe(429);
    expect(full.headers.get("Retry-After")).toBe("1");
    expect(full.body.error.code).toBe("queue_full");
    const worker = await SocketWorker.connect("alpha", { max_batch_size: 4 });
    worker.complete(await worker.next("batch"));
    worker.complete(await worker.next("batch"));
    await waitFor(async () => (await call("/v1/models")).body.models[0].queue_depth === 0);
    expect((await infer({ model: "alpha", inputs: [1, 2, 3, 4, 5], wait: false })).status).toBe(202);
  });
});

describe("restart", () => {
  it("loses nothing accepted when the object restarts with work queued and in flight", async () => {
    const holder = await SocketWorker.connect("alpha", { worker_id: "holder", max_batch_size: 4 });
    const inFlight = await submit([1, 2, 3, 4]);
    const queued = await submit([5]);
    await holder.next("batch");
    await abortAllDurableObjects(); // the object is thrown away; only its SQLite storage remains
    // Still held, or already put back if its 150 ms lease ran out meanwhile: either way not lost.
    expect(["running", "queued"]).toContain((await job(inFlight)).status);
    expect((await job(queued)).status).toBe("queued");
    const worker = await SocketWorker.connect("alpha", { worker_id: "after", max_batch_size: 4 });
    const seen: unknown[] = [];
    while (seen.length < 5) {
      const batch = await worker.next("batch", 5_000);
      seen.push(...batch.items.map((i) => i.input));
      worker.complete(batch, (x) => x * 2);
    }
    expect(seen.sort()).toEqual([1, 2, 3, 4, 5]);
    expect((await job(inFlight)).outputs).toEqual([2, 4, 6, 8]);
    expect((await job(queued)).outputs).toEqual([10]);
  });

  it("keeps deadlines in storage: the alarm expires what is due after a restart", async () => {
    const id = await submit([1], { timeout_ms: 60 });
    await abortAllDurableObjects();
    await sleep(80);
    await runDurableObjectAlarm(queue("alpha"));
    expect((await job(id)).status).toBe("expired");
  });
});
