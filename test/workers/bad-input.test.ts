// Every kind of bad input gets a 4xx whose JSON error says what to fix; none reaches a 500.
import { env, SELF } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { app } from "../../edge/app.ts";
import { maxTextChars } from "../../shared/tasks/text-item.ts";
import { type Answer, CALLER, call, infer, queue, SocketWorker, WORKER, wipeQueues, workerCall } from "./helpers.ts";

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

describe("inputs the workers would refuse: 422 on every API shape, before anything is queued", () => {
  // What the workers' own parser (shared/tasks/text-item.ts) refuses, and what it says. "guarded" and
  // "canaried" take max_sequence_length 128 (the default): at most 128 * 64 characters.
  const most = maxTextChars(128);
  const tooLong = "word ".repeat(Math.ceil(most / 5));
  const BAD_TEXTS: [string, unknown, RegExp][] = [
    ["an empty string", "", /must be a non-empty string, got an empty string/],
    ["only whitespace", " \n\t", /must be a non-empty string, got only whitespace/],
    ["a number", 42, /must be a non-empty string, got a number/],
    ["an object", { text: "hi" }, /must be a non-empty string, got an object/],
    ["null", null, /must be a non-empty string, got null/],
    ["a text too long", tooLong, new RegExp(`${tooLong.length} characters; the most is ${most}`)],
  ];

  // Each API shape with "fine" at index 0 and the bad input at index 1, and how it names index 1.
  const SHAPES: Record<string, { send: (bad: unknown) => Promise<Answer>; message: (res: Answer) => string }> = {
    "POST /v1/infer": {
      send: (bad) => infer({ model: "guarded", inputs: ["fine", bad] }),
      message: (res) => res.body.error.message,
    },
    "POST /v1/embeddings": {
      send: (bad) => call("/v1/embeddings", { body: { model: "canaried", input: ["fine", bad] } }),
      message: (res) => res.body.error.message,
    },
    "POST /models/{name}": {
      send: (bad) => call("/models/guarded", { body: { inputs: ["fine", bad] } }),
      message: (res) => res.body.error,
    },
  };

  it("refuses each bad text on each API shape with 422, naming the input and what to fix, whoever is connected", async () => {
    // A trusted worker and a donor both wait on each model: neither may ever see these inputs.
    const workers = await Promise.all(
      ["guarded", "canaried"].flatMap((m) => [
        SocketWorker.connect(m),
        SocketWorker.connect(m, { donor: `donor-${m}`, network: "198.51.100" }),
      ]),
    );
    for (const [what, bad, says] of BAD_TEXTS) {
      for (const [shape, { send, message }] of Object.entries(SHAPES)) {
        const res = await send(bad);
        expect({ what, shape, status: res.status }).toEqual({ what, shape, status: 422 });
        expect(message(res)).toMatch(/^1 of 2 inputs refused, nothing was queued; input 1: /);
        expect(message(res)).toMatch(says);
      }
    }
    for (const w of workers) expect(w.has("batch")).toBe(false);
    for (const m of ["guarded", "canaried"]) {
      expect(await queue(m).stats(m)).toMatchObject({ queued: 0, in_flight: { gpu: 0, browser: 0 } });
    }
    for (const w of workers) w.close();
  });

  it("answers each API in its own shape: the native errors list, OpenAI's param and code, the rows of OIP", async () => {
    const native = await infer({ model: "guarded", inputs: ["", "fine", 7] });
    expect(native.status).toBe(422);
    expect(native.body.error.code).toBe("invalid_input");
    expect(native.body.errors).toEqual([
      { index: 0, code: "invalid_input", message: "input must be a non-empty string, got an empty string" },
      { index: 2, code: "invalid_input", message: "input must be a non-empty string, got a number" },
    ]);
    const openai = await call("/v1/embeddings", { body: { model: "canaried", input: "" } });
    expect(openai.status).toBe(422);
    expect(openai.body.error).toMatchObject({ type: "invalid_request_error", param: "input", code: "invalid_input" });
    // The protocol's text input is a BYTES tensor: its rows are the inputs, strings by the tensor's datatype.
    const rows = (data: string[]) => ({ inputs: [{ name: "text", shape: [data.length], datatype: "BYTES", data }] });
    for (const [data, says] of [
      [["fine", ""], /^1 of 2 rows refused, nothing was queued; row 1: .*got an empty string$/],
      [[" ", "fine", "x".repeat(most + 1)], /rows refused.*row 0: .*only whitespace; row 2: .*the most is/],
    ] as const) {
      const res = await call("/v2/models/guarded/infer", { body: rows([...data]) });
      expect(res.status).toBe(422);
      expect(res.body).toEqual({ error: expect.stringMatching(says) });
    }
    expect((await queue("guarded").stats("guarded")).queued).toBe(0);
  });

  it("checks a tensor model's items on their own before queueing: shape against data, values against datatype", async () => {
    // A tensor model with files, as the workers serve one: its items are parsed as the tensor task parses them.
    const tensorEnv = {
      ...env,
      MODELS: JSON.stringify({
        models: [{ name: "onnx", task: "tensor", files: { model: { path: "m.onnx", sha256: "0".repeat(64) } } }],
      }),
    };
    const tensor = (over: Record<string, unknown>) => ({
      name: "x",
      shape: [1, 2],
      datatype: "FP32",
      data: [1, 2],
      ...over,
    });
    const cases: [unknown, RegExp][] = [
      [tensor({ shape: [1, 3] }), /tensor x: shape \[1, 3\] needs 3 values, data has 2/],
      [tensor({ datatype: "INT8", data: [1, 300] }), /tensor x: INT8 data must be integers in \[-128, 127\]/],
      [tensor({ datatype: "FP16" }), /tensor 0 is not \{name, shape, datatype, data\}/],
      [[], /a non-empty list of them/],
      ["text", /got a string/],
    ];
    for (const [bad, says] of cases) {
      const res = await app.request(
        "/v1/infer",
        {
          method: "POST",
          headers: { ...CALLER, "Content-Type": "application/json" },
          body: JSON.stringify({ model: "onnx", inputs: [tensor({}), bad] }),
        },
        tensorEnv,
      );
      const body = (await res.json()) as any;
      expect(res.status).toBe(422);
      expect(body.errors.map((e: { index: number }) => e.index)).toEqual([1]);
      expect(body.error.message).toMatch(says);
    }
  });

  it("leaves a queue whose workers bring their own model to take any JSON", async () => {
    const res = await infer({ model: "alpha", inputs: ["", null, { any: "thing" }], wait: false });
    expect(res.status).toBe(202);
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
    // bravo's lease is 5 s: alpha's 150 ms could pass between these calls on a busy machine.
    await infer({ model: "bravo", inputs: [1, 2], wait: false });
    const batch = await lease({ model: "bravo", wait_ms: 1_000 });
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
