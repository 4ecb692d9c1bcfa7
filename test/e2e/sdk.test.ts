// The caller SDK (client/sdk/) against the real coordinator (`wrangler dev`) and a real `edgeswarm-worker`
// serving the bundled models: its answers are POST /v1/infer's, its streams end with the job, sessions keep
// ETags, and refusals arrive as typed errors carrying the server's code, 429s retried as Retry-After says.
// Requests are counted through a fetch wrapper that forwards every call to the real server.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BadRequestError,
  EdgeSwarmClient,
  EdgeSwarmError,
  type JobEvent,
  JobFailedError,
  NotFoundError,
  PreconditionFailedError,
  parseRetryAfter,
  QueueFullError,
  retryDelayMs,
  TimeoutError,
} from "../../client/sdk/index.ts";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, freePort, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { ModelRegistry, newId, parseTraceparent } from "../../shared/index.ts";
import { expectClose, rejection } from "../support/expect-close.ts";
import { REVIEW_TEXTS } from "../support/reference-models.ts";

const bundled = ModelRegistry.parse(
  JSON.parse(readFileSync(new URL("../../models/registry.json", import.meta.url), "utf8")),
);
// Queues no worker serves (no files): "full" is filled once and stays full; "draining" fills with a call
// that expires in 1.5 s, after which it takes calls again (that then expire in their turn).
const registry = {
  models: [
    ...bundled.models,
    { name: "full", task: "tensor", max_queue_size: 2, default_timeout_ms: 60_000 },
    { name: "draining", task: "tensor", max_queue_size: 1, max_queue_delay_ms: 0 },
  ],
};

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-sdk-"));
let coordinator: Coordinator;
let worker: WorkerProcess | undefined;
let client: EdgeSwarmClient;
const TEXTS = REVIEW_TEXTS.slice(0, 5);

/** A fetch that forwards to the real one and records each request: method, path, when, the answer's status. */
function countingFetch() {
  const calls: { method: string; path: string; at: number; status: number }[] = [];
  const fetchFn = async (url: string, init: RequestInit) => {
    const at = Date.now();
    const res = await fetch(url, init);
    calls.push({ method: init.method ?? "GET", path: new URL(url).pathname, at, status: res.status });
    return res;
  };
  return { calls, fetch: fetchFn };
}

beforeAll(async () => {
  coordinator = await startCoordinator({
    persistTo,
    vars: { API_KEYS: "k", WORKER_TOKENS: "w", MODELS: JSON.stringify(registry) },
  });
  worker = startWorker([
    ...["--coordinator", coordinator.url, "--token", "w", "--worker-id", "sdk", "--device", "cpu"],
    ...["--port", String(await freePort()), "--status-interval-ms", "0"],
  ]);
  for (const m of bundled.models) await worker.waitFor(new RegExp(`\\[${m.name}\\] connected`), 60_000);
  client = new EdgeSwarmClient({ baseUrl: `${coordinator.url}/`, apiKey: "k" });
});

afterAll(async () => {
  worker?.child.kill("SIGKILL");
  await coordinator?.stop();
  rmSync(persistTo, { recursive: true, force: true });
});

async function raw(path: string, body: unknown) {
  const res = await fetch(`${coordinator.url}${path}`, {
    method: "POST",
    headers: { Authorization: "Bearer k", "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

async function collect<T>(events: AsyncIterable<JobEvent<T>>): Promise<JobEvent<T>[]> {
  const seen: JobEvent<T>[] = [];
  for await (const e of events) seen.push(e);
  return seen;
}

const outputsOf = <T>(events: JobEvent<T>[]) =>
  events.flatMap((e) => (e.event === "output" ? [e.data] : [])).sort((a, b) => a.index - b.index);

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;

describe("calls and jobs", () => {
  it("infer answers what POST /v1/infer answers", async () => {
    const answer = await client.infer<{ label: string; score: number }[]>("sentiment", TEXTS);
    const direct = await raw("/v1/infer", { model: "sentiment", inputs: TEXTS });
    expect(direct.status).toBe(200);
    expect(answer.model).toBe("sentiment");
    expect(answer.id).toMatch(/^sentiment:[0-9a-f]{32}$/);
    expect(Object.keys(answer).sort()).toEqual(Object.keys(direct.body).sort());
    expectClose(answer.outputs, direct.body.outputs);
    expect(answer.outputs[0]?.[0]?.label).toBe("POSITIVE"); // "I love this"
    expect(answer.timings.total_ms).toBeGreaterThanOrEqual(answer.timings.queued_ms);
    expect(parseTraceparent(answer.trace.traceparent)).not.toBeNull();
  });

  it("submit answers at once with the job's id; waitForJob answers the ended job", async () => {
    const expected = (await client.infer("sentiment", TEXTS)).outputs;
    const submitted = await client.submit("sentiment", TEXTS, { priority: 1 });
    expect(submitted.id).toMatch(/^sentiment:/);
    expect(["queued", "running", "succeeded"]).toContain(submitted.status);
    const job = await client.waitForJob(submitted.id, { pollMs: 20 });
    expect(job).toMatchObject({ id: submitted.id, model: "sentiment", status: "succeeded" });
    expect(job).not.toHaveProperty("created_at");
    expectClose(job.outputs, expected);
    expect(job.timings?.total_ms).toBeGreaterThanOrEqual(job.timings?.queued_ms ?? Number.NaN);
    expect((await client.job(submitted.id)).status).toBe("succeeded");
  });

  it("inferStream yields an output per input, then completed with the job: the same outputs as infer", async () => {
    const expected = (await client.infer("embedder", TEXTS)).outputs;
    const events = await collect(client.inferStream<number[]>("embedder", TEXTS));
    const end = events.at(-1);
    expect(end?.event).toBe("completed");
    expect(events.filter((e) => ["completed", "failed", "expired"].includes(e.event))).toHaveLength(1);
    const outputs = outputsOf(events);
    expect(outputs.map((o) => o.index)).toEqual(TEXTS.map((_, i) => i));
    expectClose(
      outputs.map((o) => o.output),
      expected,
    );
    if (end?.event !== "completed") throw new Error("unreachable");
    expect(end.data).toMatchObject({ model: "embedder", status: "succeeded" });
    expectClose(end.data.outputs, expected);
    // Every event before the end is a count or an output: nothing failed.
    expect(events.slice(0, -1).every((e) => ["queued", "leased", "output"].includes(e.event))).toBe(true);
  });

  it("events(id) streams a submitted job to its end, and a finished one at once", async () => {
    const expected = (await client.infer("sentiment", TEXTS)).outputs;
    const { id } = await client.submit("sentiment", TEXTS);
    const events = await collect(client.events(id));
    expect(events.at(-1)).toMatchObject({ event: "completed", data: { id, status: "succeeded" } });
    expectClose(
      outputsOf(events).map((o) => o.output),
      expected,
    );
    // Watched again after it ended: every output, then completed, and the stream ends.
    const again = await collect(client.events(id));
    expect(again.map((e) => e.event)).toEqual([...TEXTS.map(() => "output"), "completed"]);
  });

  it("models() lists the registry with the queues' counts", async () => {
    const { models } = await client.models();
    expect(models.map((m) => m.name).sort()).toEqual(registry.models.map((m) => m.name).sort());
    const sentiment = models.find((m) => m.name === "sentiment");
    expect(sentiment).toMatchObject({ task: "text-classification", max_batch_size: 32 });
    expect(sentiment).not.toHaveProperty("files");
    expect(sentiment?.workers?.gpu).toBeGreaterThanOrEqual(1);
  });

  it("carries a traceparent to the job: its trace and every worker's span are in that trace", async () => {
    const answer = await client.infer("sentiment", TEXTS.slice(0, 2), { traceparent: TRACEPARENT });
    expect(answer.trace.traceparent).toBe(TRACEPARENT);
    expect(answer.trace.workers.map((w) => w.index).sort()).toEqual([0, 1]);
    for (const w of answer.trace.workers) expect(parseTraceparent(w.traceparent)?.traceId).toBe(TRACE_ID);

    const { id } = await client.submit("embedder", ["a"], { traceparent: TRACEPARENT });
    expect((await client.waitForJob(id, { pollMs: 20 })).trace?.traceparent).toBe(TRACEPARENT);
    // Without one, the coordinator starts a new trace.
    const fresh = await client.infer("sentiment", ["a"]);
    expect(parseTraceparent(fresh.trace.traceparent)?.traceId).not.toBe(TRACE_ID);
  });

  it("refuses a malformed traceparent before sending anything", async () => {
    const counting = countingFetch();
    const c = new EdgeSwarmClient({ baseUrl: coordinator.url, apiKey: "k", fetch: counting.fetch });
    const error = await rejection(c.infer("sentiment", ["a"], { traceparent: "00-not-a-trace-01" }));
    expect(error).toBeInstanceOf(TypeError);
    expect(counting.calls).toHaveLength(0);
  });
});

describe("embeddings", () => {
  it("answers float vectors, the ones /v1/infer gives, shortened to `dimensions` at unit length", async () => {
    const answer = await client.embeddings("embedder", TEXTS);
    expect(answer).toMatchObject({ object: "list", model: "embedder" });
    expect(answer.data.map((d) => d.index)).toEqual(TEXTS.map((_, i) => i));
    const direct = await raw("/v1/infer", { model: "embedder", inputs: TEXTS });
    expectClose(
      answer.data.map((d) => d.embedding),
      direct.body.outputs,
    );
    expect(answer.usage.total_tokens).toBeGreaterThan(0);

    const short = await client.embeddings("embedder", "I love this", { dimensions: 8 });
    const vector = short.data[0]?.embedding as number[];
    expect(vector).toHaveLength(8);
    expect(Math.hypot(...vector)).toBeCloseTo(1, 5);
  });
});

describe("sessions", () => {
  it("round-trips state with ETags, and a stale or failed precondition is a PreconditionFailedError", async () => {
    const id = `sdk-${crypto.randomUUID()}`;
    const created = await client.sessions.create(id, { persona: "terse", turn: 1 });
    expect(created).toMatchObject({ id, state: { persona: "terse", turn: 1 }, created: true });
    expect(created.etag).toMatch(/^".+"$/);
    expect(created.expires_at).toBeGreaterThan(Date.now());

    const exists = await rejection(client.sessions.create(id, { other: true }));
    expect(exists).toBeInstanceOf(PreconditionFailedError);
    expect(exists).toMatchObject({ status: 412, code: "precondition_failed", etag: created.etag });

    const read = await client.sessions.get(id);
    expect(read).toMatchObject({ id, state: { persona: "terse", turn: 1 }, history: [], etag: created.etag });

    const patched = await client.sessions.patch(id, { turn: 2, persona: null }, { ifMatch: read.etag });
    expect(patched.state).toEqual({ turn: 2 });
    expect(patched.etag).not.toBe(read.etag);

    // The ETag read before the patch no longer holds, for PATCH, PUT and DELETE alike.
    const stale = await rejection(client.sessions.patch(id, { turn: 3 }, { ifMatch: read.etag }));
    expect(stale).toBeInstanceOf(PreconditionFailedError);
    expect(stale).toMatchObject({ code: "precondition_failed", etag: patched.etag });
    expect(stale.message).toMatch(/changed/);
    expect(await rejection(client.sessions.put(id, {}, { ifMatch: read.etag }))).toBeInstanceOf(
      PreconditionFailedError,
    );
    expect(await rejection(client.sessions.delete(id, { ifMatch: read.etag }))).toBeInstanceOf(PreconditionFailedError);

    const replaced = await client.sessions.put(id, { fresh: true }, { ifMatch: patched.etag });
    expect(replaced).toMatchObject({ state: { fresh: true }, created: false });
    expect((await client.sessions.get(id)).state).toEqual({ fresh: true });

    await client.sessions.delete(id, { ifMatch: replaced.etag });
    const gone = await rejection(client.sessions.get(id));
    expect(gone).toBeInstanceOf(NotFoundError);
    expect(gone).toMatchObject({ status: 404, code: "session_not_found" });
  });

  it("appends a call made in the session to its history", async () => {
    const id = `sdk-${crypto.randomUUID()}`;
    await client.sessions.create(id, { topic: "reviews" });
    const answer = await client.infer("sentiment", ["I love this"], { session: id });
    let history = (await client.sessions.get(id)).history;
    for (let tries = 0; history.length === 0 && tries < 100; tries++) {
      await new Promise((r) => setTimeout(r, 50));
      history = (await client.sessions.get(id)).history;
    }
    expect(history).toEqual([
      { at: expect.any(Number), model: "sentiment", job_id: answer.id, input: ["I love this"], output: answer.outputs },
    ]);
    const missing = await rejection(client.infer("sentiment", ["x"], { session: `${id}-none` }));
    expect(missing).toBeInstanceOf(NotFoundError);
    expect(missing.code).toBe("session_not_found");
  });
});

describe("typed errors", () => {
  it("an unknown model is a NotFoundError with code unknown_model, in every call", async () => {
    const infer = await rejection(client.infer("no-such-model", [1]));
    expect(infer).toBeInstanceOf(NotFoundError);
    expect(infer).toBeInstanceOf(EdgeSwarmError);
    expect(infer).toMatchObject({ name: "NotFoundError", status: 404, code: "unknown_model" });
    expect(infer.message).toMatch(/no-such-model/);
    const stream = await rejection(collect(client.inferStream("no-such-model", [1])));
    expect(stream).toMatchObject({ status: 404, code: "unknown_model" });
    // /v1/embeddings answers in OpenAI's shape, with OpenAI's code for it.
    const embed = await rejection(client.embeddings("no-such-model", "a"));
    expect(embed).toBeInstanceOf(NotFoundError);
    expect(embed).toMatchObject({ code: "model_not_found", details: { param: "model" } });
  });

  it("a job nobody accepted is a NotFoundError with code job_not_found, for job() and events()", async () => {
    const id = newId("sentiment");
    expect(await rejection(client.job(id))).toMatchObject({ status: 404, code: "job_not_found" });
    expect(await rejection(collect(client.events(id)))).toMatchObject({ status: 404, code: "job_not_found" });
    expect(await rejection(client.job("not-an-id"))).toMatchObject({ status: 400, code: "bad_id" });
  });

  it("bad input is a BadRequestError carrying the server's code and message", async () => {
    const empty = await rejection(client.infer("sentiment", []));
    expect(empty).toBeInstanceOf(BadRequestError);
    expect(empty).toMatchObject({ status: 400, code: "validation_failed" });
    expect(empty.message).toMatch(/inputs/);
    const priority = await rejection(client.infer("sentiment", ["a"], { priority: -1 }));
    expect(priority).toMatchObject({ status: 400, code: "validation_failed" });
    const tooMany = await rejection(
      client.infer(
        "sentiment",
        Array.from({ length: 300 }, () => "a"),
      ),
    );
    expect(tooMany).toMatchObject({ status: 400, code: "too_many_inputs" });
  });

  it("inputs the workers would refuse are a JobFailedError with per-input errors, and no job", async () => {
    const error = await rejection(client.infer("sentiment", ["I love this", ""]));
    expect(error).toBeInstanceOf(JobFailedError);
    expect(error).toMatchObject({ status: 422, code: "invalid_input" });
    expect(error.jobId).toBeUndefined(); // refused before anything was queued
    expect(error.details.errors).toEqual([
      { index: 1, code: "invalid_input", message: "input must be a non-empty string, got an empty string" },
    ]);
  });
});

describe("a full queue", () => {
  let fillerId = "";

  it("retries a 429 as Retry-After says, then throws QueueFullError once the retries are spent", async () => {
    fillerId = (await client.submit("full", [1, 2])).id;
    const counting = countingFetch();
    const c = new EdgeSwarmClient({ baseUrl: coordinator.url, apiKey: "k", fetch: counting.fetch, maxRetries: 2 });
    const error = await rejection(c.infer("full", [3]));
    expect(error).toBeInstanceOf(QueueFullError);
    expect(error).toMatchObject({ status: 429, code: "queue_full", retryAfterS: 1 });
    expect(counting.calls.map((r) => [r.method, r.path, r.status])).toEqual([
      ["POST", "/v1/infer", 429],
      ["POST", "/v1/infer", 429],
      ["POST", "/v1/infer", 429],
    ]);
    // Retry-After: 1, waited out each time.
    for (let i = 1; i < counting.calls.length; i++) {
      expect((counting.calls[i]?.at ?? 0) - (counting.calls[i - 1]?.at ?? 0)).toBeGreaterThanOrEqual(1_000);
    }
    const once = countingFetch();
    const noRetry = new EdgeSwarmClient({ baseUrl: coordinator.url, apiKey: "k", fetch: once.fetch, maxRetries: 0 });
    expect(await rejection(noRetry.submit("full", [3]))).toBeInstanceOf(QueueFullError);
    expect(once.calls).toHaveLength(1);
  });

  it("gets in once the queue drains, and a call still unanswered at its deadline is a TimeoutError", async () => {
    await client.submit("draining", [1], { timeout_ms: 1_500 });
    const counting = countingFetch();
    const c = new EdgeSwarmClient({ baseUrl: coordinator.url, apiKey: "k", fetch: counting.fetch, maxRetries: 5 });
    const error = await rejection(c.infer("draining", [2], { timeout_ms: 300 }));
    const statuses = counting.calls.map((r) => r.status);
    expect(statuses[0]).toBe(429);
    expect(statuses.at(-1)).toBe(504);
    expect(statuses.slice(0, -1).every((s) => s === 429)).toBe(true);
    expect(error).toBeInstanceOf(TimeoutError);
    expect(error).toMatchObject({ status: 504, code: "expired" });
    expect(error.jobId).toMatch(/^draining:/);
  });

  it("stops waiting and streaming when the call's signal aborts", async () => {
    expect(fillerId).not.toBe("");
    // This hung in full runs under load: Node's fetch left a JSON answer unread for ever when the signal fired
    // just after its headers (test/node/sdk-events.test.ts). Should it hang again, the failure says where.
    let step = "waiting for the job";
    const seen: string[] = [];
    const bounded = <T>(work: Promise<T>) =>
      Promise.race([
        work,
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error(`stuck ${step}; events so far: ${seen}`)), 20_000).unref(),
        ),
      ]);
    const waited = await rejection(
      bounded(client.waitForJob(fillerId, { pollMs: 20, signal: AbortSignal.timeout(300) })),
    );
    expect(waited.name).toBe("TimeoutError");
    expect(waited).not.toBeInstanceOf(EdgeSwarmError);

    const controller = new AbortController();
    step = "asking for the stream and its first event";
    const streamed = await rejection(
      bounded(
        (async () => {
          for await (const e of client.events(fillerId, { signal: controller.signal })) {
            seen.push(e.event);
            step = "ending the stream after abort";
            controller.abort();
          }
        })(),
      ),
    );
    expect(seen).toEqual(["queued"]);
    expect(streamed.name).toBe("AbortError");
  });
});

describe("retry policy", () => {
  it("reads Retry-After as seconds or an HTTP date, and backs off exponentially, capped, without one", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(parseRetryAfter("2", now)).toBe(2);
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:05 GMT", now)).toBe(5);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
    expect(retryDelayMs(1, 2)).toBe(2_000);
    expect(retryDelayMs(1, 3_600)).toBeNull(); // longer than worth waiting: thrown at once
    const top = () => 1;
    expect([1, 2, 3, 4, 5, 6].map((n) => retryDelayMs(n, undefined, top))).toEqual([
      500, 1_000, 2_000, 4_000, 8_000, 8_000,
    ]);
    expect(retryDelayMs(1, undefined, () => 0)).toBe(250);
  });
});
