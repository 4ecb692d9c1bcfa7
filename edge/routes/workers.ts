// The worker protocol over HTTP (lease with long-poll, extend, complete, release) and the WebSocket
// upgrade for workers that hold a socket. Both end in the same queue object methods.
import { type Context, Hono } from "hono";
import {
  CompleteBody,
  ErrorCode,
  ExtendBody,
  ItemResultsBody,
  type LeaseAck,
  LeaseRequest,
  MAX_SHARDS,
  MODEL_NAME,
  queueName,
  ReleaseBody,
  TokensBody,
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
import { afterAnswer, modelOrThrow, queueOf, readJson, shardQueues, stubOfId } from "../request.ts";

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

/**
 * A long-poll for a batch of the model, from whichever of its shards has one first: every shard is asked at
 * once; when one answers with a batch the others' polls are ended, and a batch that still came from another
 * (handed out meanwhile) goes straight back, as does the batch of a worker that gave up waiting.
 */
workerRoutes.post("/v1/leases", authorised, async (c) => {
  const req = await readJson(c, LeaseRequest, "lease request");
  const model = modelOrThrow(c, req.model);
  checkDonor(c, req.model, req.pool);
  const credential = await credentialOf(c);
  const polls = shardQueues(model).map((name) => {
    const queue = queueOf(c, name);
    return { name, queue, batch: queue.lease(name, req, credential) };
  });
  const first = await firstBatch(polls.map((p) => p.batch));
  const gaveUp = c.req.raw.signal.aborted;
  const handBack = polls.filter((_, i) => i !== first?.index || gaveUp);
  if (first && polls.length > 1) {
    for (const p of handBack) afterAnswer(c, p.queue.endPolls(p.name, req.worker_id, credential));
  }
  for (const p of handBack) {
    afterAnswer(
      c,
      p.batch.then(async (batch) => {
        if (batch === null) return;
        const { lease_id } = JSON.parse(batch) as { lease_id: string };
        await p.queue.release(lease_id, gaveUp ? "long-poll abandoned by the worker" : "taken from another shard");
      }),
    );
  }
  if (!first || gaveUp) return c.body(null, 204);
  return c.body(first.batch, 200, { "Content-Type": "application/json" });
});

/** The first of the polls to answer with a batch, and which it was; null when every one answered none. */
async function firstBatch(polls: readonly Promise<string | null>[]): Promise<{ index: number; batch: string } | null> {
  const found = polls.map((poll, index) =>
    poll.then((batch) => (batch === null ? Promise.reject(null) : { index, batch })),
  );
  try {
    return await Promise.any(found);
  } catch {
    return null;
  }
}

workerRoutes.post("/v1/leases/:id/extend", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = stubOfId(c, id, "lease");
  const body = await readJson(c, ExtendBody, "extend body", { emptyAs: {} });
  return answerAck(await queue.extend(id, body.extend_ms, await holderOf(c)));
});

workerRoutes.post("/v1/leases/:id/complete", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = stubOfId(c, id, "lease");
  const body = await readJson(c, CompleteBody, "completion");
  return answerAck(await queue.complete(id, body, await holderOf(c)));
});

/** A generating item's next tokens, as the socket's `tokens` frames: relayed to the caller's stream at once. */
workerRoutes.post("/v1/leases/:id/tokens", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = stubOfId(c, id, "lease");
  const body = await readJson(c, TokensBody, "token deltas");
  return answerAck(await queue.acceptTokens(id, body, await holderOf(c)));
});

/** Some items' results before the lease completes (the socket's `results` frame); for a batch given item_results. */
workerRoutes.post("/v1/leases/:id/results", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = stubOfId(c, id, "lease");
  const body = await readJson(c, ItemResultsBody, "item results");
  return answerAck(await queue.itemResults(id, body, await holderOf(c)));
});

workerRoutes.post("/v1/leases/:id/release", authorised, async (c) => {
  const id = c.req.param("id");
  const { queue } = stubOfId(c, id, "lease");
  const body = await readJson(c, ReleaseBody, "release body", { emptyAs: {} });
  return answerAck(await queue.release(id, body.reason, await holderOf(c)));
});

/** The registry as workers need it: every model with its files and hashes, so workers load what the queue serves. */
workerRoutes.get("/v1/workers/models", authorised, (c) => c.json({ models: [...c.get("config").models.values()] }));

/**
 * One socket per model served, and per shard of a sharded model's queue: `GET /v1/workers/connect?model=NAME`
 * (`&shard=K` for shard K; the welcome on shard 0 says how many to serve) with Upgrade: websocket.
 */
workerRoutes.get("/v1/workers/connect", authorised, async (c) => {
  const name = c.req.query("model") ?? "";
  if (!MODEL_NAME.test(name)) throw new ApiError(400, ErrorCode.validation, "pass the model to serve as ?model=NAME");
  modelOrThrow(c, name);
  const shard = c.req.query("shard") ?? "0";
  if (!/^(0|[1-9][0-9]?)$/.test(shard) || Number(shard) >= MAX_SHARDS) {
    throw new ApiError(
      400,
      ErrorCode.validation,
      `shard must be a whole number from 0 to ${MAX_SHARDS - 1}, not "${shard}"`,
    );
  }
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
  return queueOf(c, queueName(name, Number(shard))).fetch(forwarded);
});
