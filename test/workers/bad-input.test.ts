// Every kind of bad input gets a 4xx whose JSON error says what to fix; none reaches a 500.
import { SELF } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { call, infer, SocketWorker, WORKER, wipeQueues, workerCall } from "./helpers.ts";

afterEach(() => wipeQueues());

const expectError = (res: { status: number; body: any }, status: number, code: string, mentions: RegExp) => {
  expect(res.status).toBe(status);
  expect(res.body.error.code).toBe(code);
  expect(res.body.error.message).toMatch(mentions);
};

describe("caller API", () => {
  it("refuses malformed JSON", async () => {
    expectError(await call("/v1/infer", { raw: '{"model": "alpha", ' }), 400, "invalid_json", /not valid JSON/);
  });

  it("refuses wrong types and names the field", async () => {
    expectError(await infer({ model: "alpha", inputs: "hello" }), 400, "validation_failed", /inputs/);
    expectError(await infer({ model: "alpha", inputs: [1], wait: "yes" }), 400, "validation_failed", /wait/);
    expectError(await infer({ model: "alpha", inputs: [1], priority: -1 }), 400, "validation_failed", /priority/);
    expectError(await infer({ model: "alpha", inputs: [] }), 400, "validation_failed", /at least one input/);
    expectError(await infer({ model: "alpha", inputs: [1], colour: "red" }), 400, "validation_failed", /colour/);
    expectError(await call("/v1/infer", { raw: "[1,2]" }), 400, "validation_failed", /expected object/);
  });

  it("refuses JSON nested too deeply, over HTTP and WebSocket, instead of overflowing the stack", async () => {
    const deep = `${"[".repeat(2_000)}${"]".repeat(2_000)}`;
    const res = await call("/v1/infer", { raw: `{"model":"alpha","inputs":[${deep}]}` });
    expectError(res, 400, "nested_too_deeply", /deeper than 64/);
    const worker = await SocketWorker.connect("alpha");
    await infer({ model: "alpha", inputs: [1], wait: false });
    const batch = await worker.next("batch");
    worker.send(`{"type":"complete","lease_id":"${batch.lease_id}","results":[{"output":${deep}}]}`);
    expect((await worker.next("error")).code).toBe("nested_too_deeply");
  });

  it("refuses an unknown model and lists the ones served", async () => {
    expectError(await infer({ model: "gpt-9", inputs: [1] }), 404, "unknown_model", /gpt-9.*alpha, bravo/);
  });

  it("refuses too many inputs, a timeout past the maximum, and a priority past the levels", async () => {
    expectError(await infer({ model: "alpha", inputs: new Array(9).fill(1) }), 400, "too_many_inputs", /at most 8/);
    expectError(await infer({ model: "alpha", inputs: [1], timeout_ms: 60_000 }), 400, "timeout_too_long", /10000/);
    expectError(await infer({ model: "alpha", inputs: [1], priority: 3 }), 400, "validation_failed", /0\.\.2/);
  });

  it("refuses an oversize body with 413", async () => {
    const big = "x".repeat(1024 * 1024 + 10);
    expectError(await infer({ model: "alpha", inputs: [big] }), 413, "payload_too_large", /exceeds 1048576 bytes/);
  });

  it("refuses a malformed or unknown job id", async () => {
    expectError(await call("/v1/jobs/nonsense"), 400, "bad_id", /<model>:<32 hex digits>/);
    expectError(await call(`/v1/jobs/alpha:${"0".repeat(32)}`), 404, "job_not_found", /never accepted/);
    expectError(await call(`/v1/jobs/zulu:${"0".repeat(32)}`), 404, "job_not_found", /not served here/);
  });

  it("answers an unknown route with a JSON 404", async () => {
    expectError(await call("/v1/nothing-here"), 404, "not_found", /GET \/v1\/nothing-here/);
  });
});

describe("authentication", () => {
  it("requires a caller key, and a worker token for worker routes", async () => {
    expectError(
      await call("/v1/models", { headers: { Authorization: "" } }),
      401,
      "unauthorized",
      /Authorization: Bearer/,
    );
    expectError(
      await call("/v1/models", { headers: { Authorization: "Bearer wrong" } }),
      401,
      "unauthorized",
      /not valid/,
    );
    // A caller key is not a worker token.
    expectError(await call("/v1/leases", { body: {} }), 401, "unauthorized", /worker key/);
    // ?token= is for WebSocket upgrades only (browsers cannot set headers there), not for HTTP calls.
    const viaQuery = await call("/v1/workers/models?token=test-worker-token", { headers: { Authorization: "" } });
    expectError(viaQuery, 401, "unauthorized", /missing credentials/);
    const socket = await SELF.fetch("http://edge/v1/workers/connect?model=alpha&token=test-worker-token", {
      headers: { Upgrade: "websocket" },
    });
    expect(socket.status).toBe(101);
    socket.webSocket?.accept();
    socket.webSocket?.close();
  });
});

describe("worker protocol", () => {
  const lease = (extra: Record<string, unknown>) =>
    workerCall("/v1/leases", {
      model: "alpha",
      worker_id: "w",
      pool: "gpu",
      device: "cpu",
      max_batch_size: 4,
      wait_ms: 0,
      ...extra,
    });

  it("refuses a lease request with a bad pool or an unknown model", async () => {
    expectError(await lease({ pool: "laptop" }), 400, "validation_failed", /pool/);
    expectError(await lease({ model: "zulu" }), 404, "unknown_model", /zulu/);
  });

  it("refuses a bad lease id, and reports an unknown one", async () => {
    expectError(await workerCall("/v1/leases/abc/complete", { results: [] }), 400, "bad_id", /lease id/);
    expectError(await workerCall(`/v1/leases/alpha:${"f".repeat(32)}/extend`), 404, "lease_not_found", /no such lease/);
  });

  it("refuses a completion with the wrong number of results, and the lease stays usable", async () => {
    await infer({ model: "alpha", inputs: [1, 2], wait: false });
    const batch = await lease({ wait_ms: 1_000 });
    const wrong = await workerCall(`/v1/leases/${batch.body.lease_id}/complete`, { results: [{ output: 1 }] });
    expectError(wrong, 400, "wrong_result_count", /holds 2 items but 1 results/);
    const badShape = await workerCall(`/v1/leases/${batch.body.lease_id}/complete`, {
      results: [{ output: 1, error: "x" }, {}],
    });
    expect(badShape.status).toBe(400);
    const right = await workerCall(`/v1/leases/${batch.body.lease_id}/complete`, {
      results: [{ output: 1 }, { output: 2 }],
    });
    expect(right.body.status).toBe("ok");
  });

  it("answers bad WebSocket frames with an error frame and keeps the socket", async () => {
    const worker = await SocketWorker.connect("alpha");
    worker.send("{not json");
    expect((await worker.next("error")).code).toBe("invalid_json");
    worker.send({ type: "dance" });
    expect((await worker.next("error")).message).toMatch(/type/);
    worker.send({ type: "complete", lease_id: "bravo:0123", results: [] });
    expect((await worker.next("ack")).status).toBe("not_found");
    await infer({ model: "alpha", inputs: [1], wait: false });
    const batch = await worker.next("batch");
    worker.send({ type: "complete", lease_id: batch.lease_id, results: [] });
    expect((await worker.next("error")).code).toBe("wrong_result_count");
  });

  it("asks for a hello before anything else, and for a WebSocket upgrade", async () => {
    const res = await SELF.fetch("http://edge/v1/workers/connect?model=alpha", {
      headers: { Upgrade: "websocket", ...WORKER },
    });
    const ws = res.webSocket as WebSocket;
    ws.accept();
    const frames: any[] = [];
    ws.addEventListener("message", (e) => {
      frames.push(JSON.parse(e.data as string));
    });
    ws.send(JSON.stringify({ type: "release", lease_id: `alpha:${"0".repeat(32)}` }));
    await new Promise((r) => setTimeout(r, 50));
    expect(frames[0]).toMatchObject({ type: "error", message: expect.stringMatching(/hello/) });
    ws.close();
    const plain = await call("/v1/workers/connect?model=alpha", { headers: WORKER });
    expectError(plain, 426, "bad_request", /WebSocket/);
  });
});
