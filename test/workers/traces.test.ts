// The coordinator's trace export inside real workerd (edge/telemetry/call-trace.ts), with fetch to the collector
// intercepted: off unless an endpoint is set; on, one OTLP/HTTP protobuf POST per call, the job carrying the
// coordinator's span in the caller's trace; a malformed endpoint is a configuration error /readyz names.
// test/e2e/traces.test.ts decodes what is sent against a real worker's spans.
import { env } from "cloudflare:test";
import { afterEach, describe, expect, it, vi } from "vitest";
import { app } from "../../edge/app.ts";
import { parseTraceparent } from "../../shared/index.ts";
import { TEST_API_KEY } from "../support/test-models.ts";
import { SocketWorker, wipeQueues } from "./helpers.ts";

const COLLECTOR = "https://collector.example/otlp/v1/traces";
const CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

afterEach(async () => {
  vi.restoreAllMocks();
  await wipeQueues();
});

/** Every request the app makes to the collector, answered 200 without leaving workerd. */
function collector() {
  const sent: Request[] = [];
  const real = globalThis.fetch;
  vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
    const req = new Request(input, init);
    if (!req.url.startsWith("https://collector.example/")) return real(input, init);
    sent.push(req);
    return new Response(null, { status: 200 });
  });
  return sent;
}

/** A call that does not wait, and the traceparent its item carries to a connected worker. */
async function submit(vars: typeof env) {
  const worker = await SocketWorker.connect("alpha");
  const res = await app.request(
    "/v1/infer",
    {
      method: "POST",
      headers: { Authorization: `Bearer ${TEST_API_KEY}`, "Content-Type": "application/json", traceparent: CALLER },
      body: JSON.stringify({ model: "alpha", inputs: [1], wait: false }),
    },
    vars,
  );
  const batch = await worker.next("batch");
  worker.send({ type: "complete", lease_id: batch.lease_id, results: batch.items.map((i) => ({ output: i.input })) });
  await worker.next("ack");
  return { status: res.status, carried: batch.items[0]?.traceparent };
}

const until = async (ok: () => boolean) => {
  for (let i = 0; i < 100 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
};

describe("trace export", () => {
  it("sends nothing and keeps the caller's traceparent when no endpoint is set", async () => {
    const sent = collector();
    const { status, carried } = await submit(env);
    expect(status).toBe(202);
    expect(carried).toBe(CALLER);
    expect(sent).toEqual([]);
  });

  it("sends each call's spans as OTLP protobuf to the endpoint, the job carrying the coordinator's span", async () => {
    const sent = collector();
    const vars = {
      ...env,
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: COLLECTOR,
      OTEL_EXPORTER_OTLP_HEADERS: "x-team=blue%20team",
    };
    const submitted = await submit(vars);
    expect(submitted.status).toBe(202);
    const carried = parseTraceparent(submitted.carried);
    expect(carried?.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(carried?.spanId).not.toBe("00f067aa0ba902b7");
    await until(() => sent.length > 0);
    expect(sent).toHaveLength(1);
    const req = sent[0] as Request;
    expect(req.url).toBe(COLLECTOR);
    expect(req.method).toBe("POST");
    expect(req.headers.get("content-type")).toBe("application/x-protobuf");
    expect(req.headers.get("x-team")).toBe("blue team");
    const body = new Uint8Array(await req.arrayBuffer());
    // The span ids travel as raw bytes: the coordinator's own, and its parent (the caller's).
    const hex = Array.from(body, (b) => b.toString(16).padStart(2, "0")).join("");
    expect(hex).toContain(carried?.spanId);
    expect(hex).toContain("00f067aa0ba902b7");
  });

  it("reports a malformed endpoint as a configuration error", async () => {
    const ready = await app.request("/readyz", {}, { ...env, OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" });
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({
      error: { message: expect.stringMatching(/OTEL_EXPORTER_OTLP_ENDPOINT must be an http\(s\) URL/) },
    });
  });
});
