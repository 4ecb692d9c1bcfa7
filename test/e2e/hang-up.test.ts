// Callers that hang up, over real sockets to the coordinator on workerd without `wrangler dev`'s proxy (which
// passes no client's hang-up on, so the other end-to-end suites cannot see one): an OpenAI stream's call is
// cancelled, and event streams give their places back (workerd does not carry a stream's cancel to the queue
// object over RPC; the edge tells it). A streaming answer has begun, so workerd's request signal no longer
// fires: the edge finds the caller gone when the stream next writes, here the keep-alive comment
// (KEEP_ALIVE_MS, 15 s), as nothing else happens. Deterministic: the calls are for a model no worker serves,
// with a timeout past the test's, so nothing ends them but the hang-up; each check waits for its state.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMiniflare } from "../../scripts/lib/miniflare-server.ts";
import type { Server } from "../../scripts/lib/wrangler-dev.ts";
import { ModelRegistry } from "../../shared/index.ts";
import { BUNDLED_REGISTRY_URL } from "../support/reference-models.ts";
import { waitUntil } from "../support/wait-until.ts";

const bundled = ModelRegistry.parse(JSON.parse(readFileSync(BUNDLED_REGISTRY_URL, "utf8")));
const tiny = bundled.models.find((m) => m.name === "gpt-tiny");
// The bundled generator under another name, which no worker serves: its calls wait until their callers leave
// (or their 5 minutes run out, long after a test has given up).
const registry = { models: [{ ...tiny, name: "gpt-parked", default_timeout_ms: 300_000 }] };
const API = { Authorization: "Bearer k", "Content-Type": "application/json" };
/** The streams test's own key, so what the chat test left behind cannot count against it. */
const STREAMS_API = { ...API, Authorization: "Bearer k2" };
/** How long a check waits for its state: a keep-alive (15 s) and then some, inside the test's 60 s. */
const WAIT_MS = 45_000;

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-hang-up-"));
let coordinator: Server;

beforeAll(async () => {
  coordinator = await startMiniflare({
    persistTo,
    vars: { API_KEYS: "k,k2", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
}, 120_000);

afterAll(async () => {
  await coordinator?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

async function queueDepth(): Promise<number> {
  const res = await fetch(`${coordinator.url}/v1/models`, { headers: API });
  const { models } = (await res.json()) as { models: { name: string; queue_depth: number }[] };
  return models.find((m) => m.name === "gpt-parked")?.queue_depth ?? Number.NaN;
}

describe("a caller that hangs up", () => {
  it("on an OpenAI chat stream cancels its call: the queue lets its prompt go", async () => {
    const caller = new AbortController();
    const res = await fetch(`${coordinator.url}/v1/chat/completions`, {
      method: "POST",
      headers: API,
      body: JSON.stringify({
        model: "gpt-parked",
        messages: [{ role: "user", content: "the pizza was" }],
        stream: true,
      }),
      signal: caller.signal,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toContain("text/event-stream");
    expect(await queueDepth()).toBe(1);
    caller.abort();
    await waitUntil(async () => (await queueDepth()) === 0, "the hung-up call's cancel", WAIT_MS);
  });

  it("on job event streams gives their places back: a key holding all it may, left, gets another", async () => {
    const submitted = await fetch(`${coordinator.url}/v1/infer`, {
      method: "POST",
      headers: STREAMS_API,
      body: JSON.stringify({ model: "gpt-parked", inputs: [{ prompt: "the film" }], wait: false }),
    });
    expect(submitted.status).toBe(202);
    const { id } = (await submitted.json()) as { id: string };
    const events = (signal?: AbortSignal) =>
      fetch(`${coordinator.url}/v1/jobs/${encodeURIComponent(id)}/events`, { headers: STREAMS_API, signal });
    // Streams until the key holds all it may of this queue (the refusal says how many that is).
    const callers: AbortController[] = [];
    for (;;) {
      const caller = new AbortController();
      const res = await events(caller.signal);
      if (res.status === 429) {
        const { error } = (await res.json()) as { error: { message: string } };
        expect(error.message).toContain(`as one key may (${callers.length})`);
        break;
      }
      expect(res.status).toBe(200);
      callers.push(caller);
      // The first event is written when the stream starts: the queue holds the stream by then.
      const first = await (res.body as ReadableStream<Uint8Array>).getReader().read();
      expect(new TextDecoder().decode(first.value)).toContain("event: queued");
      expect(callers.length).toBeLessThanOrEqual(256);
    }
    for (const caller of callers) caller.abort();
    await waitUntil(
      async () => {
        const again = await events();
        await again.body?.cancel();
        return again.status === 200;
      },
      "the left streams' places",
      WAIT_MS,
    );
  });
});
