// Sessions inside real workerd: the HTTP API (state, ETags, preconditions, limits, bad input), isolation
// between API keys, the sliding expiry and its alarm, and the RPC the queue uses (attach, append).
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { app } from "../../edge/app.ts";
import { SESSION_DEFAULTS } from "../../edge/config.ts";
import { applyMergePatch, type Json } from "../../edge/sessions/merge-patch.ts";
import type { SessionObject } from "../../edge/sessions/session-object.ts";
import { sessionScope, sessionStub } from "../../edge/sessions/session-stub.ts";
import { TEST_API_KEY, TEST_CPU_ONLY_KEY } from "../support/test-models.ts";
import { type Answer, call } from "./helpers.ts";

const OTHER = { Authorization: `Bearer ${TEST_CPU_ONLY_KEY}` };
const TTL = SESSION_DEFAULTS.ttlMs;

/** A fresh session id per test: session objects outlive a test, and ids never repeat. */
const newId = () => `s-${crypto.randomUUID()}`;
const path = (id: string) => `/v1/sessions/${id}`;

const put = (id: string, body: unknown, headers: Record<string, string> = {}) =>
  call(path(id), { method: "PUT", body, headers });
const patch = (id: string, body: unknown, headers: Record<string, string> = {}) =>
  call(path(id), { method: "PATCH", body, headers: { "Content-Type": "application/merge-patch+json", ...headers } });
const get = (id: string, headers: Record<string, string> = {}) => call(path(id), { headers });
const del = (id: string, headers: Record<string, string> = {}) => call(path(id), { method: "DELETE", headers });

const expectError = (res: Answer, status: number, code: string, mentions: RegExp) => {
  expect(res.status).toBe(status);
  expect(res.body.error.code).toBe(code);
  expect(res.body.error.message).toMatch(mentions);
};

async function stubOf(id: string, apiKey: string | null = TEST_API_KEY) {
  return sessionStub(env, await sessionScope(apiKey), id);
}

/** Moves the stored expiry, as time passing would; the alarm stays where it was set. */
async function setExpiry(id: string, expiresAt: number): Promise<void> {
  await runInDurableObject(await stubOf(id), (_: SessionObject, state) => {
    state.storage.sql.exec("UPDATE session SET expires_at = ?", expiresAt);
  });
}

/** What the object holds: its tables and its alarm. */
async function storageOf(id: string): Promise<{ tables: string[]; alarm: number | null }> {
  return runInDurableObject(await stubOf(id), async (_: SessionObject, state) => ({
    tables: state.storage.sql
      .exec<{ name: string }>(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_cf\\_%' ESCAPE '\\'",
      )
      .toArray()
      .map((r) => r.name),
    alarm: await state.storage.getAlarm(),
  }));
}

describe("the session API", () => {
  it("creates, reads, replaces, merge-patches and deletes a session", async () => {
    const id = newId();
    const before = Date.now();
    const created = await put(id, { turn: 1, user: { name: "Ada", lang: "en" } });
    expect(created.status).toBe(201);
    expect(created.headers.get("Location")).toBe(path(id));
    expect(created.body).toMatchObject({ id, state: { turn: 1, user: { name: "Ada", lang: "en" } } });
    expect(created.body.expires_at).toBeGreaterThanOrEqual(before + TTL);

    const read = await get(id);
    expect(read.status).toBe(200);
    expect(read.body).toEqual({
      id,
      state: { turn: 1, user: { name: "Ada", lang: "en" } },
      history: [],
      expires_at: expect.any(Number),
    });
    expect(read.headers.get("ETag")).toBe(created.headers.get("ETag"));
    expect(read.headers.get("Cache-Control")).toBe("no-store");
    expect(read.headers.get("Accept-Patch")).toBe("application/merge-patch+json");

    const replaced = await put(id, { turn: 2 });
    expect(replaced.status).toBe(200);
    expect((await get(id)).body.state).toEqual({ turn: 2 });

    const patched = await patch(id, { turn: 3, user: { name: "Ada" }, notes: ["a"] });
    expect(patched.status).toBe(200);
    expect(patched.body.state).toEqual({ turn: 3, user: { name: "Ada" }, notes: ["a"] });
    const removing = await patch(id, { user: { name: null }, notes: null });
    expect(removing.body.state).toEqual({ turn: 3, user: {} });
    expect((await get(id)).body.state).toEqual({ turn: 3, user: {} });

    const deleted = await del(id);
    expect(deleted.status).toBe(204);
    expectError(await get(id), 404, "session_not_found", new RegExp(`no session "${id}".*30 minutes`));
    expectError(await del(id), 404, "session_not_found", /no session/);
    expectError(await patch(id, { a: 1 }), 404, "session_not_found", /no session/);
    // Deleting leaves nothing behind.
    expect(await storageOf(id)).toEqual({ tables: [], alarm: null });
  });

  it("accepts application/json for PATCH as well, and keeps a member named __proto__ as a member", async () => {
    const id = newId();
    await put(id, { a: 1 });
    const res = await call(path(id), { method: "PATCH", raw: '{"__proto__":{"polluted":true},"b":2}' });
    expect(res.status).toBe(200);
    const state = (await get(id)).body.state;
    expect(state).toEqual(JSON.parse('{"a":1,"__proto__":{"polluted":true},"b":2}'));
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it("reads nothing into storage for a session that does not exist", async () => {
    const id = newId();
    expect((await get(id)).status).toBe(404);
    expect(await storageOf(id)).toEqual({ tables: [], alarm: null });
  });
});

describe("ETags and conditional requests", () => {
  it("changes the ETag with each write, and refuses a stale If-Match with 412", async () => {
    const id = newId();
    const first = (await put(id, { v: 1 })).headers.get("ETag") as string;
    expect(first).toMatch(/^"[^"]+"$/);
    const second = (await patch(id, { v: 2 }, { "If-Match": first })).headers.get("ETag") as string;
    expect(second).not.toBe(first);

    const stale = await put(id, { v: 3 }, { "If-Match": first });
    expectError(stale, 412, "precondition_failed", /changed since you read it.*GET it again/);
    expect(stale.headers.get("ETag")).toBe(second);
    expectError(await patch(id, { v: 3 }, { "If-Match": first }), 412, "precondition_failed", /GET it again/);
    expectError(await del(id, { "If-Match": first }), 412, "precondition_failed", /GET it again/);
    // If-Match compares strongly: a weak tag never matches; a list matches if any entry does.
    expect((await put(id, { v: 3 }, { "If-Match": `W/${second}` })).status).toBe(412);
    expect((await get(id)).body.state).toEqual({ v: 2 });

    const third = await put(id, { v: 3 }, { "If-Match": `${first}, ${second}` });
    expect(third.status).toBe(200);
    expect((await put(id, { v: 4 }, { "If-Match": "*" })).status).toBe(200);
    const current = (await get(id)).headers.get("ETag") as string;
    expect((await del(id, { "If-Match": current })).status).toBe(204);
  });

  it("honours If-None-Match: * as create-only, and If-Match on a session that is not there", async () => {
    const id = newId();
    expectError(await put(id, { v: 1 }, { "If-Match": "*" }), 412, "precondition_failed", /does not exist/);
    const created = await put(id, { v: 1 }, { "If-None-Match": "*" });
    expect(created.status).toBe(201);
    const again = await put(id, { v: 2 }, { "If-None-Match": "*" });
    expectError(again, 412, "precondition_failed", /already exists/);
    expect(again.headers.get("ETag")).toBe(created.headers.get("ETag"));
    expect((await get(id)).body.state).toEqual({ v: 1 });
  });

  it("never reuses an ETag for a session deleted and created again", async () => {
    const id = newId();
    const old = (await put(id, { v: 1 })).headers.get("ETag") as string;
    await del(id);
    const fresh = (await put(id, { v: 1 })).headers.get("ETag");
    expect(fresh).not.toBe(old);
    expect((await put(id, { v: 2 }, { "If-Match": old })).status).toBe(412);
  });
});

describe("limits and bad input", () => {
  it("refuses a state over SESSION_MAX_BYTES with a 413 that names the limit, on PUT and PATCH", async () => {
    const id = newId();
    const big = "x".repeat(SESSION_DEFAULTS.maxBytes);
    expectError(await put(id, { big }), 413, "payload_too_large", /limit is 65536 bytes \(SESSION_MAX_BYTES\)/);
    expect((await get(id)).status).toBe(404);
    const etag = (await put(id, { small: "x".repeat(SESSION_DEFAULTS.maxBytes - 100) })).headers.get("ETag");
    expectError(await patch(id, { more: "y".repeat(200) }), 413, "payload_too_large", /65536/);
    expect((await get(id)).headers.get("ETag")).toBe(etag);
  });

  it("refuses ids that are not session ids with 400", async () => {
    for (const bad of ["has%20space", "a".repeat(129), "%C3%BC", "semi%3Bcolon", "slash%2Fin"]) {
      expectError(await get(bad), 400, "bad_id", /not a session id: use 1 to 128 letters/);
      expectError(await put(bad, { a: 1 }), 400, "bad_id", /not a session id/);
    }
    expect((await put("a.B_c:9-z", { a: 1 })).status).toBe(201);
    await del("a.B_c:9-z");
  });

  it("refuses bodies that are not a JSON object, and JSON Patch, with a 4xx that says why", async () => {
    const id = newId();
    expectError(await call(path(id), { method: "PUT", raw: '{"a":' }), 400, "invalid_json", /not valid JSON/);
    expectError(await call(path(id), { method: "PUT", raw: "" }), 400, "invalid_json", /not valid JSON/);
    expectError(await put(id, [1, 2]), 400, "validation_failed", /must be a JSON object/);
    expectError(await put(id, "text"), 400, "validation_failed", /must be a JSON object/);
    const deep = `{"a":${"[".repeat(100)}${"]".repeat(100)}}`;
    expectError(await call(path(id), { method: "PUT", raw: deep }), 400, "nested_too_deeply", /deeper than 64/);
    await put(id, { a: 1 });
    expectError(await call(path(id), { method: "PATCH", raw: "{" }), 400, "invalid_json", /merge patch/);
    expectError(await patch(id, null), 400, "validation_failed", /must be a JSON object/);
    const jsonPatch = await call(path(id), {
      method: "PATCH",
      body: [{ op: "add", path: "/b", value: 2 }],
      headers: { "Content-Type": "application/json-patch+json" },
    });
    expectError(jsonPatch, 415, "unsupported_media_type", /JSON Merge Patch/);
    expect((await get(id)).body.state).toEqual({ a: 1 });
  });

  it("asks for credentials", async () => {
    expectError(await get(newId(), { Authorization: "" }), 401, "unauthorized", /missing credentials/);
    expectError(await get(newId(), { Authorization: "Bearer nope" }), 401, "unauthorized", /not valid/);
  });

  it("reports a bad session setting as a misconfiguration", async () => {
    for (const [name, value] of [
      ["SESSION_TTL_MS", "soon"],
      ["SESSION_MAX_BYTES", "0"],
      ["SESSION_HISTORY_LIMIT", "-1"],
    ]) {
      const res = await app.request(
        path(newId()),
        { headers: { Authorization: `Bearer ${TEST_API_KEY}` } },
        {
          ...env,
          [name as string]: value,
        },
      );
      expect(res.status).toBe(500);
      const body = (await res.json()) as any;
      expect(body.error.message).toMatch(new RegExp(`misconfigured: ${name} must be an integer from`));
    }
  });
});

describe("isolation", () => {
  it("keeps each API key's sessions to itself", async () => {
    const id = newId();
    await put(id, { owner: "first" });
    expectError(await get(id, OTHER), 404, "session_not_found", /for this API key/);
    expectError(await patch(id, { owner: "second" }, OTHER), 404, "session_not_found", /no session/);
    expectError(await del(id, OTHER), 404, "session_not_found", /no session/);

    // The same id under the other key is another session.
    expect((await put(id, { owner: "second" }, OTHER)).status).toBe(201);
    expect((await get(id, OTHER)).body.state).toEqual({ owner: "second" });
    expect((await get(id)).body.state).toEqual({ owner: "first" });
    expect((await del(id, OTHER)).status).toBe(204);
    expect((await get(id)).body.state).toEqual({ owner: "first" });
  });

  it("shares one namespace among all callers under AUTH=open, apart from the keyed ones", async () => {
    const id = newId();
    const open = { ...env, AUTH: "open" };
    const request = (method: string, headers: Record<string, string>, body?: unknown) =>
      app.request(
        path(id),
        { method, headers: { "Content-Type": "application/json", ...headers }, body: JSON.stringify(body) },
        open,
      );
    expect((await request("PUT", { Authorization: `Bearer ${TEST_API_KEY}` }, { v: "open" })).status).toBe(201);
    const other = await app.request(path(id), { headers: { Authorization: "Bearer anyone" } }, open);
    expect(((await other.json()) as any).state).toEqual({ v: "open" });
    expect((await app.request(path(id), {}, open)).status).toBe(200);
    // Not the session the same key would reach with AUTH=required.
    expect((await get(id)).status).toBe(404);
  });
});

describe("sliding expiry", () => {
  it("pushes the expiry out on every read and write", async () => {
    const id = newId();
    await put(id, { v: 1 });
    for (const access of [() => get(id), () => patch(id, { v: 2 }), () => put(id, { v: 3 })]) {
      await setExpiry(id, Date.now() + 1_000);
      const before = Date.now();
      const res = await access();
      expect(res.status).toBe(200);
      expect(res.body.expires_at).toBeGreaterThanOrEqual(before + TTL);
    }
    await setExpiry(id, Date.now() + 1_000);
    const before = Date.now();
    await expect((await stubOf(id)).attach()).resolves.toMatchObject({ state: { v: 3 } });
    expect((await get(id)).body.expires_at).toBeGreaterThanOrEqual(before + TTL);
  });

  it("answers 404 for a session past its expiry even before the alarm has fired, and deletes it", async () => {
    const id = newId();
    await put(id, { v: 1 });
    await setExpiry(id, Date.now() - 1);
    const { alarm } = await storageOf(id);
    expect(alarm).toBeGreaterThan(Date.now()); // the alarm is late
    expectError(await get(id), 404, "session_not_found", /expired/);
    expect(await storageOf(id)).toEqual({ tables: [], alarm: null });
    // The id is free again: a new session, with none of the old one's history.
    expect((await put(id, { v: 2 }, { "If-None-Match": "*" })).status).toBe(201);
    expect((await get(id)).body.history).toEqual([]);
  });

  it("is enforced by the alarm, which deletes everything past the expiry", async () => {
    const id = newId();
    await put(id, { v: 1 });
    await (await stubOf(id)).append({ model: "alpha", job_id: "alpha:1", input: 1, output: 2 });
    await setExpiry(id, Date.now() - 1);
    expect(await runDurableObjectAlarm(await stubOf(id))).toBe(true);
    expect(await storageOf(id)).toEqual({ tables: [], alarm: null });
    expect((await get(id)).status).toBe(404);
  });

  it("re-arms an alarm that fires before the expiry, which reads have pushed out", async () => {
    const id = newId();
    await put(id, { v: 1 });
    const armedAt = (await storageOf(id)).alarm as number;
    await setExpiry(id, armedAt + 5_000);
    expect(await runDurableObjectAlarm(await stubOf(id))).toBe(true);
    expect(await storageOf(id)).toEqual({
      tables: expect.arrayContaining(["session", "history"]),
      alarm: armedAt + 5_000,
    });
    expect((await get(id)).body.state).toEqual({ v: 1 });
  });
});

describe("the queue's RPC: attach and append", () => {
  const entry = (n: number) => ({ model: "alpha", job_id: `alpha:${n}`, input: { n }, output: [n * 2] });

  it("attaches state and history, and null for no session", async () => {
    const id = newId();
    const stub = await stubOf(id);
    expect(await stub.attach()).toBeNull();
    expect(await stub.append(entry(0))).toEqual({ appended: false, reason: "not_found" });
    const etag = (await put(id, { persona: "terse" })).headers.get("ETag");
    expect(await stub.append({ ...entry(1), at: 1_000 })).toEqual({ appended: true, history_length: 1 });
    // Delivery is at least once: the same job appended again is recorded once.
    expect(await stub.append({ ...entry(1), output: ["again"] })).toEqual({ appended: false, reason: "duplicate" });
    const attached = await stub.attach();
    expect(attached).toMatchObject({
      state: { persona: "terse" },
      history: [{ at: 1_000, model: "alpha", job_id: "alpha:1", input: { n: 1 }, output: [2] }],
      etag,
    });
    // History is the jobs' record, not the state: appending leaves the ETag as it was, and so does PUT the history.
    expect((await get(id)).headers.get("ETag")).toBe(etag);
    await put(id, { persona: "chatty" });
    expect((await get(id)).body.history).toHaveLength(1);
  });

  it("keeps the newest SESSION_HISTORY_LIMIT entries, dropping the oldest", async () => {
    const id = newId();
    await put(id, {});
    const stub = await stubOf(id);
    const limit = SESSION_DEFAULTS.historyLimit;
    for (let n = 0; n < limit + 5; n++) {
      const result = await stub.append(entry(n));
      expect(result).toEqual({ appended: true, history_length: Math.min(n + 1, limit) });
    }
    const history = (await get(id)).body.history as { job_id: string }[];
    expect(history).toHaveLength(limit);
    expect(history[0]?.job_id).toBe("alpha:5");
    expect(history.at(-1)?.job_id).toBe(`alpha:${limit + 4}`);
  });

  it("refuses an entry too large to store", async () => {
    const id = newId();
    await put(id, {});
    const result = await (await stubOf(id)).append({ ...entry(1), input: "x".repeat(300 * 1024) });
    expect(result).toMatchObject({ appended: false, reason: "too_large", limit: 256 * 1024 });
    expect((await get(id)).body.history).toEqual([]);
  });
});

describe("applyMergePatch", () => {
  // RFC 7396 appendix A, every example.
  const cases: [Json, Json, Json][] = [
    [{ a: "b" }, { a: "c" }, { a: "c" }],
    [{ a: "b" }, { b: "c" }, { a: "b", b: "c" }],
    [{ a: "b" }, { a: null }, {}],
    [{ a: "b", b: "c" }, { a: null }, { b: "c" }],
    [{ a: ["b"] }, { a: "c" }, { a: "c" }],
    [{ a: "c" }, { a: ["b"] }, { a: ["b"] }],
    [{ a: { b: "c" } }, { a: { b: "d", c: null } }, { a: { b: "d" } }],
    [{ a: [{ b: "c" }] }, { a: [1] }, { a: [1] }],
    [
      ["a", "b"],
      ["c", "d"],
      ["c", "d"],
    ],
    [{ a: "b" }, ["c"], ["c"]],
    [{ a: "foo" }, null, null],
    [{ a: "foo" }, "bar", "bar"],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: "b", c: null }, { a: "b" }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  it.each(cases)("%j patched with %j is %j", (target, patch, result) => {
    const before = JSON.stringify(target);
    expect(applyMergePatch(target, patch)).toEqual(result);
    expect(JSON.stringify(target)).toBe(before);
  });
});
