// Browser donors join with a short-lived token issued for a site key and an allowed origin: a page on
// another origin cannot get one, cannot use one, and a donor can never join the gpu pool.
import { SELF } from "cloudflare:test";
import { describe, expect, it } from "vitest";

const ORIGIN = "https://a.example";

async function token(origin: string | undefined, body: unknown = { site_key: "site-a" }, address = "192.0.2.1") {
  const res = await SELF.fetch("http://edge/v1/donors/token", {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "CF-Connecting-IP": address,
      ...(origin ? { Origin: origin } : {}),
    },
    body: JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as any };
}

const connect = (t: string, origin: string | undefined, model = "guarded") =>
  SELF.fetch(`http://edge/v1/workers/connect?model=${model}&token=${encodeURIComponent(t)}`, {
    headers: { Upgrade: "websocket", ...(origin ? { Origin: origin } : {}) },
  });

describe("donor tokens", () => {
  it("issues a token to an allowed origin, with CORS, naming only the site's models", async () => {
    const answer = await token(ORIGIN);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("Access-Control-Allow-Origin")).toBe(ORIGIN);
    expect(answer.body.models.map((m: { name: string }) => m.name)).toEqual(["guarded"]);
    expect(answer.body.token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(answer.body.expires_at).toBeGreaterThan(Date.now());
  });

  it("refuses other origins, unknown site keys, requests without an Origin, and models the site may not run", async () => {
    expect((await token("https://evil.example")).status).toBe(403);
    expect((await token(ORIGIN, { site_key: "nope" })).status).toBe(403);
    expect((await token(undefined)).status).toBe(400);
    const model = await token(ORIGIN, { site_key: "site-a", models: ["bravo"] });
    expect(model.status).toBe(400);
    expect(model.body.error.message).toContain("cannot run bravo");
  });

  it("issues one client address a limited number of tokens a minute, then 429 with Retry-After; others still get theirs", async () => {
    // The limit counts in fixed windows: at most one window boundary passes during this loop, so a refusal
    // comes within two windows' worth of tokens. An IPv6 client counts by its /64.
    let issued = 0;
    let refused: Awaited<ReturnType<typeof token>> | undefined;
    while (!refused && issued <= 2 * 60) {
      const answer = await token(ORIGIN, { site_key: "site-a" }, `2001:db8:7:7::${issued.toString(16)}`);
      if (answer.status === 429) refused = answer;
      else {
        expect(answer.status).toBe(200);
        issued++;
      }
    }
    expect(refused?.headers.get("Retry-After")).toBe("60");
    expect(refused?.headers.get("Access-Control-Expose-Headers")).toContain("Retry-After");
    expect(refused?.body.error.code).toBe("rate_limited");
    expect(refused?.body.error.message).toContain("2001:db8:7:7::/64");
    expect(issued).toBeGreaterThanOrEqual(60);
    expect((await token(ORIGIN, { site_key: "site-a" }, "2001:db8:7:8::1")).status).toBe(200);
    expect((await token(ORIGIN, { site_key: "site-a" }, "198.51.100.8")).status).toBe(200);
  });

  it("opens a socket only from the origin it was issued to, only for its models", async () => {
    const { body } = await token(ORIGIN);
    const ok = await connect(body.token, ORIGIN);
    expect(ok.status).toBe(101);
    ok.webSocket?.accept();
    ok.webSocket?.close();
    const elsewhere = await connect(body.token, "https://evil.example");
    expect(elsewhere.status).toBe(403);
    expect(((await elsewhere.json()) as any).error.message).toContain("issued to pages on https://a.example");
    expect((await connect(body.token, undefined)).status).toBe(403);
    expect((await connect(body.token, ORIGIN, "bravo")).status).toBe(403);
  });

  it("refuses a forged or tampered token, and keeps donors out of the gpu pool on HTTP leases", async () => {
    const { body } = await token(ORIGIN);
    const [header, payload, signature] = body.token.split(".");
    // Its first character changed (6 bits of the signature): a last "AA" could have been the signature's own.
    const forged = `${header}.${payload}.${signature.startsWith("A") ? "B" : "A"}${signature.slice(1)}`;
    expect((await connect(forged, ORIGIN)).status).toBe(401);
    const lease = await SELF.fetch("http://edge/v1/leases", {
      method: "POST",
      headers: { Authorization: `Bearer ${body.token}`, Origin: ORIGIN, "Content-Type": "application/json" },
      body: JSON.stringify({
        model: "guarded",
        worker_id: "w",
        pool: "gpu",
        device: "wasm",
        max_batch_size: 4,
        wait_ms: 0,
      }),
    });
    expect(lease.status).toBe(403);
    expect(((await lease.json()) as any).error.message).toContain("browser pool only");
  });
});
