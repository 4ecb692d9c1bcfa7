// The caller API: submit inference, read, watch and cancel jobs (only the key that made a job may), list models.
import { type Context, Hono } from "hono";
import { ErrorCode, FINAL_STATUSES, InferRequest, type JobView } from "../../shared/index.ts";
import { openAiModel } from "../../shared/protocol/openai.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { ApiError } from "../errors.ts";
import { pipeEvents, watchEvents } from "../event-streams.ts";
import { byModel, sumStats } from "../metrics/shard-sum.ts";
import { eachQueue, readJson, stubOfId } from "../request.ts";
import { ownerOf, submitJob, submitStreamed, succeededOrThrow } from "../submit.ts";

export const callerRoutes = new Hono<HonoEnv>();
const authorised = requireKey("caller");

callerRoutes.post("/v1/infer", authorised, async (c) => {
  const { stream, ...body } = await readJson(c, InferRequest, "request body");
  if (stream) {
    const { job, events } = await submitStreamed(c, body, "sse");
    return pipeEvents(c, job.id, events);
  }
  const job = await submitJob(c, body);
  return answerJob(c, job, body.wait);
});

/**
 * A job's events as Server-Sent Events, also POST /v1/infer's with `stream` (edge/model-queue/job-events.ts, handed
 * on by edge/event-streams.ts): `queued` / `leased` with item counts, `token` deltas, `output` (or `error`) per
 * input as soon as it is final, then `completed`, `failed`, `expired` or `cancelled` with the whole job.
 */
callerRoutes.get("/v1/jobs/:id/events", authorised, (c) => watchEvents(c, c.req.param("id")));

function answerJob(c: Context<HonoEnv>, job: JobView, waited: boolean) {
  if (!waited && !FINAL_STATUSES.includes(job.status)) {
    return c.json({ id: job.id, status: job.status }, 202, { Location: `/v1/jobs/${encodeURIComponent(job.id)}` });
  }
  const done = succeededOrThrow(job);
  const { id, model, outputs, timings, trace, generation } = done;
  return c.json({ id, model, outputs, timings, trace, ...(generation ? { generation } : {}) });
}

callerRoutes.get("/v1/jobs/:id", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = stubOfId(c, id, "job");
  const job = await queue.job(id, await ownerOf(c));
  // Another key's job answers as one that does not exist: nothing tells a caller which ids are in use.
  if (!job)
    throw new ApiError(404, ErrorCode.jobNotFound, `no job ${id} (never accepted, or its result passed result_ttl_ms)`);
  const { created_at: _created, ...view } = job as JobView;
  return c.json(view);
});

/**
 * Cancels a job: its queued inputs are dropped, workers holding only its inputs are told to stop, waiting
 * callers get a 409 `cancelled`; answers the job as it ended. 409 `job_finished` for a job that had ended.
 */
callerRoutes.delete("/v1/jobs/:id", authorised, async (c) => {
  const id = c.req.param("id");
  const { name, queue } = stubOfId(c, id, "job");
  const result = await queue.cancelJob(name, id, await ownerOf(c));
  if ("job" in result) {
    const { created_at: _created, ...view } = result.job as JobView;
    return c.json(view);
  }
  const message =
    result.status === 404 ? `no job ${id} (never accepted, or its result passed result_ttl_ms)` : result.message;
  throw new ApiError(result.status, result.code, message);
});

callerRoutes.get("/v1/models", authorised, async (c) => {
  const { results, failed } = await eachQueue(c, (queue, name) => queue.stats(name));
  const stats = new Map([...byModel(results)].map(([model, shards]) => [model, sumStats(shards)]));
  const models = [...c.get("config").models.values()].map(({ files: _files, ...config }) => {
    const s = stats.get(config.name);
    return {
      ...config,
      queue_depth: s?.queued ?? null,
      in_flight: s?.in_flight ?? null,
      workers: s?.workers ?? null,
    };
  });
  // OpenAI's list beside EdgeSwarm's own, so `openai.models.list()` and the chat apps that call it find the models.
  const now = Date.now();
  const data = [...c.get("config").models.values()].map((m) => openAiModel(m, now));
  return c.json({ models, ...(failed.length > 0 ? { unavailable: failed } : {}), object: "list", data });
});
