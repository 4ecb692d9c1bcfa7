// The Open Inference Protocol v2 routes in real workerd, with a protocol-level worker that answers what
// each test says: health and metadata, a batch of N rows queued as N items and the outputs stacked back,
// scheduling parameters, and every kind of bad input as a 4xx in the protocol's {"error": "..."} shape.
import { env } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { app } from "../../edge/app.ts";
import { oipHealthRoutes } from "../../edge/routes/oip.ts";
import { type Answer, call, queue, SocketWorker, waitFor, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

const infer = (model: string, body: unknown, path = `/v2/models/${model}/infer`) => call(path, { body });

/** The protocol's error shape and nothing else: {"error": "<message>"}. */
function expectOipError(res: Answer, status: number, mentions: RegExp): void {
  expect({ status: res.status, body: res.body }).toMatchObject({
    status,
    body: { error: expect.stringMatching(mentions) },
  });
  expect(Object.keys(res.body)).toEqual(["error"]);
}

const tensor = (name: string, shape: number[], data: unknown[], datatype = "FP32") => ({ name, shape, datatype, data });
const x = (rows: number[][]) => tensor("x", [rows.length, rows[0]?.length ?? 0], rows.flat());
const queued = async (model: string, n: number) => waitFor(async () => (await queue(model).stats(model)).queued >= n);

describe("health and metadata", () => {
  it("is live and ready without credentials, and describes the server", async () => {
    const open = { headers: { Authorization: "" } };
    expect(await call("/v2/health/live", open)).toMatchObject({ status: 200, body: { live: true } });
    expect(await call("/v2/health/ready", open)).toMatchObject({ status: 200, body: { ready: true } });
    const server = await call("/v2", open);
    expect(server.body).toEqual({
      name: "edgeswarm",
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      extensions: ["schedule_policy"],
    });
  });

  it("is not ready, and says why, when the configuration does not load", async () => {
    const res = await oipHealthRoutes.request("/v2/health/ready", {}, { ...env, MODELS: "{not json" });
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ ready: false, error: expect.stringMatching(/misconfigured: MODELS/) });
  });

  it("gives each text task's tensors, with -1 for the batch and other variable dimensions", async () => {
    const text = { name: "text", datatype: "BYTES", shape: [-1] };
    expect((await call("/v2/models/guarded")).body).toEqual({
      name: "guarded",
      versions: ["1"],
      platform: "onnxruntime_onnx",
      inputs: [text],
      outputs: [
        { name: "label", datatype: "BYTES", shape: [-1] },
        { name: "score", datatype: "FP32", shape: [-1] },
        { name: "labels", datatype: "BYTES", shape: [-1, -1] },
        { name: "scores", datatype: "FP32", shape: [-1, -1] },
      ],
    });
    expect((await call("/v2/models/canaried/versions/1")).body).toMatchObject({
      inputs: [text],
      outputs: [{ name: "embedding", datatype: "FP32", shape: [-1, -1] }],
    });
    // A tensor model's signature is its ONNX graph's, which only workers read.
    expect((await call("/v2/models/bravo")).body).toMatchObject({ name: "bravo", inputs: [], outputs: [] });
  });

  it("says a configured model is ready, on either path form", async () => {
    expect(await call("/v2/models/bravo/ready")).toMatchObject({ status: 200, body: { name: "bravo", ready: true } });
    expect((await call("/v2/models/bravo/versions/1/ready")).body).toEqual({ name: "bravo", ready: true });
  });

  it("answers an unknown model, version or route with a 404 in the protocol's shape", async () => {
    expectOipError(await call("/v2/models/nope"), 404, /unknown model "nope".*alpha, bravo/);
    expectOipError(await call("/v2/models/nope/ready"), 404, /unknown model "nope"/);
    expectOipError(await infer("nope", { inputs: [x([[1]])] }), 404, /unknown model "nope"/);
    expectOipError(await call("/v2/models/bravo/versions/2"), 404, /no version "2"; its only version is "1"/);
    expectOipError(await infer("bravo", { inputs: [x([[1]])] }, "/v2/models/bravo/versions/7/infer"), 404, /version/);
    expectOipError(await call("/v2/nothing"), 404, /no route GET \/v2\/nothing/);
    expectOipError(await call("/v2/models/bravo/infer"), 404, /no route GET/);
  });

  it("asks for a caller key on model routes", async () => {
    expectOipError(await call("/v2/models/bravo", { headers: { Authorization: "" } }), 401, /Authorization: Bearer/);
    const res = await call("/v2/models/bravo/infer", {
      body: { inputs: [x([[1]])] },
      headers: { Authorization: "Bearer no" },
    });
    expectOipError(res, 401, /not valid/);
  });
});

describe("inference on a tensor model", () => {
  it("queues each row of the batch as one item and stacks the outputs back along the batch dimension", async () => {
    // charlie sends a batch only when 4 items are queued (its delay is a minute): one call of 4 rows fills it.
    const worker = await SocketWorker.connect("charlie");
    const answer = infer("charlie", {
      id: "call-42",
      inputs: [
        tensor(
          "x",
          [4, 2],
          [
            [1, 2],
            [3, 4],
            [5, 6],
            [7, 8],
          ],
        ), // nested as the shape
        tensor("k", [4], [10, 20, 30, 40], "INT64"),
      ],
    });
    const batch = await worker.next("batch");
    expect(batch.items).toHaveLength(4);
    expect(batch.items[1]?.input).toEqual([
      { name: "x", shape: [1, 2], datatype: "FP32", data: [3, 4] },
      { name: "k", shape: [1], datatype: "INT64", data: [20] },
    ]);
    worker.complete(batch, ([xs, ks]: { data: number[] }[]) => [
      { name: "y", shape: [1, 2], datatype: "FP32", data: xs?.data.map((v) => v * 2) },
      { name: "n", shape: [1], datatype: "INT64", data: [(ks?.data[0] ?? 0) + 1] },
    ]);
    const res = await answer;
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      model_name: "charlie",
      model_version: "1",
      id: "call-42",
      parameters: {
        job_id: expect.stringMatching(/^charlie:/),
        queued_ms: expect.any(Number),
        compute_ms: 1,
        total_ms: expect.any(Number),
      },
      outputs: [
        { name: "y", shape: [4, 2], datatype: "FP32", data: [2, 4, 6, 8, 10, 12, 14, 16] },
        { name: "n", shape: [4], datatype: "INT64", data: [11, 21, 31, 41] },
      ],
    });
  });

  it("answers only the outputs asked for, in the order asked, on the versioned path; the job id is the id when none is given", async () => {
    const worker = await SocketWorker.connect("bravo");
    const answer = call("/v2/models/bravo/versions/1/infer", {
      body: { inputs: [x([[1], [2]])], outputs: [{ name: "b" }, { name: "a" }] },
    });
    worker.complete(await worker.next("batch"), (input: { data: number[] }[]) => [
      { name: "a", shape: [1, 1], datatype: "FP32", data: input[0]?.data },
      { name: "b", shape: [1], datatype: "BOOL", data: [(input[0]?.data[0] ?? 0) > 1] },
    ]);
    const res = await answer;
    expect(res.body.outputs).toEqual([
      { name: "b", shape: [2], datatype: "BOOL", data: [false, true] },
      { name: "a", shape: [2, 1], datatype: "FP32", data: [1, 2] },
    ]);
    expect(res.body.id).toBe(res.body.parameters.job_id);
  });

  it("refuses an output the model does not give, naming the ones it does", async () => {
    const worker = await SocketWorker.connect("bravo");
    const answer = infer("bravo", { inputs: [x([[1]])], outputs: [{ name: "zz" }] });
    worker.complete(await worker.next("batch"), () => [{ name: "y", shape: [1], datatype: "FP32", data: [0] }]);
    expectOipError(await answer, 400, /no output "zz"; its outputs: y/);
  });

  it("names the rows a worker refused, once per cause, as a 422", async () => {
    const worker = await SocketWorker.connect("bravo");
    const answer = infer("bravo", { inputs: [x([[1], [2], [3]])] });
    const batch = await worker.next("batch");
    const refused = {
      code: "invalid_input",
      message: "the model has no input x (its inputs: pixels)",
      retryable: false,
    };
    worker.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: [
        { output: { name: "y", shape: [1], datatype: "FP32", data: [1] } },
        { error: refused },
        { error: refused },
      ],
    });
    expectOipError(
      await answer,
      422,
      /^2 of 3 rows failed; rows 1, 2: the model has no input x \(its inputs: pixels\)$/,
    );
  });

  it("answers 502 when the worker's outputs cannot be stacked", async () => {
    const worker = await SocketWorker.connect("bravo");
    const ragged = infer("bravo", { inputs: [x([[1], [2]])] });
    worker.complete(await worker.next("batch"), (input: { data: number[] }[]) => ({
      name: "y",
      shape: [1, input[0]?.data[0] ?? 0],
      datatype: "FP32",
      data: new Array(input[0]?.data[0] ?? 0).fill(0),
    }));
    expectOipError(await ragged, 502, /output y is FP32 \[1, 2\] in row 1, FP32 \[1, 1\] in row 0/);
    const malformed = infer("bravo", { inputs: [x([[1]])] });
    worker.complete(await worker.next("batch"), () => ({ nonsense: true }));
    expectOipError(await malformed, 502, /row 0: .*\{name, shape, datatype, data\}/);
  });

  it("reads Triton's priority (1 is the highest) and timeout (µs) parameters", async () => {
    const low = infer("alpha", { inputs: [x([[0]])], parameters: { priority: 3 } });
    await queued("alpha", 1);
    const high = infer("alpha", { inputs: [x([[1]])], parameters: { priority: 1, pool: "gpu" } });
    await queued("alpha", 2);
    const worker = await SocketWorker.connect("alpha", { max_batch_size: 1 });
    const first = await worker.next("batch");
    expect(first.items[0]?.input).toEqual([{ name: "x", shape: [1, 1], datatype: "FP32", data: [1] }]);
    const echo = (input: unknown) => input;
    worker.complete(first, echo);
    worker.complete(await worker.next("batch"), echo);
    expect((await high).status).toBe(200);
    expect((await low).status).toBe(200);

    // A call on alpha's own default timeout (5 s) goes first; the 100 ms one after it ends while that one
    // is still waiting, which only its own timeout explains, on a machine of any speed.
    worker.close();
    const onDefault = await call("/v1/infer", { body: { model: "alpha", inputs: [[1]], wait: false } });
    expectOipError(
      await infer("alpha", { inputs: [x([[1]])], parameters: { timeout: 100_000 } }),
      504,
      /timeout|expired/,
    );
    expect(["queued", "running"]).toContain((await call(`/v1/jobs/${onDefault.body.id}`)).body.status);
  });

  it("answers 429 with Retry-After when the queue is full", async () => {
    // alpha holds 12 queued items; 8 rows are waiting when 8 more arrive.
    const rows = (n: number) => x(Array.from({ length: n }, (_, i) => [i]));
    const waiting = infer("alpha", { inputs: [rows(8)], parameters: { timeout: 300_000 } });
    await queued("alpha", 8);
    const refused = await infer("alpha", { inputs: [rows(8)] });
    expectOipError(refused, 429, /queue for model "alpha" is full/);
    expect(refused.headers.get("Retry-After")).toBe("1");
    expect((await waiting).status).toBe(504);
  });
});

describe("inference on text models", () => {
  it("text-classification: a BYTES string per row in; best label, its score, then every label and score, best first", async () => {
    const worker = await SocketWorker.connect("guarded");
    const answer = infer("guarded", {
      inputs: [{ name: "text", shape: [2], datatype: "BYTES", data: ["I love this", "awful"] }],
    });
    const batch = await worker.next("batch");
    expect(batch.items.map((i) => i.input)).toEqual(["I love this", "awful"]);
    worker.complete(batch, (text: string) =>
      text === "awful"
        ? [
            { label: "POSITIVE", score: 0.25 }, // out of order: the answer sorts
            { label: "NEGATIVE", score: 0.75 },
          ]
        : [
            { label: "POSITIVE", score: 0.875 },
            { label: "NEGATIVE", score: 0.125 },
          ],
    );
    const res = await answer;
    expect(res.status).toBe(200);
    expect(res.body.outputs).toEqual([
      { name: "label", shape: [2], datatype: "BYTES", data: ["POSITIVE", "NEGATIVE"] },
      { name: "score", shape: [2], datatype: "FP32", data: [0.875, 0.75] },
      { name: "labels", shape: [2, 2], datatype: "BYTES", data: ["POSITIVE", "NEGATIVE", "NEGATIVE", "POSITIVE"] },
      { name: "scores", shape: [2, 2], datatype: "FP32", data: [0.875, 0.125, 0.75, 0.25] },
    ]);
  });

  it("feature-extraction: [batch, 1] strings in, one FP32 embedding row per string out", async () => {
    const worker = await SocketWorker.connect("canaried");
    const answer = infer("canaried", {
      inputs: [{ name: "text", shape: [2, 1], datatype: "BYTES", data: [["a"], ["b"]] }],
      outputs: [{ name: "embedding" }],
    });
    const batch = await worker.next("batch");
    expect(batch.items.map((i) => i.input)).toEqual(["a", "b"]);
    worker.complete(batch, (text: string) => (text === "a" ? [0.6, 0.8] : [1, 0]));
    expect((await answer).body.outputs).toEqual([
      { name: "embedding", shape: [2, 2], datatype: "FP32", data: [0.6, 0.8, 1, 0] },
    ]);
  });

  it("refuses what a text model cannot take, before anything is queued", async () => {
    const text = (over: Record<string, unknown>) => ({
      name: "text",
      shape: [1],
      datatype: "BYTES",
      data: ["hi"],
      ...over,
    });
    const cases: [unknown, RegExp][] = [
      [{ inputs: [text({ name: "texts" })] }, /one BYTES input named "text", shape \[batch\]; got "texts"/],
      [{ inputs: [text({}), text({ name: "other" })] }, /one BYTES input named "text"/],
      [{ inputs: [text({ datatype: "FP32", data: [1] })] }, /text must be BYTES \(UTF-8 strings\), got FP32/],
      [{ inputs: [text({ datatype: "STRING" })] }, /unknown datatype "STRING"/],
      [{ inputs: [text({ shape: [2], data: ["a", 7] })] }, /BYTES data must be strings; element 1 is 7/],
      [{ inputs: [text({ shape: [1, 2], data: ["a", "b"] })] }, /shape \[batch\] or \[batch, 1\], got \[1, 2\]/],
      [
        { inputs: [text({})], outputs: [{ name: "probabilities" }] },
        /no output "probabilities"; its outputs: label, score, labels, scores/,
      ],
    ];
    for (const [body, message] of cases) expectOipError(await infer("guarded", body), 400, message);
    expect((await queue("guarded").stats("guarded")).queued).toBe(0);
  });
});

describe("bad input", () => {
  it("refuses every malformed tensor request with a 400 that says what to fix", async () => {
    const cases: [unknown, RegExp][] = [
      [{}, /inputs/],
      [{ inputs: [] }, /at least one input tensor/],
      [{ inputs: [x([[1]])], id: 42 }, /id/],
      [{ inputs: [tensor("x", [-1, 2], [1, 2])] }, /non-negative/],
      [{ inputs: [{ name: "x", shape: [1] }] }, /data/],
      [{ inputs: [tensor("x", [2, 2], [1, 2, 3])] }, /shape \[2, 2\] needs 4 values, data has 3/],
      [{ inputs: [tensor("x", [2, 2], [[1, 2], [3]])] }, /data\[1\] holds 1 elements where shape \[2, 2\] has 2/],
      [{ inputs: [tensor("x", [2], [[1], [2]])] }, /data\[0\] is nested deeper than the shape/],
      [{ inputs: [tensor("x", [1], [1], "FLOAT")] }, /unknown datatype "FLOAT"; the protocol's are BOOL, UINT8/],
      [{ inputs: [tensor("x", [1], [1], "FP16")] }, /FP16 is not supported; tensor models take FP32, FP64, INT64/],
      [{ inputs: [tensor("x", [1], ["a"], "BYTES")] }, /BYTES is not supported/],
      [{ inputs: [tensor("x", [2], [1, "a"])] }, /FP32 data must be numbers; element 1 is "a"/],
      [{ inputs: [tensor("x", [2], [1, 1.5], "INT64")] }, /INT64 data must be integers/],
      [{ inputs: [tensor("x", [1], [300], "UINT8")] }, /UINT8 data must be integers in \[0, 255\]/],
      [{ inputs: [tensor("x", [1], [1], "BOOL")] }, /BOOL data must be true or false/],
      [{ inputs: [tensor("x", [], [1])] }, /x has no batch dimension/],
      [{ inputs: [tensor("x", [0, 2], [])] }, /batch dimension \(the first\) is 0/],
      [
        { inputs: [x([[1], [2]]), tensor("m", [3], [1, 2, 3])] },
        /disagree on the batch dimension.*x has 2 rows, m has 3/,
      ],
      [{ inputs: [x([[1]]), x([[2]])] }, /input x is given twice/],
      [
        { inputs: [x([[1]])], parameters: { timeout: "soon" } },
        /parameters.timeout must be a whole number of microseconds/,
      ],
      [{ inputs: [x([[1]])], parameters: { timeout: 10 ** 12 } }, /exceeds model "bravo"'s 300000000 µs/],
      [{ inputs: [x([[1]])], parameters: { priority: 4 } }, /parameters.priority must be 0 .* to 3 \(lowest\)/],
      [{ inputs: [x([[1]])], parameters: { pool: "cpu" } }, /parameters.pool must be "gpu" or "browser"/],
      [{ inputs: [x([[1]])], parameters: { nested: { a: 1 } } }, /parameters/],
    ];
    for (const [body, message] of cases) expectOipError(await infer("bravo", body), 400, message);
    expect((await queue("bravo").stats("bravo")).queued).toBe(0);
  });

  it("refuses more rows than the model takes per request, broken JSON, and binary tensor data", async () => {
    const nine = x(Array.from({ length: 9 }, (_, i) => [i]));
    expectOipError(
      await infer("alpha", { inputs: [nine] }),
      400,
      /9 rows sent .*model "alpha" takes at most 8 per request/,
    );
    expectOipError(await call("/v2/models/bravo/infer", { raw: '{"inputs": [' }), 400, /not valid JSON/);
    const binary = await call("/v2/models/bravo/infer", {
      raw: '{"inputs":[]}',
      headers: { "Inference-Header-Content-Length": "13" },
    });
    expectOipError(binary, 400, /binary tensor data extension is not supported/);
  });

  it("refuses a model whose task has no tensor form, pointing to /v1/infer", async () => {
    const odd = { ...env, MODELS: JSON.stringify({ models: [{ name: "odd", task: "image-segmentation" }] }) };
    const headers = { Authorization: "Bearer test-api-key", "Content-Type": "application/json" };
    const metadata = await app.request("/v2/models/odd", { headers }, odd);
    expect(await metadata.json()).toMatchObject({ name: "odd", inputs: [], outputs: [] });
    const res = await app.request(
      "/v2/models/odd/infer",
      { method: "POST", headers, body: JSON.stringify({ inputs: [x([[1]])] }) },
      odd,
    );
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: expect.stringMatching(/task "image-segmentation".*POST \/v1\/infer/) });
  });
});
