// The worker's compute spans (worker-gpu/tracing.ts) through OpenTelemetry's OTLP exporter to a receiver that
// decodes them with the protocol's own definitions: parented by the item's traceparent, answered with the
// span's own id, timed by the batch, an item's error as the span's status.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseTraceparent } from "../../shared/index.ts";
import { startTracing } from "../../worker-gpu/tracing.ts";
import { type OtlpReceiver, startOtlpReceiver } from "../support/otlp-receiver.ts";

const TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT = `00-${TRACE}-00f067aa0ba902b7-01`;
let receiver: OtlpReceiver;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
});
afterAll(() => receiver.close());

describe("worker compute spans", () => {
  it("exports one span per traced item, in the item's trace, under its parent", async () => {
    const tracing = startTracing(
      { url: `${receiver.endpoint}/v1/traces`, headers: { "x-test": "1" }, serviceName: "edgeswarm-worker" },
      "w-1",
      "gpu",
    );
    const run = {
      model: "sentiment",
      device: "cpu",
      leaseId: "l-1",
      batchSize: 2,
      startedAt: 1_800_000_000_000,
      endedAt: 1_800_000_000_012.5,
    };
    const ok = tracing.traceItem(PARENT, { ...run, index: 0 });
    const failed = tracing.traceItem(PARENT, { ...run, index: 1, error: { code: "invalid_input", message: "empty" } });
    expect(tracing.traceItem("junk", { ...run, index: 0 })).toBeNull();
    await tracing.shutdown();

    const spans = await receiver.waitFor((s) => s.length >= 2);
    expect(receiver.refused).toEqual([]);
    expect(spans.map((s) => s.spanId)).toEqual([ok, failed].map((t) => parseTraceparent(t)?.spanId));
    for (const s of spans) {
      expect(s).toMatchObject({
        service: "edgeswarm-worker",
        name: "compute sentiment",
        traceId: TRACE,
        parentSpanId: "00f067aa0ba902b7",
      });
      expect(s.startMs).toBe(1_800_000_000_000);
      expect(s.endMs).toBeCloseTo(1_800_000_000_012.5, 3);
      expect(s.attributes).toMatchObject({
        "edgeswarm.device": "cpu",
        "edgeswarm.lease.id": "l-1",
        "edgeswarm.batch.size": 2,
      });
    }
    expect(spans[0]?.status).toBe(0);
    expect(spans[1]).toMatchObject({
      status: 2,
      attributes: { "error.type": "invalid_input", "edgeswarm.batch.index": 1 },
    });
  });
});
