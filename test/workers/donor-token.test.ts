// Donor tokens are JWTs (HS256, issuer "edgeswarm", audience "edgeswarm-donor"): each way a token can be
// wrong is refused with a 401 that says which, on the real connect route inside workerd, and a worker
// token (an opaque configured string) is never taken for one.
import { env, SELF } from "cloudflare:test";
import { CompactSign, type JWTPayload, SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { TEST_WORKER_TOKEN } from "../support/test-models.ts";

const ORIGIN = "https://a.example";
const TYPE = "edgeswarm-donor+jwt";
const secretKey = (secret: string) => new TextEncoder().encode(secret);

async function issued(): Promise<string> {
  const res = await SELF.fetch("http://edge/v1/donors/token", {
    method: "POST",
    headers: { "Content-Type": "application/json", Origin: ORIGIN, "CF-Connecting-IP": "192.0.2.77" },
    body: JSON.stringify({ site_key: "site-a" }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { token: string }).token;
}

/** A token as the edge would sign it, with `change` applied to the claims and the header. */
function crafted(
  change: { claims?: Record<string, unknown>; alg?: string; secret?: string; audience?: string; exp?: number } = {},
) {
  const now = Math.floor(Date.now() / 1000);
  const claims: JWTPayload = { site: "site-a", origin: ORIGIN, models: ["guarded"], ...change.claims };
  return new SignJWT(claims)
    .setProtectedHeader({ alg: change.alg ?? "HS256", typ: TYPE })
    .setIssuer("edgeswarm")
    .setAudience(change.audience ?? "edgeswarm-donor")
    .setSubject("donor-crafted")
    .setIssuedAt(now)
    .setExpirationTime(change.exp ?? now + 600)
    .sign(secretKey(change.secret ?? env.DONOR_TOKEN_SECRET ?? ""));
}

const b64url = (value: unknown) =>
  btoa(JSON.stringify(value)).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
const fromB64url = (text: string) => JSON.parse(atob(text.replaceAll("-", "+").replaceAll("_", "/")));

async function connect(token: string) {
  const res = await SELF.fetch(`http://edge/v1/workers/connect?model=guarded&token=${encodeURIComponent(token)}`, {
    headers: { Upgrade: "websocket", Origin: ORIGIN },
  });
  if (res.status === 101) {
    res.webSocket?.accept();
    res.webSocket?.close();
    return { status: 101, message: "" };
  }
  return { status: res.status, message: ((await res.json()) as { error: { message: string } }).error.message };
}

describe("donor tokens as JWTs", () => {
  it("issues a compact HS256 JWT typed as a donor token, naming the donor, site, origin and models", async () => {
    const token = await issued();
    const [header, payload, signature] = token.split(".");
    expect(signature).toMatch(/^[\w-]+$/);
    expect(fromB64url(header as string)).toEqual({ alg: "HS256", typ: TYPE });
    const claims = fromB64url(payload as string);
    expect(claims).toMatchObject({ iss: "edgeswarm", aud: "edgeswarm-donor", site: "site-a", origin: ORIGIN });
    expect(claims.sub).toMatch(/^donor-[0-9a-f]{24}$/);
    expect(claims.models).toEqual(["guarded"]);
    expect(claims.exp - claims.iat).toBe(15 * 60);
    expect((await connect(token)).status).toBe(101);
    expect((await connect(await crafted())).status).toBe(101);
  });

  it('refuses alg "none"', async () => {
    const [, payload] = (await crafted()).split(".");
    const answer = await connect(`${b64url({ alg: "none", typ: TYPE })}.${payload}.`);
    expect(answer).toEqual({
      status: 401,
      message: 'the donor token must be signed with HS256; "none" is not accepted',
    });
  });

  it("refuses another HMAC algorithm, even under the right secret", async () => {
    const answer = await connect(await crafted({ alg: "HS512" }));
    expect(answer).toEqual({
      status: 401,
      message: 'the donor token must be signed with HS256; "HS512" is not accepted',
    });
  });

  it("refuses a token signed with another secret", async () => {
    const answer = await connect(await crafted({ secret: "someone-elses-secret" }));
    expect(answer.status).toBe(401);
    expect(answer.message).toContain("signature is not valid: it was not issued by this edge, or it was altered");
  });

  it("refuses an expired token", async () => {
    const answer = await connect(await crafted({ exp: Math.floor(Date.now() / 1000) - 60 }));
    expect(answer).toEqual({ status: 401, message: "the donor token has expired; ask for a new one" });
  });

  it("refuses a token for another audience", async () => {
    const answer = await connect(await crafted({ audience: "edgeswarm-caller" }));
    expect(answer).toEqual({
      status: 401,
      message: 'the token is not a donor token (its audience is not "edgeswarm-donor")',
    });
  });

  it("refuses a tampered payload (more models) under the genuine signature", async () => {
    const [header, payload, signature] = (await issued()).split(".");
    const claims = fromB64url(payload as string);
    const tampered = `${header}.${b64url({ ...claims, models: ["guarded", "bravo"] })}.${signature}`;
    const answer = await connect(tampered);
    expect(answer.status).toBe(401);
    expect(answer.message).toContain("signature is not valid");
  });

  it("refuses claims of the wrong type, saying which", async () => {
    const models = await connect(await crafted({ claims: { models: "guarded" } }));
    expect(models.status).toBe(401);
    expect(models.message).toMatch(/^the donor token's claims are not valid \(models: .*expected array/);
    const origin = await connect(await crafted({ claims: { origin: 42 } }));
    expect(origin.status).toBe(401);
    expect(origin.message).toContain("(origin: ");
  });

  it("refuses a malformed token that claims to be one", async () => {
    // Signed under the right secret, so only the claims set (not JSON) is wrong.
    const notJson = await new CompactSign(new TextEncoder().encode("not json"))
      .setProtectedHeader({ alg: "HS256", typ: TYPE })
      .sign(secretKey(env.DONOR_TOKEN_SECRET ?? ""));
    const answer = await connect(notJson);
    expect(answer.status).toBe(401);
    expect(answer.message).toMatch(/^the donor token is malformed/);
  });

  it("takes a worker token for a worker token, and a JWT not typed as a donor token for neither", async () => {
    const worker = await SELF.fetch("http://edge/v1/workers/connect?model=guarded", {
      headers: { Upgrade: "websocket", Authorization: `Bearer ${TEST_WORKER_TOKEN}` },
    });
    expect(worker.status).toBe(101);
    worker.webSocket?.accept();
    worker.webSocket?.close();
    const [, payload, signature] = (await crafted()).split(".");
    const untyped = `${b64url({ alg: "HS256", typ: "JWT" })}.${payload}.${signature}`;
    expect(await connect(untyped)).toEqual({ status: 401, message: "the worker key is not valid" });
  });
});
