// Calls made in a session, inside real workerd: the worker gets the session's state with each item, and
// the call's inputs and outputs join the session's history once it succeeds, whichever worker ran it.
import { afterEach, describe, expect, it } from "vitest";
import { TEST_CPU_ONLY_KEY } from "../support/test-models.ts";
import { call, infer, SocketWorker, waitFor, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

const OTHER_KEY = { Authorization: `Bearer ${TEST_CPU_ONLY_KEY}` };

describe("calls in a session", () => {
  it("gives the worker the session's state and appends inputs and outputs to its history", async () => {
    expect((await call("/v1/sessions/chat-1", { method: "PUT", body: { persona: "terse", turn: 1 } })).status).toBe(
      201,
    );
    const worker = await SocketWorker.connect("alpha");
    const answer = infer({ model: "alpha", inputs: [1, 2], session: "chat-1" });
    const batch = await worker.next("batch");
    expect(batch.items.map((i) => i.session)).toEqual(["chat-1", "chat-1"]);
    expect(batch.sessions).toEqual({ "chat-1": { persona: "terse", turn: 1 } });
    worker.complete(batch, (x) => x * 100);
    const res = await answer;
    expect(res.status).toBe(200);

    const session = await waitFor(async () => {
      const s = await call("/v1/sessions/chat-1");
      return s.body.history.length > 0 ? s.body : undefined;
    });
    expect(session.history).toEqual([
      { at: expect.any(Number), model: "alpha", job_id: res.body.id, input: [1, 2], output: [100, 200] },
    ]);
  });

  it("appends every call of a busy session, however many finish at once", async () => {
    await call("/v1/sessions/busy", { method: "PUT", body: {} });
    const worker = await SocketWorker.connect("bravo", { max_batch_size: 64 });
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      ids.push((await infer({ model: "bravo", inputs: [i], session: "busy", wait: false })).body.id);
    }
    let done = 0;
    while (done < 20) {
      const batch = await worker.next("batch");
      worker.complete(batch);
      done += batch.items.length;
    }
    const history = await waitFor(async () => {
      const s = await call("/v1/sessions/busy");
      return s.body.history.length === 20 ? s.body.history : undefined;
    }, 10_000);
    expect(history.map((h: { job_id: string }) => h.job_id).sort()).toEqual([...ids].sort());
  });

  it("leaves a failed call out of the history", async () => {
    await call("/v1/sessions/chat-2", { method: "PUT", body: {} });
    const worker = await SocketWorker.connect("alpha");
    const answer = infer({ model: "alpha", inputs: [1], session: "chat-2" });
    const batch = await worker.next("batch");
    worker.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: [{ error: { code: "bad_input", message: "no", retryable: false } }],
    });
    expect((await answer).status).toBe(422);
    const ok = infer({ model: "alpha", inputs: [7], session: "chat-2" });
    worker.complete(await worker.next("batch"));
    expect((await ok).status).toBe(200);
    const history = await waitFor(async () => {
      const s = await call("/v1/sessions/chat-2");
      return s.body.history.length > 0 ? s.body.history : undefined;
    });
    expect(history.map((h: { input: unknown }) => h.input)).toEqual([[7]]);
  });

  it("refuses a call in a session that does not exist, or belongs to another key, or is not an id", async () => {
    const missing = await infer({ model: "alpha", inputs: [1], session: "nobody" });
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("session_not_found");
    expect(missing.body.error.message).toContain("PUT /v1/sessions/nobody");

    await call("/v1/sessions/mine", { method: "PUT", body: { secret: true } });
    const other = await call("/v1/infer", {
      body: { model: "alpha", inputs: [1], session: "mine" },
      headers: OTHER_KEY,
    });
    expect(other.status).toBe(404);

    const bad = await infer({ model: "alpha", inputs: [1], session: "not an id" });
    expect(bad.status).toBe(400);
    expect((await call("/v1/models")).status).toBe(200);
  });
});
