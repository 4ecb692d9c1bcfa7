// Traces exported for real: the coordinator (`wrangler dev`, OTEL_EXPORTER_OTLP_ENDPOINT) and a real
// `edgeswarm-worker` (--otlp-endpoint) send OTLP/HTTP protobuf to a receiver that decodes it with
// OpenTelemetry's own protocol definitions; one call's spans (the coordinator's call span with accept, queue
// wait, lease and answer, and the worker's compute span of each input) share the caller's trace.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startWorker, type WorkerProcess } from "../../scripts/lib/worker-process.ts";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { parseTraceparent, randomHex } from "../../shared/index.ts";
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from "../support/otlp-receiver.ts";

const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-e2e-traces-"));
let receiver: OtlpReceiver;
let coordinator: Coordinator;
let worker: WorkerProcess;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  coordinator = await startCoordinator({
    persistTo,
    vars: { AUTH: "open", OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_SERVICE_NAME: "coordinator-under-test" },
  });
  worker = startWorker([
    ...["--coordinator", coordinator.url, "--models", "sentiment", "--device", "cpu"],
    ...["--port", "0", "--status-interval-ms", "0", "--otlp-endpoint", receiver.endpoint],
  ]);
  await worker.waitFor(/\[sentiment\] connected/, 60_000);
}, 180_000);

afterAll(async () => {
  worker?.child.kill("SIGKILL");
  await coordinator?.stop();
  await receiver?.close();
  rmSync(persistTo, { recursive: true, force: true });
});

async function infer(body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${coordinator.url}/v1/infer`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

const inTrace = (traceId: string) => (spans: ReceivedSpan[]) => spans.filter((s) => s.traceId === traceId);

describe("traces exported over OTLP/HTTP", () => {
  it("puts one call's coordinator and worker spans in the caller's trace", async () => {
    const traceId = randomHex(16);
    const callerSpan = randomHex(8);
    const answer = await infer(
      { model: "sentiment", inputs: ["I love this", "this is terrible"] },
      { traceparent: `00-${traceId}-${callerSpan}-01` },
    );
    expect(answer.status, JSON.stringify(answer.body)).toBe(200);

    const spans = inTrace(traceId)(
      await receiver.waitFor((all) => {
        const names = inTrace(traceId)(all).map((s) => s.name);
        return names.includes("answer") && names.filter((n) => n === "compute sentiment").length === 2;
      }),
    );
    expect(receiver.refused).toEqual([]);
    const call = spans.find((s) => s.name === "POST /v1/infer") as ReceivedSpan;
    expect(call).toMatchObject({
      service: "coordinator-under-test",
      kind: 2, // SERVER
      parentSpanId: callerSpan,
      attributes: {
        "edgeswarm.model": "sentiment",
        "edgeswarm.job.id": answer.body.id,
        "edgeswarm.job.status": "succeeded",
      },
    });

    // accept, queue wait, lease and answer follow each other inside the call's span.
    const phases = ["accept", "queue wait", "lease", "answer"].map((name) => spans.find((s) => s.name === name));
    for (const p of phases)
      expect(p, JSON.stringify(spans.map((s) => s.name))).toMatchObject({ parentSpanId: call.spanId });
    const [accept, wait, lease, answered] = phases as [ReceivedSpan, ReceivedSpan, ReceivedSpan, ReceivedSpan];
    expect(accept.startMs).toBeGreaterThanOrEqual(call.startMs);
    expect(wait.startMs).toBe(accept.endMs);
    expect(lease.startMs).toBe(wait.endMs);
    expect(answered.startMs).toBe(lease.endMs);
    expect(answered.endMs).toBeLessThanOrEqual(call.endMs);

    // The worker's compute spans: children of the call's span (the job carried it), one per input, with the
    // span ids the answer reports for each input.
    const compute = spans.filter((s) => s.name === "compute sentiment");
    expect(compute.map((s) => s.service)).toEqual(["edgeswarm-worker", "edgeswarm-worker"]);
    for (const s of compute) expect(s.parentSpanId).toBe(call.spanId);
    expect(compute.map((s) => s.attributes["edgeswarm.batch.index"]).sort()).toEqual([0, 1]);
    expect(parseTraceparent(answer.body.trace.traceparent)).toMatchObject({ traceId, spanId: call.spanId });
    const reported = (answer.body.trace.workers as { traceparent: string }[]).map(
      (w) => parseTraceparent(w.traceparent)?.spanId,
    );
    expect(reported.sort()).toEqual(compute.map((s) => s.spanId).sort());
    // The worker computed inside the lease the coordinator saw (the clocks are this machine's).
    for (const s of compute) {
      expect(s.startMs).toBeGreaterThanOrEqual(lease.startMs - 1);
      expect(s.endMs).toBeLessThanOrEqual(lease.endMs + 1);
    }
  });

  it("starts a trace for a call that brings none, with the call's span as its root", async () => {
    const answer = await infer({ model: "sentiment", inputs: ["great value"] });
    expect(answer.status).toBe(200);
    const traceId = parseTraceparent(answer.body.trace.traceparent)?.traceId as string;
    const spans = inTrace(traceId)(
      await receiver.waitFor((all) => inTrace(traceId)(all).some((s) => s.name === "compute sentiment")),
    );
    const call = spans.find((s) => s.name === "POST /v1/infer");
    expect(call?.parentSpanId).toBe("");
    expect(spans.find((s) => s.name === "compute sentiment")?.parentSpanId).toBe(call?.spanId);
  });

  it("keeps a streamed call's span open until its stream ends, with every phase", async () => {
    const traceId = randomHex(16);
    const res = await fetch(`${coordinator.url}/v1/infer`, {
      method: "POST",
      headers: { "Content-Type": "application/json", traceparent: `00-${traceId}-${randomHex(8)}-01` },
      body: JSON.stringify({ model: "sentiment", inputs: ["what a film"], stream: true }),
    });
    expect(await res.text()).toContain("event: completed");
    const spans = inTrace(traceId)(
      await receiver.waitFor((all) => {
        const names = inTrace(traceId)(all).map((s) => s.name);
        return names.includes("POST /v1/infer") && names.includes("compute sentiment");
      }),
    );
    const call = spans.find((s) => s.name === "POST /v1/infer") as ReceivedSpan;
    expect(call.attributes["edgeswarm.job.status"]).toBe("succeeded");
    expect(
      spans
        .filter((s) => s.parentSpanId === call.spanId)
        .map((s) => s.name)
        .sort(),
    ).toEqual(["accept", "answer", "compute sentiment", "lease", "queue wait"]);
  });

  it("marks a refused call's span with the error it answered", async () => {
    const traceId = randomHex(16);
    const refused = await infer(
      { model: "sentiment", inputs: [""] },
      { traceparent: `00-${traceId}-${randomHex(8)}-01` },
    );
    expect(refused.status).toBe(422);
    const [call] = inTrace(traceId)(await receiver.waitFor((all) => inTrace(traceId)(all).length > 0));
    expect(call).toMatchObject({
      name: "POST /v1/infer",
      status: 2,
      attributes: { "http.response.status_code": 422, "error.type": "invalid_input" },
    });
  });
});
