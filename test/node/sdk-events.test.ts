// The SDK's calls and streams end on the caller's signal even when the fetch under them does not end the body
// on abort (a fetch that ignores the signal once the answer has started, or a read already waiting): Node 20's
// left a job's JSON answer unread for ever when the signal fired just after its headers.
import { getEventListeners } from "node:events";
import { describe, expect, it } from "vitest";
import { EdgeSwarmClient } from "../../client/sdk/index.ts";

const ID = "m:00000000000000000000000000000000";
const QUEUED = `id: 1\nevent: queued\ndata: ${JSON.stringify({ id: "m:1", status: "queued", items: { queued: 1 } })}\n\n`;

/**
 * A fetch that answers 200 at once with `first` as the start of a body that never ends by itself (`end()` ends
 * it) and ignores every abort, or, with `errorOnAbort`, errors the body with that error of its own on abort.
 */
function stuckBodyFetch(first: string, contentType = "application/json", opts: { errorOnAbort?: Error } = {}) {
  let cancelled = false;
  let body: ReadableStreamDefaultController<Uint8Array> | undefined;
  const fetchStub = async (_url: string, init: RequestInit) =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          body = controller;
          controller.enqueue(new TextEncoder().encode(first));
          const { errorOnAbort } = opts;
          if (errorOnAbort) init.signal?.addEventListener("abort", () => controller.error(errorOnAbort));
        },
        cancel() {
          cancelled = true;
        },
      }),
      { status: 200, headers: { "Content-Type": contentType } },
    );
  return { fetch: fetchStub as unknown as typeof fetch, cancelled: () => cancelled, end: () => body?.close() };
}

/** stuckBodyFetch's event stream: one queued event, then nothing. */
const stuckStreamFetch = () => stuckBodyFetch(QUEUED, "text/event-stream");

describe("a call whose answer stops mid-body, and the caller's signal", () => {
  it("job() and waitForJob() end at the abort, with its reason, and stop the download", async () => {
    const stuck = stuckBodyFetch('{"id":"m:0000');
    const client = new EdgeSwarmClient({ baseUrl: "http://coordinator", apiKey: "k", fetch: stuck.fetch });
    const reason = new Error("gave up");
    const controller = new AbortController();
    setTimeout(() => controller.abort(reason), 20);
    await expect(client.job(ID, { signal: controller.signal })).rejects.toBe(reason);
    expect(stuck.cancelled()).toBe(true);
    const waited = client.waitForJob(ID, { pollMs: 10, signal: AbortSignal.timeout(50) });
    await expect(waited).rejects.toMatchObject({ name: "TimeoutError" });
  });

  it("a call whose fetch errors the body on abort with an error of its own still ends with the abort's reason", async () => {
    const stuck = stuckBodyFetch('{"id":', "application/json", { errorOnAbort: new TypeError("fetch failed") });
    const client = new EdgeSwarmClient({ baseUrl: "http://coordinator", apiKey: "k", fetch: stuck.fetch });
    const reason = new Error("gave up");
    const controller = new AbortController();
    setTimeout(() => controller.abort(reason), 20);
    await expect(client.job(ID, { signal: controller.signal })).rejects.toBe(reason);
  });

  it("a call leaves nothing listening on a signal that outlives it", async () => {
    const job = { id: ID, model: "m", status: "queued", items: { queued: 1 }, created_at: 0 };
    const answers = async () => new Response(JSON.stringify(job), { headers: { "Content-Type": "application/json" } });
    const client = new EdgeSwarmClient({ baseUrl: "http://coordinator", apiKey: "k", fetch: answers as typeof fetch });
    const page = new AbortController();
    for (let i = 0; i < 3; i++) expect((await client.job(ID, { signal: page.signal })).status).toBe("queued");
    expect(getEventListeners(page.signal, "abort")).toHaveLength(0);
  });

  it("chatStream() ends at the abort after the first delta", async () => {
    const chunk = { choices: [{ index: 0, delta: { content: "Hi" }, finish_reason: null }] };
    const stuck = stuckBodyFetch(`data: ${JSON.stringify(chunk)}\n\n`, "text/event-stream");
    const client = new EdgeSwarmClient({ baseUrl: "http://coordinator", apiKey: "k", fetch: stuck.fetch });
    const controller = new AbortController();
    const seen: string[] = [];
    const read = (async () => {
      for await (const d of client.generation.chatStream("chat", [{ role: "user", content: "hi" }], {
        signal: controller.signal,
      })) {
        if (d.type === "text") seen.push(d.text);
        setTimeout(() => controller.abort(), 20);
      }
    })();
    await expect(read).rejects.toMatchObject({ name: "AbortError" });
    expect(seen).toEqual(["Hi"]);
    expect(stuck.cancelled()).toBe(true);
  });
});

describe("job events and the caller's signal", () => {
  it("stop at the abort, with its reason, and stop the download, even if the body never ends", async () => {
    const stuck = stuckStreamFetch();
    const client = new EdgeSwarmClient({ baseUrl: "http://coordinator", apiKey: "k", fetch: stuck.fetch });
    const controller = new AbortController();
    const seen: string[] = [];
    const read = (async () => {
      for await (const e of client.events(ID, { signal: controller.signal })) {
        seen.push(e.event);
        // Aborted while the next read waits on a body that will never send more.
        setTimeout(() => controller.abort(), 20);
      }
    })();
    const error = await read.then(
      () => new Error("the iteration ended without the abort"),
      (e: unknown) => e as Error,
    );
    expect(seen).toEqual(["queued"]);
    expect(error.name).toBe("AbortError");
    expect(stuck.cancelled()).toBe(true);
  });

  it("throw a reason the caller gave, as given", async () => {
    const stuck = stuckStreamFetch();
    const client = new EdgeSwarmClient({ baseUrl: "http://coordinator", apiKey: "k", fetch: stuck.fetch });
    const reason = new Error("the page was closed");
    const controller = new AbortController();
    const iterator = client.events(ID, { signal: controller.signal });
    expect((await iterator.next()).value?.event).toBe("queued");
    controller.abort(reason);
    await expect(iterator.next()).rejects.toBe(reason);
  });

  it("stop the download at the abort while the caller holds the iteration between events", async () => {
    const stuck = stuckStreamFetch();
    const client = new EdgeSwarmClient({ baseUrl: "http://coordinator", apiKey: "k", fetch: stuck.fetch });
    const controller = new AbortController();
    const iterator = client.events(ID, { signal: controller.signal });
    expect((await iterator.next()).value?.event).toBe("queued");
    controller.abort();
    expect(stuck.cancelled()).toBe(true);
    await expect(iterator.next()).rejects.toMatchObject({ name: "AbortError" });
  });

  it("throw the abort's reason, not a stream cut short, when the body ends as the signal aborts", async () => {
    const stuck = stuckStreamFetch();
    const client = new EdgeSwarmClient({ baseUrl: "http://coordinator", apiKey: "k", fetch: stuck.fetch });
    const reason = new Error("left the page");
    const controller = new AbortController();
    const iterator = client.events(ID, { signal: controller.signal });
    expect((await iterator.next()).value?.event).toBe("queued");
    const next = iterator.next(); // waits on the body
    stuck.end();
    controller.abort(reason);
    await expect(next).rejects.toBe(reason);
  });
});
