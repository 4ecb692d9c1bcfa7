// The operator role (OPERATOR_KEYS) inside real workerd: who may read /metrics and /v1/scaling, what a
// deployment without the setting keeps doing, and that admin routes (requireKey("operator")) take
// operator keys only. Each test runs the app under its own variables with app.request.
import { env, SELF } from "cloudflare:test";
import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { app } from "../../edge/app.ts";
import type { HonoEnv } from "../../edge/app-env.ts";
import { LEGACY_READER_HEADER, requireKey } from "../../edge/auth.ts";
import { loadConfig } from "../../edge/config.ts";
import { onError } from "../../edge/errors.ts";
import { TEST_API_KEY, TEST_WORKER_TOKEN } from "../support/test-models.ts";

const OPERATOR_KEY = "test-operator-key";
const withOperators = { ...env, OPERATOR_KEYS: ` ${OPERATOR_KEY} , second-operator-key` };

async function get(path: string, key: string | undefined, vars: typeof env) {
  const headers: Record<string, string> = key ? { Authorization: `Bearer ${key}` } : {};
  const res = await app.request(path, { headers }, vars);
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

describe("with OPERATOR_KEYS set", () => {
  it("refuses a caller key on /metrics with a 403 that names the key needed", async () => {
    const res = await get("/metrics", TEST_API_KEY, withOperators);
    expect(res.status).toBe(403);
    expect(res.json().error).toEqual({
      code: "forbidden",
      message: "/metrics needs an operator key (an OPERATOR_KEYS entry); this is a caller key",
    });
  });

  it("refuses a worker token on /v1/scaling the same way", async () => {
    const res = await get("/v1/scaling", TEST_WORKER_TOKEN, withOperators);
    expect(res.status).toBe(403);
    expect(res.json().error.message).toMatch(/needs an operator key \(an OPERATOR_KEYS entry\); this is a worker key/);
  });

  it("accepts each operator key on /metrics and /v1/scaling, with no warning", async () => {
    for (const key of [OPERATOR_KEY, "second-operator-key"]) {
      const metrics = await get("/metrics", key, withOperators);
      expect(metrics.status).toBe(200);
      expect(metrics.text).toMatch(/^# HELP edgeswarm_/m);
      expect(metrics.headers.get(LEGACY_READER_HEADER)).toBeNull();
      const scaling = await get("/v1/scaling", key, withOperators);
      expect(scaling.status).toBe(200);
      expect(scaling.json().pools.gpu).toHaveProperty("desired_replicas");
    }
  });

  it("answers 401 for an unknown key or none, saying which setting holds the keys", async () => {
    const unknown = await get("/metrics", "not-a-key", withOperators);
    expect(unknown.status).toBe(401);
    expect(unknown.json().error.message).toBe("the operator key is not valid");
    const none = await get("/metrics", undefined, withOperators);
    expect(none.status).toBe(401);
    expect(none.json().error.message).toMatch(/Authorization: Bearer <OPERATOR_KEYS entry>/);
  });

  it("does not make an operator key a caller key", async () => {
    const res = await get("/v1/models", OPERATOR_KEY, withOperators);
    expect(res.status).toBe(401);
  });
});

describe("without OPERATOR_KEYS (deployments from before the role)", () => {
  it("lets caller keys and worker tokens read /metrics and /v1/scaling, and says so in each answer", async () => {
    for (const [path, key] of [
      ["/metrics", TEST_API_KEY],
      ["/v1/scaling", TEST_WORKER_TOKEN],
    ] as const) {
      const res = await get(path, key, env);
      expect(res.status, path).toBe(200);
      expect(res.headers.get(LEGACY_READER_HEADER)).toMatch(/OPERATOR_KEYS is unset.*set OPERATOR_KEYS/);
    }
  });
});

describe("AUTH=open", () => {
  it("serves /metrics and /v1/scaling without a key, whether OPERATOR_KEYS is set or not", async () => {
    for (const vars of [
      { ...env, AUTH: "open" },
      { ...withOperators, AUTH: "open" },
    ]) {
      const metrics = await get("/metrics", undefined, vars);
      expect(metrics.status).toBe(200);
      expect(metrics.headers.get(LEGACY_READER_HEADER)).toBeNull();
      expect((await get("/v1/scaling", undefined, vars)).status).toBe(200);
    }
  });
});

describe('admin routes: requireKey("operator")', () => {
  const admin = new Hono<HonoEnv>();
  admin.onError(onError);
  admin.use(async (c, next) => {
    c.set("config", loadConfig(c.env));
    await next();
  });
  admin.get("/admin", requireKey("operator"), (c) => c.json({ ok: true }));
  const call = (key: string, vars: typeof env) =>
    admin.request("/admin", { headers: { Authorization: `Bearer ${key}` } }, vars);

  it("takes operator keys only", async () => {
    expect((await call(OPERATOR_KEY, withOperators)).status).toBe(200);
    const caller = await call(TEST_API_KEY, withOperators);
    expect(caller.status).toBe(403);
    expect(((await caller.json()) as any).error.message).toMatch(/needs an operator key/);
  });

  it("stays closed to caller keys while OPERATOR_KEYS is unset, saying what to set", async () => {
    const res = await call(TEST_API_KEY, env);
    expect(res.status).toBe(401);
    expect(((await res.json()) as any).error.message).toMatch(/no operator keys are configured: set the OPERATOR_KEYS/);
  });
});

describe("GET /dashboard", () => {
  it("serves the page to anyone: it holds no data, which needs an operator key", async () => {
    const res = await SELF.fetch("http://edge/dashboard");
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html).toContain("<title>EdgeSwarm dashboard</title>");
    // Its script and styles are plain assets (test/browser/dashboard.test.ts loads them in Chromium).
    expect(html).toContain('src="/dashboard/dashboard.js"');
  });
});
