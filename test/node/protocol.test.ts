import { describe, expect, it } from "vitest";
import { InferRequest } from "../../shared/protocol/caller.ts";
import { ErrorCode } from "../../shared/protocol/errors.ts";
import { describeIssues, ProtocolError, parseJsonText, parseWith } from "../../shared/protocol/validate.ts";
import { CompleteBody, ItemResult, LeaseRequest, WorkerFrame, WorkerInfo } from "../../shared/protocol/worker.ts";

const LEASE = "alpha:0123456789abcdef0123456789abcdef";
const hello = { type: "hello", worker_id: "w1", pool: "browser", device: "webgpu", max_batch_size: 8 };

describe("WorkerFrame", () => {
  it("parses hello and defaults max_concurrent_batches to 1", () => {
    const f = WorkerFrame.parse({ ...hello, version: 1 });
    expect(f).toEqual({ ...hello, version: 1, max_concurrent_batches: 1 });
  });

  it("parses extend with and without extend_ms", () => {
    expect(WorkerFrame.parse({ type: "extend", lease_id: LEASE })).toEqual({ type: "extend", lease_id: LEASE });
    expect(WorkerFrame.parse({ type: "extend", lease_id: LEASE, extend_ms: 500 })).toEqual({
      type: "extend",
      lease_id: LEASE,
      extend_ms: 500,
    });
  });

  it("parses complete with outputs and errors, defaulting retryable to false", () => {
    const f = WorkerFrame.parse({
      type: "complete",
      lease_id: LEASE,
      compute_ms: 12.5,
      results: [{ output: { label: "POSITIVE", score: 0.9 } }, { error: { code: "bad_input", message: "no" } }],
    });
    expect(f.type).toBe("complete");
    if (f.type !== "complete") return;
    expect(f.results).toEqual([
      { output: { label: "POSITIVE", score: 0.9 } },
      { error: { code: "bad_input", message: "no", retryable: false } },
    ]);
    expect(f.compute_ms).toBe(12.5);
  });

  it("parses complete with a null output", () => {
    const f = WorkerFrame.parse({ type: "complete", lease_id: LEASE, results: [{ output: null }] });
    expect(f.type === "complete" && f.results).toEqual([{ output: null }]);
  });

  it("parses release with and without a reason", () => {
    expect(WorkerFrame.parse({ type: "release", lease_id: LEASE })).toEqual({ type: "release", lease_id: LEASE });
    expect(WorkerFrame.parse({ type: "release", lease_id: LEASE, reason: "shutting down" })).toEqual({
      type: "release",
      lease_id: LEASE,
      reason: "shutting down",
    });
  });

  it.each([
    ["an unknown type", { type: "goodbye", lease_id: LEASE }],
    ["no type", { lease_id: LEASE }],
    ["not an object", "hello"],
    ["null", null],
    ["hello without worker_id", { ...hello, worker_id: undefined }],
    ["hello without pool", { type: "hello", worker_id: "w", device: "cpu", max_batch_size: 1 }],
    ["hello with an unknown pool", { ...hello, pool: "tpu" }],
    ["hello with max_batch_size 0", { ...hello, max_batch_size: 0 }],
    ["hello with an unknown field", { ...hello, colour: "red" }],
    ["extend without lease_id", { type: "extend" }],
    ["extend with an empty lease_id", { type: "extend", lease_id: "" }],
    ["extend with extend_ms 0", { type: "extend", lease_id: LEASE, extend_ms: 0 }],
    ["extend with an unknown field", { type: "extend", lease_id: LEASE, extra: 1 }],
    ["complete without results", { type: "complete", lease_id: LEASE }],
    ["complete without lease_id", { type: "complete", results: [] }],
    ["complete with negative compute_ms", { type: "complete", lease_id: LEASE, results: [], compute_ms: -1 }],
    [
      "a result with both output and error",
      { type: "complete", lease_id: LEASE, results: [{ output: 1, error: { code: "x", message: "y" } }] },
    ],
    ["a result with neither output nor error", { type: "complete", lease_id: LEASE, results: [{}] }],
    ["a result whose error has no code", { type: "complete", lease_id: LEASE, results: [{ error: { message: "y" } }] }],
    ["a result with an unknown field", { type: "complete", lease_id: LEASE, results: [{ output: 1, extra: 2 }] }],
    ["release without lease_id", { type: "release" }],
    ["release with an unknown field", { type: "release", lease_id: LEASE, extra: 1 }],
  ])("rejects %s", (_label, frame) => {
    expect(WorkerFrame.safeParse(frame).success).toBe(false);
  });
});

describe("ItemResult and CompleteBody", () => {
  it("accepts an error marked retryable", () => {
    expect(ItemResult.parse({ error: { code: "oom", message: "", retryable: true } })).toEqual({
      error: { code: "oom", message: "", retryable: true },
    });
  });

  it("rejects a result without its output (frames are JSON.parse'd, so an output present is JSON)", () => {
    expect(ItemResult.safeParse({ output: undefined }).success).toBe(false);
    expect(ItemResult.safeParse({}).success).toBe(false);
    expect(ItemResult.safeParse(JSON.parse('{"output":{"label":"ok","score":[1,null]}}')).success).toBe(true);
  });

  it("accepts an empty results list (the edge checks the count against the batch)", () => {
    expect(CompleteBody.parse({ results: [] })).toEqual({ results: [] });
  });
});

describe("WorkerInfo and LeaseRequest", () => {
  it("WorkerInfo bounds max_batch_size and max_concurrent_batches", () => {
    const info = { worker_id: "w", pool: "gpu", device: "cuda", max_batch_size: 4096 };
    expect(WorkerInfo.safeParse(info).success).toBe(true);
    expect(WorkerInfo.safeParse({ ...info, max_batch_size: 4097 }).success).toBe(false);
    expect(WorkerInfo.safeParse({ ...info, max_concurrent_batches: 65 }).success).toBe(false);
  });

  it("LeaseRequest defaults wait_ms and refuses unknown fields and long polls over 60 s", () => {
    const req = { model: "alpha", worker_id: "w", pool: "gpu", device: "cuda", max_batch_size: 4 };
    expect(LeaseRequest.parse(req)).toEqual({ ...req, max_concurrent_batches: 1, wait_ms: 20_000 });
    expect(LeaseRequest.safeParse({ ...req, extra: true }).success).toBe(false);
    expect(LeaseRequest.safeParse({ ...req, wait_ms: 60_001 }).success).toBe(false);
    expect(LeaseRequest.safeParse({ ...req, wait_ms: 0 }).success).toBe(true);
  });
});

describe("InferRequest", () => {
  const ok = { model: "sentiment", inputs: ["I love it"] };

  it("defaults wait to true", () => {
    expect(InferRequest.parse(ok)).toEqual({ ...ok, wait: true, stream: false });
  });

  it("keeps wait: false and the optional fields", () => {
    const req = { ...ok, wait: false, stream: true, priority: 2, timeout_ms: 1_000, session: "s", pool: "gpu" };
    expect(InferRequest.parse(req)).toEqual(req);
  });

  it("accepts any JSON inputs", () => {
    const inputs = [null, 1, "x", [1, 2], { text: "a", nested: { n: [true] } }];
    expect(InferRequest.parse({ model: "m", inputs }).inputs).toEqual(inputs);
  });

  it.each([
    ["empty inputs", { ...ok, inputs: [] }],
    ["missing inputs", { model: "sentiment" }],
    ["inputs not an array", { ...ok, inputs: "I love it" }],
    ["missing model", { inputs: ["x"] }],
    ["a model with a space", { ...ok, model: "my model" }],
    ["a model with a slash", { ...ok, model: "org/model" }],
    ["a model with a colon", { ...ok, model: "a:b" }],
    ["a model starting with a dash", { ...ok, model: "-m" }],
    ["an empty model", { ...ok, model: "" }],
    ["a model of 65 characters", { ...ok, model: "m".repeat(65) }],
    ["wait as a string", { ...ok, wait: "true" }],
    ["wait as a number", { ...ok, wait: 1 }],
    ["wait null", { ...ok, wait: null }],
    ["a negative priority", { ...ok, priority: -1 }],
    ["a fractional priority", { ...ok, priority: 0.5 }],
    ["timeout_ms 0", { ...ok, timeout_ms: 0 }],
    ["an empty session", { ...ok, session: "" }],
    ["a session of 129 characters", { ...ok, session: "s".repeat(129) }],
    ["an unknown field", { ...ok, streaming: true }],
  ])("rejects %s", (_label, body) => {
    expect(InferRequest.safeParse(body).success).toBe(false);
  });

  it("accepts a model name of 64 characters", () => {
    expect(InferRequest.safeParse({ ...ok, model: "m".repeat(64) }).success).toBe(true);
  });
});

describe("parseWith", () => {
  it("returns the parsed value on success", () => {
    const v = parseWith(InferRequest, { model: "m", inputs: [1] }, "request");
    expect(v).not.toBeInstanceOf(ProtocolError);
    expect(v).toEqual({ model: "m", inputs: [1], wait: true, stream: false });
  });

  it("returns a validation ProtocolError naming the field", () => {
    const e = parseWith(InferRequest, { model: "m", inputs: [] }, "request");
    expect(e).toBeInstanceOf(ProtocolError);
    if (!(e instanceof ProtocolError)) return;
    expect(e.code).toBe(ErrorCode.validation);
    expect(e.name).toBe("ProtocolError");
    expect(e.message).toMatch(/^invalid request: /);
    expect(e.message).toContain("inputs: must hold at least one input");
  });

  it("names a nested field by its dotted path", () => {
    const e = parseWith(WorkerFrame, { type: "complete", lease_id: LEASE, results: [{ output: 1 }, {}] }, "frame");
    expect(e).toBeInstanceOf(ProtocolError);
    expect((e as ProtocolError).message).toContain("results.1");
  });

  it("names an unknown field", () => {
    const e = parseWith(InferRequest, { model: "m", inputs: [1], colour: "red" }, "request");
    expect((e as ProtocolError).message).toContain("colour");
  });

  it("says 'body' when the whole value is wrong", () => {
    const e = parseWith(InferRequest, "not an object", "request");
    expect((e as ProtocolError).message).toMatch(/^invalid request: body: /);
  });

  it("lists several problems, at most five", () => {
    const e = parseWith(InferRequest, { model: "bad model", inputs: [], wait: "no" }, "request") as ProtocolError;
    expect(e.message).toContain("model: ");
    expect(e.message).toContain("inputs: ");
    expect(e.message).toContain("wait: ");
    const many = InferRequest.safeParse({
      a: 1,
      model: 1,
      inputs: 1,
      wait: 1,
      priority: "x",
      timeout_ms: "x",
      session: 1,
    });
    expect(many.success).toBe(false);
    if (many.success) return;
    expect(many.error.issues.length).toBeGreaterThan(5);
    expect(describeIssues(many.error).split("; ")).toHaveLength(5);
  });
});

describe("parseJsonText", () => {
  it("parses valid JSON", () => {
    expect(parseJsonText('{"a":[1,null]}', "body")).toEqual({ a: [1, null] });
    expect(parseJsonText("null", "body")).toBeNull();
  });

  it.each(["", "{", "{'a':1}", "undefined", '{"a":1,}'])("returns an invalid_json ProtocolError for %j", (text) => {
    const e = parseJsonText(text, "request body");
    expect(e).toBeInstanceOf(ProtocolError);
    if (!(e instanceof ProtocolError)) return;
    expect(e.code).toBe(ErrorCode.invalidJson);
    expect(e.message).toMatch(/^request body is not valid JSON: ./);
  });
});
