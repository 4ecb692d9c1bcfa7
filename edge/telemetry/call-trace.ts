// The coordinator's spans of one call, recorded with OpenTelemetry's SDK and sent as OTLP/HTTP protobuf
// when OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; off otherwise. A server
// span for the call holds accept, queue wait, lease and answer (edge/telemetry/call-phases.ts), timed from the
// job view the queue answers; the job carries this call's span to its workers as the traceparent, so their
// compute spans (worker-gpu/tracing.ts) nest under it in the caller's trace. edge/submit.ts begins one per
// call. A Worker has no process that outlives the request to batch in, so each call's spans go out in one
// POST under ctx.waitUntil, after the answer; a collector in front of the backend batches them.
import {
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TimeInput,
  type TraceFlags,
  trace,
} from "@opentelemetry/api";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import type { Context } from "hono";
import {
  FINAL_STATUSES,
  formatTraceparent,
  type JobView,
  type OtlpExport,
  parseTraceparent,
} from "../../shared/index.ts";
import type { HonoEnv } from "../app-env.ts";
import { afterAnswer } from "../request.ts";
import { callPhases } from "./call-phases.ts";

const SCOPE = "edgeswarm-coordinator";

export interface CallOutcome {
  job?: JobView;
  /** The job is an earlier call's (Idempotency-Key): its phases are that call's, not this one's. */
  replayed?: boolean;
  /** What the call was refused with, when it was. */
  error?: { status: number; code: string; message: string };
}

export interface CallTrace {
  /** What the job carries to its workers: the caller's trace (or a new one), this call's span. */
  readonly traceparent: string;
  /** Ends the call's spans and exports them after the answer (ctx.waitUntil); only the first end counts. */
  end(outcome: CallOutcome): void;
}

/** A streamed call's trace, kept open on the request's context until its stream ends. */
export interface HeldCallTrace {
  trace: CallTrace;
  /** The job as accepted: its creation time, which end events leave out. */
  accepted: JobView;
  replayed: boolean;
}

/**
 * A streamed call's stream has closed (edge/event-streams.ts): its trace ends with `job` as it then stands, or
 * (the job could not be read) as accepted.
 */
export function streamClosed(c: Context<HonoEnv>, job: JobView | null): void {
  const held = c.get("callTrace");
  if (!held) return;
  c.set("callTrace", undefined);
  held.trace.end({ job: job ?? held.accepted, replayed: held.replayed });
}

const ms = (t: number): TimeInput => new Date(t);

/** Sends finished spans to the collector; a failure is logged, never the call's. */
async function send(exp: OtlpExport, memory: InMemorySpanExporter, provider: BasicTracerProvider): Promise<void> {
  await provider.forceFlush();
  const body = ProtobufTraceSerializer.serializeRequest(memory.getFinishedSpans());
  await provider.shutdown();
  if (!body) return;
  try {
    const res = await fetch(exp.url, {
      method: "POST",
      headers: { ...exp.headers, "Content-Type": "application/x-protobuf" },
      body,
    });
    if (!res.ok) console.warn(`trace export to ${exp.url} answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
    else await res.body?.cancel();
  } catch (error) {
    console.warn(`trace export to ${exp.url} failed: ${(error as Error).message}`);
  }
}

/** A call's trace, or undefined when tracing is off. `receivedAt`: when the call arrived, ms since the epoch. */
export function beginCallTrace(c: Context<HonoEnv>, model: string, receivedAt = Date.now()): CallTrace | undefined {
  const exp = c.get("config").tracing;
  if (!exp) return undefined;
  const memory = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ "service.name": exp.serviceName }),
    spanProcessors: [new SimpleSpanProcessor(memory)],
  });
  const tracer = provider.getTracer(SCOPE);
  const caller = parseTraceparent(c.req.header("traceparent"));
  const parent = caller
    ? trace.setSpanContext(ROOT_CONTEXT, {
        traceId: caller.traceId,
        spanId: caller.spanId,
        traceFlags: Number.parseInt(caller.flags, 16) as TraceFlags,
        isRemote: true,
      })
    : ROOT_CONTEXT;
  const route = `${c.req.method} ${c.req.routePath}`;
  const call: Span = tracer.startSpan(
    route,
    {
      kind: SpanKind.SERVER,
      startTime: ms(receivedAt),
      attributes: { "http.request.method": c.req.method, "http.route": c.req.routePath, "edgeswarm.model": model },
    },
    parent,
  );
  const own = call.spanContext();
  const inCall = trace.setSpan(ROOT_CONTEXT, call);
  let ended = false;
  return {
    traceparent: formatTraceparent({
      traceId: own.traceId,
      spanId: own.spanId,
      flags: own.traceFlags.toString(16).padStart(2, "0"),
    }),
    end({ job, replayed = false, error }) {
      if (ended) return;
      ended = true;
      const answeredAt = Date.now();
      if (job) {
        call.setAttributes({
          "edgeswarm.job.id": job.id,
          "edgeswarm.job.status": job.status,
          "edgeswarm.job.replayed": replayed,
        });
        for (const phase of callPhases(job, receivedAt, answeredAt, replayed)) {
          tracer
            .startSpan(phase.name, { kind: SpanKind.INTERNAL, startTime: ms(phase.start) }, inCall)
            .end(ms(phase.end));
        }
        if (job.generation) {
          call.setAttributes({
            "edgeswarm.generation.ttft_ms": job.generation.ttft_ms,
            "edgeswarm.generation.tokens": job.generation.tokens,
          });
        }
        if (FINAL_STATUSES.includes(job.status) && job.status !== "succeeded")
          call.setStatus({ code: SpanStatusCode.ERROR, message: job.error?.message ?? job.status });
      }
      if (error) {
        call.setAttributes({ "http.response.status_code": error.status, "error.type": error.code });
        call.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      }
      call.end(ms(answeredAt));
      afterAnswer(c, send(exp, memory, provider));
    },
  };
}
