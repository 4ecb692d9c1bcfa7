// The worker protocol over HTTP (lease with long-poll, extend, complete, release) and the WebSocket
// upgrade for workers that hold a socket. Both end in the same queue object methods.
import { type Context, Hono } from "hono";
import {
  CompleteBody,
  ErrorCode,
  ExtendBody,
  type LeaseAck,
  LeaseRequest,
  MODEL_NAME,
  ReleaseBody,
} from "../../shared/index.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { ApiError } from "../errors.ts";
import { type CompleteResult, DONOR_HEADER, POOL_HEADER } from "../model-queue/model-queue.ts";
import { modelOrThrow, queueOf, queueOfId, readJson } from "../request.ts";

export const workerRoutes = new Hono<HonoEnv>();

const authorised = requireKey("worker");

/** ok and duplicate are both success for an idempotent call; stale and not_found tell the worker its work was dropped. */
function answerAck(result: CompleteResult): Response {
  if ("error" in result) throw new ApiError(400, result.error.code, result.error.message);
  const ack: LeaseAck = result;
  if (ack.status === "ok" || ack.status === "duplicate") return Response.json(ack);
  const status = ack.status === "stale" ? 409 : 404;
  const code = ack.status === "stale" ? ErrorCode.leaseStale : ErrorCode.leaseNotFound;
  throw new ApiError(status, code, ack.message ?? `lease ${ack.lease_id} is ${ack.status}`, { extra: { ...ack } });
}

/** A browser donor may serve only the models its token names, and only in the browser pool. */
function checkDonor(c: Context<HonoEnv>, model: string, pool?: string): void {
  const donor = c.get("donor");
  if (!donor) return;
  if (!donor.models.includes(model)) {
    throw new ApiError(403, ErrorCode.forbidden, `this donor token is for ${donor.models.join(", ")}, not ${model}`);
  }
  if (pool !== undefined && pool !== "browser") {
    throw new ApiError(403, ErrorCode.forbidden, "a donor token joins the browser pool only");
  }
}

workerRoutes.post("/v1/leases", authorised, async (c) => {
  const req = await readJson(c, LeaseRequest, "lease request");
  modelOrThrow(c, req.model);
  checkDonor(c, req.model, req.pool);
  const queue = queueOf(c, req.model);
  const donor = c.get("donor");
  const batch = await queue.lease(req, donor ? { pool: "browser", donor: donor.donor } : {});
  if (batch === null) return c.body(null, 204);
  if (c.req.raw.signal.aborted) {
    // The worker gave up on the long-poll before the batch came: hand it straight back.
    const { lease_id } = JSON.parse(batch) as { lease_id: string };
    await queue.release(lease_id, "long-poll abandoned by the worker");
    return c.body(null, 204);
  }
  return c.body(batch, 200, { "Content-Type": "application/json" });
});

workerRoutes.post("/v1/leases/:id/extend", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = queueOfId(c, id, "lease");
  const body = await readJson(c, ExtendBody, "extend body", { emptyAs: {} });
  return answerAck(await queue.extend(id, body.extend_ms));
});

workerRoutes.post("/v1/leases/:id/complete", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = queueOfId(c, id, "lease");
  const body = await readJson(c, CompleteBody, "completion");
  return answerAck(await queue.complete(id, body));
});

workerRoutes.post("/v1/leases/:id/release", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = queueOfId(c, id, "lease");
  const body = await readJson(c, ReleaseBody, "release body", { emptyAs: {} });
  return answerAck(await queue.release(id, body.reason));
});

/** The registry as workers need it: every model with its files and hashes, so workers load what the queue serves. */
workerRoutes.get("/v1/workers/models", authorised, (c) => c.json({ models: [...c.get("config").models.values()] }));

/** One socket per model served: `GET /v1/workers/connect?model=NAME` with Upgrade: websocket. */
workerRoutes.get("/v1/workers/connect", authorised, async (c) => {
  const name = c.req.query("model") ?? "";
  if (!MODEL_NAME.test(name)) throw new ApiError(400, ErrorCode.validation, "pass the model to serve as ?model=NAME");
  modelOrThrow(c, name);
  checkDonor(c, name);
  if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
    throw new ApiError(
      426,
      ErrorCode.badRequest,
      "this endpoint speaks WebSocket: send Upgrade: websocket (or use the HTTP lease endpoints)",
    );
  }
  // The queue object trusts these two headers, so only this route may set them.
  const forwarded = new Request(c.req.raw);
  forwarded.headers.delete(POOL_HEADER);
  forwarded.headers.delete(DONOR_HEADER);
  const donor = c.get("donor");
  if (donor) {
    forwarded.headers.set(POOL_HEADER, "browser");
    forwarded.headers.set(DONOR_HEADER, donor.donor);
  }
  return queueOf(c, name).fetch(forwarded);
});
