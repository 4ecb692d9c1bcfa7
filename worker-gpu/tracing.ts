// The worker's compute spans, recorded with OpenTelemetry's SDK and exported as OTLP/HTTP protobuf when an
// endpoint is set (--otlp-endpoint, or OpenTelemetry's own OTEL_EXPORTER_OTLP_* variables); off otherwise.
// One span per traced item, parented by the traceparent its batch carried (the coordinator's span of the
// call), so a request's spans share one trace across edge and worker; the span's id is what the item's result
// reports back. worker.ts passes traceItem to the worker loop's hook and shuts the exporter down on drain.
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, type TraceFlags, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { formatTraceparent, type OtlpExport, parseTraceparent } from "../shared/index.ts";
import type { ItemRun } from "../shared/worker-loop/model-connection.ts";

export interface WorkerTracing {
  /** The item's compute span, ended and queued for export; its traceparent, or null for a malformed parent. */
  traceItem(parent: string, run: ItemRun): string | null;
  /** Sends what is queued and stops. */
  shutdown(): Promise<void>;
}

export function startTracing(exp: OtlpExport, workerId: string, pool: string): WorkerTracing {
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      "service.name": exp.serviceName,
      "service.instance.id": workerId,
      "edgeswarm.pool": pool,
    }),
    // A second between exports: a batch's spans go out together, and a trace shows up while one looks for it.
    spanProcessors: [
      new BatchSpanProcessor(new OTLPTraceExporter({ url: exp.url, headers: exp.headers }), {
        scheduledDelayMillis: 1_000,
      }),
    ],
  });
  const tracer = provider.getTracer("edgeswarm-worker");
  return {
    traceItem(parent, run) {
      const p = parseTraceparent(parent);
      if (!p) return null;
      const context = trace.setSpanContext(ROOT_CONTEXT, {
        traceId: p.traceId,
        spanId: p.spanId,
        traceFlags: Number.parseInt(p.flags, 16) as TraceFlags,
        isRemote: true,
      });
      const span = tracer.startSpan(
        `compute ${run.model}`,
        {
          kind: SpanKind.CONSUMER,
          startTime: run.startedAt,
          attributes: {
            "edgeswarm.model": run.model,
            "edgeswarm.device": run.device,
            "edgeswarm.lease.id": run.leaseId,
            "edgeswarm.batch.index": run.index,
            "edgeswarm.batch.size": run.batchSize,
          },
        },
        context,
      );
      if (run.error) {
        span.setAttribute("error.type", run.error.code);
        span.setStatus({ code: SpanStatusCode.ERROR, message: run.error.message });
      }
      span.end(run.endedAt);
      return formatTraceparent({ traceId: p.traceId, spanId: span.spanContext().spanId, flags: p.flags });
    },
    shutdown: () => provider.shutdown(),
  };
}
