// Job events as Server-Sent Events, inside real workerd: GET /v1/jobs/{id}/events and POST /v1/infer with
// stream: true show the job queued and leased, each input's output as soon as its batch is done (before
// the rest of the job), and the job's end with its whole view; then the stream closes.
import { runInDurableObject, SELF } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import {
  type JobEvents,
  MAX_WATCHERS,
  MAX_WATCHERS_PER_OWNER,
  newWatch,
  type WatchRequest,
} from "../../edge/model-queue/job-events.ts";
import { TEST_CPU_ONLY_KEY } from "../support/test-models.ts";
import { CALLER, call, infer, queue, SocketWorker, type SseEvent, sseReader, waitFor, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

async function events(id: string) {
  const res = await SELF.fetch(`http://edge/v1/jobs/${id}/events`, { headers: CALLER });
  expect(res.status).toBe(200);
  expect(res.headers.get("Content-Type")).toContain("text/event-stream");
  return sseReader(res);
}

/**
 * Ends the streams a test opened inside a queue object, also when it fails, so the object holds none into the
 * next test.
 */
async function cancelHeld(model: string, open: readonly unknown[]): Promise<void> {
  await runInDurableObject(queue(model), async () => {
    const streams = open.filter((s): s is ReadableStream<Uint8Array> => s instanceof ReadableStream);
    await Promise.all(streams.map((stream) => stream.cancel().catch(() => {})));
  });
}

describe("job events", () => {
  it("streams queued, leased, each batch's outputs as they are done, then completed", async () => {
    const worker = await SocketWorker.connect("alpha", { max_batch_size: 4, max_concurrent_batches: 2 });
    const accepted = await infer({ model: "alpha", inputs: [1, 2, 3, 4, 5, 6], wait: false });
    const stream = await events(accepted.body.id);
    const first = await worker.next("batch");
    const seen: SseEvent[] = [];
    // Up to the first batch's four outputs, with the second batch still held by the worker.
    const second = await worker.next("batch");
    worker.complete(first, (x) => x * 10);
    while (seen.filter((e) => e.event === "output").length < 4) {
      const e = await stream.next();
      if (!e) throw new Error(`the stream ended early, after ${JSON.stringify(seen)}`);
      seen.push(e);
    }
    expect(seen[0]?.event).toMatch(/queued|leased/);
    expect(seen.some((e) => e.event === "leased")).toBe(true);
    expect(seen.filter((e) => e.event === "output").map((e) => e.data)).toEqual([
      { index: 0, output: 10 },
      { index: 1, output: 20 },
      { index: 2, output: 30 },
      { index: 3, output: 40 },
    ]);
    expect((await call(`/v1/jobs/${accepted.body.id}`)).body.status).toBe("running");

    worker.complete(second, (x) => x * 10);
    const rest: SseEvent[] = [];
    for (let e = await stream.next(); e; e = await stream.next()) rest.push(e);
    expect(rest.filter((e) => e.event === "output").map((e) => e.data.index)).toEqual([4, 5]);
    const end = rest.at(-1) as SseEvent;
    expect(end.event).toBe("completed");
    expect(end.data).toMatchObject({ id: accepted.body.id, status: "succeeded", outputs: [10, 20, 30, 40, 50, 60] });
    const ids = [...seen, ...rest].map((e) => Number(e.id));
    expect(ids).toEqual(ids.map((_, i) => i + 1));
  });

  it("answers POST /v1/infer with stream: true as events", async () => {
    const worker = await SocketWorker.connect("alpha");
    const res = await SELF.fetch("http://edge/v1/infer", {
      method: "POST",
      headers: { ...CALLER, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "alpha", inputs: ["a", "b"], stream: true }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toContain("text/event-stream");
    worker.complete(await worker.next("batch"), (x) => `${x}!`);
    const all: SseEvent[] = [];
    const stream = sseReader(res);
    for (let e = await stream.next(); e; e = await stream.next()) all.push(e);
    expect(all.filter((e) => e.event === "output").map((e) => e.data.output)).toEqual(["a!", "b!"]);
    expect(all.at(-1)?.event).toBe("completed");
  });

  it("sends an input's error as it happens and ends a failed job with failed", async () => {
    const worker = await SocketWorker.connect("alpha");
    const accepted = await infer({ model: "alpha", inputs: [1, 2], wait: false });
    const stream = await events(accepted.body.id);
    const batch = await worker.next("batch");
    worker.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: [{ output: 1 }, { error: { code: "bad_input", message: "cannot read 2", retryable: false } }],
      compute_ms: 1,
    });
    const all: SseEvent[] = [];
    for (let e = await stream.next(); e; e = await stream.next()) all.push(e);
    expect(all.find((e) => e.event === "error")?.data).toEqual({
      index: 1,
      code: "bad_input",
      message: "cannot read 2",
    });
    expect(all.at(-1)?.event).toBe("failed");
  });

  it("ends with expired when the job runs out of time", async () => {
    const accepted = await infer({ model: "alpha", inputs: [1], wait: false, timeout_ms: 200 });
    const stream = await events(accepted.body.id);
    const all: SseEvent[] = [];
    for (let e = await stream.next(); e; e = await stream.next()) all.push(e);
    expect(all[0]?.event).toBe("queued");
    expect(all.at(-1)?.event).toBe("expired");
    expect(all.at(-1)?.data.error.code).toBe("expired");
  });

  it("answers 404 for a job it does not have and 400 for what is not a job id", async () => {
    expect((await call("/v1/jobs/alpha:00000000000000000000000000000000/events")).status).toBe(404);
    const bad = await call("/v1/jobs/nonsense/events");
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBeDefined();
  });

  it("refuses a stream past MAX_WATCHERS per queue with 429 and Retry-After, and takes one again when a stream ends", async () => {
    const res = await infer({ model: "bravo", inputs: [1], wait: false });
    const id = res.body.id as string;
    // The queue's streams, opened inside the object (as the route does) and held open.
    const open = await runInDurableObject(queue("bravo"), (instance) =>
      Array.from({ length: MAX_WATCHERS }, () => instance.watchJob("bravo", id, undefined, newWatch("sse"))),
    );
    try {
      expect(open.every((s) => s instanceof ReadableStream)).toBe(true);
      const refused = await call(`/v1/jobs/${id}/events`);
      expect(refused.status).toBe(429);
      expect(refused.headers.get("Retry-After")).toBe("5");
      expect(refused.body.error.message).toContain(`GET /v1/jobs/${id}`);
      // A streamed call is refused before anything is queued.
      const depth = async () =>
        (await call("/v1/models")).body.models.find((m: { name: string }) => m.name === "bravo");
      const before = (await depth()).queue_depth;
      const streamed = await call("/v1/infer", { body: { model: "bravo", inputs: [2], stream: true } });
      expect(streamed.status).toBe(429);
      expect(streamed.headers.get("Retry-After")).toBe("5");
      expect(streamed.body.error.message).toMatch(/serves as many event streams as it will/);
      expect((await depth()).queue_depth).toBe(before);
      // One stream ends (its caller went away): the next caller gets one.
      await runInDurableObject(queue("bravo"), async () => {
        await (open[0] as ReadableStream).cancel();
      });
      const taken = await SELF.fetch(`http://edge/v1/jobs/${id}/events`, { headers: CALLER });
      expect(taken.status).toBe(200);
      await taken.body?.cancel();
    } finally {
      await cancelHeld("bravo", open);
    }
  });
  it("gives a reader that stopped reading every output in order, then the end, once it reads again", async () => {
    const worker = await SocketWorker.connect("alpha", { max_batch_size: 4, max_concurrent_batches: 2 });
    const id = (await infer({ model: "alpha", inputs: [1, 2, 3, 4, 5, 6, 7, 8], wait: false })).body.id as string;
    const [held] = await runInDurableObject(queue("alpha"), (instance, state) => {
      const { owner } = state.storage.sql.exec<{ owner: string }>("SELECT owner FROM jobs WHERE id = ?", id).one();
      return [instance.watchJob("alpha", id, owner, newWatch("sse"))];
    });
    // Outputs that fill the stream before all are written: the rest wait for the reader, and the end after them.
    const big = (x: number) => String(x).repeat(6000);
    const batches = [await worker.next("batch"), await worker.next("batch")];
    // One at a time: on this in-process socket two frames sent at once can be handled in either order, and
    // an output goes out when it is final, so the second batch's would come first.
    for (const batch of batches) {
      worker.complete(batch, big);
      expect((await worker.next("ack")).status).toBe("ok");
    }
    await waitFor(async () => (await call(`/v1/jobs/${id}`)).body.status === "succeeded" || undefined);
    // Held, not written: the stream is full and the object waits for its reader.
    const unread = await runInDurableObject(queue("alpha"), (instance) => {
      const events = (instance as unknown as { events: { watches: Set<{ behind: boolean }> } }).events;
      return [...events.watches].map((w) => w.behind);
    });
    expect(unread).toEqual([true]);
    const seen = await runInDurableObject(queue("alpha"), async () => {
      const stream = sseReader(new Response(held as ReadableStream<Uint8Array>));
      const all: SseEvent[] = [];
      for (let e = await stream.next(); e; e = await stream.next()) all.push(e);
      return all;
    });
    expect(seen.filter((e) => e.event === "output").map((e) => e.data)).toEqual(
      [1, 2, 3, 4, 5, 6, 7, 8].map((x, index) => ({ index, output: big(x) })),
    );
    expect(seen.at(-1)?.event).toBe("completed");
    expect(seen.filter((e) => e.event === "completed")).toHaveLength(1);
    worker.close();
  });

  it("frees the place of a stream whose caller hangs up, though its job goes on", async () => {
    const id = (await infer({ model: "bravo", inputs: [1], wait: false })).body.id as string;
    const watchers = () =>
      runInDurableObject(
        queue("bravo"),
        (instance) => (instance as unknown as { events: { watches: Set<unknown> } }).events.watches.size,
      );
    const callers = [new AbortController(), new AbortController()];
    for (const caller of callers) {
      const res = await SELF.fetch(`http://edge/v1/jobs/${id}/events`, { headers: CALLER, signal: caller.signal });
      expect((await sseReader(res).next())?.event).toBe("queued");
    }
    expect(await watchers()).toBe(2);
    // workerd carries no cancel back to the object over RPC: the edge tells it (ModelQueue.unwatch).
    callers[0]?.abort();
    await waitFor(async () => ((await watchers()) === 1 ? true : undefined));
    callers[1]?.abort();
    await waitFor(async () => ((await watchers()) === 0 ? true : undefined));
    expect((await call(`/v1/jobs/${id}`)).body.status).toBe("queued");
  });

  it("replaces a stream asked again with the same key (an edge's retry) rather than keeping both", async () => {
    const id = (await infer({ model: "bravo", inputs: [1], wait: false })).body.id as string;
    const seen = await runInDurableObject(queue("bravo"), async (instance, state) => {
      const { owner } = state.storage.sql.exec<{ owner: string }>("SELECT owner FROM jobs WHERE id = ?", id).one();
      const watches = (instance as unknown as { events: { watches: Set<unknown> } }).events.watches;
      // The key holds all the streams it may; a new one is refused, one asked again with a held key is not.
      const keys = Array.from({ length: MAX_WATCHERS_PER_OWNER }, () => newWatch("sse"));
      const streams = keys.map((k) => instance.watchJob("bravo", id, owner, k) as ReadableStream<Uint8Array>);
      const held = watches.size;
      const another = instance.watchJob("bravo", id, owner, newWatch("sse"));
      const again = instance.watchJob("bravo", id, owner, keys[0] as WatchRequest);
      const afterAgain = watches.size;
      // The stream it replaced was closed: read to its end, it has only the queued event.
      const replacedText = await new Response(streams[0]).text();
      await Promise.all([...streams.slice(1), again].map((x) => (x as ReadableStream).cancel()));
      return {
        held,
        another,
        again: again instanceof ReadableStream,
        afterAgain,
        replacedEvents: replacedText.match(/^event: /gm)?.length,
      };
    });
    expect(seen).toEqual({
      held: MAX_WATCHERS_PER_OWNER,
      another: "owner_full",
      again: true,
      afterAgain: MAX_WATCHERS_PER_OWNER,
      replacedEvents: 1,
    });
  });

  it("ends a stream whose job was forgotten (result_ttl_ms) before it read the end by saying so", async () => {
    const id = (await infer({ model: "bravo", inputs: [1], wait: false })).body.id as string;
    const seen = await runInDurableObject(queue("bravo"), async (instance, state) => {
      const { owner } = state.storage.sql.exec<{ owner: string }>("SELECT owner FROM jobs WHERE id = ?", id).one();
      const stream = instance.watchJob("bravo", id, owner, newWatch("sse")) as ReadableStream<Uint8Array>;
      // As the alarm's drop after result_ttl_ms leaves it, while the stream still waits for the job's end.
      state.storage.sql.exec("DELETE FROM items WHERE job_id = ?", id);
      state.storage.sql.exec("DELETE FROM jobs WHERE id = ?", id);
      (instance as unknown as { events: { flush(): void } }).events.flush();
      const all: SseEvent[] = [];
      const reader = sseReader(new Response(stream));
      for (let e = await reader.next(); e; e = await reader.next()) all.push(e);
      return all;
    });
    expect(seen.map((e) => e.event)).toEqual(["queued", "expired"]);
    expect(seen[1]?.data.error.code).toBe("result_expired");
    expect(seen[1]?.data.error.message).toContain("result_ttl_ms before this stream read them");
  });

  it("holds one caller key to MAX_WATCHERS_PER_OWNER streams of a queue (429), while another key still gets one", async () => {
    const id = (await infer({ model: "bravo", inputs: [1], wait: false })).body.id as string;
    // The key's streams, opened inside the object as the route does (for the key that owns the job), held open.
    const open = await runInDurableObject(queue("bravo"), (instance, state) => {
      const { owner } = state.storage.sql.exec<{ owner: string }>("SELECT owner FROM jobs WHERE id = ?", id).one();
      return Array.from({ length: MAX_WATCHERS_PER_OWNER }, () =>
        instance.watchJob("bravo", id, owner, newWatch("sse")),
      );
    });
    try {
      expect(open.every((s) => s instanceof ReadableStream)).toBe(true);
      const refused = await call(`/v1/jobs/${id}/events`);
      expect(refused.status).toBe(429);
      expect(refused.headers.get("Retry-After")).toBe("5");
      expect(refused.body.error.message).toContain(`as one key may (${MAX_WATCHERS_PER_OWNER}); end one`);
      const streamed = await call("/v1/infer", { body: { model: "bravo", inputs: [2], stream: true } });
      expect(streamed.status).toBe(429);
      expect(streamed.body.error.message).toMatch(/this API key holds as many event streams/);
      const depth = async () =>
        (await call("/v1/models")).body.models.find((m: { name: string }) => m.name === "bravo").queue_depth;
      expect(await depth()).toBe(1);
      // One of the key's streams ends: the key gets one again.
      await runInDurableObject(queue("bravo"), async () => {
        await (open[0] as ReadableStream).cancel();
      });
      const again = await SELF.fetch(`http://edge/v1/jobs/${id}/events`, { headers: CALLER });
      expect(again.status).toBe(200);
      await again.body?.cancel();
      // The queue has room for more streams: another key is served.
      const other = await SELF.fetch("http://edge/v1/infer", {
        method: "POST",
        headers: { Authorization: `Bearer ${TEST_CPU_ONLY_KEY}`, "Content-Type": "application/json" },
        body: JSON.stringify({ model: "bravo", inputs: [3], stream: true }),
      });
      expect(other.status).toBe(200);
      await other.body?.cancel();
    } finally {
      await cancelHeld("bravo", open);
    }
  });

  it("hands on the queue's own SSE, numbered from 1, with a comment that keeps an idle stream open", async () => {
    const res = await infer({ model: "bravo", inputs: [1], wait: false });
    const caller = await SELF.fetch(`http://edge/v1/jobs/${res.body.id}/events`, { headers: CALLER });
    expect(caller.status).toBe(200);
    expect(caller.headers.get("Cache-Control")).toBe("no-cache");
    const reader = (caller.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const readUntil = async (part: string) => {
      while (!text.includes(part)) {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the stream ended before ${JSON.stringify(part)}: ${text}`);
        text += value;
      }
    };
    try {
      await readUntil("\n\n");
      expect(text).toBe(
        `event: queued\ndata: ${JSON.stringify({ id: res.body.id, status: "queued", items: { queued: 1 } })}\nid: 1\n\n`,
      );
      await runInDurableObject(queue("bravo"), (instance) => {
        (instance as unknown as { events: JobEvents }).events.sendKeepAlive();
      });
      await readUntil(": keep-alive\n\n");
    } finally {
      await reader.cancel();
    }
  });
});

describe("trace context", () => {
  const CALLER_TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

  it("carries the call's traceparent to the worker and keeps the worker's spans in the job", async () => {
    const worker = await SocketWorker.connect("alpha");
    const answer = call("/v1/infer", {
      body: { model: "alpha", inputs: [1, 2] },
      headers: { traceparent: CALLER_TRACE },
    });
    const batch = await worker.next("batch");
    expect(batch.items.map((i) => i.traceparent)).toEqual([CALLER_TRACE, CALLER_TRACE]);
    const spans = ["00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01", "not a span"];
    worker.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: batch.items.map((i, n) => ({ output: i.input, traceparent: spans[n] })),
    });
    const res = await answer;
    expect(res.status).toBe(200);
    // A malformed span is dropped, not the result.
    expect(res.body.outputs).toEqual([1, 2]);
    expect(res.body.trace).toEqual({ traceparent: CALLER_TRACE, workers: [{ index: 0, traceparent: spans[0] }] });
    expect((await call(`/v1/jobs/${res.body.id}`)).body.trace.traceparent).toBe(CALLER_TRACE);
  });

  it("starts a trace for a call without a valid traceparent", async () => {
    const worker = await SocketWorker.connect("bravo", { max_concurrent_batches: 2 });
    await infer({ model: "bravo", inputs: [1], wait: false });
    await call("/v1/infer", { body: { model: "bravo", inputs: [2], wait: false }, headers: { traceparent: "junk" } });
    const items = [...(await worker.next("batch")).items, ...(await worker.next("batch")).items];
    expect(items).toHaveLength(2);
    for (const item of items) expect(item.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(items[0]?.traceparent).not.toBe(items[1]?.traceparent);
  });
});
