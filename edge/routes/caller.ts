// The caller API: submit inference, read jobs, list models.
import { type Context, Hono } from "hono";
import { ErrorCode, FINAL_STATUSES, InferRequest, type JobView } from "../../shared/index.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { ApiError } from "../errors.ts";
import { eachQueue, queueOfId, readJson } from "../request.ts";
import { submitJob, succeededOrThrow } from "../submit.ts";

export const callerRoutes = new Hono<HonoEnv>();
const authorised = requireKey("caller");

callerRoutes.post("/v1/infer", authorised, async (c) => {
  const body = await readJson(c, InferRequest, "request body");
  const job = await submitJob(c, body);
  return answerJob(c, job, body.wait);
});

function answerJob(c: Context<HonoEnv>, job: JobView, waited: boolean) {
  if (!waited && !FINAL_STATUSES.includes(job.status)) {
    return c.json({ id: job.id, status: job.status }, 202, { Location: `/v1/jobs/${encodeURIComponent(job.id)}` });
  }
  const done = succeededOrThrow(job);
  return c.json({ id: done.id, model: done.model, outputs: done.outputs, timings: done.timings });
}

callerRoutes.get("/v1/jobs/:id", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = queueOfId(c, id, "job");
  const job = await queue.job(id);
  if (!job)
    throw new ApiError(404, ErrorCode.jobNotFound, `no job ${id} (never accepted, or its result passed result_ttl_ms)`);
  const { created_at: _created, ...view } = job as JobView;
  return c.json(view);
});

callerRoutes.get("/v1/models", authorised, async (c) => {
  const { results, failed } = await eachQueue(c, (queue, m) => queue.stats(m.name));
  const stats = new Map(results.map((r) => [r.model.name, r.value]));
  const models = [...c.get("config").models.values()].map(({ files: _files, ...config }) => {
    const s = stats.get(config.name);
    return {
      ...config,
      queue_depth: s?.queued ?? null,
      in_flight: s?.in_flight ?? null,
      workers: s?.workers ?? null,
    };
  });
  return c.json({ models, ...(failed.length > 0 ? { unavailable: failed } : {}) });
});
