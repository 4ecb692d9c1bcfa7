// A model's queue spread over several objects (`shards`, docs/operations.md "Sharded queues"), in workerd:
// calls spread over the shards and found again by the shard their id names, workers on every shard (over a
// socket each, or one HTTP long-poll for all), the model's room shared out, /v1/scaling, /metrics and the
// operators' views summed, priorities, timeouts and donor verification working in each shard, and a lowered
// `shards` keeping the dropped shards served until they drain.
import { env, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { app } from "../../edge/app.ts";
import type { ModelQueue } from "../../edge/model-queue/model-queue.ts";
import { parseQueueName, queueName, queueOfId } from "../../shared/protocol/ids.ts";
import { TEST_API_KEY } from "../support/test-models.ts";
import { call, infer, queue, SocketWorker, scrape, sleep, WORKER, wipeQueues, workerCall } from "./helpers.ts";
import { finished, honest, NET, submit } from "./trust-helpers.ts";

const MODEL = "sharded";
const SHARDS = 4;
/** A shard past the configured four, as a model configured with six before would have left behind. */
const DROPPED = queueName(MODEL, 5);
/** Donors checked over 2 shards. */
const VERIFIED = "sharded-verified";

afterEach(() =>
  wipeQueues([
    ...Array.from({ length: SHARDS }, (_, k) => queueName(MODEL, k)),
    DROPPED,
    queueName(VERIFIED, 0),
    queueName(VERIFIED, 1),
  ]),
);

const shardOf = (id: string) => parseQueueName(queueOfId(id) ?? "")?.shard;

/** An operators' route, with this suite's caller key made an operator key (as test/workers/queue-admin.test.ts). */
async function admin(path: string, method = "GET") {
  const headers = { Authorization: `Bearer ${TEST_API_KEY}` };
  const res = await app.request(path, { method, headers }, { ...env, OPERATOR_KEYS: TEST_API_KEY });
  return { status: res.status, body: (await res.json()) as any };
}

/** Shard 0's welcome to a new socket: how many shards it tells workers to serve. */
async function shardsToServe(): Promise<number | undefined> {
  const w = await SocketWorker.open(MODEL);
  w.send({ type: "hello", worker_id: `probe-${crypto.randomUUID()}`, pool: "gpu", device: "cpu", max_batch_size: 8 });
  const welcome = await w.next("welcome");
  w.close();
  return welcome.shards;
}

/** Connects one worker (one id) to every shard, as ShardedConnection does. */
async function workerOnEveryShard(workerId = "w-all"): Promise<SocketWorker[]> {
  return Promise.all(
    Array.from({ length: SHARDS }, (_, shard) => SocketWorker.connect(MODEL, { worker_id: workerId, shard })),
  );
}

/** Completes every batch the sockets are given until `ids` have all ended; each output is its input doubled. */
async function serveUntilDone(workers: SocketWorker[], ids: string[]) {
  const serving = workers.map(async (w) => {
    for (;;) {
      const batch = await w.next("batch", 300).catch(() => null);
      if (batch) w.complete(batch, (x: number) => x * 2);
      else if (done) return;
    }
  });
  let done = false;
  const jobs = await Promise.all(ids.map((id) => finished(id, 5_000)));
  done = true;
  await Promise.all(serving);
  return jobs;
}

describe("sharded queues", () => {
  it("spreads calls over the shards, names each job's shard in its id, and finds every job again by it", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 24; i++) {
      const res = await infer({ model: MODEL, inputs: [i], wait: false });
      expect(res.status).toBe(202);
      ids.push(res.body.id);
    }
    const shards = new Set(ids.map(shardOf));
    expect([...shards].every((s) => s !== undefined && s < SHARDS)).toBe(true);
    // Random over 4 shards: 24 calls all in one would happen once in 4^23.
    expect(shards.size).toBeGreaterThan(1);
    for (const id of ids)
      expect((await call(`/v1/jobs/${id}`)).body).toMatchObject({ id, model: MODEL, status: "queued" });

    const workers = await workerOnEveryShard();
    const jobs = await serveUntilDone(workers, ids);
    for (const [i, j] of jobs.entries()) expect(j).toMatchObject({ status: "succeeded", outputs: [i * 2] });
  });

  it("tells a worker on shard 0 how many shards to serve, and takes it on any of them", async () => {
    expect(await shardsToServe()).toBe(SHARDS);
    expect((await SocketWorker.connect(MODEL, { shard: 3 })).frames).toEqual([]);
    const refused = await call(`/v1/workers/connect?model=${MODEL}&shard=64`, {
      headers: { ...WORKER, Upgrade: "websocket" },
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error.message).toMatch(/shard must be a whole number from 0 to 63/);
  });

  it("sends a session's calls and an Idempotency-Key's repeats to one shard", async () => {
    expect((await call("/v1/sessions/talk", { method: "PUT", body: {} })).status).toBe(201);
    const session = [];
    for (let i = 0; i < 8; i++)
      session.push((await infer({ model: MODEL, inputs: [i], session: "talk", wait: false })).body.id);
    expect(new Set(session.map(shardOf)).size).toBe(1);

    const keyed = (inputs: number[]) =>
      call("/v1/infer", { body: { model: MODEL, inputs, wait: false }, headers: { "Idempotency-Key": "once-only" } });
    const first = await keyed([7]);
    const again = await keyed([7]);
    expect(again.body.id).toBe(first.body.id);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
  });

  it("serves higher priorities first and FIFO within a priority, in each shard", async () => {
    // 12 items over 4 shards: a shard's room of 10 is never reached.
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push(await submit(MODEL, [i], { priority: 0 }));
    for (let i = 0; i < 6; i++) ids.push(await submit(MODEL, [100 + i], { priority: 2 }));
    const order = new Map<number, number[]>();
    const workers = await Promise.all(
      Array.from({ length: SHARDS }, (_, shard) => SocketWorker.connect(MODEL, { shard, max_batch_size: 1 })),
    );
    let done = false;
    const serving = workers.map(async (w, shard) => {
      for (;;) {
        const batch = await w.next("batch", 300).catch(() => null);
        if (batch) {
          order.set(shard, [...(order.get(shard) ?? []), ...batch.items.map((i) => i.input as number)]);
          w.complete(batch, (x: number) => x);
        } else if (done) return;
      }
    });
    await Promise.all(ids.map((id) => finished(id, 5_000)));
    done = true;
    await Promise.all(serving);
    expect([...order.values()].flat().sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 100, 101, 102, 103, 104, 105]);
    for (const [shard, inputs] of order) {
      const high = inputs.filter((x) => x >= 100);
      const low = inputs.filter((x) => x < 100);
      expect(inputs, `shard ${shard}`).toEqual([...high.sort((a, b) => a - b), ...low.sort((a, b) => a - b)]);
    }
  });

  it("expires calls at their timeout in whichever shard holds them", async () => {
    const waited = await infer({ model: MODEL, inputs: [1], timeout_ms: 100 });
    expect(waited.status).toBe(504);
    expect(waited.body.error.code).toBe("expired");
    const ids = await Promise.all(Array.from({ length: 8 }, (_, i) => submit(MODEL, [i], { timeout_ms: 100 })));
    expect(new Set(ids.map(shardOf)).size).toBeGreaterThan(1); // all 8 in one shard: once in 4^7
    for (const id of [waited.body.id as string, ...ids]) expect((await finished(id)).status).toBe("expired");
  });

  it("verifies donors within the shard that holds the item, quarantines per shard, and lifts on every shard", async () => {
    const donors = await Promise.all(
      [0, 1].map((shard) => SocketWorker.connect(VERIFIED, { worker_id: "tab", donor: "d", network: NET.a, shard })),
    );
    const gpus = await Promise.all([0, 1].map((shard) => SocketWorker.connect(VERIFIED, { pool: "gpu", shard })));
    // A call pinned to the browser pool in each shard; any second one in a shard is cancelled at once.
    const pinned = new Map<number, string>();
    for (let i = 0; pinned.size < 2; i++) {
      const id = await submit(VERIFIED, [`x${i}`], { pool: "browser" });
      const shard = shardOf(id) ?? -1;
      if (pinned.has(shard)) expect((await call(`/v1/jobs/${id}`, { method: "DELETE" })).status).toBe(200);
      else pinned.set(shard, id);
    }
    const [d0, d1] = donors as [SocketWorker, SocketWorker];
    const [g0, g1] = gpus as [SocketWorker, SocketWorker];
    // Shard 0: the donor's output is held until the gpu worker's run of the same input agrees.
    const held = await d0.next("batch");
    d0.complete(held, honest);
    await d0.next("ack");
    expect((await call(`/v1/jobs/${pinned.get(0)}`)).body.status).not.toBe("succeeded");
    const check = await g0.next("batch");
    expect(check.items.map((i) => i.input)).toEqual(held.items.map((i) => i.input));
    g0.complete(check, honest);
    expect((await finished(pinned.get(0) as string)).outputs).toEqual(held.items.map((i) => honest(i.input)));
    // Shard 1: a malformed output quarantines the donor there, and the gpu worker redoes the item.
    const bad = await d1.next("batch");
    d1.complete(bad, () => [{ label: "L", score: 7 }]);
    expect((await d1.next("error")).code).toBe("quarantined");
    g1.complete(await g1.next("batch"), honest);
    const redone = await finished(pinned.get(1) as string);
    expect(redone).toMatchObject({ status: "succeeded", outputs: bad.items.map((i) => honest(i.input)) });
    expect(d0.frames.some((f) => f.type === "error")).toBe(false); // shard 0 has its own trust

    const listed = await admin(`/v1/models/${VERIFIED}/workers`);
    const kinds = listed.body.quarantines.map((q: { kind: string; id: string }) => `${q.kind}:${q.id}`).sort();
    expect(kinds).toEqual(["donor:d", `network:${NET.a}`, "worker:tab"]);
    for (const [kind, id] of [
      ["worker", "tab"],
      ["donor", "d"],
      ["network", NET.a],
    ]) {
      expect(
        (await admin(`/v1/models/${VERIFIED}/quarantine/${kind}/${encodeURIComponent(id as string)}`, "DELETE")).status,
      ).toBe(200);
    }
    expect((await admin(`/v1/models/${VERIFIED}/workers`)).body.quarantines).toEqual([]);
  });

  it("cancels a job in the shard its id names", async () => {
    const ids = await Promise.all(Array.from({ length: 8 }, (_, i) => submit(MODEL, [i])));
    const id = ids.find((i) => (shardOf(i) ?? 0) > 0) as string;
    expect((await call(`/v1/jobs/${id}`, { method: "DELETE" })).body).toMatchObject({ id, status: "cancelled" });
  });

  it("shares the model's room out: max_queue_size 40 over 4 shards is 10 items a shard", async () => {
    const answers = [];
    for (let i = 0; i < 80; i++) answers.push(await infer({ model: MODEL, inputs: [i], wait: false }));
    const accepted = answers.filter((a) => a.status === 202);
    const full = answers.filter((a) => a.status === 429);
    expect(accepted.length).toBeLessThanOrEqual(40);
    expect(full.length).toBeGreaterThan(0);
    expect(full[0]?.body.error.message).toMatch(/is full \(10 of 10 items waiting in this shard\)/);
    const perShard = new Map<number, number>();
    for (const a of accepted) perShard.set(shardOf(a.body.id) ?? -1, (perShard.get(shardOf(a.body.id) ?? -1) ?? 0) + 1);
    expect(Math.max(...perShard.values())).toBeLessThanOrEqual(10);
  });

  it("passes a call a full shard refuses to other shards, unless its session or Idempotency-Key binds it", async () => {
    // A session's calls all go to one shard: fill it.
    expect((await call("/v1/sessions/filler", { method: "PUT", body: {} })).status).toBe(201);
    let full: number | undefined;
    for (let i = 0; i < 10; i++) {
      const res = await infer({ model: MODEL, inputs: [i], session: "filler", wait: false });
      expect(res.status).toBe(202);
      full = shardOf(res.body.id);
    }
    const bound = await infer({ model: MODEL, inputs: [10], session: "filler", wait: false });
    expect(bound.status).toBe(429);
    expect(bound.body.error.message).toMatch(/10 of 10 items waiting in this shard/);
    // Free calls land on the full shard a quarter of the time, and are taken by another: none is refused,
    // and none is in the full shard. (Without passing on, 20 calls all missing it: 0.3%.)
    for (let i = 0; i < 20; i++) {
      const res = await infer({ model: MODEL, inputs: [i], wait: false });
      expect(res.status).toBe(202);
      expect(shardOf(res.body.id)).not.toBe(full);
    }
    // Only the bound call was refused: a full shard's refusal of a call it passed on is not a rejection.
    const rejected = `edgeswarm_requests_rejected_total{model="${MODEL}",pool="none"}`;
    expect((await scrape()).body).toContain(`${rejected} 1\n`);
  });

  it("hands an HTTP long-poll a batch from whichever shard has one, and the batch completes there", async () => {
    const ids = await Promise.all(Array.from({ length: 6 }, (_, i) => submit(MODEL, [i])));
    const seen: number[] = [];
    while (seen.length < ids.length) {
      const res = await workerCall("/v1/leases", {
        model: MODEL,
        worker_id: "poller",
        pool: "gpu",
        device: "cpu",
        max_batch_size: 8,
        wait_ms: 1_000,
      });
      expect(res.status).toBe(200);
      seen.push(...res.body.items.map((i: { input: number }) => i.input));
      const results = res.body.items.map((i: { input: number }) => ({ output: i.input * 2 }));
      expect((await workerCall(`/v1/leases/${res.body.lease_id}/complete`, { results })).body.status).toBe("ok");
    }
    expect(seen.sort()).toEqual([0, 1, 2, 3, 4, 5]);
    for (const [i, id] of ids.entries()) expect(await finished(id)).toMatchObject({ outputs: [i * 2] });
    // Nothing left: the poll waits, then answers none, from every shard.
    const empty = await workerCall("/v1/leases", {
      model: MODEL,
      worker_id: "poller",
      pool: "gpu",
      device: "cpu",
      max_batch_size: 8,
      wait_ms: 50,
    });
    expect(empty.status).toBe(204);
  });

  it("sums the shards in /v1/scaling, /metrics, /v1/models and the operators' worker list", async () => {
    const ids = await Promise.all(Array.from({ length: 6 }, (_, i) => submit(MODEL, [i])));
    expect(new Set(ids.map(shardOf)).size).toBeGreaterThan(0);
    const scaling = await call("/v1/scaling");
    expect(scaling.body.models[MODEL].queued).toBe(6);
    const metrics = (await scrape()).body as string;
    const depth = metrics.split("\n").filter((l) => l.startsWith(`edgeswarm_queue_depth{model="${MODEL}"}`));
    expect(depth).toEqual([`edgeswarm_queue_depth{model="${MODEL}"} 6`]);
    const models = await call("/v1/models");
    expect(models.body.models.find((m: { name: string }) => m.name === MODEL)).toMatchObject({
      shards: SHARDS,
      queue_depth: 6,
    });

    const workers = await workerOnEveryShard("one-worker");
    await serveUntilDone(workers, ids);
    const listed = await admin(`/v1/models/${MODEL}/workers`);
    expect(listed.status).toBe(200);
    expect(listed.body.workers).toHaveLength(1);
    expect(listed.body.workers[0]).toMatchObject({ worker_id: "one-worker", leases_held: 0 });
    // Counters summed over the shards the items ran in (written to storage within a second).
    await sleep(1_100);
    const after = (await scrape()).body as string;
    expect(after).toContain(`edgeswarm_items_completed_total{model="${MODEL}",pool="gpu"} 6`);
  });

  it("keeps serving a shard the model no longer spreads calls over until its work is done", async () => {
    // Work left in shard 5, as a model once configured with 6 shards would leave it.
    const stub = queue(DROPPED) as DurableObjectStub<ModelQueue>;
    const left = await stub.submit(DROPPED, { id: `${DROPPED}:${"ab".repeat(16)}`, inputs: [21] });
    expect(left.ok).toBe(true);

    // Workers are told to serve six shards, and the dropped shard's work is counted.
    expect(await shardsToServe()).toBe(6);
    expect((await call("/v1/scaling")).body.models[MODEL].queued).toBe(1);

    const onDropped = await SocketWorker.connect(MODEL, { worker_id: "drainer", shard: 5 });
    onDropped.complete(await onDropped.next("batch"), (x: number) => x * 2);
    expect(await finished(`${DROPPED}:${"ab".repeat(16)}`)).toMatchObject({ status: "succeeded", outputs: [42] });
    // Drained: shard 0 comes back to the configured count (it asks the dropped shards every few seconds).
    let served = await shardsToServe();
    for (let i = 0; i < 40 && served !== SHARDS; i++) {
      await sleep(250);
      served = await shardsToServe();
    }
    expect(served).toBe(SHARDS);
    await runInDurableObject(queue(MODEL), (_instance, state) => {
      const row = state.storage.sql
        .exec<{ value: string }>("SELECT value FROM meta WHERE key = 'shards_seen'")
        .toArray();
      expect(row[0]?.value).toBe(String(SHARDS));
    });
  }, 20_000);
});
