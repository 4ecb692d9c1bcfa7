// Token deltas through the queue, inside real workerd (issue 14): a SocketWorker sends TokensFrames by hand
// for a text-generation model; the queue keeps each token once (a repeat ignored, a gap refused), relays them
// to the job's event stream as `token` events (a late reader catching up), resumes a redelivered item after
// the tokens already accepted (deltas over HTTP too), and reports TTFT, tokens and tokens/s in the job view and /metrics. A delta whose
// order matters goes by sendTokens, which waits until the queue holds it (see SocketWorker.sendTokens).
import { runInDurableObject, SELF } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { newWatch, STREAM_HIGH_WATER_BYTES, tokensAfter } from "../../edge/model-queue/job-events.ts";
import { asciiJson } from "../../edge/model-queue/token-stream.ts";
import {
  CALLER,
  call,
  infer,
  leaseOverHttp,
  queue,
  SocketWorker,
  type SseEvent,
  scrape,
  sseReader,
  waitFor,
  wipeQueues,
  workerCall,
} from "./helpers.ts";

afterEach(() => wipeQueues());

const MODEL = "scribe";

async function events(id: string) {
  const res = await SELF.fetch(`http://edge/v1/jobs/${id}/events`, { headers: CALLER });
  expect(res.status).toBe(200);
  return sseReader(res);
}

/** Events until (and with) the first of `type`. */
async function until(stream: Awaited<ReturnType<typeof events>>, type: string): Promise<SseEvent[]> {
  const seen: SseEvent[] = [];
  for (;;) {
    const e = await stream.next();
    if (!e) throw new Error(`stream ended before a ${type} event; saw ${seen.map((s) => s.event).join(", ")}`);
    seen.push(e);
    if (e.event === type) return seen;
  }
}

const tokens = (leaseId: string, offset: number, ids: number[], text: string, pos = 0) => ({
  type: "tokens",
  lease_id: leaseId,
  pos,
  offset,
  tokens: ids,
  text,
});

const output = (text: string, ids: number[]) => ({
  generated_text: text,
  tokens: ids,
  finish_reason: "length",
  prompt_tokens: 3,
});

describe("token deltas", () => {
  it("are kept once, relayed as token events (a late reader catches up), timed, and end with the output", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const accepted = await infer({ model: MODEL, inputs: [{ prompt: "The film" }], wait: false });
    const batch = await worker.next("batch");
    await worker.sendTokens(tokens(batch.lease_id, 0, [5, 6], " was"));
    await worker.sendTokens(tokens(batch.lease_id, 2, [7], " good"));
    // Sent again: ignored, no answer.
    worker.send(tokens(batch.lease_id, 2, [7], " good"));
    // A gap: refused, naming the lease and the offset to send from.
    worker.send(tokens(batch.lease_id, 9, [8], "!"));
    const gap = await worker.next("error");
    expect(gap.lease_id).toBe(batch.lease_id);
    expect(gap.message).toContain("from offset 3");

    // A reader that joins now gets the three tokens kept so far in one event...
    const stream = await events(accepted.body.id);
    const caughtUp = (await until(stream, "token")).at(-1) as SseEvent;
    expect(caughtUp.data).toEqual({ index: 0, offset: 0, tokens: [5, 6, 7], text: " was good" });
    // ...then each new delta as it comes.
    await worker.sendTokens(tokens(batch.lease_id, 3, [9], "."));
    const next = (await until(stream, "token")).at(-1) as SseEvent;
    expect(next.data).toEqual({ index: 0, offset: 3, tokens: [9], text: "." });

    worker.complete(batch, () => output(" was good.", [5, 6, 7, 9]));
    const rest = await until(stream, "completed");
    expect(rest.find((e) => e.event === "output")?.data.output.generated_text).toBe(" was good.");
    const job = (await call(`/v1/jobs/${accepted.body.id}`)).body;
    expect(job.status).toBe("succeeded");
    expect(job.generation).toMatchObject({ tokens: 4, prompt_tokens: 3 });
    expect(job.generation.ttft_ms).toBeGreaterThanOrEqual(0);

    const metrics = await waitFor(async () => {
      const text = (await scrape()).body as string;
      return text.includes("edgeswarm_generated_tokens_total") ? text : undefined;
    }, 10_000);
    expect(metrics).toMatch(/edgeswarm_time_to_first_token_seconds_count\{model="scribe",pool="gpu"\} 1/);
    expect(metrics).toMatch(/edgeswarm_generated_tokens_total\{model="scribe",pool="gpu"\} 4/);
    expect(metrics).toMatch(/edgeswarm_prompt_tokens_total\{model="scribe",pool="gpu"\} 3/);
    worker.close();
  });

  it("come for several leases in one `lease_deltas` frame: each lease's kept, a refused one answered by name", async () => {
    const worker = await SocketWorker.connect(MODEL, { max_batch_size: 1, max_concurrent_batches: 2 });
    const first = await infer({ model: MODEL, inputs: [{ prompt: "One" }], wait: false });
    const second = await infer({ model: MODEL, inputs: [{ prompt: "Two" }], wait: false });
    const leases = [await worker.next("batch"), await worker.next("batch")].map((b) => b.lease_id);
    const streams = [await events(first.body.id), await events(second.body.id)];
    const stranger = `${MODEL}:${"0".repeat(32)}`;
    const delta = (offset: number, ids: number[], text: string) => ({ pos: 0, offset, tokens: ids, text });
    worker.send({
      type: "lease_deltas",
      leases: [
        { lease_id: leases[0], deltas: [delta(0, [5], " one")] },
        { lease_id: stranger, deltas: [delta(0, [1], "?")] },
        { lease_id: leases[1], deltas: [delta(0, [6], " two"), delta(1, [7], "!")] },
      ],
    });
    expect(await worker.next("error")).toMatchObject({ code: "lease_not_found", lease_id: stranger });
    const told = await Promise.all(streams.map(async (s) => (await until(s, "token")).at(-1)?.data));
    expect(told).toEqual([
      { index: 0, offset: 0, tokens: [5], text: " one" },
      { index: 0, offset: 0, tokens: [6, 7], text: " two!" },
    ]);
    // A lease named twice, or more deltas than a frame takes, is refused whole: nothing kept.
    worker.send({
      type: "lease_deltas",
      leases: [
        { lease_id: leases[0], deltas: [delta(1, [8], ".")] },
        { lease_id: leases[0], deltas: [delta(2, [9], ".")] },
      ],
    });
    expect((await worker.next("error")).message).toContain("names each lease once");
    const kept = await runInDurableObject(queue(MODEL), (_instance, state) =>
      state.storage.sql.exec<{ n: number }>("SELECT SUM(gen_count) AS n FROM items").one(),
    );
    expect(kept.n).toBe(3);
    worker.close();
    // The welcome says the queue takes them, as it says it takes `deltas` frames.
    const another = await SocketWorker.open(MODEL);
    another.send({
      type: "hello",
      worker_id: "w2",
      pool: "gpu",
      device: "cpu",
      max_batch_size: 1,
      max_concurrent_batches: 1,
    });
    expect(await another.next("welcome")).toMatchObject({ deltas: true, lease_deltas: true });
    another.close();
  });

  it("reach a reader that stopped reading in as few events as say what it missed: the queue holds no backlog", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const id = (await infer({ model: MODEL, inputs: [{ prompt: "Long" }], wait: false })).body.id as string;
    const batch = await worker.next("batch");
    // A stream held inside the object and not read, as a caller's that stopped reading.
    const [held] = await runInDurableObject(queue(MODEL), (instance, state) => {
      const { owner } = state.storage.sql.exec<{ owner: string }>("SELECT owner FROM jobs WHERE id = ?", id).one();
      return [instance.watchJob(MODEL, id, owner, newWatch("sse"))];
    });
    const piece = "x".repeat(4096);
    const ids = Array.from({ length: 16 }, (_, i) => i + 1);
    for (const [i, token] of ids.entries()) await worker.sendTokens(tokens(batch.lease_id, i, [token], piece));
    worker.complete(batch, () => output(piece.repeat(ids.length), ids));
    await waitFor(async () => (await call(`/v1/jobs/${id}`)).body.status === "succeeded" || undefined);

    const seen = await runInDurableObject(queue(MODEL), async () => {
      const stream = sseReader(new Response(held as ReadableStream<Uint8Array>));
      const all: SseEvent[] = [];
      for (let e = await stream.next(); e; e = await stream.next()) all.push(e);
      return all;
    });
    const sent = seen.filter((e) => e.event === "token");
    expect(sent.flatMap((e) => e.data.tokens)).toEqual(ids);
    expect(sent.map((e) => e.data.text).join("")).toBe(piece.repeat(ids.length));
    const offsets = sent.map((e) => e.data.offset);
    expect(offsets).toEqual(sent.map((_, k) => sent.slice(0, k).reduce((n, e) => n + e.data.tokens.length, 0)));
    // Deltas were written while the stream had room (STREAM_HIGH_WATER_BYTES); the rest came as one event once read.
    expect(sent.length).toBeLessThanOrEqual(Math.ceil(STREAM_HIGH_WATER_BYTES / piece.length) + 2);
    expect(seen.filter((e) => e.event === "output")).toHaveLength(1);
    expect(seen.at(-1)?.event).toBe("completed");
    worker.close();
  });

  it("reach each reader from where it is, in any script: a reader that reads along and one held behind", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const id = (await infer({ model: MODEL, inputs: [{ prompt: "Say" }], wait: false })).body.id as string;
    const batch = await worker.next("batch");
    const along = await events(id);
    // Characters JavaScript counts as two (emoji) or UTF-8 as several bytes, a token with no text, and a NUL.
    const pieces = [
      "héllo",
      " 👋🏽",
      " 世界",
      "", // a token that ends inside a character: its text comes with the next
      "\u0000",
      " ok 😀",
      ..."xyzw".split("").map((c) => c.repeat(4096)),
      " 🎉",
      "é".repeat(3000),
      " end.",
    ];
    const held = await runInDurableObject(queue(MODEL), (instance, state) => {
      const { owner } = state.storage.sql.exec<{ owner: string }>("SELECT owner FROM jobs WHERE id = ?", id).one();
      return [instance.watchJob(MODEL, id, owner, newWatch("sse"))];
    });
    const seenAlong: SseEvent[] = [];
    for (const [k, piece] of pieces.entries()) {
      await worker.sendTokens(tokens(batch.lease_id, k, [k + 1], piece));
      seenAlong.push(...(await until(along, "token")));
    }
    const ids = pieces.map((_, k) => k + 1);
    worker.complete(batch, () => output(pieces.join(""), ids));
    seenAlong.push(...(await until(along, "completed")));
    const seenHeld = await runInDurableObject(queue(MODEL), async () => {
      const stream = sseReader(new Response(held[0] as ReadableStream<Uint8Array>));
      const all: SseEvent[] = [];
      for (let e = await stream.next(); e; e = await stream.next()) all.push(e);
      return all;
    });
    for (const seen of [seenAlong, seenHeld]) {
      const sent = seen.filter((e) => e.event === "token").map((e) => e.data);
      expect(sent.flatMap((d) => d.tokens)).toEqual(ids);
      expect(sent.map((d) => d.text).join("")).toBe(pieces.join(""));
      expect(sent.map((d) => d.offset)).toEqual(
        sent.map((_, k) => sent.slice(0, k).reduce((n, d) => n + d.tokens.length, 0)),
      );
      expect(seen.at(-1)?.event).toBe("completed");
    }
    // Read along, every delta was its own event; held, the stream was written until full, then caught up.
    expect(seenAlong.filter((e) => e.event === "token")).toHaveLength(pieces.length);
    expect(seenHeld.filter((e) => e.event === "token").length).toBeLessThan(pieces.length);
    worker.close();
  });

  it("read each input from the least its job's readers were sent, and whole for one none of them has", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const id = (await infer({ model: MODEL, inputs: [{ prompt: "A" }, { prompt: "B" }], wait: false })).body
      .id as string;
    const batch = await worker.next("batch");
    for (const [k, text] of [" a", " b", " c"].entries())
      await worker.sendTokens(tokens(batch.lease_id, k, [k + 5], text));
    await worker.sendTokens(tokens(batch.lease_id, 0, [9], " z", 1));
    const read = await runInDurableObject(queue(MODEL), (instance) => {
      const events = (instance as unknown as { events: { generating(w: unknown[]): Map<string, unknown[]> } }).events;
      // Two readers of the job: one was sent input 0's first token, the other its first two; neither any of input 1's.
      const watch = (sent: { tokens: number; arrayChars: number; textBytes: number; logprobChars: number }) => ({
        jobId: id,
        streamed: new Map([[0, sent]]),
      });
      const behind = watch({ tokens: 1, arrayChars: 3, textBytes: 2, logprobChars: 0 });
      const ahead = watch({ tokens: 2, arrayChars: 5, textBytes: 4, logprobChars: 0 });
      const items = events.generating([ahead, behind]).get(id) as Parameters<typeof tokensAfter>[0][];
      return {
        items: items.map((i) => ({ ...i, text_after: new TextDecoder().decode(i.text_after as ArrayBuffer) })),
        ahead: tokensAfter(items[0] as Parameters<typeof tokensAfter>[0], ahead.streamed.get(0) as never),
      };
    });
    expect(read.items).toEqual([
      {
        job_id: id,
        idx: 0,
        gen_count: 3,
        from_tokens: 1,
        from_array: 3,
        from_text: 2,
        from_logprobs: 0,
        tokens_after: "6,7]",
        text_after: " b c",
        logprobs_after: null,
      },
      {
        job_id: id,
        idx: 1,
        gen_count: 1,
        from_tokens: 0,
        from_array: 0,
        from_text: 0,
        from_logprobs: 0,
        tokens_after: "[9]",
        text_after: " z",
        logprobs_after: null,
      },
    ]);
    expect(read.ahead).toEqual({
      tokens: [7],
      text: " c",
      logprobs: undefined,
      sent: { tokens: 3, arrayChars: 7, textBytes: 6, logprobChars: 0 },
    });
    worker.close();
  });

  it("read past a reader that is further on than the least of its job's readers, in UTF-8 bytes", () => {
    // Kept: tokens [1, 2, 3] and "a😀b"; the read starts after token 1 ("a"), this reader had tokens 1 and 2.
    const item = {
      idx: 0,
      gen_count: 3,
      from_tokens: 1,
      from_array: 3,
      from_text: 1,
      from_logprobs: 0,
      tokens_after: "2,3]",
      text_after: new TextEncoder().encode("😀b").buffer as ArrayBuffer,
      logprobs_after: null,
    };
    expect(tokensAfter(item, { tokens: 2, arrayChars: 5, textBytes: 5, logprobChars: 0 })).toEqual({
      tokens: [3],
      text: "b",
      logprobs: undefined,
      sent: { tokens: 3, arrayChars: 7, textBytes: 6, logprobChars: 0 },
    });
    expect(tokensAfter(item, { tokens: 1, arrayChars: 3, textBytes: 1, logprobChars: 0 })).toMatchObject({
      tokens: [2, 3],
      text: "😀b",
    });
    // With log probabilities: their kept ASCII array is read on from its own offset, entry for token.
    const entry = (token: string) => ({ token, logprob: -1, top: [] });
    const kept = asciiJson([entry("a"), entry("😀"), entry("b")]);
    // Read after the first entry: from the length of the array that held it alone ("[{...}]" less its "]" is the
    // kept array's start, and its "]" stands where the kept one has a comma).
    const from = asciiJson([entry("a")]).length;
    const withLogprobs = { ...item, from_logprobs: from, logprobs_after: kept.slice(from) };
    expect(tokensAfter(withLogprobs, { tokens: 2, arrayChars: 5, textBytes: 5, logprobChars: 0 })).toMatchObject({
      tokens: [3],
      logprobs: [entry("b")],
      sent: { logprobChars: kept.length },
    });
    expect(tokensAfter(withLogprobs, { tokens: 1, arrayChars: 3, textBytes: 1, logprobChars: 0 }).logprobs).toEqual([
      entry("😀"),
      entry("b"),
    ]);
  });

  it("reach a late reader one input's catch-up at a time, each once it has room", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const id = (await infer({ model: MODEL, inputs: [{ prompt: "A" }, { prompt: "B" }], wait: false })).body
      .id as string;
    const batch = await worker.next("batch");
    const piece = (c: string) => c.repeat(4096);
    for (const pos of [0, 1]) {
      for (let k = 0; k < 5; k++)
        await worker.sendTokens(tokens(batch.lease_id, k, [k + 1], piece("ab"[pos] ?? ""), pos));
    }
    // Joins now, and does not read yet: input 0's 20 KiB fill its stream; input 1's wait.
    const [held, behind] = await runInDurableObject(queue(MODEL), (instance, state) => {
      const { owner } = state.storage.sql.exec<{ owner: string }>("SELECT owner FROM jobs WHERE id = ?", id).one();
      const stream = instance.watchJob(MODEL, id, owner, newWatch("sse"));
      const events = (instance as unknown as { events: { watches: Set<{ behind: boolean }> } }).events;
      return [stream, [...events.watches].map((w) => w.behind)];
    });
    expect(behind).toEqual([true]);
    worker.complete(batch, (input) => output(piece(input.prompt === "A" ? "a" : "b").repeat(5), [1, 2, 3, 4, 5]));
    const seen = await runInDurableObject(queue(MODEL), async () => {
      const stream = sseReader(new Response(held as ReadableStream<Uint8Array>));
      const all: SseEvent[] = [];
      for (let e = await stream.next(); e; e = await stream.next()) all.push(e);
      return all;
    });
    const sent = seen.filter((e) => e.event === "token").map((e) => [e.data.index, e.data.offset, e.data.text.length]);
    expect(sent).toEqual([
      [0, 0, 5 * 4096],
      [1, 0, 5 * 4096],
    ]);
    expect(seen.filter((e) => e.event === "output").map((e) => e.data.index)).toEqual([0, 1]);
    expect(seen.at(-1)?.event).toBe("completed");
    worker.close();
  });

  it("come several to a `deltas` frame, kept in order as if sent one by one; a gap stops only its item's", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const a = await infer({ model: MODEL, inputs: [{ prompt: "A" }, { prompt: "B" }], wait: false });
    const batch = await worker.next("batch");
    const delta = (pos: number, offset: number, ids: number[], text: string) => ({ pos, offset, tokens: ids, text });
    worker.send({
      type: "deltas",
      lease_id: batch.lease_id,
      deltas: [delta(0, 0, [5], " x"), delta(1, 0, [6], " y"), delta(0, 1, [7], " z")],
    });
    // One token event an item, whenever the reader joins: the frame is kept whole before anyone is told.
    const stream = await events(a.body.id);
    const first = await until(stream, "token");
    const tokensOf = (evs: SseEvent[], index: number) =>
      evs.filter((e) => e.event === "token" && e.data.index === index).flatMap((e) => e.data.tokens);
    const caught = [...first, ...(await until(stream, "token"))];
    expect([tokensOf(caught, 0), tokensOf(caught, 1)]).toEqual([[5, 7], [6]]);
    // A gap in item 0's delta: refused, naming the lease and where to send from; it ends the rest of item 0's
    // deltas in the frame, not item 1's (a lease may hold another job's items, which go on).
    worker.send({
      type: "deltas",
      lease_id: batch.lease_id,
      deltas: [delta(1, 1, [8], "!"), delta(0, 9, [1], "?"), delta(0, 2, [3], "-"), delta(1, 2, [9], ".")],
    });
    const gap = await worker.next("error");
    expect(gap).toMatchObject({ lease_id: batch.lease_id });
    expect(gap.message).toContain("from offset 2");
    const later = await until(stream, "token");
    expect(later.at(-1)?.data).toEqual({ index: 1, offset: 1, tokens: [8, 9], text: "!." });
    worker.complete(batch, (input) => (input.prompt === "A" ? output(" x z", [5, 7]) : output(" y!.", [6, 8, 9])));
    const rest = await until(stream, "completed");
    expect(rest.some((e) => e.event === "token" && e.data.index === 0)).toBe(false);
    expect(rest.at(-1)?.data.outputs.map((o: { generated_text: string }) => o.generated_text)).toEqual([
      " x z",
      " y!.",
    ]);
    worker.close();
  });

  it("from another worker than the lease's holder change nothing", async () => {
    const holder = await SocketWorker.connect(MODEL, { worker_id: "holder" });
    const accepted = await infer({ model: MODEL, inputs: [{ prompt: "Hi" }], wait: false });
    const batch = await holder.next("batch");
    const other = await SocketWorker.connect(MODEL, { worker_id: "other" });
    other.send(tokens(batch.lease_id, 0, [1], "x"));
    expect((await other.next("error")).code).toBe("lease_not_found");
    holder.complete(batch, () => output("ok", [2]));
    const job = await waitFor(async () => {
      const view = (await call(`/v1/jobs/${accepted.body.id}`)).body;
      return view.status === "succeeded" ? view : undefined;
    });
    expect(job.outputs[0].generated_text).toBe("ok");
    holder.close();
    other.close();
  });
});

describe("an HTTP worker's deltas (POST /v1/leases/{id}/tokens)", () => {
  it("are kept once and relayed like a socket's; a gap, a stranger or a bad body is told what to fix", async () => {
    const accepted = await infer({ model: MODEL, inputs: [{ prompt: "The film" }], wait: false });
    const leased = await leaseOverHttp(MODEL, "http-gen");
    expect(leased.status).toBe(200);
    const leaseId = leased.body.lease_id as string;
    const post = (body: unknown) => workerCall(`/v1/leases/${leaseId}/tokens`, body);
    const delta = (offset: number, ids: number[], text: string) => ({ pos: 0, offset, tokens: ids, text });

    expect((await post({ deltas: [delta(0, [5, 6], " was"), delta(2, [7], " good")] })).body).toEqual({
      lease_id: leaseId,
      status: "ok",
    });
    expect((await post({ deltas: [delta(2, [7], " good")] })).status).toBe(200); // sent again: kept once
    const gap = await post({ deltas: [delta(9, [8], "!")] });
    expect(gap.status).toBe(400);
    expect(gap.body.error.message).toContain("from offset 3");
    const stranger = await workerCall(`/v1/leases/${MODEL}:${"0".repeat(32)}/tokens`, { deltas: [delta(0, [1], "x")] });
    expect(stranger.status).toBe(404);
    const bad = await post({ deltas: [] });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/deltas/);

    const stream = await events(accepted.body.id);
    expect((await until(stream, "token")).at(-1)?.data).toEqual({
      index: 0,
      offset: 0,
      tokens: [5, 6, 7],
      text: " was good",
    });
    const done = await workerCall(`/v1/leases/${leaseId}/complete`, {
      results: [{ output: output(" was good", [5, 6, 7]) }],
    });
    expect(done.status).toBe(200);
    await until(stream, "completed");
    const job = (await call(`/v1/jobs/${accepted.body.id}`)).body;
    expect(job).toMatchObject({ status: "succeeded", generation: { tokens: 3 } });
  });
});

describe("resumable generation", () => {
  it("redelivers an item whose worker was lost with the tokens accepted, and the stream goes on without repeats", async () => {
    const first = await SocketWorker.connect(MODEL, { worker_id: "first" });
    const accepted = await infer({
      model: MODEL,
      inputs: [{ prompt: "Tell me", params: { max_new_tokens: 8 } }],
      wait: false,
    });
    const stream = await events(accepted.body.id);
    const batch = await first.next("batch");
    await first.sendTokens(tokens(batch.lease_id, 0, [10, 11], " about"));
    await until(stream, "token");
    first.close();

    const second = await SocketWorker.connect(MODEL, { worker_id: "second" });
    const again = await second.next("batch", 10_000);
    expect(again.items[0]?.input).toEqual({
      prompt: "Tell me",
      params: { max_new_tokens: 8 },
      resume: { tokens: [10, 11], text: " about" },
    });
    // The resumed worker may send its prefix again: kept once.
    second.send(tokens(again.lease_id, 0, [10, 11], " about"));
    await second.sendTokens(tokens(again.lease_id, 2, [12], " it"));
    second.complete(again, () => output(" about it", [10, 11, 12]));
    const rest = await until(stream, "completed");
    const deltas = rest.filter((e) => e.event === "token").map((e) => e.data);
    expect(deltas).toEqual([{ index: 0, offset: 2, tokens: [12], text: " it" }]);
    expect(rest.at(-1)?.data.outputs[0].generated_text).toBe(" about it");
    second.close();
  });
});

describe("items settled before their lease completes (a `results` frame)", () => {
  const settledView = async (id: string) =>
    waitFor(async () => {
      const view = (await call(`/v1/jobs/${id}`)).body;
      return view.status === "succeeded" ? view : undefined;
    });

  it("end a short reply's job while the batch decodes on, and free the worker's room at once", async () => {
    const short = await infer({ model: MODEL, inputs: [{ prompt: "Hi" }], wait: false });
    const long = await infer({ model: MODEL, inputs: [{ prompt: "Tell me more" }], wait: false });
    const worker = await SocketWorker.connect(MODEL, {
      max_batch_size: 4,
      max_concurrent_batches: 4,
      max_items_in_flight: 2,
    });
    const batch = await worker.next("batch");
    expect(batch.item_results).toBe(true);
    expect(batch.items).toHaveLength(2);
    const stream = await events(short.body.id);
    await worker.sendTokens(tokens(batch.lease_id, 0, [5, 6], " Hello"));
    worker.send({
      type: "results",
      lease_id: batch.lease_id,
      results: [{ pos: 0, result: { output: output(" Hello", [5, 6]) } }],
    });

    // The short reply's caller has its answer, and its stream its end, while the lease goes on.
    const done = await until(stream, "completed");
    expect(done.at(-1)?.data.outputs[0].generated_text).toBe(" Hello");
    expect((await call(`/v1/jobs/${long.body.id}`)).body.status).toBe("running");
    // Its row is free: the worker full at 2 items is sent the next call's item at once.
    expect(await queue(MODEL).stats(MODEL)).toMatchObject({ in_flight: { gpu: 1 } });
    const next = await infer({ model: MODEL, inputs: [{ prompt: "Next" }], wait: false });
    const more = await worker.next("batch");
    expect(more.items.map((i) => i.input)).toEqual([{ prompt: "Next" }]);

    // Settled once: its result again, or the completion's result for it, changes nothing. The repeat goes
    // by HTTP, which answers it: two frames sent at once on this in-process socket can be handled in either
    // order (the test pool awaits its module per event), and the repeat after the completion is refused.
    const again = await workerCall(`/v1/leases/${batch.lease_id}/results`, {
      results: [{ pos: 0, result: { output: output(" No", [9]) } }],
    });
    expect(again.body).toEqual({ lease_id: batch.lease_id, status: "ok" });
    worker.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: [{ output: output(" Other", [7]) }, { output: output(" More and more", [1, 2, 3]) }],
    });
    expect((await worker.next("ack")).status).toBe("ok");
    expect((await settledView(long.body.id)).outputs[0].generated_text).toBe(" More and more");
    expect((await settledView(short.body.id)).outputs[0]).toMatchObject({ generated_text: " Hello", tokens: [5, 6] });
    worker.complete(more, () => output(" ok", [4]));
    expect((await settledView(next.body.id)).outputs[0].generated_text).toBe(" ok");
    // No error answered (shown whole if there is one).
    expect(worker.has("error") ? await worker.next("error") : null).toBeNull();
    worker.close();
  });

  it("free the room of an item whose job is cancelled while its lease runs on", async () => {
    const gone = await infer({ model: MODEL, inputs: [{ prompt: "Bye" }], wait: false });
    await infer({ model: MODEL, inputs: [{ prompt: "Stay" }], wait: false });
    const worker = await SocketWorker.connect(MODEL, { max_concurrent_batches: 4, max_items_in_flight: 2 });
    const batch = await worker.next("batch");
    expect(batch.items).toHaveLength(2);
    expect((await call(`/v1/jobs/${gone.body.id}`, { method: "DELETE" })).status).toBe(200);
    // The worker drops the cancelled row; the queue counts it free, so the next call goes to the worker.
    await infer({ model: MODEL, inputs: [{ prompt: "Next" }], wait: false });
    expect((await worker.next("batch")).items.map((i) => i.input)).toEqual([{ prompt: "Next" }]);
    worker.close();
  });

  it("complete the lease when they settle every item it holds: a completion after is a duplicate", async () => {
    const accepted = await infer({ model: MODEL, inputs: [{ prompt: "Only" }], wait: false });
    const worker = await SocketWorker.connect(MODEL);
    const batch = await worker.next("batch");
    const result = { output: output(" one", [1]) };
    worker.send({ type: "results", lease_id: batch.lease_id, results: [{ pos: 0, result }] });
    expect((await settledView(accepted.body.id)).outputs[0].generated_text).toBe(" one");
    expect(await queue(MODEL).stats(MODEL)).toMatchObject({ in_flight: { gpu: 0 } });
    worker.send({ type: "complete", lease_id: batch.lease_id, results: [result] });
    expect((await worker.next("ack")).status).toBe("duplicate");
    worker.close();
  });

  it("hold an output that contradicts the streamed tokens to the same rule: the item runs again from them", async () => {
    const accepted = await infer({ model: MODEL, inputs: [{ prompt: "Hm" }], wait: false });
    const worker = await SocketWorker.connect(MODEL, { max_concurrent_batches: 2 });
    const batch = await worker.next("batch");
    await worker.sendTokens(tokens(batch.lease_id, 0, [5, 6], " ok"));
    worker.send({
      type: "results",
      lease_id: batch.lease_id,
      results: [{ pos: 0, result: { output: output(" x", [9]) } }],
    });
    const again = await worker.next("batch");
    expect(again.items[0]?.input).toMatchObject({ prompt: "Hm", resume: { tokens: [5, 6], text: " ok" } });
    worker.complete(again, () => output(" ok!", [5, 6, 7]));
    expect((await settledView(accepted.body.id)).outputs[0].generated_text).toBe(" ok!");
    worker.close();
  });

  it("name a position the lease holds, once; an HTTP worker posts them to /v1/leases/{id}/results", async () => {
    await infer({ model: MODEL, inputs: [{ prompt: "A" }], wait: false });
    const worker = await SocketWorker.connect(MODEL);
    const batch = await worker.next("batch");
    const result = { output: output(" a", [1]) };
    worker.send({ type: "results", lease_id: batch.lease_id, results: [{ pos: 3, result }] });
    expect(await worker.next("error")).toMatchObject({ code: "wrong_result_count", lease_id: batch.lease_id });
    worker.send({
      type: "results",
      lease_id: batch.lease_id,
      results: [
        { pos: 0, result },
        { pos: 0, result },
      ],
    });
    expect((await worker.next("error")).message).toContain("named twice");
    worker.complete(batch, () => output(" a", [1]));
    await worker.next("ack");
    worker.close();

    const accepted = await infer({ model: MODEL, inputs: [{ prompt: "B" }, { prompt: "C" }], wait: false });
    const leased = await leaseOverHttp(MODEL, "http-results");
    expect(leased.body.item_results).toBe(true);
    const leaseId = leased.body.lease_id as string;
    const bad = await workerCall(`/v1/leases/${leaseId}/results`, { results: [{ pos: 0 }] });
    expect(bad.status).toBe(400);
    expect(bad.body.error.message).toMatch(/result/);
    const posted = await workerCall(`/v1/leases/${leaseId}/results`, {
      results: [{ pos: 1, result: { output: output(" c", [3]) } }],
    });
    expect(posted.body).toEqual({ lease_id: leaseId, status: "ok" });
    expect((await call(`/v1/jobs/${accepted.body.id}`)).body.status).toBe("running");
    // The completion's result for the item settled already is not read again.
    const done = await workerCall(`/v1/leases/${leaseId}/complete`, {
      results: [{ output: output(" b", [2]) }, { output: output(" later", [8]) }],
    });
    expect(done.body).toEqual({ lease_id: leaseId, status: "ok" });
    const outputs = (await settledView(accepted.body.id)).outputs;
    expect(outputs.map((o: { generated_text: string }) => o.generated_text)).toEqual([" b", " c"]);
  });

  it("are not taken from an untrusted lease, whose batch is reviewed whole at its completion", async () => {
    // A trusted worker to verify with, so a call may be pinned to the browser pool.
    const gpu = await SocketWorker.connect("scribe-verified");
    const donor = await SocketWorker.connect("scribe-verified", { donor: "donor-early", network: "198.51.100.0/24" });
    const accepted = await infer({ model: "scribe-verified", inputs: [{ prompt: "D" }], wait: false, pool: "browser" });
    expect(accepted.status).toBe(202);
    const batch = await donor.next("batch");
    expect(batch.item_results).toBeUndefined();
    donor.send({
      type: "results",
      lease_id: batch.lease_id,
      results: [{ pos: 0, result: { output: output(" d", [1]) } }],
    });
    expect((await donor.next("error")).message).toContain("send its results with its completion");
    donor.close();
    gpu.close();
  });
});

describe("an output that contradicts the tokens streamed", () => {
  it("is not recorded: the item runs again from the accepted tokens", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const accepted = await infer({ model: MODEL, inputs: [{ prompt: "Hm" }], wait: false });
    const batch = await worker.next("batch");
    await worker.sendTokens(tokens(batch.lease_id, 0, [5, 6], " ok"));
    worker.complete(batch, () => output(" other", [9]));
    await worker.next("ack");
    const again = await worker.next("batch");
    expect((again.items[0]?.input as { resume?: unknown } | undefined)?.resume).toEqual({
      tokens: [5, 6],
      text: " ok",
    });
    worker.complete(again, () => output(" ok.", [5, 6, 7]));
    const job = await waitFor(async () => {
      const view = (await call(`/v1/jobs/${accepted.body.id}`)).body;
      return view.status === "succeeded" ? view : undefined;
    }, 15_000);
    expect(job.outputs[0].generated_text).toBe(" ok.");
    worker.close();
  });
});

describe("a donor's deltas", () => {
  it("are not relayed while its output awaits verification: the stream carries the trusted run's", async () => {
    const model = "scribe-guarded";
    const gpu = await SocketWorker.connect(model, { worker_id: "gpu", pool: "gpu" });
    const donor = await SocketWorker.connect(model, { worker_id: "tab", donor: "donor-1", network: "198.51.100.0/24" });
    const accepted = await infer({ model, inputs: [{ prompt: "Say" }], pool: "browser", wait: false });
    const stream = await events(accepted.body.id);
    const held = await donor.next("batch");
    donor.send(tokens(held.lease_id, 0, [1], " lie"));
    donor.complete(held, () => output(" truth", [2]));
    // The trusted run that verifies it streams too, and its deltas are the caller's.
    const check = await gpu.next("batch");
    await gpu.sendTokens(tokens(check.lease_id, 0, [2], " truth"));
    gpu.complete(check, () => output(" truth", [2]));
    const seen = await until(stream, "completed");
    expect(seen.filter((e) => e.event === "token").map((e) => e.data.text)).toEqual([" truth"]);
    gpu.close();
    donor.close();
  });
});

describe("POST /v1/infer on a generation model", () => {
  it("answers the job's generation figures", async () => {
    const worker = await SocketWorker.connect(MODEL);
    const answer = infer({ model: MODEL, inputs: [{ prompt: "Go" }] });
    const batch = await worker.next("batch");
    await worker.sendTokens(tokens(batch.lease_id, 0, [1, 2], " on"));
    worker.complete(batch, () => output(" on", [1, 2]));
    const { body } = await answer;
    expect(body.generation).toMatchObject({ tokens: 2, prompt_tokens: 3 });
    expect(typeof body.generation.ttft_ms).toBe("number");
    worker.close();
  });
});
