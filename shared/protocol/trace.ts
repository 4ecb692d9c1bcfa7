// W3C Trace Context (https://www.w3.org/TR/trace-context/): a call's `traceparent` travels with its job
// to the worker that runs each input, and the worker answers with its own span of the same trace, so one
// request can be followed through edge, queue and worker.

/** version 00, 32 hex trace id, 16 hex parent (span) id, 2 hex flags; all-zero ids are invalid. */
const TRACEPARENT = /^00-(?!0{32})([0-9a-f]{32})-(?!0{16})([0-9a-f]{16})-([0-9a-f]{2})$/;

export interface TraceParent {
  traceId: string;
  spanId: string;
  flags: string;
}

/** The header parsed; null when it is absent or malformed (which the spec says to ignore). */
export function parseTraceparent(header: string | null | undefined): TraceParent | null {
  const m = header?.trim().toLowerCase().match(TRACEPARENT);
  return m ? { traceId: m[1] as string, spanId: m[2] as string, flags: m[3] as string } : null;
}

export function formatTraceparent(t: TraceParent): string {
  return `00-${t.traceId}-${t.spanId}-${t.flags}`;
}

const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));
/** Random bytes drawn a few kilobytes at a time: a worker makes a span id per input, thousands a second. */
const pool = new Uint8Array(4096);
let poolAt = pool.length;

export function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    crypto.getRandomValues(pool);
    poolAt = 0;
  }
  let hex = "";
  for (let i = poolAt; i < poolAt + bytes; i++) hex += HEX[pool[i] as number];
  poolAt += bytes;
  return hex;
}

/** A new span in the same trace, as a callee answers its caller's traceparent. */
export function childTraceparent(parent: string): string | null {
  const p = parseTraceparent(parent);
  return p ? formatTraceparent({ ...p, spanId: randomHex(8) }) : null;
}

/** The traceparent a call carries, or the start of a new trace (sampled) when it carries none. */
export function traceparentOrNew(header: string | null | undefined): string {
  const p = parseTraceparent(header);
  return p ? formatTraceparent(p) : formatTraceparent({ traceId: randomHex(16), spanId: randomHex(8), flags: "01" });
}
