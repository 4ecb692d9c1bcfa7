// Finds a caller's session object. Sessions are private to the API key that made them: the object's
// name joins a hash of the key with the session id, so another key reaches another object (and sees 404);
// under AUTH=open every caller shares one namespace. Used by edge/routes/sessions.ts and edge/submit.ts.
import type { Context } from "hono";
import { ErrorCode } from "../../shared/index.ts";
import type { HonoEnv } from "../app-env.ts";
import type { Env } from "../env.ts";
import { ApiError } from "../errors.ts";
import type { SessionObject } from "./session-object.ts";

/** Session ids: 1 to 128 of letters, digits and . _ : - (safe in a path without escaping). */
export const SESSION_ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

export function isSessionId(id: string): boolean {
  return SESSION_ID_PATTERN.test(id);
}

export type SessionStub = DurableObjectStub<SessionObject>;

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The namespace a caller's sessions live in: one per API key, named by its hash so the key itself is
 * never part of an object name; null (AUTH=open) for the one shared namespace.
 */
export async function sessionScope(apiKey: string | null): Promise<string> {
  return apiKey === null ? "open" : `key:${await sha256Hex(apiKey)}`;
}

/** The object of session `id` in `scope` (from sessionScope). The id is assumed checked (isSessionId). */
export function sessionStub(env: Env, scope: string, id: string): SessionStub {
  return env.SESSION.get(env.SESSION.idFromName(`${scope}/${id}`));
}

/**
 * The calling key's session `id`, for a request that passed requireKey("caller"): 400 for an id that is
 * not one. Whether the session exists is the object's answer (attach() is null when it does not).
 */
export async function sessionOf(c: Context<HonoEnv>, id: string): Promise<SessionStub> {
  if (!isSessionId(id)) {
    throw new ApiError(
      400,
      ErrorCode.badId,
      `${JSON.stringify(id.slice(0, 140))} is not a session id: use 1 to 128 letters, digits, ".", "_", ":" or "-"`,
    );
  }
  let apiKey: string | null = null;
  if (!c.get("config").open) {
    // The same reading of the header as requireKey, which has already checked the key.
    apiKey = c.req.header("Authorization")?.match(/^Bearer\s+(.+)$/i)?.[1] ?? null;
    if (apiKey === null)
      throw new ApiError(
        401,
        ErrorCode.unauthorized,
        'missing credentials: send "Authorization: Bearer <API_KEYS entry>"',
      );
  }
  return sessionStub(c.env, await sessionScope(apiKey), id);
}
