// The SDK's job events end on the caller's signal even when the fetch under them does not end the body on
// abort (a fetch that ignores the signal once the answer has started, or a read already waiting).
import { describe, expect, it } from "vitest";
import { EdgeSwarmClient } from "../../client/sdk/index.ts";

/** A fetch whose event stream sends one queued event, then stays open and ignores every abort. */
function stuckStreamFetch(): { fetch: typeof fetch; cancelled: () => boolean } {
  let cancelled = false;
  const fetchStub = async () => {
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        const event = { id: "m:1", status: "queued", items: { queued: 1 } };
        controller.enqueue(new TextEncoder().encode(`id: 1\nevent: queued\ndata: ${JSON.stringify(event)}\n\n`));
      },
      cancel() {
        cancelled = true;
      },
    });
    return new Response(body, { status: 200, headers: { "Content-Type": "text/event-stream" } });
  };
  return { fetch: fetchStub as unknown as typeof fetch, cancelled: () => cancelled };
}

describe("job events and the caller's signal", () => {
  it("stop at the abort, with its reason, and stop the download, even if the body never ends", async () => {
    const stuck = stuckStreamFetch();
    const client = new EdgeSwarmClient({ baseUrl: "http://coordinator", apiKey: "k", fetch: stuck.fetch });
    const controller = new AbortController();
    const seen: string[] = [];
    const read = (async () => {
      for await (const e of client.events("m:00000000000000000000000000000000", { signal: controller.signal })) {
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
    const iterator = client.events("m:00000000000000000000000000000000", { signal: controller.signal });
    expect((await iterator.next()).value?.event).toBe("queued");
    controller.abort(reason);
    await expect(iterator.next()).rejects.toBe(reason);
  });
});
