// Browser donors: a page's embed script trades its site key for a short-lived worker token, and the
// edge serves onnxruntime-web's WASM (stored gzipped: the raw file is over the 25 MiB asset limit).
import { Hono } from "hono";
import { cors } from "hono/cors";
import { DonorTokenRequest, type DonorTokenResponse, ErrorCode } from "../../shared/index.ts";
import type { HonoEnv } from "../app-env.ts";
import { donorSecret } from "../auth.ts";
import { clientKey } from "../client-address.ts";
import { newDonorId, signDonorToken } from "../donor-token.ts";
import { ApiError } from "../errors.ts";
import { readJson } from "../request.ts";

export const donorRoutes = new Hono<HonoEnv>();

/** The rate limit's period (wrangler.toml): a refused client may ask again after it. */
const DONOR_TOKEN_RETRY_S = 60;

// Any page may ask; whether its origin may join is the site key's to say, below.
// Retry-After is exposed so a page's script can read it off a 429.
donorRoutes.use(
  "/v1/donors/*",
  cors({ origin: (origin) => origin, allowMethods: ["POST"], exposeHeaders: ["Retry-After"], maxAge: 600 }),
);

donorRoutes.post("/v1/donors/token", async (c) => {
  const config = c.get("config");
  const req = await readJson(c, DonorTokenRequest, "donor token request");
  const origin = c.req.header("Origin");
  if (!origin) {
    throw new ApiError(
      400,
      ErrorCode.badRequest,
      "donor tokens are for browser pages: the request needs an Origin header",
    );
  }
  const site = config.donors.sites.get(req.site_key);
  if (!site)
    throw new ApiError(403, ErrorCode.forbidden, `unknown site key "${req.site_key}"; ask the operator for one`);
  if (!site.origins.includes("*") && !site.origins.includes(origin)) {
    throw new ApiError(
      403,
      ErrorCode.forbidden,
      `site key "${req.site_key}" is not allowed on ${origin}; it is for ${site.origins.join(", ")}`,
    );
  }
  const secret = donorSecret(config);
  if (!secret) {
    throw new ApiError(503, ErrorCode.misconfigured, "donor tokens need the DONOR_TOKEN_SECRET secret to be set");
  }
  const servable = [...config.models.values()].filter((m) => m.files && (!site.models || site.models.includes(m.name)));
  const unknown = (req.models ?? []).filter((name) => !servable.some((m) => m.name === name));
  if (unknown.length > 0) {
    throw new ApiError(
      400,
      ErrorCode.unknownModel,
      `this site cannot run ${unknown.join(", ")}; it may run ${servable.map((m) => m.name).join(", ") || "nothing"}`,
    );
  }
  const models = req.models ? servable.filter((m) => req.models?.includes(m.name)) : servable;
  // Counted per client address (an IPv6 one by its /64) once the request is good: a donor id is random per
  // token, so this bounds how fast one client mints new, untrusted identities.
  const client = clientKey(c.req.header("CF-Connecting-IP"));
  const limited = await c.env.DONOR_TOKEN_LIMIT?.limit({ key: client ?? "no-address" });
  if (limited && !limited.success) {
    throw new ApiError(
      429,
      ErrorCode.rateLimited,
      `too many donor tokens ${client ? `for ${client} ` : ""}in the last minute (a page needs one per visit); ask again after Retry-After`,
      { headers: { "Retry-After": String(DONOR_TOKEN_RETRY_S) } },
    );
  }
  const now = Date.now();
  // A JWT's expiry is in whole seconds: the one the page is told is the one the token carries.
  const exp = Math.floor((now + config.donors.tokenTtlMs) / 1000) * 1000;
  const donor = newDonorId();
  const token = await signDonorToken(
    { donor, site: req.site_key, origin, models: models.map((m) => m.name), exp },
    secret,
    now,
  );
  const body: DonorTokenResponse = {
    token,
    expires_at: exp,
    donor_id: donor,
    models,
    registry_url: config.donors.registryUrl ?? new URL("/models/registry.json", c.req.url).href,
  };
  return c.json(body, 200, { "Cache-Control": "no-store" });
});

/** onnxruntime-web's .wasm, kept gzipped in the assets and sent as such (the runtime must not encode it again). */
donorRoutes.get("/ort/:file{.+\\.wasm}", async (c) => {
  const file = c.req.param("file");
  const asset = await c.env.ASSETS?.fetch(new URL(`/ort/${file}.gz`, c.req.url));
  if (!asset?.ok || !asset.body) {
    throw new ApiError(
      404,
      ErrorCode.notFound,
      `no ${file} here; run \`npm run build:client\` before starting the edge`,
    );
  }
  return new Response(asset.body, {
    encodeBody: "manual",
    headers: {
      "Content-Type": "application/wasm",
      "Content-Encoding": "gzip",
      "Cache-Control": "public, max-age=86400",
      "Access-Control-Allow-Origin": "*",
      "Cross-Origin-Resource-Policy": "cross-origin",
    },
  });
});
