// Sessions: a JSON state document per session in its own Durable Object (edge/sessions/), with a sliding
// expiry. PUT creates or replaces the state, PATCH merges into it (RFC 7396), GET reads it with the
// session's history, DELETE ends it. Each answer carries the state's ETag; If-Match and If-None-Match
// are checked by the object in the same step as the write they guard.
import { type Context, Hono } from "hono";
import { z } from "zod";
import { ErrorCode } from "../../shared/index.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { ApiError } from "../errors.ts";
import { readJson } from "../request.ts";
import { isJsonObject, type JsonObject } from "../sessions/merge-patch.ts";
import { type Preconditions, parseEntityTags } from "../sessions/preconditions.ts";
import type { DeleteResult, WriteResult } from "../sessions/session-object.ts";
import { sessionOf } from "../sessions/session-stub.ts";

export const sessionRoutes = new Hono<HonoEnv>();
const authorised = requireKey("caller");
const PATH = "/v1/sessions/:id";
const MERGE_PATCH = "application/merge-patch+json";

/** The body of PUT and PATCH: any JSON object, passed on as parsed rather than rebuilt by a schema. */
const StateDocument = z.custom<JsonObject>(isJsonObject, "must be a JSON object");

type Refusal = Exclude<WriteResult | DeleteResult, { kind: "written" } | { kind: "deleted" }>;

function conditions(c: Context<HonoEnv>): Preconditions {
  return {
    ifMatch: parseEntityTags(c.req.header("If-Match")),
    ifNoneMatch: parseEntityTags(c.req.header("If-None-Match")),
  };
}

/** A session is one caller's private data: no cache keeps it. */
const headers = (etag: string) => ({ ETag: etag, "Cache-Control": "no-store" });

const duration = (ms: number) => (ms % 60_000 === 0 ? `${ms / 60_000} minutes` : `${ms / 1_000} seconds`);

function refusal(c: Context<HonoEnv>, id: string, result: Refusal): ApiError {
  switch (result.kind) {
    case "not_found":
      return new ApiError(
        404,
        ErrorCode.sessionNotFound,
        `no session "${id}" for this API key: never created, deleted, or expired after ${duration(c.get("config").sessions.ttlMs)} unused`,
      );
    case "too_large":
      return new ApiError(
        413,
        ErrorCode.payloadTooLarge,
        `the session state would be ${result.bytes} bytes of JSON; the limit is ${result.limit} bytes (SESSION_MAX_BYTES): keep large data elsewhere and store a reference to it`,
      );
    case "precondition_failed": {
      const { etag } = result;
      if (result.failed === "if_none_match") {
        return new ApiError(
          412,
          ErrorCode.preconditionFailed,
          `session "${id}" already exists (ETag ${etag}), and If-None-Match: * only creates: GET it, or PUT with If-Match to replace it`,
          etag === null ? {} : { headers: { ETag: etag } },
        );
      }
      if (etag === null) {
        return new ApiError(
          412,
          ErrorCode.preconditionFailed,
          `session "${id}" does not exist (it may have expired), so If-Match cannot hold: PUT without If-Match to create it`,
        );
      }
      return new ApiError(
        412,
        ErrorCode.preconditionFailed,
        `session "${id}" has changed since you read it (its ETag is now ${etag}): GET it again, redo your change, and send the new ETag in If-Match`,
        { headers: { ETag: etag } },
      );
    }
  }
}

sessionRoutes.get(PATH, authorised, async (c) => {
  const id = c.req.param("id");
  const view = await (await sessionOf(c, id)).attach();
  if (!view) throw refusal(c, id, { kind: "not_found" });
  const { etag, ...session } = view;
  return c.json({ id, ...session }, 200, { ...headers(etag), "Accept-Patch": MERGE_PATCH });
});

/** `?share_with_donors=true|false` on PUT: whether donors may run the session's calls (and so see its state). */
function shareWithDonors(c: Context<HonoEnv>): boolean | undefined {
  const raw = c.req.query("share_with_donors");
  if (raw === undefined) return undefined;
  if (raw === "true" || raw === "false") return raw === "true";
  throw new ApiError(
    400,
    ErrorCode.validation,
    `share_with_donors must be true or false, got "${raw}"; leave it out to keep the session's setting (new sessions: false)`,
  );
}

sessionRoutes.put(PATH, authorised, async (c) => {
  const id = c.req.param("id");
  const share = shareWithDonors(c);
  const session = await sessionOf(c, id);
  const state = await readJson(c, StateDocument, "session state");
  const result = await session.put(state, conditions(c), share);
  if (result.kind !== "written") throw refusal(c, id, result);
  const body = { id, state: result.state, expires_at: result.expires_at };
  if (!result.created) return c.json(body, 200, headers(result.etag));
  return c.json(body, 201, { ...headers(result.etag), Location: `/v1/sessions/${id}` });
});

sessionRoutes.patch(PATH, authorised, async (c) => {
  const id = c.req.param("id");
  const session = await sessionOf(c, id);
  // JSON Patch (RFC 6902) is JSON too, and would be misread as a merge patch: refuse it by its type.
  const type = c.req.header("Content-Type")?.split(";")[0]?.trim().toLowerCase();
  if (type && type !== MERGE_PATCH && type !== "application/json") {
    throw new ApiError(
      415,
      ErrorCode.unsupportedMediaType,
      `PATCH takes a JSON Merge Patch (RFC 7396) as ${MERGE_PATCH} or application/json, not ${type}`,
    );
  }
  const patch = await readJson(c, StateDocument, "merge patch");
  const result = await session.patch(patch, conditions(c));
  if (result.kind !== "written") throw refusal(c, id, result);
  return c.json({ id, state: result.state, expires_at: result.expires_at }, 200, headers(result.etag));
});

sessionRoutes.delete(PATH, authorised, async (c) => {
  const id = c.req.param("id");
  const result = await (await sessionOf(c, id)).remove(conditions(c));
  if (result.kind !== "deleted") throw refusal(c, id, result);
  return c.body(null, 204);
});
