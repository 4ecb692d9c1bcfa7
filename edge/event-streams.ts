// A job's event stream, as the queue object writes it (model-queue/job-events.ts: Server-Sent Events or OpenAI's
// chunks), handed to the caller unread: piped natively, so no JavaScript runs a chunk. A caller that hangs up
// ends the pipe (the request's signal before the answer starts, a failed write after: the stream's next event
// or keep-alive), and the queue is told to drop the stream (ModelQueue.unwatch); when the stream ends, a traced
// call's span ends with the job as it then stands; with `cancelOnHangUp`, a caller that left before the
// stream's end cancels its job, so no worker generates for nobody.
import type { Context } from "hono";
import { ErrorCode } from "../shared/index.ts";
import type { HonoEnv } from "./app-env.ts";
import { ApiError } from "./errors.ts";
import { newWatch, streamRefusalMessage } from "./model-queue/job-events.ts";
import { afterAnswer, stubOfId } from "./request.ts";
import { ownerOf, type Watched } from "./submit.ts";
import { streamClosed } from "./telemetry/call-trace.ts";

/** GET /v1/jobs/{id}/events: the job's events from now, or a 404 / 429 saying why not. */
export async function watchEvents(c: Context<HonoEnv>, id: string): Promise<Response> {
  const { model, name, queue } = stubOfId(c, id, "job");
  const watch = newWatch("sse");
  const events = await queue.watchJob(name, id, await ownerOf(c), watch);
  if (events === "not_found") {
    throw new ApiError(404, ErrorCode.jobNotFound, `no job ${id} (never accepted, or its result passed result_ttl_ms)`);
  }
  if (typeof events === "string") {
    throw new ApiError(
      429,
      ErrorCode.queueFull,
      `${streamRefusalMessage(events, model)}; poll GET /v1/jobs/${id} or retry`,
      {
        headers: { "Retry-After": "5" },
      },
    );
  }
  return pipeEvents(c, id, { stream: events, key: watch.key });
}

/** The answer that hands `events`, job `id`'s stream, to the caller. */
export function pipeEvents(
  c: Context<HonoEnv>,
  id: string,
  events: Watched,
  { cancelOnHangUp = false } = {},
): Response {
  const { name, queue } = stubOfId(c, id, "job");
  const { readable, writable } = new IdentityTransformStream();
  const ended = events.stream.pipeTo(writable, { signal: c.req.raw.signal }).then(
    () => true,
    () => false,
  );
  afterAnswer(
    c,
    ended.then(async (whole) => {
      const owner = await ownerOf(c);
      if (!whole) {
        // The queue learns of the hang-up from here (WatchRequest) and frees the stream's place.
        await Promise.all([
          queue.unwatch(name, events.key).catch(() => {}),
          cancelOnHangUp ? queue.cancelJob(name, id, owner, "hung_up").catch(() => {}) : undefined,
        ]);
      }
      if (c.get("callTrace")) streamClosed(c, await queue.job(id, owner).catch(() => null));
    }),
  );
  return c.body(readable, 200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
}
