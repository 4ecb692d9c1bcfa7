// Operators' routes on one model's queue (issue 17): dead letters listed with their last errors and
// replayed, the workers and donors connected with their trust, quarantine and breaker, and a quarantine
// lifted. Operator key only (edge/auth.ts); the queue object does the work (edge/model-queue/job-admin.ts,
// worker-roster.ts).
import { Hono } from "hono";
import { z } from "zod";
import { ErrorCode, modelOfId, queueOfId } from "../../shared/index.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { ApiError } from "../errors.ts";
import { mergeDeadLetters, mergeRosters } from "../metrics/shard-sum.ts";
import { isQuarantineKind } from "../model-queue/worker-roster.ts";
import { modelOrThrow, onQueues, readJson, servedQueues } from "../request.ts";

export const queueAdminRoutes = new Hono<HonoEnv>();
const operator = requireKey("operator");

/** Dead letters listed at most per call. */
const MAX_LIST = 1_000;

const ReplayBody = z.strictObject({
  /** The jobs whose dead letters go back in the queue; leave out to replay every dead letter of the model. */
  job_ids: z.array(z.string().min(1).max(256)).min(1).max(1_000).optional(),
});

queueAdminRoutes.get("/v1/models/:model/dead-letters", operator, async (c) => {
  const model = modelOrThrow(c, c.req.param("model"));
  const raw = c.req.query("limit") ?? "100";
  const limit = Number(raw);
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST) {
    throw new ApiError(400, ErrorCode.validation, `limit must be a whole number from 1 to ${MAX_LIST}, not "${raw}"`);
  }
  const shards = await onQueues(c, await servedQueues(c, model), (queue, name) => queue.deadLetters(name, limit));
  return c.json({ model: model.name, ...mergeDeadLetters(shards, limit) });
});

queueAdminRoutes.post("/v1/models/:model/dead-letters/replay", operator, async (c) => {
  const model = modelOrThrow(c, c.req.param("model"));
  const body = await readJson(c, ReplayBody, "replay body", { emptyAs: {} });
  const foreign = body.job_ids?.filter((id) => modelOfId(id) !== model.name) ?? [];
  if (foreign.length > 0) {
    throw new ApiError(
      400,
      ErrorCode.badId,
      `not job ids of model "${model.name}": ${foreign.slice(0, 5).join(", ")}; job ids look like "${model.name}:<32 hex digits>"`,
    );
  }
  // Named jobs are replayed in the shards their ids name; otherwise every shard's dead letters.
  const ids = body.job_ids;
  const names = ids ? [...new Set(ids.map((id) => queueOfId(id) ?? model.name))] : await servedQueues(c, model);
  const shards = await onQueues(c, names, (queue, name) =>
    queue.replayDeadLetters(name, ids ? ids.filter((id) => queueOfId(id) === name) : null),
  );
  return c.json({
    model: model.name,
    replayed: shards.reduce((n, s) => n + s.items, 0),
    jobs: shards.flatMap((s) => s.jobs),
  });
});

queueAdminRoutes.get("/v1/models/:model/workers", operator, async (c) => {
  const model = modelOrThrow(c, c.req.param("model"));
  return c.json(mergeRosters(await onQueues(c, await servedQueues(c, model), (queue, name) => queue.workers(name))));
});

// A network id holds a slash ("203.0.113.0/24"): the id is the rest of the path.
queueAdminRoutes.delete("/v1/models/:model/quarantine/:kind/:id{.+}", operator, async (c) => {
  const model = modelOrThrow(c, c.req.param("model"));
  const kind = c.req.param("kind");
  const id = decodeURIComponent(c.req.param("id"));
  if (!isQuarantineKind(kind)) {
    throw new ApiError(400, ErrorCode.validation, `quarantine kind must be worker, donor or network, not "${kind}"`);
  }
  const lifted = await onQueues(c, await servedQueues(c, model), (queue, name) => queue.liftQuarantine(name, kind, id));
  if (!lifted.includes(true)) {
    throw new ApiError(
      404,
      ErrorCode.notFound,
      `no quarantine of ${kind} "${id}" is running for model "${model.name}"`,
    );
  }
  return c.json({ model: model.name, kind, id, lifted: true });
});
