// Bearer-key checks for the three kinds of client: callers (API_KEYS), workers (WORKER_TOKENS), and
// operators reading metrics and the scaling signal (either kind of key). AUTH=open turns checks off.
import { createMiddleware } from "hono/factory";
import { ErrorCode } from "../shared/index.ts";
import type { HonoEnv } from "./app-env.ts";
import type { EdgeConfig } from "./config.ts";
import { looksLikeDonorToken, verifyDonorToken } from "./donor-token.ts";
import { ApiError } from "./errors.ts";

export type KeyKind = "caller" | "worker" | "operator";

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
    const allowed =
      kind === "caller"
        ? config.apiKeys
        : kind === "worker"
          ? config.workerTokens
          : [...config.apiKeys, ...config.workerTokens];
    const setting = kind === "worker" ? "WORKER_TOKENS" : "API_KEYS";
    if (allowed.length === 0) {
      throw new ApiError(
        401,
        ErrorCode.unauthorized,
        `no ${kind} keys are configured: set the ${setting} secret (wrangler secret put ${setting}), or AUTH=open for local development`,
      );
    }
    if (!token)
      throw new ApiError(
        401,
        ErrorCode.unauthorized,
        `missing credentials: send "Authorization: Bearer <${setting} entry>"`,
      );
    if (!allowed.some((k) => sameKey(k, token)))
      throw new ApiError(401, ErrorCode.unauthorized, `the ${kind} key is not valid`);
    return next();
  });
