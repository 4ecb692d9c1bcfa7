// Trust in donated compute, in real workerd with workers over the real socket protocol: a browser
// worker's outputs are checked (shape, a second run elsewhere, known-answer canaries) before a caller
// sees them, and a worker caught answering wrongly is quarantined. Models are in test/support/test-models.ts.
import { abortAllDurableObjects } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { TRUST_MODELS } from "../support/test-models.ts";
import { call, infer, queue, SocketWorker, sleep, waitFor, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues(TRUST_MODELS));

/** What an honest text-classification worker answers for an input, and what a liar answers instead. */
const honest = (x: unknown) => [
  { label: `L-${String(x)}`, score: 0.75 },
  { label: "OTHER", score: 0.25 },
];
const lie = (x: unknown) => [
  { label: `L-${String(x)}`, score: 0.25 },
  { label: "OTHER", score: 0.75 },
];
/** feature-extraction: a 4-dimensional vector per input. */
const vector = (x: unknown) => [String(x).length / 10, 0.5, 0.25, 0.125];

const submit = async (model: string, inputs: unknown[], extra: Record<string, unknown> = {}) => {
  const res = await infer({ model, inputs, wait: false, ...extra });
  expect(res.status).toBe(202);
  return res.body.id as string;
};
const job = async (id: string) => (await call(`/v1/jobs/${id}`)).body;
const finished = (id: string) =>
  waitFor(async () => {
    const j = await job(id);
    return ["succeeded", "failed", "expired"].includes(j.status) ? j : undefined;
  });
const metrics = async () => (await call("/metrics")).body as string;
const metric = async (name: string, labels: string): Promise<number> => {
  const line = (await metrics()).split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
};
const inputsOf = (batch: { items: { input: unknown }[] }) => batch.items.map((i) => i.input);

describe("redundant execution", () => {
  it("with the default settings, a lying browser worker's answers never reach a caller and it is quarantined", async () => {
    const liar = await SocketWorker.connect("guarded", { worker_id: "liar", donor: "donor-liar" });
    const first = await submit("guarded", ["a", "b", "c"]);
    const lied = await liar.next("batch");
    liar.complete(lied, lie);
    expect((await liar.next("ack")).status).toBe("ok");
    await sleep(50);
    // Held, not given out: an unproven browser worker's every batch is run again elsewhere, so the job
    // waits in the queue again.
    expect((await job(first)).status).toBe("queued");
    expect(await metric("edgeswarm_items_awaiting_verification", 'model="guarded"')).toBe(3);

    const gpu = await SocketWorker.connect("guarded", { worker_id: "gpu", pool: "gpu" });
    const check = await gpu.next("batch");
    expect(inputsOf(check)).toEqual(["a", "b", "c"]);
    gpu.complete(check, honest);
    const done = await finished(first);
    expect(done.status).toBe("succeeded");
    expect(done.outputs).toEqual(["a", "b", "c"].map(honest));
    expect((await liar.next("error")).code).toBe("quarantined");

    // The liar gets nothing more; the gpu worker serves what comes next.
    const second = await submit("guarded", ["d"]);
    gpu.complete(await gpu.next("batch"), honest);
    expect((await finished(second)).outputs).toEqual([honest("d")]);
    expect(liar.has("batch")).toBe(false);

    // Quarantine holds for the donor too: another worker id on the same donor token gets nothing.
    const sameDonor = await SocketWorker.connect("guarded", { worker_id: "liar-2", donor: "donor-liar" });
    expect((await sameDonor.next("error")).code).toBe("quarantined");
    gpu.close();
    await submit("guarded", ["e"]);
    await sleep(100);
    expect(sameDonor.has("batch") || liar.has("batch")).toBe(false);

    expect(await metric("edgeswarm_workers_quarantined_total", 'model="guarded",pool="browser"')).toBe(1);
    expect(await metric("edgeswarm_quarantined_workers", 'model="guarded"')).toBe(1);
    expect(await metric("edgeswarm_verifications_total", 'model="guarded",pool="gpu"')).toBe(3);
    expect(await metric("edgeswarm_verification_disagreements_total", 'model="guarded",pool="gpu"')).toBe(3);
    expect(await metric("edgeswarm_items_awaiting_verification", 'model="guarded"')).toBe(0);
  });

  it("breaks a tie between two browser workers on the gpu pool, and quarantines the one out of line", async () => {
    const liar = await SocketWorker.connect("verified", { worker_id: "liar", donor: "d-liar" });
    const id = await submit("verified", ["x", "y"]);
    liar.complete(await liar.next("batch"), lie);
    const honestBrowser = await SocketWorker.connect("verified", { worker_id: "honest", donor: "d-honest" });
    const verifying = await honestBrowser.next("batch");
    expect(inputsOf(verifying)).toEqual(["x", "y"]);
    // Two more workers join before the disagreement: the tie-break must go to the gpu one.
    const bystander = await SocketWorker.connect("verified", { worker_id: "bystander", donor: "d-bystander" });
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
    honestBrowser.complete(verifying, honest);
    expect((await honestBrowser.next("ack")).status).toBe("ok");
    const tieBreak = await gpu.next("batch");
    expect(inputsOf(tieBreak)).toEqual(["x", "y"]);
    gpu.complete(tieBreak, honest);
    expect((await finished(id)).outputs).toEqual([honest("x"), honest("y")]);
    expect((await liar.next("error")).code).toBe("quarantined");
    expect(honestBrowser.has("error")).toBe(false);
    expect(bystander.has("batch")).toBe(false);
    expect(liar.has("batch")).toBe(false);
    expect(await metric("edgeswarm_quarantined_workers", 'model="verified"')).toBe(1);
    // The honest browser's disagreement with the liar, then the gpu's with the liar (and agreement with it).
    expect(await metric("edgeswarm_verification_disagreements_total", 'model="verified",pool="browser"')).toBe(2);
    expect(await metric("edgeswarm_verification_disagreements_total", 'model="verified",pool="gpu"')).toBe(2);
  });

  it("takes the majority of three browser workers when no gpu worker is connected", async () => {
    const liar = await SocketWorker.connect("verified", { worker_id: "liar", donor: "d1" });
    const id = await submit("verified", ["m"]);
    liar.complete(await liar.next("batch"), lie);
    const second = await SocketWorker.connect("verified", { worker_id: "second", donor: "d2" });
    second.complete(await second.next("batch"), honest);
    const third = await SocketWorker.connect("verified", { worker_id: "third", donor: "d3" });
    third.complete(await third.next("batch"), honest);
    expect((await finished(id)).outputs).toEqual([honest("m")]);
    expect((await liar.next("error")).code).toBe("quarantined");
    expect(second.has("error") || third.has("error")).toBe(false);
  });

  it("releases an honest browser worker's outputs once verified, and samples it no more after trust_after", async () => {
    // verified: trust_after 2, sample_rate 0.
    const browser = await SocketWorker.connect("verified", { worker_id: "honest", donor: "d-honest" });
    for (let round = 0; round < 2; round++) {
      const id = await submit("verified", [`r${round}`]);
      browser.complete(await browser.next("batch"), honest);
      await browser.next("ack");
      expect((await job(id)).status).not.toBe("succeeded");
      const gpu = await SocketWorker.connect("verified", { worker_id: `gpu-${round}`, pool: "gpu" });
      gpu.complete(await gpu.next("batch"), honest);
      expect((await finished(id)).outputs).toEqual([honest(`r${round}`)]);
      gpu.close();
      await waitFor(async () => (await metric("edgeswarm_workers", 'model="verified",pool="gpu"')) === 0);
    }
    // Trusted now: its next batch is final as it stands, with no second run.
    const id = await submit("verified", ["trusted"]);
    browser.complete(await browser.next("batch"), honest);
    expect((await finished(id)).outputs).toEqual([honest("trusted")]);
    expect(await metric("edgeswarm_verifications_total", 'model="verified",pool="gpu"')).toBe(2);
    expect(await metric("edgeswarm_verification_agreements_total", 'model="verified",pool="gpu"')).toBe(2);
  });

  it("never gives the verifying run to the worker, or the donor, whose output it checks", async () => {
    const first = await SocketWorker.connect("verified", { worker_id: "first", donor: "shared-donor" });
    const id = await submit("verified", ["v"]);
    first.complete(await first.next("batch"), honest);
    await first.next("ack");
    const sameDonor = await SocketWorker.connect("verified", { worker_id: "first-again", donor: "shared-donor" });
    await sleep(100);
    expect(first.has("batch")).toBe(false);
    expect(sameDonor.has("batch")).toBe(false);
    const other = await SocketWorker.connect("verified", { worker_id: "other", donor: "other-donor" });
    other.complete(await other.next("batch"), honest);
    expect((await finished(id)).outputs).toEqual([honest("v")]);
  });

  it("discards a caught worker's outputs still held for verification, and has others redo those items", async () => {
    const liar = await SocketWorker.connect("verified", { worker_id: "liar", donor: "d-liar" });
    const held = await submit("verified", ["h1"]);
    liar.complete(await liar.next("batch"), lie);
    await liar.next("ack");
    const caught = await submit("verified", ["c1"]);
    liar.complete(await liar.next("batch"), () => "not a classification");
    expect((await liar.next("error")).code).toBe("quarantined");
    expect(await metric("edgeswarm_items_awaiting_verification", 'model="verified"')).toBe(0);
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
    const redo = await gpu.next("batch");
    expect(inputsOf(redo)).toEqual(["h1", "c1"]);
    gpu.complete(redo, honest);
    expect((await finished(held)).outputs).toEqual([honest("h1")]);
    expect((await finished(caught)).outputs).toEqual([honest("c1")]);
    // Nothing to compare with any more: the redo was a first run, not a verification.
    expect(await metric("edgeswarm_verifications_total", 'model="verified",pool="gpu"')).toBe(0);
    expect(await metric("edgeswarm_results_discarded_total", 'model="verified",pool="browser"')).toBe(2);
  });

  it("puts the items of an expired verifying lease back, to be verified by another worker", async () => {
    // verified-short: a 150 ms lease, every browser batch verified.
    const producer = await SocketWorker.connect("verified-short", { worker_id: "producer", donor: "p" });
    const id = await submit("verified-short", ["e1", "e2"]);
    producer.complete(await producer.next("batch"), honest);
    await producer.next("ack");
    const silent = await SocketWorker.connect("verified-short", { worker_id: "silent", donor: "s" });
    const lost = await silent.next("batch");
    expect(lost.items.map((i) => i.attempt)).toEqual([1, 1]); // held runs do not count as attempts
    silent.send({ type: "drain" }); // it keeps the lease, never completes it, and takes no more
    const rescuer = await SocketWorker.connect("verified-short", { worker_id: "rescuer", donor: "r" });
    const again = await rescuer.next("batch", 5_000); // after the lease expired
    expect(inputsOf(again)).toEqual(["e1", "e2"]);
    expect(again.items.map((i) => i.attempt)).toEqual([2, 2]);
    rescuer.complete(again, honest);
    expect((await finished(id)).outputs).toEqual([honest("e1"), honest("e2")]);
    expect(producer.has("error")).toBe(false);
  });

  it("expires a job whose outputs still wait for verification, with an error saying so", async () => {
    const only = await SocketWorker.connect("verified", { worker_id: "only", donor: "only" });
    const answer = infer({ model: "verified", inputs: ["t"], timeout_ms: 300 });
    only.complete(await only.next("batch"), honest);
    const res = await answer;
    expect(res.status).toBe(504);
    expect(res.body.error.code).toBe("expired");
    expect(res.body.error.message).toMatch(
      /1 of the inputs not done were computed by a browser worker but not yet verified/,
    );
    expect(res.body.outputs).toEqual([null]);
  });

  it("keeps held outputs and quarantines across a restart of the object", async () => {
    const liar = await SocketWorker.connect("verified", { worker_id: "liar", donor: "d-liar" });
    const id = await submit("verified", ["p", "q"]);
    liar.complete(await liar.next("batch"), lie);
    await liar.next("ack");
    liar.close();
    await abortAllDurableObjects(); // only SQLite storage survives
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
    gpu.complete(await gpu.next("batch"), honest);
    expect((await finished(id)).outputs).toEqual([honest("p"), honest("q")]);
    await abortAllDurableObjects();
    const back = await SocketWorker.connect("verified", { worker_id: "liar", donor: "d-liar" });
    expect((await back.next("error")).code).toBe("quarantined");
    gpu.close();
    await submit("verified", ["r"]);
    await sleep(100);
    expect(back.has("batch")).toBe(false);
  });
});

describe("known-answer canaries", () => {
  it("catch a browser worker that lies only sometimes, and its lies never reach a caller", async () => {
    // canaried: trusted at once and never sampled, so only canaries can catch it; every batch has one.
    const gpu = await SocketWorker.connect("canaried", { worker_id: "gpu", pool: "gpu" });
    const warm = await submit("canaried", ["known"]);
    gpu.complete(await gpu.next("batch"), vector); // a trusted output: now a known answer
    await finished(warm);
    gpu.close();
    await waitFor(async () => (await metric("edgeswarm_workers", 'model="canaried",pool="gpu"')) === 0);

    const sometimes = await SocketWorker.connect("canaried", { worker_id: "sometimes", donor: "d-sometimes" });
    const straight = await submit("canaried", ["one"]);
    const first = await sometimes.next("batch");
    expect(first.items).toHaveLength(2); // the item and a canary, alike
    expect(inputsOf(first).sort()).toEqual(["known", "one"]);
    expect(new Set(first.items.map((i) => i.id)).size).toBe(2);
    expect(first.items.every((i) => i.attempt === 1)).toBe(true);
    sometimes.complete(first, vector); // honest this time
    expect((await finished(straight)).outputs).toEqual([vector("one")]);

    const crooked = await submit("canaried", ["two"]);
    const second = await sometimes.next("batch");
    sometimes.complete(second, (x) => vector(x).map((v) => v + 0.5)); // lies this time
    const refused = await sometimes.next("error");
    expect(refused.code).toBe("quarantined");
    expect(refused.message).toMatch(/known-answer/);
    await sleep(50);
    expect((await job(crooked)).status).not.toBe("succeeded");
    const rescuer = await SocketWorker.connect("canaried", { worker_id: "gpu-2", pool: "gpu" });
    const redo = await rescuer.next("batch");
    expect(inputsOf(redo)).toEqual(["two"]);
    expect(redo.items[0]?.attempt).toBe(1); // a quarantine's revoked lease does not count as an attempt
    rescuer.complete(redo, vector);
    expect((await finished(crooked)).outputs).toEqual([vector("two")]);
    expect(await metric("edgeswarm_canaries_sent_total", 'model="canaried",pool="browser"')).toBe(2);
    expect(await metric("edgeswarm_canaries_failed_total", 'model="canaried",pool="browser"')).toBe(1);
    expect(await metric("edgeswarm_results_discarded_total", 'model="canaried",pool="browser"')).toBe(1);
  });
});

describe("output validation", () => {
  it("does not deliver a malformed output from a browser worker: it is quarantined and the item redone", async () => {
    const browser = await SocketWorker.connect("verified", { worker_id: "sloppy", donor: "d-sloppy" });
    const id = await submit("verified", ["s1", "s2"]);
    browser.complete(await browser.next("batch"), (x) => (x === "s1" ? honest(x) : [{ label: "L", score: 7 }]));
    const refused = await browser.next("error");
    expect(refused.code).toBe("quarantined");
    expect(refused.message).toMatch(
      /output 1 is not a valid text-classification output: \[0\]\.score must be a finite number in \[0, 1\]/,
    );
    const gpu = await SocketWorker.connect("verified", { worker_id: "gpu", pool: "gpu" });
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
    const id = await submit("verified", ["h"]);
    const stub = queue("verified");
    const batch = await stub.lease(
      {
        model: "verified",
        worker_id: "http-w",
        pool: "gpu",
        device: "cpu",
        max_batch_size: 4,
        max_concurrent_batches: 1,
        wait_ms: 1_000,
      },
      { pool: "browser", donor: "d-http" },
    );
    expect(batch).not.toBeNull();
    const { lease_id } = JSON.parse(batch as string) as { lease_id: string };
    expect(await stub.complete(lease_id, { results: [{ output: honest("h") }] })).toMatchObject({ status: "ok" });
    // As a browser worker's, the output is held for verification rather than final.
    expect((await job(id)).status).not.toBe("succeeded");
    expect(await metric("edgeswarm_items_awaiting_verification", 'model="verified"')).toBe(1);
  });
});
