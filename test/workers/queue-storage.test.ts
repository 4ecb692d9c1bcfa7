// How a model queue keeps its hot path cheap in SQLite, in real workerd: metrics gathered in memory and
// written about once a second (or when read), and queue indexes that hold queued items only.
import { runInDurableObject } from "cloudflare:test";
import { afterEach, describe, expect, it } from "vitest";
import { STORE_OUTPUTS, STORE_SPANS } from "../../edge/model-queue/lease-settlement.ts";
import { METRICS_FLUSH_MS, MetricsStore } from "../../edge/model-queue/metrics-store.ts";
import { BROWSER_ITEMS, PoolRouter, type RoutePlan } from "../../edge/model-queue/pool-router.ts";
import { BOUND_LIMIT, Sql } from "../../edge/sql.ts";
import type { ModelConfig } from "../../shared/index.ts";
import { infer, queue, SocketWorker, scrape, waitFor, wipeQueues } from "./helpers.ts";

afterEach(() => wipeQueues());

const storedCount = (model: string, name: string) =>
  runInDurableObject(queue(model), (_instance, state) => {
    const row = state.storage.sql
      .exec<{ value: number }>("SELECT value FROM counters WHERE name = ? AND pool = 'gpu'", name)
      .toArray()[0];
    return row?.value ?? 0;
  });

describe("metrics", () => {
  it("are written to storage by the object's own timer after a change, not on every lease", async () => {
    const worker = await SocketWorker.connect("bravo");
    const answer = infer({ model: "bravo", inputs: [1, 2, 3] });
    worker.complete(await worker.next("batch"));
    expect((await answer).status).toBe(200);
    const started = Date.now();
    const stored = await storedCount("bravo", "completed");
    // Just answered: the completion is counted in memory only (unless this machine stalled past the flush).
    if (Date.now() - started < METRICS_FLUSH_MS / 2) expect(stored).toBe(0);
    // Then written by the object's own timer: nothing here reads the metrics through the queue.
    const written = async () => ((await storedCount("bravo", "completed")) === 3 ? true : undefined);
    expect(await waitFor(written, METRICS_FLUSH_MS + 10_000)).toBe(true);
    worker.close();
  });

  it("are complete when read, whether or not they were written yet", async () => {
    const worker = await SocketWorker.connect("bravo");
    const answer = infer({ model: "bravo", inputs: [1, 2] });
    worker.complete(await worker.next("batch"));
    expect((await answer).status).toBe(200);
    const text = (await scrape()).body as string;
    expect(text).toMatch(/edgeswarm_items_completed_total\{model="bravo",pool="gpu"\} 2\b/);
    expect(text).toMatch(/edgeswarm_batch_size_count\{model="bravo",pool="gpu"\} 1\b/);
    // Reading wrote them, so a restart keeps them.
    expect(await storedCount("bravo", "completed")).toBe(2);
    worker.close();
  });
  it("drop what a transaction counted when the transaction throws, as its rows are rolled back", async () => {
    await infer({ model: "bravo", inputs: [1], wait: false }); // the object and its tables exist
    const completed = await runInDurableObject(queue("bravo"), (_instance, state) => {
      const metrics = new MetricsStore(new Sql(state.storage.sql), (run) => state.storage.transactionSync(run));
      expect(() =>
        metrics.counting(() =>
          state.storage.transactionSync(() => {
            metrics.inc("completed", "gpu", 5);
            throw new Error("settling failed half way");
          }),
        ),
      ).toThrow("settling failed half way");
      metrics.counting(() => state.storage.transactionSync(() => metrics.inc("completed", "gpu", 1)));
      return metrics.snapshot().counters.find((c) => c.name === "completed" && c.pool === "gpu")?.value;
    });
    expect(completed).toBe(1);
  });
});

describe("queue indexes", () => {
  it("index queued items only, so leasing and settling touch fewer index pages", async () => {
    await infer({ model: "bravo", inputs: [1], wait: false });
    const indexes = await runInDurableObject(queue("bravo"), (_instance, state) =>
      state.storage.sql
        .exec<{ name: string; sql: string }>(
          "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items'",
        )
        .toArray(),
    );
    const byName = new Map(indexes.map((i) => [i.name, i.sql]));
    expect(byName.get("items_queued")).toMatch(/WHERE state = 'queued'/);
    expect(byName.get("items_queued_routing")).toMatch(/WHERE state = 'queued'/);
    expect(byName.has("items_queue")).toBe(false);
    expect(byName.has("items_routed")).toBe(false);
    const open = await runInDurableObject(queue("bravo"), (_instance, state) =>
      state.storage.sql
        .exec<{ name: string }>(
          "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name IN ('jobs', 'leases')",
        )
        .toArray()
        .map((r) => r.name),
    );
    expect(open).toEqual(expect.arrayContaining(["jobs_open_deadline", "leases_active_deadline", "leases_ended"]));
    expect(open).not.toContain("jobs_open");
    expect(open).not.toContain("leases_active");
    // The hand-out query walks the queued-only index in serving order, with no sort of its own, with its limit
    // bound as it is bound (unknown while planning) and each pool's filter.
    const router = new PoolRouter(new Sql(undefined as never));
    const gpuItems = (verification: boolean) =>
      router.gpuItems({ verification: { enabled: verification } } as ModelConfig, { overflow: 1 } as RoutePlan, false);
    for (const filter of [{ where: "", bindings: [] }, BROWSER_ITEMS, gpuItems(false), gpuItems(true)]) {
      const plan = await runInDurableObject(queue("bravo"), (_instance, state) =>
        state.storage.sql
          .exec<{ detail: string }>(
            `EXPLAIN QUERY PLAN SELECT seq FROM items WHERE state = 'queued' AND available_at <= ?${filter.where} ORDER BY priority DESC, seq ${BOUND_LIMIT}`,
            Date.now(),
            ...filter.bindings,
            8,
          )
          .toArray()
          .map((r) => r.detail)
          .join("\n"),
      );
      expect(plan).toMatch(/items_queued\b/);
      expect(plan).not.toMatch(/TEMP B-TREE/);
    }
    // What the alarm looks up on every run finds its rows through an index, never by reading a table whole.
    const alarmPlans = await runInDurableObject(queue("bravo"), (_instance, state) =>
      [
        "SELECT MIN(available_at) FROM items WHERE state = 'queued' AND available_at > enqueued_at AND available_at > 0",
        "SELECT MIN(deadline) FROM jobs WHERE status IN ('queued', 'running')",
        "SELECT id FROM jobs WHERE status IN ('queued', 'running') AND deadline <= 0",
        "SELECT MIN(deadline) FROM leases WHERE state = 'active'",
        "DELETE FROM leases WHERE state != 'active' AND ended_at <= 0",
      ].map((q) =>
        state.storage.sql
          .exec<{ detail: string }>(`EXPLAIN QUERY PLAN ${q}`)
          .toArray()
          .map((r) => r.detail)
          .join("; "),
      ),
    );
    for (const p of alarmPlans)
      expect(p).toMatch(
        /USING (COVERING )?INDEX (items_backoff|jobs_open_deadline|leases_active_deadline|leases_ended)\b/,
      );
  });

  it("store a batch's outputs and spans with one lookup of the lease's items, each reading its own by position", async () => {
    await infer({ model: "bravo", inputs: [1], wait: false });
    const plans = await runInDurableObject(queue("bravo"), (_instance, state) =>
      [
        [STORE_OUTPUTS, "lease", '["a","b"]', 0, 2],
        [STORE_SPANS, "lease", '["a","b"]'],
      ].map(([q, ...bindings]) =>
        state.storage.sql
          .exec<{ detail: string }>(`EXPLAIN QUERY PLAN ${q}`, ...(bindings as SqlStorageValue[]))
          .toArray()
          .map((r) => r.detail),
      ),
    );
    // One search of the lease's items, and no scan of anything per item (a json_each joined on the position was
    // scanned whole for every item: quadratic in the batch).
    for (const plan of plans)
      expect(plan).toEqual([expect.stringMatching(/^SEARCH items USING (COVERING )?INDEX items_lease\b/)]);
    // And each item gets its own output and span, as sent, the nulls leaving theirs unwritten.
    const stored = await runInDurableObject(queue("bravo"), (_instance, state) => {
      const sql = state.storage.sql;
      sql.exec(
        "INSERT INTO items (job_id, idx, priority, enqueued_at, available_at, state, input, lease_id, lease_pos) SELECT 'j', value, 0, 0, 0, 'leased', '1', 'L', value FROM json_each('[0,1,2,3]')",
      );
      sql.exec(STORE_SPANS, "L", JSON.stringify(["t0", null, "t2"]));
      sql.exec(STORE_OUTPUTS, "L", JSON.stringify(['"c"', null, '{"é":"\\u0000"}']), 1, 3);
      return sql
        .exec<{ lease_pos: number; state: string; output: string | null; worker_traceparent: string | null }>(
          "SELECT lease_pos, state, output, worker_traceparent FROM items WHERE job_id = 'j' ORDER BY lease_pos",
        )
        .toArray();
    });
    expect(stored).toEqual([
      { lease_pos: 0, state: "leased", output: null, worker_traceparent: "t0" },
      { lease_pos: 1, state: "succeeded", output: '"c"', worker_traceparent: null },
      { lease_pos: 2, state: "leased", output: null, worker_traceparent: "t2" },
      { lease_pos: 3, state: "succeeded", output: '{"é":"\\u0000"}', worker_traceparent: null },
    ]);
  });
});
