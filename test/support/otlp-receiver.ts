// A stand-in OpenTelemetry collector for tests: an HTTP server on loopback that takes OTLP/HTTP protobuf
// trace exports at /v1/traces and decodes them with OpenTelemetry's own protocol definitions
// (test/support/otlp-proto/, loaded by protobufjs), keeping every span for the test to read.
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import protobuf from "protobufjs";

const PROTO_ROOT = new URL("./otlp-proto/", import.meta.url).pathname;

/** A span as a test reads it: ids in hex, times in ms since the epoch, attributes as plain values. */
export interface ReceivedSpan {
  service: string;
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  startMs: number;
  endMs: number;
  attributes: Record<string, unknown>;
  /** 0 unset, 1 ok, 2 error. */
  status: number;
}

export interface OtlpReceiver {
  /** The collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it. */
  endpoint: string;
  spans: ReceivedSpan[];
  /** Requests refused: a wrong path or content type, or a body the schema cannot decode. */
  refused: string[];
  /** Resolves once `predicate` holds of the spans received, or rejects after `timeoutMs`. */
  waitFor(predicate: (spans: ReceivedSpan[]) => boolean, timeoutMs?: number): Promise<ReceivedSpan[]>;
  close(): Promise<void>;
}

interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: number | string;
  doubleValue?: number;
}
interface KeyValue {
  key: string;
  value?: AnyValue;
}
interface DecodedSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind?: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: KeyValue[];
  status?: { code?: number };
}
interface DecodedRequest {
  resourceSpans?: { resource?: { attributes?: KeyValue[] }; scopeSpans?: { spans?: DecodedSpan[] }[] }[];
}

const plain = (v: AnyValue | undefined): unknown =>
  v?.stringValue ?? v?.boolValue ?? (v?.intValue !== undefined ? Number(v.intValue) : v?.doubleValue);
const attributesOf = (kvs: KeyValue[] | undefined) =>
  Object.fromEntries((kvs ?? []).map((kv) => [kv.key, plain(kv.value)]));

export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => PROTO_ROOT + target;
  await root.load("opentelemetry/proto/collector/trace/v1/trace_service.proto", { keepCase: false });
  const Request = root.lookupType("opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest");
  const Response = root.lookupType("opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse");

  const spans: ReceivedSpan[] = [];
  const refused: string[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const refuse = (why: string) => {
        refused.push(why);
        res.writeHead(400, { "Content-Type": "text/plain" }).end(why);
      };
      if (req.method !== "POST" || req.url !== "/v1/traces") return refuse(`${req.method} ${req.url}`);
      if (req.headers["content-type"] !== "application/x-protobuf")
        return refuse(`content type ${req.headers["content-type"]}`);
      let decoded: DecodedRequest;
      try {
        const message = Request.decode(Buffer.concat(chunks));
        decoded = Request.toObject(message, { longs: String, bytes: String, enums: Number }) as DecodedRequest;
      } catch (error) {
        return refuse(`undecodable body: ${(error as Error).message}`);
      }
      for (const rs of decoded.resourceSpans ?? []) {
        const service = String(attributesOf(rs.resource?.attributes)["service.name"] ?? "");
        for (const s of (rs.scopeSpans ?? []).flatMap((ss) => ss.spans ?? [])) {
          spans.push({
            service,
            name: s.name,
            kind: s.kind ?? 0,
            // bytes as base64 strings from toObject: the wire carries the ids as raw bytes
            traceId: Buffer.from(s.traceId, "base64").toString("hex"),
            spanId: Buffer.from(s.spanId, "base64").toString("hex"),
            parentSpanId: Buffer.from(s.parentSpanId ?? "", "base64").toString("hex"),
            startMs: Number(BigInt(s.startTimeUnixNano) / 1000n) / 1000,
            endMs: Number(BigInt(s.endTimeUnixNano) / 1000n) / 1000,
            attributes: attributesOf(s.attributes),
            status: s.status?.code ?? 0,
          });
        }
      }
      res.writeHead(200, { "Content-Type": "application/x-protobuf" }).end(Response.encode({}).finish());
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    spans,
    refused,
    async waitFor(predicate, timeoutMs = 15_000) {
      const until = Date.now() + timeoutMs;
      while (!predicate(spans)) {
        if (Date.now() > until)
          throw new Error(`spans never met the test's condition; received: ${JSON.stringify(spans, null, 1)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return spans;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
