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
import { clientNetwork } from "../client-address.ts";
import { ApiError } from "../errors.ts";
import {
  type CompleteResult,
  DONOR_HEADER,
  HOLDER_HEADER,
  NETWORK_HEADER,
  POOL_HEADER,
} from "../model-queue/model-queue.ts";
import type { Credential } from "../model-queue/worker-slots.ts";
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

/**
 * Which credential a worker request came with, as the queue binds leases to it: the donor a donor token
 * names, else a fingerprint of the worker token (never the token itself), else "open" (AUTH=open, no token).
 */
async function holderOf(c: Context<HonoEnv>): Promise<string> {
  const donor = c.get("donor");
  if (donor) return `donor:${donor.donor}`;
  const token = c.req.header("Authorization")?.match(/^Bearer\s+(.+)$/i)?.[1] ?? c.req.query("token");
  if (!token) return "open";
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(token)));
  return `token:${Array.from(digest.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** What the route vouches for to the queue: the donor's pool and id, the client's network, the credential. */
async function credentialOf(c: Context<HonoEnv>): Promise<Credential> {
  const donor = c.get("donor");
  const credential: Credential = { holder: await holderOf(c) };
  const network = clientNetwork(c.req.header("CF-Connecting-IP"));
  if (network) credential.network = network;
  if (donor) Object.assign(credential, { pool: "browser", donor: donor.donor });
  return credential;
}

workerRoutes.post("/v1/leases", authorised, async (c) => {
  const req = await readJson(c, LeaseRequest, "lease request");
  modelOrThrow(c, req.model);
  checkDonor(c, req.model, req.pool);
  const queue = queueOf(c, req.model);
  const batch = await queue.lease(req, await credentialOf(c));
  if (batch === null) return c.body(null, 204);
  if (c.req.raw.signal.aborted) {
    // The worker gave up on the long-poll before the batch came: hand it straight back.
    const { lease_id } = JSON.parse(batch) as { lease_id: string };
    await queue.release(lease_id, "long-poll abandoned by the worker", await holderOf(c));
    return c.body(null, 204);
  }
  return c.body(batch, 200, { "Content-Type": "application/json" });
});

workerRoutes.post("/v1/leases/:id/extend", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = queueOfId(c, id, "lease");
  const body = await readJson(c, ExtendBody, "extend body", { emptyAs: {} });
  return answerAck(await queue.extend(id, body.extend_ms, await holderOf(c)));
});

workerRoutes.post("/v1/leases/:id/complete", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = queueOfId(c, id, "lease");
  const body = await readJson(c, CompleteBody, "completion");
  return answerAck(await queue.complete(id, body, await holderOf(c)));
});

workerRoutes.post("/v1/leases/:id/release", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = queueOfId(c, id, "lease");
  const body = await readJson(c, ReleaseBody, "release body", { emptyAs: {} });
  return answerAck(await queue.release(id, body.reason, await holderOf(c)));
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
  // The queue object trusts these headers, so only this route may set them.
  const forwarded = new Request(c.req.raw);
  for (const header of [POOL_HEADER, DONOR_HEADER, NETWORK_HEADER, HOLDER_HEADER]) forwarded.headers.delete(header);
  const credential = await credentialOf(c);
  if (credential.pool) forwarded.headers.set(POOL_HEADER, credential.pool);
  if (credential.donor) forwarded.headers.set(DONOR_HEADER, credential.donor);
  if (credential.network) forwarded.headers.set(NETWORK_HEADER, credential.network);
  if (credential.holder) forwarded.headers.set(HOLDER_HEADER, credential.holder);
  return queueOf(c, name).fetch(forwarded);
});
