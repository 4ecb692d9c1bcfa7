// The SDK's safety operations against the real coordinator (`wrangler dev`), with no worker connected:
// cancel(), an Idempotency-Key per call that is sent again unchanged on the SDK's own retries, the first
// job answered to a repeated key, ConflictError for a reused one, and a 503 no_worker_connected from a model
// with reject_without_workers. Requests are seen through a fetch wrapper that forwards each to the server.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConflictError, EdgeSwarmClient, UnavailableError } from "../../client/sdk/index.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { rejection } from "../support/expect-close.ts";

// No worker serves either: "parked" keeps what it is given, "unserved" refuses calls while none is connected.
const registry = {
  models: [
    { name: "parked", task: "tensor", default_timeout_ms: 60_000 },
    { name: "unserved", task: "tensor", reject_without_workers: true },
  ],
};

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-sdk-safety-"));
let coordinator: Coordinator;

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k,other", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
});

afterAll(async () => {
  await coordinator?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

/** A client whose every request is forwarded to the real server and recorded with its Idempotency-Key. */
function recordingClient(opts: { apiKey?: string; maxRetries?: number } = {}) {
  const sent: { method: string; path: string; key: string | null; status: number }[] = [];
  const client = new EdgeSwarmClient({
    baseUrl: coordinator.url,
    apiKey: opts.apiKey ?? "k",
    maxRetries: opts.maxRetries,
    fetch: async (url, init) => {
      const res = await fetch(url, init);
      const key = new Headers(init.headers).get("Idempotency-Key");
      sent.push({ method: init.method ?? "GET", path: new URL(url).pathname, key, status: res.status });
      return res;
    },
  });
  return { client, sent };
}

describe("cancel", () => {
  it("cancels a queued job; its waiters see it cancelled; only the key that made it may", async () => {
    const { client } = recordingClient();
    const job = await client.submit("parked", [1, 2]);
    const other = recordingClient({ apiKey: "other" }).client;
    expect((await rejection(other.cancel(job.id))).status).toBe(404);
    const cancelled = await client.cancel(job.id);
    expect(cancelled).toMatchObject({ id: job.id, status: "cancelled", error: { code: "cancelled" } });
    expect((await client.waitForJob(job.id)).status).toBe("cancelled");
    expect((await client.cancel(job.id)).status).toBe("cancelled");
  });
});

describe("Idempotency-Key", () => {
  it("sends a key with every call, a new one per call", async () => {
    const { client, sent } = recordingClient();
    await client.submit("parked", [1]);
    await client.submit("parked", [1]);
    const keys = sent.map((s) => s.key);
    expect(keys[0]).toMatch(/^[0-9a-f-]{32,36}$/);
    expect(new Set(keys).size).toBe(2);
  });

  it("answers a repeated key with the first job, and a key reused with another body with ConflictError", async () => {
    const { client } = recordingClient();
    const first = await client.submit("parked", [5], { idempotencyKey: "order-1" });
    const again = await client.submit("parked", [5], { idempotencyKey: "order-1" });
    expect(again.id).toBe(first.id);
    const conflict = await rejection(client.submit("parked", [6], { idempotencyKey: "order-1" }));
    expect(conflict).toBeInstanceOf(ConflictError);
    expect(conflict.code).toBe("idempotency_key_reused");
  });

  it("sends the same key on each retry of one call (here, after a 503 no_worker_connected)", async () => {
    const { client, sent } = recordingClient({ maxRetries: 1 });
    const refused = await rejection(client.infer("unserved", [1]));
    expect(refused).toBeInstanceOf(UnavailableError);
    expect(refused.code).toBe("no_worker_connected");
    expect(refused.retryAfterS).toBe(5);
    expect(sent.map((s) => s.status)).toEqual([503, 503]);
    expect(sent[0]?.key).toBeTruthy();
    expect(sent[1]?.key).toBe(sent[0]?.key);
  }, 30_000);
});
