// Open Inference Protocol v2 (KServe, Triton): health, model metadata and tensor inference over the same
// queues, batching and leases as /v1/infer. Every error here answers {"error": "<message>"}, the protocol's
// shape, through this sub-app's own onError (Hono v4 wraps a sub-app's handlers in it when app.route mounts it).
import { type Context, Hono } from "hono";
import packageJson from "../../package.json";
import { ErrorCode, type JobView, type ModelConfig, Pool } from "../../shared/index.ts";
import {
  OIP_MODEL_VERSION,
  OIP_PLATFORM,
  OipInferRequest,
  type OipInferResponse,
  type OipModelMetadata,
  type OipParameters,
  type OipServerMetadata,
  oipSignature,
} from "../../shared/protocol/oip.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { loadConfig } from "../config.ts";
import { ApiError, messageOnlyError } from "../errors.ts";
import { pickOutputs, requestedOutputs, stackOutputs, tensorItems, textItems } from "../oip-tensors.ts";
import { modelOrThrow, readJson } from "../request.ts";
import { describeItemErrors, submitJob, succeededOrThrow } from "../submit.ts";

/** Errors answer {"error": "..."}, with the status the native API would give. */
export const oipError = messageOnlyError;

const bad = (message: string) => new ApiError(400, ErrorCode.badRequest, message);

/**
 * Liveness, readiness and server metadata read no configuration of their own, so they can be mounted
 * before the configuration middleware (as /healthz and /readyz are): then a bad configuration answers
 * /v2/health/ready with 503 rather than an error. oipRoutes includes them too.
 */
export const oipHealthRoutes = new Hono<HonoEnv>();
oipHealthRoutes.onError(oipError);

oipHealthRoutes.get("/v2/health/live", (c) => c.json({ live: true }));

oipHealthRoutes.get("/v2/health/ready", (c) => {
  try {
    loadConfig(c.env);
    return c.json({ ready: true });
  } catch (error) {
    return c.json({ ready: false, error: `the coordinator is misconfigured: ${(error as Error).message}` }, 503);
  }
});

oipHealthRoutes.get("/v2", (c) =>
  c.json({
    name: "edgeswarm",
    version: packageJson.version,
    // Triton's name for the `priority` and `timeout` request parameters, read as it defines them.
    extensions: ["schedule_policy"],
  } satisfies OipServerMetadata),
);

export const oipRoutes = new Hono<HonoEnv>();
oipRoutes.onError(oipError);
oipRoutes.route("/", oipHealthRoutes);
oipRoutes.use("/v2/models/*", requireKey("caller"));

/** The model a path names; a version other than the one each model has is a 404. */
function modelOf(c: Context<HonoEnv>): ModelConfig {
  const model = modelOrThrow(c, c.req.param("name") ?? "");
  const version = c.req.param("version");
  if (version !== undefined && version !== OIP_MODEL_VERSION) {
    throw new ApiError(
      404,
      ErrorCode.notFound,
      `model "${model.name}" has no version "${version}"; its only version is "${OIP_MODEL_VERSION}"`,
    );
  }
  return model;
}

function modelMetadata(model: ModelConfig): OipModelMetadata {
  const signature = oipSignature(model.task);
  return {
    name: model.name,
    versions: [OIP_MODEL_VERSION],
    platform: OIP_PLATFORM,
    inputs: signature?.inputs ?? [],
    outputs: signature?.outputs ?? [],
  };
}

/** The protocol's row batch as queue items, in the model's task's input format. */
function itemsOf(model: ModelConfig, inputs: OipInferRequest["inputs"]) {
  if (model.task === "tensor") return tensorItems(inputs, model);
  if (oipSignature(model.task)) return textItems(inputs, model);
  throw bad(`model "${model.name}" has task "${model.task}", which has no tensor form here; call POST /v1/infer`);
}

const wholeNumber = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/** Triton's schedule-policy parameters in the queue's terms, and EdgeSwarm's `pool`. */
function scheduling(model: ModelConfig, parameters: OipParameters = {}) {
  const { timeout, priority, pool } = parameters;
  const out: { timeout_ms?: number; priority?: number; pool?: Pool } = {};
  if (timeout !== undefined) {
    if (!wholeNumber(timeout)) throw bad(`parameters.timeout must be a whole number of microseconds, got ${timeout}`);
    if (timeout > model.max_timeout_ms * 1_000) {
      throw bad(`parameters.timeout ${timeout} µs exceeds model "${model.name}"'s ${model.max_timeout_ms * 1_000} µs`);
    }
    // 0 is "none given": the model's default_timeout_ms.
    if (timeout > 0) out.timeout_ms = Math.ceil(timeout / 1_000);
  }
  if (priority !== undefined) {
    const levels = model.priority_levels;
    if (!wholeNumber(priority) || priority > levels) {
      throw bad(
        `parameters.priority must be 0 (the model's default) or 1 (highest) to ${levels} (lowest) for model "${model.name}", got ${priority}`,
      );
    }
    // Triton counts 1 as the highest; the queue serves its highest level, levels - 1, first.
    if (priority > 0) out.priority = levels - priority;
  }
  if (pool !== undefined) {
    if (!(Pool as readonly unknown[]).includes(pool))
      throw bad(`parameters.pool must be "gpu" or "browser", got ${pool}`);
    out.pool = pool as Pool;
  }
  return out;
}

/**
 * succeededOrThrow, with the rows that failed named. Rows a worker refused are the caller's to fix: a 422,
 * as when submitJob refuses them before queueing.
 */
function succeeded(job: JobView, rows: number) {
  try {
    return succeededOrThrow(job);
  } catch (error) {
    const failed = job.errors ?? [];
    if (!(error instanceof ApiError) || (error.status !== 422 && error.status !== 502) || failed.length === 0) {
      throw error;
    }
    const message = `${failed.length} of ${rows} rows failed; ${describeItemErrors(failed, "row")}`;
    throw new ApiError(error.status, error.code, message, { headers: error.headers });
  }
}

async function infer(c: Context<HonoEnv>) {
  if (c.req.header("Inference-Header-Content-Length") !== undefined) {
    throw bad(
      "the binary tensor data extension is not supported: send tensors as JSON (tritonclient: binary_data=False)",
    );
  }
  const model = modelOf(c);
  const body = await readJson(c, OipInferRequest, "inference request");
  const known = oipSignature(model.task)?.outputs.map((o) => o.name);
  if (known) requestedOutputs(known, body.outputs);
  const inputs = itemsOf(model, body.inputs);
  const call: Parameters<typeof submitJob>[1] = {
    model: model.name,
    inputs,
    wait: true,
    ...scheduling(model, body.parameters),
  };
  const done = succeeded(await submitJob(c, call, { noun: "row" }), inputs.length);
  const timings = done.timings ?? {};
  const answer: OipInferResponse = {
    model_name: model.name,
    model_version: OIP_MODEL_VERSION,
    id: body.id ?? done.id,
    parameters: { job_id: done.id, ...timings },
    outputs: pickOutputs(stackOutputs(model.task, done.outputs ?? []), body.outputs),
  };
  return c.json(answer);
}

for (const path of ["/v2/models/:name", "/v2/models/:name/versions/:version"]) {
  oipRoutes.get(path, (c) => c.json(modelMetadata(modelOf(c))));
  // Ready once configured: the queue takes calls with no worker connected (scaling starts them).
  oipRoutes.get(`${path}/ready`, (c) => c.json({ name: modelOf(c).name, ready: true }));
  oipRoutes.post(`${path}/infer`, infer);
}

oipRoutes.all("/v2/*", (c) => {
  throw new ApiError(
    404,
    ErrorCode.notFound,
    `no route ${c.req.method} ${new URL(c.req.url).pathname}; the Open Inference Protocol routes are GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name}[/versions/1], .../ready and POST .../infer`,
  );
});
