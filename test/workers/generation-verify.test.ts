// Donated generation verified by a teacher-forced check (issue 14, point 8), in real workerd over the real
// socket protocol: a donor's held output goes back out as the item's `verify` claim, the run that verifies it
// answers a verdict instead of generating, and the queue releases the donor's own output on agreement. A
// trusted mismatch quarantines the donor and the item generates afresh on the trusted pool, so a substituted
// token never reaches the caller; a donor's check decides only as an independent donor in good standing.
import { afterEach, describe, expect, it } from "vitest";
import { infer, SocketWorker, waitFor, wipeQueues } from "./helpers.ts";
import { finished, job, metric, NET, submit } from "./trust-helpers.ts";

const MODEL = "scribe-verified";
afterEach(() => wipeQueues([MODEL]));

type Batch = Awaited<ReturnType<SocketWorker["next"]>> & { type: "batch" };

/** What an honest worker generates for a prompt (greedy: a function of the prompt alone). */
const honest = (prompt: string) => ({
  generated_text: ` about ${prompt}.`,
  tokens: [11, prompt.length, 13],
  finish_reason: "length" as const,
  prompt_tokens: 2,
});
/** A donor that substitutes token 1 and writes the text to match: well-shaped, and wrong. */
const substituted = (prompt: string) => ({
  ...honest(prompt),
  generated_text: " about nothing.",
  tokens: [11, 99, 13],
});

const agreed = { verdict: "agreed", checked: 3, first_mismatch: null, reason: null };
const mismatchAt = (i: number) => ({ verdict: "mismatch", checked: i + 1, first_mismatch: i, reason: "token differs" });

const item = (prompt: string) => ({ prompt, params: { max_new_tokens: 3 } });
const inputOf = (b: Batch) => b.items[0]?.input as { prompt: string; verify?: unknown };
const claimOf = (b: Batch) => inputOf(b).verify;
const answer = (w: SocketWorker, b: Batch, outputs: unknown[]) =>
  w.send({ type: "complete", lease_id: b.lease_id, results: outputs.map((output) => ({ output })), compute_ms: 1 });

describe("a donor's generation, checked by a verdict", () => {
  it("is released as the donor wrote it once a trusted check agrees: the gpu worker is sent the claim, not asked to generate", async () => {
    const gpu = await SocketWorker.connect(MODEL, { worker_id: "gpu", pool: "gpu" });
    const donor = await SocketWorker.connect(MODEL, { worker_id: "tab", donor: "d-tab", network: NET.a });
    const id = await submit(MODEL, [item("soup")], { pool: "browser" });
    const first = await donor.next("batch");
    expect(claimOf(first)).toBeUndefined();
    answer(donor, first, [honest("soup")]);
    const check = await gpu.next("batch");
    expect(claimOf(check)).toEqual({ ...honest("soup"), tolerance: 1e-3 });
    expect((await job(id)).status).not.toBe("succeeded");
    answer(gpu, check, [agreed]);
    const done = await finished(id);
    expect(done.outputs).toEqual([honest("soup")]);
    expect(await metric("edgeswarm_verification_agreements_total", `model="${MODEL}",pool="gpu"`)).toBe(1);
    expect(donor.has("error")).toBe(false);
    // Released, the donor's generation counts as the browser pool's: its tokens, and its first token (the output,
    // since nothing unverified was relayed) in the TTFT histogram and the job's view. The check's verdict counts none.
    const labels = `model="${MODEL}",pool="browser"`;
    expect(await metric("edgeswarm_generated_tokens_total", labels)).toBe(3);
    expect(await metric("edgeswarm_prompt_tokens_total", labels)).toBe(2);
    expect(await metric("edgeswarm_time_to_first_token_seconds_count", labels)).toBe(1);
    expect(await metric("edgeswarm_generated_tokens_total", `model="${MODEL}",pool="gpu"`)).toBe(0);
    expect(done.generation).toMatchObject({ tokens: 3, prompt_tokens: 2 });
    expect(done.generation.ttft_ms).toBeGreaterThanOrEqual(0);
  });

  it("with a substituted token is never delivered: the donor is quarantined and the item generates afresh on the trusted pool", async () => {
    const gpu = await SocketWorker.connect(MODEL, { worker_id: "gpu", pool: "gpu" });
    const liar = await SocketWorker.connect(MODEL, { worker_id: "liar", donor: "d-liar", network: NET.a });
    const id = await submit(MODEL, [item("soup")], { pool: "browser" });
    answer(liar, await liar.next("batch"), [substituted("soup")]);
    const check = await gpu.next("batch");
    expect(claimOf(check)).toMatchObject({ tokens: [11, 99, 13] });
    answer(gpu, check, [mismatchAt(1)]);
    expect((await liar.next("error")).code).toBe("quarantined");
    // Run again, generated this time: no claim, and the refused check did not spend an attempt.
    const again = await gpu.next("batch");
    expect(claimOf(again)).toBeUndefined();
    expect(again.items[0]?.attempt).toBe(1);
    answer(gpu, again, [honest("soup")]);
    expect((await finished(id)).outputs).toEqual([honest("soup")]);
    expect(await metric("edgeswarm_verification_disagreements_total", `model="${MODEL}",pool="gpu"`)).toBe(1);
  });

  it("checked by an independent donor in good standing, is released without the trusted pool", async () => {
    const gpu = await SocketWorker.connect(MODEL, { worker_id: "gpu", pool: "gpu" });
    const a = await SocketWorker.connect(MODEL, { worker_id: "a", donor: "d-a", network: NET.a });
    const b = await SocketWorker.connect(MODEL, { worker_id: "b", donor: "d-b", network: NET.b });
    const id = await submit(MODEL, [item("tea")]);
    const producer = await waitFor(() => [a, b].find((w) => w.has("batch")));
    const checker = producer === a ? b : a;
    answer(producer, await producer.next("batch"), [honest("tea")]);
    const check = await checker.next("batch");
    expect(claimOf(check)).toEqual({ ...honest("tea"), tolerance: 1e-3 });
    answer(checker, check, [agreed]);
    expect((await finished(id)).outputs).toEqual([honest("tea")]);
    expect(gpu.has("batch")).toBe(false);
  });

  it("disputed by a donor's check goes, claim and all, to the trusted pool, whose verdict catches the donor that lied", async () => {
    const gpu = await SocketWorker.connect(MODEL, { worker_id: "gpu", pool: "gpu" });
    const a = await SocketWorker.connect(MODEL, { worker_id: "a", donor: "d-a", network: NET.a });
    const b = await SocketWorker.connect(MODEL, { worker_id: "b", donor: "d-b", network: NET.b });
    const id = await submit(MODEL, [item("tea")]);
    const producer = await waitFor(() => [a, b].find((w) => w.has("batch")));
    const checker = producer === a ? b : a;
    answer(producer, await producer.next("batch"), [honest("tea")]);
    answer(checker, await checker.next("batch"), [mismatchAt(0)]);
    // Either donor may be the liar: the trusted pool checks the same claim, and no donor sees it again.
    const check = await gpu.next("batch");
    expect(claimOf(check)).toEqual({ ...honest("tea"), tolerance: 1e-3 });
    expect(check.items[0]?.attempt).toBe(1);
    answer(gpu, check, [agreed]);
    expect((await finished(id)).outputs).toEqual([honest("tea")]);
    // The dispute was held beside the output: the trusted verdict shows it false, and its donor is caught.
    expect((await checker.next("error")).code).toBe("quarantined");
    expect(producer.has("error")).toBe(false);
    expect(a.has("batch") || b.has("batch")).toBe(false);
  });

  it("sent to a donor as a claim must be answered with a verdict: generating instead gets the donor quarantined", async () => {
    const gpu = await SocketWorker.connect(MODEL, { worker_id: "gpu", pool: "gpu" });
    const a = await SocketWorker.connect(MODEL, { worker_id: "a", donor: "d-a", network: NET.a });
    const b = await SocketWorker.connect(MODEL, { worker_id: "b", donor: "d-b", network: NET.b });
    const id = await submit(MODEL, [item("tea")]);
    const producer = await waitFor(() => [a, b].find((w) => w.has("batch")));
    const checker = producer === a ? b : a;
    answer(producer, await producer.next("batch"), [honest("tea")]);
    answer(checker, await checker.next("batch"), [honest("tea")]);
    expect((await checker.next("error")).code).toBe("quarantined");
    const check = await gpu.next("batch");
    answer(gpu, check, [agreed]);
    expect((await finished(id)).outputs).toEqual([honest("tea")]);
  });

  it("a check out on a lease when its donor is caught elsewhere is moot: that item generates afresh", async () => {
    const gpu = await SocketWorker.connect(MODEL, {
      worker_id: "gpu",
      pool: "gpu",
      max_batch_size: 1,
      max_concurrent_batches: 2,
    });
    gpu.send({ type: "drain" }); // connected (a verifier), taking nothing until both claims are held
    await gpu.next("draining");
    const liar = await SocketWorker.connect(MODEL, { worker_id: "liar", donor: "d-liar", network: NET.a });
    const ids = [await submit(MODEL, [item("one")], { pool: "browser" })];
    answer(liar, await liar.next("batch"), [substituted("one")]);
    ids.push(await submit(MODEL, [item("two")], { pool: "browser" }));
    answer(liar, await liar.next("batch"), [honest("two")]);
    await liar.next("ack");
    gpu.send({ type: "resume" });
    const checks = [await gpu.next("batch"), await gpu.next("batch")];
    const [one, two] = ["one", "two"].map((p) => checks.find((c) => inputOf(c).prompt === p));
    answer(gpu, one as Batch, [mismatchAt(1)]);
    expect((await liar.next("error")).code).toBe("quarantined");
    // Its other output is dropped with it, though the check of it was already out: that answer is not recorded,
    // and both items are generated again, with no claim to check.
    answer(gpu, two as Batch, [agreed]);
    const fresh = [await gpu.next("batch"), await gpu.next("batch")];
    for (const b of fresh) {
      expect(claimOf(b)).toBeUndefined();
      answer(gpu, b, [honest(inputOf(b).prompt)]);
    }
    expect((await finished(ids[0] as string)).outputs).toEqual([honest("one")]);
    expect((await finished(ids[1] as string)).outputs).toEqual([honest("two")]);
  });

  it("is the queue's field: a caller that sends verify is refused before anything is queued", async () => {
    const verify = { ...honest("x"), tolerance: 0 };
    const res = await infer({ model: MODEL, inputs: [{ prompt: "x", verify }] });
    expect(res.status).toBe(422);
    expect(JSON.stringify(res.body)).toContain("verify is set by the queue");
  });
});
