// Bearer-key checks for the kinds of client: callers (API_KEYS), workers (WORKER_TOKENS), operators
// (OPERATOR_KEYS: admin routes), and readers of /metrics and /v1/scaling (operators; callers and workers too
// while OPERATOR_KEYS is unset, so deployments from before the role keep working). AUTH=open turns checks off.
import type { Context } from "hono";
import { createMiddleware } from "hono/factory";
import { ErrorCode } from "../shared/index.ts";
import type { HonoEnv } from "./app-env.ts";
import type { EdgeConfig } from "./config.ts";
import { looksLikeDonorToken, verifyDonorToken } from "./donor-token.ts";
import { ApiError } from "./errors.ts";

/** "metrics": /metrics, /v1/scaling and the dashboard's data; "operator": admin routes, operator keys only. */
export type KeyKind = "caller" | "worker" | "operator" | "metrics";

/** Says in the answer that a caller key or worker token read operator data because OPERATOR_KEYS is unset. */
export const LEGACY_READER_HEADER = "EdgeSwarm-Warning";
const LEGACY_READER_WARNING =
  "OPERATOR_KEYS is unset, so caller keys and worker tokens may read /metrics and /v1/scaling; set OPERATOR_KEYS to limit them to operators";
let warnedLegacyReader = false;

function sameKey(a: string, b: string): boolean {
  const enc = new TextEncoder();
  const x = enc.encode(a);
  const y = enc.encode(b);
  return x.byteLength === y.byteLength && crypto.subtle.timingSafeEqual(x, y);
}

/** Signs and checks donor tokens: the configured secret, or under AUTH=open a key this isolate made up. */
let devSecret: string | undefined;
export function donorSecret(config: EdgeConfig): string | undefined {
  if (config.donors.secret) return config.donors.secret;
  if (!config.open) return undefined;
  devSecret ??= Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16)).join("");
  return devSecret;
}

/** Whether the caller of this request may pin work to the gpu pool (GPU_POOL_KEYS; all keys when unset). */
export function mayUseGpuPool(config: EdgeConfig, authorization: string | undefined): boolean {
  if (config.open || config.gpuPoolKeys === null) return true;
  const token = authorization?.match(/^Bearer\s+(.+)$/i)?.[1];
  return token !== undefined && config.gpuPoolKeys.some((k) => sameKey(k, token));
}

export const requireKey = (kind: KeyKind) =>
  createMiddleware<HonoEnv>(async (c, next) => {
    const config = c.get("config");
    const header = c.req.header("Authorization");
    // Browsers cannot set headers on a WebSocket, so a worker's socket may pass ?token= instead.
    const upgrade = c.req.header("Upgrade")?.toLowerCase() === "websocket";
    // Only on the WebSocket upgrade: elsewhere a token in the URL would end up in access logs.
    const token =
      header?.match(/^Bearer\s+(.+)$/i)?.[1] ?? (kind === "worker" && upgrade ? c.req.query("token") : undefined);
    // A browser donor's token is checked even under AUTH=open: it is what pins that worker to the browser pool.
    if (kind === "worker" && token && looksLikeDonorToken(token)) {
      const secret = donorSecret(config);
      const claims = secret ? await verifyDonorToken(token, secret, Date.now()) : "donor tokens are not enabled here";
      if (typeof claims === "string") throw new ApiError(401, ErrorCode.unauthorized, claims);
      const origin = c.req.header("Origin");
      if (origin !== claims.origin) {
        throw new ApiError(
          403,
          ErrorCode.forbidden,
          `this donor token was issued to pages on ${claims.origin}; it cannot be used from ${origin ?? "outside a browser"}`,
        );
      }
      c.set("donor", claims);
      return next();
    }
    if (config.open) return next();
    const { allowed, setting } = keysFor(kind, config);
    const label = kind === "metrics" ? "operator" : kind;
    if (allowed.length === 0) {
      throw new ApiError(
        401,
        ErrorCode.unauthorized,
        `no ${label} keys are configured: set the ${setting} secret (wrangler secret put ${setting}), or AUTH=open for local development`,
      );
    }
    if (!token)
      throw new ApiError(
        401,
        ErrorCode.unauthorized,
        `missing credentials: send "Authorization: Bearer <${setting} entry>"`,
      );
    if (allowed.some((k) => sameKey(k, token))) {
      if (kind === "metrics" && config.operatorKeys === null) legacyReader(c);
      return next();
    }
    const other = otherKind(config, token);
    if ((kind === "operator" || kind === "metrics") && other) {
      throw new ApiError(
        403,
        ErrorCode.forbidden,
        `${c.req.path} needs an operator key (an OPERATOR_KEYS entry); this is a ${other} key`,
      );
    }
    throw new ApiError(401, ErrorCode.unauthorized, `the ${label} key is not valid`);
  });

/** The keys a kind of route accepts, and the setting that holds them (named in error messages). */
function keysFor(kind: KeyKind, config: EdgeConfig): { allowed: readonly string[]; setting: string } {
  if (kind === "caller") return { allowed: config.apiKeys, setting: "API_KEYS" };
  if (kind === "worker") return { allowed: config.workerTokens, setting: "WORKER_TOKENS" };
  if (config.operatorKeys !== null) return { allowed: config.operatorKeys, setting: "OPERATOR_KEYS" };
  // Admin routes never fall back: they came with the role, so no deployment relies on caller keys there.
  if (kind === "operator") return { allowed: [], setting: "OPERATOR_KEYS" };
  return { allowed: [...config.apiKeys, ...config.workerTokens], setting: "OPERATOR_KEYS" };
}

function otherKind(config: EdgeConfig, token: string): "caller" | "worker" | undefined {
  if (config.apiKeys.some((k) => sameKey(k, token))) return "caller";
  if (config.workerTokens.some((k) => sameKey(k, token))) return "worker";
  return undefined;
}

/**
 * A caller key or worker token read operator data while OPERATOR_KEYS is unset: said in a header of every
 * such answer (whoever curls /metrics sees it; KEDA and Prometheus ignore it) and logged once per isolate
 * (where `wrangler tail` or Logpush is watched).
 */
function legacyReader(c: Context<HonoEnv>): void {
  c.header(LEGACY_READER_HEADER, LEGACY_READER_WARNING);
  if (warnedLegacyReader) return;
  warnedLegacyReader = true;
  console.warn(`edgeswarm: ${LEGACY_READER_WARNING}`);
}
