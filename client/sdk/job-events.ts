// Reads a job's Server-Sent Events (GET /v1/jobs/{id}/events, POST /v1/infer with stream: true) as typed
// JobEvents, parsed by eventsource-parser. The iteration ends with the job's end event; a stream that closes
// before it throws stream_ended. Leaving the loop early closes the connection. Used by client.ts.
import { createParser, type EventSourceMessage, type ParseError } from "eventsource-parser";
import { isJob, isJobStatus, isRecord } from "./answer-shapes.ts";
import { ClientErrorCode, EdgeSwarmError } from "./errors.ts";
import { bodyReader, invalidResponse } from "./transport.ts";
import type { JobEvent } from "./types.ts";

const COUNT_EVENTS: ReadonlySet<string> = new Set(["queued", "leased"]);
const END_EVENTS: ReadonlySet<string> = new Set(["completed", "failed", "expired", "cancelled"]);

/**
 * The most one event may hold while it arrives: the end event carries every output of the job (a call of
 * 256 embeddings is a few MB of JSON). Past it the stream is taken for broken rather than buffered on.
 */
const MAX_EVENT_CHARS = 64 * 1024 * 1024;

/** The event as a JobEvent; undefined for an event this SDK does not know (a newer coordinator's), to skip. */
function toJobEvent<T>(message: EventSourceMessage, status: number): JobEvent<T> | undefined {
  const name = message.event ?? "";
  const known =
    COUNT_EVENTS.has(name) || END_EVENTS.has(name) || name === "output" || name === "error" || name === "token";
  if (!known) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(message.data);
  } catch {
    throw invalidResponse(status, `job event "${name}" has data that is not JSON: ${message.data.slice(0, 200)}`);
  }
  const fits =
    (COUNT_EVENTS.has(name) && isRecord(data) && isJobStatus(data.status) && isRecord(data.items)) ||
    (name === "output" && isRecord(data) && typeof data.index === "number" && "output" in data) ||
    (name === "token" && isRecord(data) && typeof data.offset === "number" && typeof data.text === "string") ||
    (name === "error" && isRecord(data) && typeof data.index === "number" && typeof data.code === "string") ||
    (END_EVENTS.has(name) && isJob(data));
  if (!fits) throw invalidResponse(status, `job event "${name}" does not have the shape this SDK expects`, data);
  return { event: name, data } as JobEvent<T>;
}

/**
 * The events of an open text/event-stream answer, up to and with the job's end event. When `signal` aborts,
 * the iteration throws its reason and the download stops, whether or not the fetch that made `res` ends the
 * body on abort itself (bodyReader), also while the caller holds the iteration between events.
 */
export async function* readJobEvents<T>(
  res: Response,
  signal?: AbortSignal,
): AsyncGenerator<JobEvent<T>, void, undefined> {
  if (!res.body) throw invalidResponse(res.status, "the event stream answer has no body");
  const reader = bodyReader(res.body, signal);
  const decoder = new TextDecoder();
  const messages: EventSourceMessage[] = [];
  let overflow: ParseError | undefined;
  const parser = createParser({
    onEvent: (message) => messages.push(message),
    // Unknown fields and bad retry values are ignored, as the SSE spec says; only overflow ends the stream.
    onError: (error) => {
      if (error.type === "max-buffer-size-exceeded") overflow = error;
    },
    maxBufferSize: MAX_EVENT_CHARS,
  });
  try {
    for (let done = false; ; ) {
      for (let message = messages.shift(); message; message = messages.shift()) {
        signal?.throwIfAborted();
        const event = toJobEvent<T>(message, res.status);
        if (!event) continue;
        yield event;
        if (END_EVENTS.has(event.event)) return;
      }
      if (overflow) throw invalidResponse(res.status, `a job event longer than ${MAX_EVENT_CHARS} characters`);
      if (done) break;
      const chunk = await reader.read();
      done = chunk.done;
      // An event the stream ends in the middle of is dropped, as the SSE spec says (and browsers do).
      parser.feed(done ? decoder.decode() : decoder.decode(chunk.value, { stream: true }));
    }
    throw new EdgeSwarmError({
      status: res.status,
      code: ClientErrorCode.streamEnded,
      message: "the job's event stream closed before the job ended; GET /v1/jobs/{id} or watch it again",
    });
  } finally {
    // Stops the download when the caller leaves the loop early; a no-op on a stream that has ended.
    reader.close();
  }
}
