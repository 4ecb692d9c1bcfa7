// The caller API: submit inference, read jobs, list models.
import { type Context, Hono } from "hono";
import { ErrorCode, FINAL_STATUSES, InferRequest, type JobView, newId } from "../../shared/index.ts";
import type { HonoEnv } from "../app-env.ts";
import { mayUseGpuPool, requireKey } from "../auth.ts";
import { ApiError } from "../errors.ts";
import type { SubmitResult } from "../model-queue/model-queue.ts";
import { eachQueue, modelOrThrow, queueOf, queueOfId, readJson } from "../request.ts";

/** Extra time a waiting call gives the queue past the job's own deadline, so expiry is reported, not raced. */
const WAIT_GRACE_MS = 2_000;
/** A queue object that restarts mid-call is asked again (the job id makes that idempotent). */
const SUBMIT_TRIES = 3;

const REFUSAL_STATUS: Record<string, 400 | 429 | 503> = {
  [ErrorCode.queueFull]: 429,
  [ErrorCode.jobNotFound]: 503,
};

export const callerRoutes = new Hono<HonoEnv>();
const authorised = requireKey("caller");

callerRoutes.post("/v1/infer", authorised, async (c) => {
  const body = await readJson(c, InferRequest, "request body");
  const model = modelOrThrow(c, body.model);
  if (body.inputs.length > model.max_inputs_per_request) {
    throw new ApiError(
      400,
      ErrorCode.tooManyInputs,
      `${body.inputs.length} inputs sent; model "${model.name}" takes at most ${model.max_inputs_per_request} per request: split the call`,
    );
  }
  if (body.pool === "gpu" && !mayUseGpuPool(c.get("config"), c.req.header("Authorization"))) {
    throw new ApiError(
      403,
      ErrorCode.forbidden,
      'this API key may not pin calls to the gpu pool (see GPU_POOL_KEYS); leave "pool" out and the queue routes the call',
    );
  }
  const id = newId(model.name);
  const timeout = body.timeout_ms ?? model.default_timeout_ms;
  const waitMs = body.wait ? timeout + WAIT_GRACE_MS : 0;
  const queue = queueOf(c, model.name);
  const submit = {
    id,
    inputs: body.inputs,
    priority: body.priority,
    timeout_ms: body.timeout_ms,
    session: body.session,
    pool: body.pool,
  };

  let result: SubmitResult | undefined;
  for (let attempt = 1; !result; attempt++) {
    try {
      result = await queue.submit(model.name, submit, waitMs);
    } catch (error) {
      if (attempt >= SUBMIT_TRIES) {
        throw new ApiError(
          503,
          ErrorCode.upstream,
          `the queue of "${model.name}" is unavailable (${String(error)}); retry the call`,
        );
      }
    }
  }
  if (!result.ok) {
    const status = REFUSAL_STATUS[result.code] ?? 400;
    const headers: Record<string, string> = result.retryAfterS ? { "Retry-After": String(result.retryAfterS) } : {};
    throw new ApiError(status, result.code, result.message, { headers });
  }
  return answerJob(c, result.job, body.wait);
});

function answerJob(c: Context<HonoEnv>, job: JobView, waited: boolean) {
  if (!FINAL_STATUSES.includes(job.status) && waited) {
    // The queue ends every job by its deadline; a waiting call that still sees it open got no answer in time.
    throw new ApiError(
      504,
      ErrorCode.expired,
      `no result within the request's timeout; the job may still finish: GET /v1/jobs/${job.id}`,
      {
        extra: { id: job.id, status: job.status },
      },
    );
  }
  if (!FINAL_STATUSES.includes(job.status)) {
    return c.json({ id: job.id, status: job.status }, 202, { Location: `/v1/jobs/${encodeURIComponent(job.id)}` });
  }
  if (job.status === "succeeded") {
    return c.json({ id: job.id, model: job.model, outputs: job.outputs, timings: job.timings });
  }
  const error = job.error ?? { code: ErrorCode.failed, message: "job failed" };
  const extra = {
    id: job.id,
    model: job.model,
    status: job.status,
    outputs: job.outputs,
    errors: job.errors,
    timings: job.timings,
  };
  if (job.status === "expired") throw new ApiError(504, error.code, error.message, { extra });
  // Inputs the worker rejected are the caller's to fix (422); items that exhausted their attempts are ours (502).
  const ours = job.errors?.some((e) => e.code === ErrorCode.maxAttempts) ?? false;
  throw new ApiError(ours ? 502 : 422, error.code, error.message, { extra });
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
