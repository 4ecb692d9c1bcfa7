// Trust in donated compute, in real workerd with workers over the real socket protocol: a browser
// worker's outputs are checked (shape, a trusted or independent second run, known-answer canaries) before a
// caller sees them, and a worker caught answering wrongly is quarantined with its donor and network. Models
// are in test/support/test-models.ts; collusion, hoarding and the breaker are in donor-pool.test.ts.
import { abortAllDurableObjects, runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { TRUST_MODELS } from "../support/test-models.ts";
import { infer, queue, SocketWorker, sleep, wipeQueues } from "./helpers.ts";
import { finished, honest, inputsOf, job, lie, metric, NET, submit } from "./trust-helpers.ts";

afterEach(() => wipeQueues(TRUST_MODELS));

/** feature-extraction: a 4-dimensional vector per input. */
const vector = (x: unknown) => [String(x).length / 10, 0.5, 0.25, 0.125];

const pinned = (model: string, inputs: unknown[]) => submit(model, inputs, { pool: "browser" });

describe("redundant execution (strict: a trusted run, or an independent donor in good standing, must agree)", () => {
  it("with the default settings, a lying donor's answers never reach a caller; it, its donor and its network are quarantined", async () => {
    const gpu = await SocketWorker.connect("guarded", { worker_id: "gpu", pool: "gpu" });
    const liar = await SocketWorker.connect("guarded", { worker_id: "liar", donor: "donor-liar", network: NET.a });
    const first = await pinned("guarded", ["a", "b", "c"]);
    const lied = await liar.next("batch");
    expect(inputsOf(lied)).toEqual(["a", "b", "c"]);
    liar.complete(lied, lie);
    expect((await liar.next("ack")).status).toBe("ok");
    // Held, not given out: the verifying run goes to the gpu pool at once, not behind the overflow timer.
    const check = await gpu.next("batch");
    expect(inputsOf(check)).toEqual(["a", "b", "c"]);
    expect((await job(first)).status).not.toBe("succeeded");
    gpu.complete(check, honest);
    const done = await finished(first);
    expect(done.status).toBe("succeeded");
    expect(done.outputs).toEqual(["a", "b", "c"].map(honest));
    expect((await liar.next("error")).code).toBe("quarantined");

    // The liar gets nothing more; its donor id and its network are quarantined with it.
    const sameDonor = await SocketWorker.connect("guarded", {
      worker_id: "liar-2",
      donor: "donor-liar",
      network: NET.c,
    });
    expect((await sameDonor.next("error")).code).toBe("quarantined");
    const sameNetwork = await SocketWorker.connect("guarded", { worker_id: "n", donor: "donor-n", network: NET.a });
    expect((await sameNetwork.next("error")).code).toBe("quarantined");
    const elsewhere = await SocketWorker.connect("guarded", { worker_id: "e", donor: "donor-e", network: NET.b });
    await sleep(50);
    expect(elsewhere.has("error")).toBe(false);

    expect(await metric("edgeswarm_workers_quarantined_total", 'model="guarded",pool="browser"')).toBe(1);
    expect(await metric("edgeswarm_quarantined_workers", 'model="guarded"')).toBe(1);
    expect(await metric("edgeswarm_verifications_total", 'model="guarded",pool="gpu"')).toBe(3);
    expect(await metric("edgeswarm_verification_disagreements_total", 'model="guarded",pool="gpu"')).toBe(3);
    expect(await metric("edgeswarm_items_awaiting_verification", 'model="guarded"')).toBe(0);
  });

  it("a donor honest for its first batches, then lying, gets no lie out: trusted runs still check it", async () => {
    // verified: trust_after 2, so the donor is in good standing after two batches a trusted run agreed with.
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
    const turncoat = await SocketWorker.connect("verified", { worker_id: "t", donor: "d-t", network: NET.a });
    for (const input of ["r0", "r1", "r2"]) {
      const id = await pinned("verified", [input]);
      turncoat.complete(await turncoat.next("batch"), input === "r2" ? lie : honest);
      await turncoat.next("ack");
      gpu.complete(await gpu.next("batch"), honest);
      expect((await finished(id)).outputs).toEqual([honest(input)]);
    }
    expect((await turncoat.next("error")).code).toBe("quarantined");
    expect(await metric("edgeswarm_verification_agreements_total", 'model="verified",pool="gpu"')).toBe(2);
  });

  it("answers a call pinned to the browser pool at once with 503 when nothing connected could verify it", async () => {
    await SocketWorker.connect("verified", { worker_id: "only", donor: "d-only", network: NET.a });
    const res = await infer({ model: "verified", inputs: ["p"], pool: "browser" });
    expect(res.status).toBe(503);
    expect(res.body.error.code).toBe("no_verifier");
    expect(res.body.error.message).toMatch(/trusted \(gpu-pool\) run or an independent donor/);
    expect(res.headers.get("Retry-After")).toBe("5");
  });

  it("discards a caught donor's outputs still held for verification, and has others redo those items", async () => {
    const liar = await SocketWorker.connect("verified", { worker_id: "liar", donor: "d-liar", network: NET.a });
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
    const held = await pinned("verified", ["h1"]);
    liar.complete(await liar.next("batch"), lie);
    await liar.next("ack");
    const verifying = await gpu.next("batch"); // the gpu worker holds h1's verification and does not answer yet
    const caught = await pinned("verified", ["c1"]);
    liar.complete(await liar.next("batch"), () => "not a classification");
    expect((await liar.next("error")).code).toBe("quarantined");
    gpu.complete(verifying, honest);
    const redo = await gpu.next("batch");
    expect(inputsOf(redo)).toEqual(["c1"]);
    gpu.complete(redo, honest);
    expect((await finished(held)).outputs).toEqual([honest("h1")]);
    expect((await finished(caught)).outputs).toEqual([honest("c1")]);
    expect(await metric("edgeswarm_items_awaiting_verification", 'model="verified"')).toBe(0);
  });

  it("expires a job whose outputs still wait for verification, with an error saying so", async () => {
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
    const only = await SocketWorker.connect("verified", { worker_id: "only", donor: "only", network: NET.a });
    const answer = infer({ model: "verified", inputs: ["t"], timeout_ms: 300, pool: "browser" });
    only.complete(await only.next("batch"), honest);
    await gpu.next("batch"); // takes the verifying run and sits on it
    const res = await answer;
    expect(res.status).toBe(504);
    expect(res.body.error.code).toBe("expired");
    expect(res.body.error.message).toMatch(
      /1 of the inputs not done were computed by a browser worker but not yet verified/,
    );
    expect(res.body.outputs).toEqual([null]);
  });

  it("keeps held outputs and quarantines across a restart of the object", async () => {
    const gpu0 = await SocketWorker.connect("verified", { worker_id: "gpu0", pool: "gpu" });
    gpu0.send({ type: "drain" }); // connected (so a pinned call is taken) but taking nothing: the held items wait
    await gpu0.next("draining");
    const liar = await SocketWorker.connect("verified", { worker_id: "liar", donor: "d-liar", network: NET.a });
    const id = await pinned("verified", ["p", "q"]);
    liar.complete(await liar.next("batch"), lie);
    await liar.next("ack");
    liar.close();
    gpu0.close();
    await abortAllDurableObjects(); // only SQLite storage survives
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
    gpu.complete(await gpu.next("batch"), honest);
    expect((await finished(id)).outputs).toEqual([honest("p"), honest("q")]);
    await abortAllDurableObjects();
    const back = await SocketWorker.connect("verified", { worker_id: "liar", donor: "d-liar", network: NET.a });
    expect((await back.next("error")).code).toBe("quarantined");
  });
});

/** The donor's next batch holding `input`, answering any batch of canaries alone (as real work flows) truly. */
async function batchWith(worker: SocketWorker, input: string, answer: (x: any) => unknown) {
  for (;;) {
    const batch = await worker.next("batch");
    if (inputsOf(batch).includes(input)) return batch;
    worker.complete(batch, answer);
  }
}

describe("known-answer canaries", () => {
  /** Gpu runs of "known0".."known7": trusted outputs, so known answers (each a canary once) to draw from. */
  async function warm() {
    const gpu = await SocketWorker.connect("canaried", { worker_id: "gpu", pool: "gpu" });
    for (let i = 0; i < 8; i++) {
      const id = await submit("canaried", [`known${i}`], { pool: "gpu" });
      gpu.complete(await gpu.next("batch"), vector);
      await finished(id);
    }
    return gpu;
  }

  it("look like real items on the wire, field by field, and catch a donor that tries to tell them apart", async () => {
    const gpu = await warm();
    // canaried: every donor batch carries a canary. This donor lies on what looks like a real call's item (one
    // with a traceparent, as canaries once were told apart: they had none) and answers the rest truly.
    const sly = await SocketWorker.connect("canaried", { worker_id: "sly", donor: "d-sly", network: NET.a });
    const id = await pinned("canaried", ["one"]);
    const batch = await batchWith(sly, "one", vector);
    expect(batch.items).toHaveLength(2);
    expect(inputsOf(batch).filter((x) => x !== "one")[0]).toMatch(/^known\d$/);
    const [x, y] = batch.items as unknown as [Record<string, unknown>, Record<string, unknown>];
    expect(Object.keys(x).sort()).toEqual(Object.keys(y).sort());
    for (const item of [x, y]) {
      expect(item.id).toMatch(/^[0-9a-f]{16}$/);
      expect(item.attempt).toBe(1);
      expect(item.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    }
    sly.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: batch.items.map((item) => ({
        output: item.traceparent ? vector(item.input).map((v) => v + 0.5) : vector(item.input),
      })),
    });
    // Every item now carries a trace context, the canary too: the donor lied on it and the batch is refused.
    const refused = await sly.next("error");
    expect(refused.code).toBe("quarantined");
    const redo = await gpu.next("batch");
    expect(inputsOf(redo)).toEqual(["one"]);
    expect(redo.items[0]?.attempt).toBe(1); // a quarantine's revoked lease does not count as an attempt
    gpu.complete(redo, vector);
    expect((await finished(id)).outputs).toEqual([vector("one")]);
  });

  it("catch a donor that lies only sometimes, and its lies never reach a caller", async () => {
    const gpu = await warm();
    const sometimes = await SocketWorker.connect("canaried", { worker_id: "s", donor: "d-s", network: NET.a });
    const straight = await pinned("canaried", ["one"]);
    sometimes.complete(await batchWith(sometimes, "one", vector), vector); // honest this time
    gpu.complete(await gpu.next("batch"), vector); // the verifying run
    expect((await finished(straight)).outputs).toEqual([vector("one")]);
    const crooked = await pinned("canaried", ["two"]);
    sometimes.complete(await batchWith(sometimes, "two", vector), (x) => vector(x).map((v) => v + 0.5)); // lies this time
    const refused = await sometimes.next("error");
    expect(refused.code).toBe("quarantined");
    // Caught by a canary, or (if the known answers ran out meanwhile) by the trusted run that checks it.
    expect(refused.message).toMatch(/known-answer|trusted run/);
    const redo = await gpu.next("batch");
    expect(inputsOf(redo)).toEqual(["two"]);
    gpu.complete(redo, vector);
    expect((await finished(crooked)).outputs).toEqual([vector("two")]);
    expect(await metric("edgeswarm_canaries_sent_total", 'model="canaried",pool="browser"')).toBeGreaterThanOrEqual(2);
    expect(await metric("edgeswarm_canaries_failed_total", 'model="canaried",pool="browser"')).toBe(1);
  });

  it("come only from trusted runs: an output donors agreed on is never learnt as a known answer", async () => {
    // canaried: donors in good standing at once, so two on different networks may vouch for each other.
    const a = await SocketWorker.connect("canaried", { worker_id: "a", donor: "d-a", network: NET.a });
    const b = await SocketWorker.connect("canaried", { worker_id: "b", donor: "d-b", network: NET.b });
    const id = await submit("canaried", ["agreed"]);
    const first = a.has("batch") ? a : b;
    const second = first === a ? b : a;
    first.complete(await first.next("batch"), vector);
    second.complete(await second.next("batch"), vector);
    expect((await finished(id)).outputs).toEqual([vector("agreed")]);
    const known = async (): Promise<number> =>
      runInDurableObject(
        queue("canaried"),
        (_i, state) => [...state.storage.sql.exec("SELECT COUNT(*) AS n FROM known_answers")][0]?.n as number,
      );
    expect(await known()).toBe(0);
    await warm();
    expect(await known()).toBeGreaterThan(0);
  });
});

describe("output validation", () => {
  it("does not deliver a malformed output from a browser worker: it is quarantined and the item redone", async () => {
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
    const browser = await SocketWorker.connect("verified", { worker_id: "sloppy", donor: "d-sloppy", network: NET.a });
    const id = await pinned("verified", ["s1", "s2"]);
    browser.complete(await browser.next("batch"), (x) => (x === "s1" ? honest(x) : [{ label: "L", score: 7 }]));
    const refused = await browser.next("error");
    expect(refused.code).toBe("quarantined");
    expect(refused.message).toMatch(
      /output 1 is not a valid text-classification output: \[0\]\.score must be a finite number in \[0, 1\]/,
    );
    gpu.complete(await gpu.next("batch"), honest);
    expect((await finished(id)).outputs).toEqual([honest("s1"), honest("s2")]);
    expect(await metric("edgeswarm_outputs_invalid_total", 'model="verified",pool="browser"')).toBe(1);
  });

  it("fails an item whose output from a gpu worker lacks its task's shape, with invalid_output", async () => {
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
    const answer = infer({ model: "verified", inputs: ["ok", "bad", "nan"] });
    gpu.complete(await gpu.next("batch"), (x) =>
      x === "ok" ? honest(x) : x === "bad" ? "POSITIVE" : [{ label: "L", score: null }],
    );
    const res = await answer;
    expect(res.status).toBe(422);
    expect(res.body.outputs).toEqual([honest("ok"), null, null]);
    expect(res.body.errors.map((e: { code: string }) => e.code)).toEqual(["invalid_output", "invalid_output"]);
    expect(res.body.errors[0].message).toMatch(/non-empty array of \{label, score\}/);
  });

  it("holds every feature-extraction vector to the length trusted outputs have", async () => {
    const gpu = await SocketWorker.connect("canaried", { worker_id: "gpu", pool: "gpu" });
    const answer = infer({ model: "canaried", inputs: ["first", "second"] });
    const batch = await gpu.next("batch");
    gpu.complete(batch, (x) => (x === "first" ? vector(x) : [...vector(x), 1]));
    const res = await answer;
    // The first output set the model's length (4); the second has 5.
    expect(res.body.outputs).toEqual([vector("first"), null]);
    expect(res.body.errors[0].message).toMatch(/the output has 5 dimensions; this model's vectors have 4/);
  });
});

describe("browser donor credentials", () => {
  it("refuses a gpu hello on a socket a browser donor token opened, and closes it with 1008", async () => {
    const socket = await SocketWorker.open("verified", { donor: "d-cheat" });
    const closed = new Promise<number>((resolve) => socket.ws.addEventListener("close", (e) => resolve(e.code)));
    socket.send({ type: "hello", worker_id: "cheat", pool: "gpu", device: "cuda", max_batch_size: 8 });
    expect((await socket.next("error")).code).toBe("forbidden");
    expect(await closed).toBe(1008);
  });

  it("lets a socket act only on the leases its own worker holds", async () => {
    const holder = await SocketWorker.connect("verified", { worker_id: "holder", pool: "gpu" });
    await submit("verified", ["o"]);
    const batch = await holder.next("batch");
    const other = await SocketWorker.connect("verified", { worker_id: "other", donor: "d-other" });
    other.complete(batch, lie);
    expect(await other.next("ack")).toMatchObject({ status: "not_found", message: "this worker holds no such lease" });
    holder.complete(batch, honest);
    expect((await holder.next("ack")).status).toBe("ok");
  });

  it("treats an HTTP long-poll lease as the browser pool when the route says so", async () => {
    await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu", max_batch_size: 1 });
    await submit("verified", ["busy"], { pool: "gpu" }); // keeps the gpu worker busy
    const id = await submit("verified", ["h"], { pool: "browser" });
    const stub = queue("verified");
    const batch = await stub.lease(
      "verified",
      {
        model: "verified",
        worker_id: "http-w",
        pool: "gpu",
        device: "cpu",
        max_batch_size: 4,
        max_concurrent_batches: 1,
        wait_ms: 1_000,
      },
      { pool: "browser", donor: "d-http", holder: "donor:d-http" },
    );
    expect(batch).not.toBeNull();
    const { lease_id } = JSON.parse(batch as string) as { lease_id: string };
    // Only the credential it was given to may act on it.
    expect(await stub.complete(lease_id, { results: [{ output: lie("h") }] }, "donor:someone-else")).toMatchObject({
      status: "not_found",
    });
    expect(await stub.complete(lease_id, { results: [{ output: honest("h") }] }, "donor:d-http")).toMatchObject({
      status: "ok",
    });
    // As a browser worker's, the output is held for verification rather than final.
    expect((await job(id)).status).not.toBe("succeeded");
    expect(await metric("edgeswarm_items_awaiting_verification", 'model="verified"')).toBe(1);
  });
});
