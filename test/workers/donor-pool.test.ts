// The donor pool against hostile donors, in real workerd over the real socket and HTTP protocols:
// colluders on one network get no wrong answer out, independent donors release work without the gpu pool,
// a hoarder holds no more than its caps and its hedge time, donor failures never dead-letter an item, a
// failing worker's circuit breaker opens and probes, leases answer only their holder, tables stay bounded.
import { runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import type { ModelQueue } from "../../edge/model-queue/model-queue.ts";
import { TRUST_MODELS } from "../support/test-models.ts";
import { call, infer, leaseOverHttp, queue, SocketWorker, WORKER, waitFor, wipeQueues } from "./helpers.ts";
import { finished, honest, inputsOf, lie, metric, NET, submit } from "./trust-helpers.ts";

afterEach(() => wipeQueues([...TRUST_MODELS, "flaky"]));

describe("collusion", () => {
  it.each([2, 3])("%i colluding donors on one network get no wrong answer out, and are all quarantined", async (n) => {
    // independent: donors in good standing at once, so only their network keeps them from vouching for each other.
    const gpu = await SocketWorker.connect("independent", { worker_id: "gpu", pool: "gpu" });
    const colluders: SocketWorker[] = [];
    for (let i = 0; i < n; i++) {
      colluders.push(
        await SocketWorker.connect("independent", { worker_id: `c${i}`, donor: `d-c${i}`, network: NET.a }),
      );
    }
    const id = await submit("independent", ["x"], { pool: "browser" });
    const first = await waitFor(() => colluders.find((c) => c.has("batch")));
    first.complete(await first.next("batch"), lie);
    await first.next("ack");
    // The others are not independent of it: the verifying run is the gpu pool's.
    const check = await gpu.next("batch");
    expect(inputsOf(check)).toEqual(["x"]);
    expect(colluders.some((c) => c !== first && c.has("batch"))).toBe(false);
    gpu.complete(check, honest);
    expect((await finished(id)).outputs).toEqual([honest("x")]);
    for (const c of colluders) expect((await c.next("error")).code).toBe("quarantined");
  });

  it("two donors on different networks release each other's work: the gpu pool runs none of it", async () => {
    const gpu = await SocketWorker.connect("independent", { worker_id: "gpu", pool: "gpu" });
    const a = await SocketWorker.connect("independent", { worker_id: "a", donor: "d-a", network: NET.a });
    const b = await SocketWorker.connect("independent", { worker_id: "b", donor: "d-b", network: NET.b });
    const id = await submit("independent", ["r"]);
    const first = await waitFor(() => [a, b].find((w) => w.has("batch")));
    const second = first === a ? b : a;
    first.complete(await first.next("batch"), honest);
    second.complete(await second.next("batch"), honest);
    expect((await finished(id)).outputs).toEqual([honest("r")]);
    expect(gpu.has("batch")).toBe(false);
    expect(await metric("edgeswarm_verification_agreements_total", 'model="independent",pool="browser"')).toBe(1);
  });

  it("donors on different networks that disagree wait for a trusted run, which catches the liar", async () => {
    const gpu = await SocketWorker.connect("independent", { worker_id: "gpu", pool: "gpu" });
    const a = await SocketWorker.connect("independent", { worker_id: "a", donor: "d-a", network: NET.a });
    const b = await SocketWorker.connect("independent", { worker_id: "b", donor: "d-b", network: NET.b });
    const id = await submit("independent", ["t"]);
    const liar = await waitFor(() => [a, b].find((w) => w.has("batch")));
    const honestOne = liar === a ? b : a;
    liar.complete(await liar.next("batch"), lie);
    const verifying = await waitFor(() => (honestOne.has("batch") ? honestOne : gpu.has("batch") ? gpu : undefined));
    verifying.complete(await verifying.next("batch"), honest);
    if (verifying === honestOne) gpu.complete(await gpu.next("batch"), honest); // the tie-break
    expect((await finished(id)).outputs).toEqual([honest("t")]);
    expect((await liar.next("error")).code).toBe("quarantined");
    expect(honestOne.has("error")).toBe(false);
  });
});

describe("sampled mode", () => {
  it("releases a donor's output in good standing unverified, as the model chose, and strict mode never does", async () => {
    const gpu = await SocketWorker.connect("sampled", { worker_id: "gpu", pool: "gpu" });
    const donor = await SocketWorker.connect("sampled", { worker_id: "d", donor: "d-s", network: NET.a });
    const id = await submit("sampled", ["quick"], { pool: "browser" });
    donor.complete(await donor.next("batch"), honest);
    expect((await finished(id)).outputs).toEqual([honest("quick")]);
    expect(gpu.has("batch")).toBe(false); // no second run: the documented trade of sampled mode
  });
});

describe("hoarding", () => {
  it("caps what a donor holds at donor_max_leases, whatever concurrency it claims, and extends never past the hedge time", async () => {
    // independent: leases and hedge time of 5 s, nothing expires during the test.
    const gpu = await SocketWorker.connect("independent", { worker_id: "gpu", pool: "gpu" });
    gpu.send({ type: "drain" }); // connected (a verifier), taking nothing
    await gpu.next("draining");
    const hoarder = await SocketWorker.connect("independent", {
      worker_id: "hoarder",
      donor: "d-hoarder",
      network: NET.a,
      max_batch_size: 1,
      max_concurrent_batches: 64,
    });
    for (let i = 0; i < 5; i++) await submit("independent", [`h${i}`], { pool: "browser" });
    const held = [await hoarder.next("batch"), await hoarder.next("batch")];
    const active = await runInDurableObject(queue("independent"), (_i, state) => [
      ...state.storage.sql.exec("SELECT COUNT(*) AS n FROM leases WHERE state = 'active' AND donor = 'd-hoarder'"),
    ]);
    expect(active[0]?.n).toBe(2); // two, not 64
    expect(hoarder.has("batch")).toBe(false);
    hoarder.send({ type: "extend", lease_id: held[0]?.lease_id, extend_ms: 60_000 });
    expect((await hoarder.next("ack")).deadline).toBeLessThanOrEqual(held[0]?.deadline ?? 0);
  });

  it("hands a hoarded batch on once its hedge time passes: the trusted pool serves it, no attempt spent", async () => {
    // verified-short: leases of 150 ms, so a hoarded batch is hedged within that; two donor faults per item.
    const gpu = await SocketWorker.connect("verified-short", { worker_id: "gpu", pool: "gpu" });
    gpu.send({ type: "drain" }); // connected, taking nothing yet
    await gpu.next("draining");
    const hoarder = await SocketWorker.connect("verified-short", {
      worker_id: "hoarder",
      donor: "d-hoarder",
      network: NET.a,
      max_concurrent_batches: 64,
    });
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push(await submit("verified-short", [`h${i}`], { pool: "browser" }));
    await hoarder.next("batch");
    gpu.send({ type: "resume" });
    for (let done = 0; done < 5; ) {
      const batch = await gpu.next("batch", 5_000);
      // The hoarder's failures never spent the items' attempts.
      expect(batch.items.every((item) => item.attempt === 1)).toBe(true);
      gpu.complete(batch, honest);
      done += batch.items.length;
    }
    for (const [i, id] of ids.entries()) expect((await finished(id, 5_000)).outputs).toEqual([honest(`h${i}`)]);
    expect(await metric("edgeswarm_donor_faults_total", 'model="verified-short",pool="browser"')).toBeGreaterThan(0);
  }, 20_000);

  it("a donor's errors and disconnects never dead-letter an item, though max_attempts is 2", async () => {
    const gpu = await SocketWorker.connect("verified-short", { worker_id: "gpu", pool: "gpu" });
    gpu.send({ type: "drain" });
    await gpu.next("draining");
    const id = await submit("verified-short", ["e"], { pool: "browser" });
    const failing = await SocketWorker.connect("verified-short", { worker_id: "f", donor: "d-f", network: NET.a });
    const batch = await failing.next("batch");
    failing.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: [{ error: { code: "invalid_input", message: "I say so" } }],
    });
    await failing.next("ack");
    const again = await failing.next("batch");
    failing.close(); // and then it is gone, holding the item
    expect(inputsOf(again)).toEqual(["e"]);
    gpu.send({ type: "resume" });
    const trusted = await gpu.next("batch", 5_000);
    expect(trusted.items[0]?.attempt).toBe(1);
    gpu.complete(trusted, honest);
    expect((await finished(id)).outputs).toEqual([honest("e")]);
  });

  it("a donor that hands its batches straight back cannot keep an item from the trusted pool", async () => {
    const gpu = await SocketWorker.connect("independent", { worker_id: "gpu", pool: "gpu" });
    const looper = await SocketWorker.connect("independent", { worker_id: "l", donor: "d-l", network: NET.a });
    const id = await submit("independent", ["loop"], { pool: "browser" });
    // Each release is a donor fault: the item is the trusted pool's as well after the first, and the trusted
    // pool's only once its donor-fault budget (2) is spent, so the loop ends whoever is offered it first.
    for (;;) {
      const holder = await waitFor(() => (gpu.has("batch") ? gpu : looper.has("batch") ? looper : undefined));
      if (holder === gpu) break;
      const taken = await looper.next("batch");
      looper.send({ type: "release", lease_id: taken.lease_id, reason: "again and again" });
    }
    const trusted = await gpu.next("batch");
    expect(inputsOf(trusted)).toEqual(["loop"]);
    gpu.complete(trusted, honest);
    expect((await finished(id)).outputs).toEqual([honest("loop")]);
    const faults = await metric("edgeswarm_donor_faults_total", 'model="independent",pool="browser"');
    expect(faults).toBeGreaterThanOrEqual(1);
    expect(faults).toBeLessThanOrEqual(2);
  });

  it("a donor that names itself after a gpu worker neither makes it look busy nor loses its leases", async () => {
    const gpu = await SocketWorker.connect("independent", { worker_id: "gpu-pod-1", pool: "gpu" });
    const mimic = await SocketWorker.connect("independent", {
      worker_id: "gpu-pod-1",
      donor: "d-mimic",
      network: NET.a,
      max_concurrent_batches: 2,
    });
    const pinnedId = await submit("independent", ["mine"], { pool: "browser" });
    await mimic.next("batch"); // the donor holds a lease under the gpu worker's id
    const routed = await submit("independent", ["routed"]);
    const trusted = await gpu.next("batch"); // the gpu worker is not taken for busy
    expect(inputsOf(trusted)).toEqual(["routed"]);
    mimic.close(); // and the donor's leaving loses the donor's lease only
    await waitFor(() => true);
    gpu.complete(trusted, honest);
    expect((await finished(routed)).outputs).toEqual([honest("routed")]);
    expect(await metric("edgeswarm_items_redelivered_total", 'model="independent",pool="gpu"')).toBe(0);
    const again = await gpu.next("batch");
    expect(inputsOf(again)).toEqual(["mine"]);
    gpu.complete(again, honest);
    expect((await finished(pinnedId)).outputs).toEqual([honest("mine")]);
  });

  it("an HTTP donor that polled once and went quiet holds nothing back: it stops counting as ready", async () => {
    const gpu = await SocketWorker.connect("independent", { worker_id: "gpu", pool: "gpu" });
    const stub = queue("independent");
    const info = { model: "independent", pool: "browser" as const, device: "cpu", max_batch_size: 4 };
    const poll = { ...info, worker_id: "ghost", max_concurrent_batches: 1, wait_ms: 0 };
    expect(
      await stub.lease("independent", poll, {
        pool: "browser",
        donor: "d-ghost",
        network: NET.a,
        holder: "donor:d-ghost",
      }),
    ).toBeNull();
    const id = await submit("independent", ["not held back"], { pool: "browser" });
    const batch = await gpu.next("batch", 10_000); // once the ghost's last poll is 5 s old
    gpu.complete(batch, honest);
    expect((await finished(id)).outputs).toEqual([honest("not held back")]);
  }, 20_000);

  it("refuses a donor's third socket to one queue, and a network's past network_max_sockets", async () => {
    await SocketWorker.open("independent", { donor: "d-many", network: NET.a });
    await SocketWorker.open("independent", { donor: "d-many", network: NET.a });
    await expect(SocketWorker.open("independent", { donor: "d-many", network: NET.a })).rejects.toThrow(/429/);
    // independent: network_max_sockets 3.
    await SocketWorker.open("independent", { donor: "d-other", network: NET.a });
    await expect(SocketWorker.open("independent", { donor: "d-third", network: NET.a })).rejects.toThrow(
      /donors on 10\.0\.1\.0\/24 already hold 3 connections/,
    );
    await SocketWorker.open("independent", { donor: "d-third", network: NET.b });
  });
});

describe("circuit breaker", () => {
  it("stops leases to a worker whose batches keep failing, probes it with one item after the cooldown, then trusts it again", async () => {
    // flaky: the breaker opens after 2 failed batches, for 400 ms. A batch answered with nothing but errors fails.
    const w = await SocketWorker.connect("flaky", { worker_id: "flaky-w", pool: "gpu", max_concurrent_batches: 4 });
    const id = await submit("flaky", [1, 2, 3, 4]);
    for (let i = 0; i < 2; i++) {
      const batch = await w.next("batch", 2_000);
      w.send({
        type: "complete",
        lease_id: batch.lease_id,
        results: batch.items.map(() => ({ error: { code: "oom", message: "out of memory", retryable: true } })),
      });
    }
    await waitFor(async () => (await metric("edgeswarm_workers_breaker_open", 'model="flaky",pool="gpu"')) === 1);
    expect(await metric("edgeswarm_worker_breaker_trips_total", 'model="flaky",pool="gpu"')).toBe(1);
    const probe = await w.next("batch", 3_000); // after the cooldown: one item
    expect(probe.items).toHaveLength(1);
    w.complete(probe, (x) => x);
    const rest = await w.next("batch", 3_000); // closed again: the rest at once
    expect(rest.items).toHaveLength(3);
    w.complete(rest, (x) => x);
    expect((await finished(id)).outputs).toEqual([1, 2, 3, 4]);
    expect(await metric("edgeswarm_workers_breaker_open", 'model="flaky",pool="gpu"')).toBe(0);
  });
});

describe("circuit breaker and the input's fault", () => {
  it("does not trip a trusted worker whose model refuses the inputs (non-retryable errors)", async () => {
    const w = await SocketWorker.connect("flaky", { worker_id: "strict-model", pool: "gpu" });
    for (let i = 0; i < 3; i++) {
      const id = await submit("flaky", [i]);
      const batch = await w.next("batch", 2_000);
      w.send({
        type: "complete",
        lease_id: batch.lease_id,
        results: batch.items.map(() => ({ error: { code: "invalid_input", message: "not for this model" } })),
      });
      expect((await finished(id)).status).toBe("failed");
    }
    expect(await metric("edgeswarm_worker_breaker_trips_total", 'model="flaky",pool="gpu"')).toBe(0);
  });
});

describe("sessions and donors", () => {
  it("sends a session's calls, and so its state, to donors only when the session was created to allow it", async () => {
    const gpu = await SocketWorker.connect("independent", { worker_id: "gpu", pool: "gpu" });
    const a = await SocketWorker.connect("independent", { worker_id: "a", donor: "d-a", network: NET.a });
    const b = await SocketWorker.connect("independent", { worker_id: "b", donor: "d-b", network: NET.b });
    expect((await call("/v1/sessions/private-chat", { method: "PUT", body: { secret: "s3cr3t" } })).status).toBe(201);
    const id = await submit("independent", ["in private"], { session: "private-chat" });
    const batch = await gpu.next("batch");
    expect(batch.sessions).toEqual({ "private-chat": { secret: "s3cr3t" } });
    gpu.complete(batch, honest);
    expect((await finished(id)).outputs).toEqual([honest("in private")]);
    expect(a.has("batch") || b.has("batch")).toBe(false);
    const pinnedRes = await infer({ model: "independent", inputs: ["x"], session: "private-chat", pool: "browser" });
    expect(pinnedRes.status).toBe(409);
    expect(pinnedRes.body.error.message).toMatch(/share_with_donors=true/);

    const bad = await call("/v1/sessions/open-chat?share_with_donors=yes", { method: "PUT", body: {} });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/share_with_donors must be true or false/);
    const shared = await call("/v1/sessions/open-chat?share_with_donors=true", { method: "PUT", body: { topic: "t" } });
    expect(shared.status).toBe(201);
    const open = await submit("independent", ["in public"], { session: "open-chat" });
    const first = await waitFor(() => [a, b].find((w) => w.has("batch")));
    const seen = await first.next("batch");
    expect(seen.sessions).toEqual({ "open-chat": { topic: "t" } });
    first.complete(seen, honest);
    const second = first === a ? b : a;
    second.complete(await second.next("batch"), honest);
    expect((await finished(open)).outputs).toEqual([honest("in public")]);
  });
});

describe("lease binding and bounded tables", () => {
  it("refuses extend, complete and release over HTTP from any credential but the one that took the lease", async () => {
    const id = await submit("verified", ["b"], { pool: "gpu" });
    const leased = await leaseOverHttp("verified", "w-http");
    expect(leased.status).toBe(200);
    const leaseId = leased.body.lease_id as string;
    const token = await call("/v1/donors/token", {
      body: { site_key: "site-a" },
      headers: { Origin: "https://a.example" },
    });
    expect(token.status).toBe(200);
    const asDonor = { Authorization: `Bearer ${token.body.token}`, Origin: "https://a.example" };
    for (const op of ["extend", "release"] as const) {
      const res = await call(`/v1/leases/${leaseId}/${op}`, { body: {}, headers: asDonor });
      expect(res.status).toBe(404);
      expect(res.body.error.message).toBe("this worker holds no such lease");
    }
    const stolen = await call(`/v1/leases/${leaseId}/complete`, {
      body: { results: [{ output: lie("b") }] },
      headers: asDonor,
    });
    expect(stolen.status).toBe(404);
    const own = await call(`/v1/leases/${leaseId}/complete`, {
      body: { results: [{ output: honest("b") }] },
      headers: WORKER,
    });
    expect(own.status).toBe(200);
    expect((await finished(id)).outputs).toEqual([honest("b")]);
  });

  it("keeps trust rows only while their donors live: a test fills and drains them", async () => {
    await runInDurableObject(queue("independent"), async (instance: ModelQueue) => {
      const trust = (instance as unknown as { trust: import("../../edge/model-queue/trust-store.ts").TrustStore })
        .trust;
      const now = Date.now();
      for (let i = 0; i < 500; i++) trust.credit({ worker_id: `w${i}`, donor: `d${i}`, network: NET.a }, now);
      trust.quarantine({ worker_id: "w0", donor: "d0", network: NET.a }, now + 1_000, "test");
      expect(trust.rows()).toEqual({ trust: 499, quarantine: 3 });
      trust.dropExpired(now + 1_000);
      expect(trust.rows()).toEqual({ trust: 499, quarantine: 0 });
      const { TRUST_TTL_MS } = await import("../../edge/model-queue/trust-store.ts");
      trust.dropExpired(now + TRUST_TTL_MS);
      expect(trust.rows()).toEqual({ trust: 0, quarantine: 0 });
    });
  });
});
