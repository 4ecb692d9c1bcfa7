// Callers' safety operations on jobs in real workerd (issue 17): DELETE /v1/jobs/{id} on queued and
// leased jobs (a worker holding only the job's items is sent a cancel frame; a shared batch runs on), a
// waiting call answered 409 cancelled, a caller hanging up cancelling its call, jobs visible only to the
// key that made them, and Idempotency-Key on POST /v1/infer.
import { runInDurableObject, SELF } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { TEST_CPU_ONLY_KEY } from "../support/test-models.ts";
import { CALLER, call, infer, queue, SocketWorker, sleep, waitFor, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

const OTHER = { Authorization: `Bearer ${TEST_CPU_ONLY_KEY}` };
const submit = async (model: string, inputs: unknown[], headers: Record<string, string> = {}) => {
  const res = await call("/v1/infer", { body: { model, inputs, wait: false }, headers });
  expect(res.status).toBe(202);
  return res.body.id as string;
};
const cancel = (id: string, headers: Record<string, string> = {}) =>
  call(`/v1/jobs/${id}`, { method: "DELETE", headers });
const job = async (id: string) => (await call(`/v1/jobs/${id}`)).body;

describe("DELETE /v1/jobs/{id}", () => {
  it("cancels a queued job: its inputs never reach a worker, and a second cancel answers it again", async () => {
    const id = await submit("bravo", [1, 2]);
    const res = await cancel(id);
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id, status: "cancelled", outputs: [null, null] });
    expect(res.body.error).toMatchObject({ code: "cancelled" });
    expect(res.body.error.message).toMatch(/cancelled by DELETE \/v1\/jobs\/\{id\} \(0 of 2 inputs had finished/);
    expect((await job(id)).status).toBe("cancelled");
    const worker = await SocketWorker.connect("bravo");
    await sleep(100);
    expect(worker.has("batch")).toBe(false);
    expect((await cancel(id)).body.status).toBe("cancelled");
  });

  it("takes a leased job's batch back: the worker gets a cancel frame, the waiting caller a 409, a late completion is stale", async () => {
    const worker = await SocketWorker.connect("bravo", { worker_id: "runner" });
    const waiting = infer({ model: "bravo", inputs: ["a", "b"], wait: true });
    const batch = await worker.next("batch");
    const id = await pendingJobId("bravo");
    expect((await cancel(id)).body.status).toBe("cancelled");
    const frame = await worker.next("cancel");
    expect(frame).toEqual({ type: "cancel", lease_id: batch.lease_id, reason: "the job was cancelled" });
    const answered = await waiting;
    expect(answered.status).toBe(409);
    expect(answered.body.error.code).toBe("cancelled");
    worker.complete(batch);
    const ack = await worker.next("ack");
    expect(ack).toMatchObject({ op: "complete", status: "stale" });
    expect(ack.message).toMatch(/its job was cancelled/);
    expect((await job(id)).status).toBe("cancelled");
  });

  it("lets a batch shared with another job run on, and drops only the cancelled job's results", async () => {
    const kept = await submit("bravo", ["k1", "k2"]);
    const dropped = await submit("bravo", ["d1"]);
    const worker = await SocketWorker.connect("bravo");
    const batch = await worker.next("batch");
    expect(batch.items.map((i) => i.input)).toEqual(["k1", "k2", "d1"]);
    expect((await cancel(dropped)).status).toBe(200);
    await sleep(50);
    expect(worker.has("cancel")).toBe(false);
    worker.complete(batch, (x) => `out-${x}`);
    expect((await worker.next("ack")).status).toBe("ok");
    expect(await waitFor(async () => ((await job(kept)).status === "succeeded" ? job(kept) : undefined))).toMatchObject(
      {
        outputs: ["out-k1", "out-k2"],
      },
    );
    expect(await job(dropped)).toMatchObject({ status: "cancelled", outputs: [null] });
  });

  it("refuses to cancel a job that has ended (409 job_finished)", async () => {
    const worker = await SocketWorker.connect("bravo");
    const id = await submit("bravo", [1]);
    worker.complete(await worker.next("batch"));
    await waitFor(async () => ((await job(id)).status === "succeeded" ? true : undefined));
    const res = await cancel(id);
    expect(res.status).toBe(409);
    expect(res.body.error.code).toBe("job_finished");
  });

  it("cancels a waiting call whose caller hangs up", async () => {
    const worker = await SocketWorker.connect("bravo");
    const gone = new AbortController();
    const waiting = SELF.fetch("http://edge/v1/infer", {
      method: "POST",
      headers: { ...CALLER, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "bravo", inputs: ["x"], wait: true }),
      signal: gone.signal,
    }).catch((error: unknown) => error);
    const batch = await worker.next("batch");
    const id = await pendingJobId("bravo");
    gone.abort();
    await waiting;
    expect((await worker.next("cancel")).lease_id).toBe(batch.lease_id);
    expect(await job(id)).toMatchObject({ status: "cancelled" });
    expect((await job(id)).error.message).toMatch(/the caller hung up on its waiting call/);
  });
});

/** The id of the one open job of `model`, read from the queue's storage (a waiting call's answer has none yet). */
async function pendingJobId(model: string): Promise<string> {
  const ids = await runInDurableObject(queue(model), (_instance, state) =>
    state.storage.sql
      .exec<{ id: string }>("SELECT id FROM jobs WHERE status IN ('queued', 'running')")
      .toArray()
      .map((r) => r.id),
  );
  expect(ids).toHaveLength(1);
  return ids[0] as string;
}

describe("ownership", () => {
  it("answers another key's job as one that does not exist, to read, watch and cancel", async () => {
    const id = await submit("bravo", [1]);
    for (const res of [
      await call(`/v1/jobs/${id}`, { headers: OTHER }),
      await call(`/v1/jobs/${id}/events`, { headers: OTHER }),
      await cancel(id, OTHER),
    ]) {
      expect(res.status).toBe(404);
      expect(res.body.error.code).toBe("job_not_found");
    }
    expect((await job(id)).status).toBe("queued");
  });
});

describe("Idempotency-Key", () => {
  const body = { model: "bravo", inputs: [1, 2], wait: false };
  const post = (key: string, b: unknown = body, headers: Record<string, string> = {}) =>
    call("/v1/infer", { body: b, headers: { "Idempotency-Key": key, ...headers } });

  it("answers a repeat of the same key and body with the first job, a different body with 409", async () => {
    const first = await post("order-17");
    expect(first.status).toBe(202);
    expect(first.headers.get("Idempotent-Replayed")).toBeNull();
    const again = await post("order-17");
    expect(again.status).toBe(202);
    expect(again.body.id).toBe(first.body.id);
    expect(again.headers.get("Idempotent-Replayed")).toBe("true");
    const other = await post("order-17", { ...body, inputs: [3] });
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe("idempotency_key_reused");
    const models = await call("/v1/models");
    expect(models.body.models.find((m: { name: string }) => m.name === "bravo").queue_depth).toBe(2);
  });

  it("scopes keys per API key, and refuses a key that is not visible ASCII", async () => {
    const mine = await post("shared-key");
    const theirs = await post("shared-key", body, OTHER);
    expect(theirs.status).toBe(202);
    expect(theirs.body.id).not.toBe(mine.body.id);
    const bad = await post("x".repeat(256));
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/Idempotency-Key must be 1 to 255 visible ASCII characters/);
  });
});
