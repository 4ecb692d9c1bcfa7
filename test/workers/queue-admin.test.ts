// Operators' routes on a model's queue in real workerd (issue 17): dead letters listed with their last
// errors and replayed, workers and donors listed with pool, device, GPU adapter, leases, standing,
// quarantine and breaker, a quarantine lifted; and a call with no worker to run it said plainly (a 504 that
// names it, or a 503 at once for a model with reject_without_workers).
import { env } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { app } from "../../edge/app.ts";
import { TEST_API_KEY } from "../support/test-models.ts";
import { call, infer, SocketWorker, waitFor, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

/** Admin routes take an operator key (edge/auth.ts); this suite's caller key is made one. */
const operatorEnv = { ...env, OPERATOR_KEYS: TEST_API_KEY };
async function admin(path: string, method = "GET", body?: unknown) {
  const res = await app.request(
    path,
    {
      method,
      headers: { Authorization: `Bearer ${TEST_API_KEY}`, "Content-Type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    },
    operatorEnv,
  );
  return { status: res.status, body: (await res.json()) as any };
}
const job = async (id: string) => (await call(`/v1/jobs/${id}`)).body;
const ended = (id: string) =>
  waitFor(async () => {
    const j = await job(id);
    return ["succeeded", "failed", "expired", "cancelled"].includes(j.status) ? j : undefined;
  });
const failAll = (worker: SocketWorker, batch: { lease_id: string; items: unknown[] }) =>
  worker.send({
    type: "complete",
    lease_id: batch.lease_id,
    results: batch.items.map(() => ({ error: { code: "oom", message: "out of memory", retryable: true } })),
  });

describe("dead letters", () => {
  it("lists items that ran out of attempts with their last error, and replays them to success", async () => {
    // alpha: max_attempts 2, no backoff.
    const worker = await SocketWorker.connect("alpha", { max_batch_size: 4 });
    const res = await infer({ model: "alpha", inputs: ["a", "b"], wait: false });
    const id = res.body.id as string;
    failAll(worker, await worker.next("batch"));
    failAll(worker, await worker.next("batch"));
    expect((await ended(id)).status).toBe("failed");
    const listed = await admin("/v1/models/alpha/dead-letters");
    expect(listed.status).toBe(200);
    expect(listed.body.total).toBe(2);
    expect(listed.body.dead_letters.map((d: { index: number }) => d.index).sort()).toEqual([0, 1]);
    expect(listed.body.dead_letters[0]).toMatchObject({
      job_id: id,
      attempts: 2,
      job_status: "failed",
      error: { code: "max_attempts_exceeded", message: "failed after 2 attempts; last error (oom): out of memory" },
    });
    const replayed = await admin("/v1/models/alpha/dead-letters/replay", "POST", { job_ids: [id] });
    expect(replayed.body).toEqual({ model: "alpha", replayed: 2, jobs: [id] });
    const again = await worker.next("batch");
    expect(again.items.map((i) => [i.input, i.attempt])).toEqual([
      ["a", 1],
      ["b", 1],
    ]);
    worker.complete(again);
    expect(await ended(id)).toMatchObject({ status: "succeeded", outputs: ["a", "b"] });
    expect((await admin("/v1/models/alpha/dead-letters")).body.total).toBe(0);
  });

  it("refuses job ids of another model, a bad limit, and routes without an operator key", async () => {
    const foreign = await admin("/v1/models/alpha/dead-letters/replay", "POST", {
      job_ids: [`bravo:${"0".repeat(32)}`],
    });
    expect(foreign.status).toBe(400);
    expect(foreign.body.error.code).toBe("bad_id");
    expect((await admin("/v1/models/alpha/dead-letters?limit=0")).status).toBe(400);
    expect((await admin("/v1/models/nope/workers")).status).toBe(404);
    const anonymous = await app.request("/v1/models/alpha/workers", {}, operatorEnv);
    expect(anonymous.status).toBe(401);
  });
});

describe("workers and quarantines", () => {
  it("lists each worker with pool, device, adapter, leases, standing, quarantine and breaker; lifts a quarantine", async () => {
    const gpu = await SocketWorker.open("verified");
    const adapter = { vendor: "nvidia", architecture: "hopper", device: "H200", description: "NVIDIA H200" };
    gpu.send({ type: "hello", worker_id: "gpu-1", pool: "gpu", device: "webgpu", max_batch_size: 4, gpu: adapter });
    await gpu.next("welcome");
    const donor = await SocketWorker.connect("verified", { worker_id: "tab", donor: "d-1", network: "10.0.9.0/24" });
    // A malformed output quarantines the donor, its worker and its network (trust.test.ts).
    await infer({ model: "verified", inputs: ["s"], pool: "browser", wait: false });
    donor.complete(await donor.next("batch"), () => [{ label: "L", score: 7 }]);
    expect((await donor.next("error")).code).toBe("quarantined");

    const listed = await admin("/v1/models/verified/workers");
    expect(listed.status).toBe(200);
    const byId = Object.fromEntries(listed.body.workers.map((w: { worker_id: string }) => [w.worker_id, w]));
    expect(byId["gpu-1"]).toMatchObject({ pool: "gpu", device: "webgpu", gpu: adapter, transport: "socket" });
    expect(byId["gpu-1"].breaker).toEqual({ state: "closed", failures: 0 });
    expect(byId.tab).toMatchObject({
      pool: "browser",
      donor: "d-1",
      network: "10.0.9.0/24",
      standing: { agreed: 0, in_good_standing: false },
    });
    expect(byId.tab.quarantine.reason).toMatch(/not a valid text-classification output/);
    const kinds = listed.body.quarantines.map((q: { kind: string; id: string }) => `${q.kind}:${q.id}`).sort();
    expect(kinds).toEqual(["donor:d-1", "network:10.0.9.0/24", "worker:tab"]);

    for (const [kind, id] of [
      ["worker", "tab"],
      ["donor", "d-1"],
      ["network", "10.0.9.0/24"],
    ]) {
      const lifted = await admin(`/v1/models/verified/quarantine/${kind}/${id}`, "DELETE");
      expect(lifted).toEqual({ status: 200, body: { model: "verified", kind, id, lifted: true } });
    }
    const after = await admin("/v1/models/verified/workers");
    expect(after.body.quarantines).toEqual([]);
    expect(after.body.workers.find((w: { worker_id: string }) => w.worker_id === "tab").quarantine).toBeNull();
    expect((await admin("/v1/models/verified/quarantine/worker/tab", "DELETE")).status).toBe(404);
    expect((await admin("/v1/models/verified/quarantine/planet/x", "DELETE")).status).toBe(400);
  });
});

describe("no connected worker, said plainly", () => {
  it("names the missing worker in the 504 of a call that expired with none connected, and in the job", async () => {
    const res = await infer({ model: "alpha", inputs: [1], timeout_ms: 100 });
    expect(res.status).toBe(504);
    const said =
      /^no worker of the browser or gpu pool is connected for model "alpha", and none took any of its inputs/;
    expect(res.body.error.message).toMatch(said);
    expect((await job(res.body.id)).error.message).toMatch(said);
  });

  it("rejects at once with 503 and Retry-After for a model with reject_without_workers, and serves once one joins", async () => {
    const refused = await infer({ model: "lonely", inputs: [1] });
    expect(refused.status).toBe(503);
    expect(refused.headers.get("Retry-After")).toBe("5");
    expect(refused.body.error.code).toBe("no_worker_connected");
    expect(refused.body.error.message).toMatch(/no worker of the browser or gpu pool is connected for model "lonely"/);
    const worker = await SocketWorker.connect("lonely");
    const answer = infer({ model: "lonely", inputs: [2] });
    worker.complete(await worker.next("batch"));
    expect((await answer).body.outputs).toEqual([2]);
  });
});
