// Which of a model's queued items each pool may lease now (shared/policy/routing.ts decides how many may
// overflow to the GPU pool). The browser pool's serving rate is learned from its completed leases, per
// worker, in memory: after a restart it is learned again within a few batches, and until then only the
// "no browser worker" and "waited too long" rules send work to the GPU pool.
import {
  expectedBatchMs,
  gpuOverflow,
  type ModelConfig,
  type Pool,
  poolRate,
  smoothedMsPerItem,
  smoothedRate,
} from "../../shared/index.ts";
import { BOUND_LIMIT, type Sql } from "../sql.ts";
import type { ItemFilter, LeaseRow } from "./lease-table.ts";
import type { LeaseHolder } from "./worker-slots.ts";

/** What each pool may take from the queue now. */
export interface RoutePlan {
  /** Queued items the GPU pool may lease: pinned to it, tie-breaks waiting for it, and the overflow. */
  gpu: number;
  /** Queued items the browser pool may lease: all but those pinned to the GPU pool. */
  browser: number;
  /** Of the routed items (no pool asked), how many the GPU pool may take from the head of the queue. */
  overflow: number;
  /** When the oldest routed item the GPU pool may not take yet becomes overdue; null if none waits. */
  nextOverdueAt: number | null;
}

/** Items a browser worker may lease: any but those pinned to the GPU pool. */
export const BROWSER_ITEMS: ItemFilter = { where: " AND (pool IS NULL OR pool = 'browser')", bindings: [] };

/** The plan while no browser worker is ready: every queued item may go to the GPU pool. */
const ALL_TO_GPU: Readonly<RoutePlan> = Object.freeze({
  gpu: Number.MAX_SAFE_INTEGER,
  browser: 0,
  overflow: Number.MAX_SAFE_INTEGER,
  nextOverdueAt: null,
});

/**
 * Queued items the GPU pool takes at once, whatever the overflow rule says. With verification on: every
 * item a donor's output waits on (its verifying run goes to whichever trusted or independent worker is free
 * first, never behind the overflow timer), and every item a donor failed to deliver (hedged, lost, an
 * error): it is the trusted pool's too from then on, and donors' only until its donor-fault budget is spent.
 * With verification off, only tie-breaks between browser runs that disagree.
 */
function gpuAtOnce(cfg: ModelConfig): ItemFilter {
  return cfg.verification.enabled
    ? { where: "pool IS NOT 'gpu' AND (n_candidates > 0 OR donor_faults > 0)", bindings: [] }
    : { where: "pool IS NULL AND n_candidates >= 2", bindings: [] };
}

/** Browser workers whose rates are kept at most; older entries go first. */
const MAX_TRACKED = 10_000;

export class PoolRouter {
  private readonly rates = new Map<string, number>();
  /** Each browser worker's compute per item (ms), smoothed over its completed leases. */
  private readonly msPerItem = new Map<string, number>();

  constructor(private readonly sql: Sql) {}

  /** A browser worker completed a lease: learn how fast it serves (items per second of lease time). */
  observe(lease: LeaseRow, now: number): void {
    if (lease.pool !== "browser" || lease.n_items <= 0) return;
    const msPerItem = smoothedMsPerItem(
      this.msPerItem.get(lease.worker_id) ?? null,
      now - lease.created_at,
      lease.n_items,
    );
    this.msPerItem.delete(lease.worker_id);
    this.msPerItem.set(lease.worker_id, msPerItem);
    if (this.msPerItem.size > MAX_TRACKED) this.msPerItem.delete(this.msPerItem.keys().next().value as string);
    const rate = smoothedRate(this.rates.get(lease.worker_id), lease.n_items, now - lease.created_at);
    this.rates.delete(lease.worker_id);
    this.rates.set(lease.worker_id, rate);
    if (this.rates.size > MAX_TRACKED) this.rates.delete(this.rates.keys().next().value as string);
  }

  /**
   * What a browser batch of `items` is expected to take: the lower quartile of the workers' observed times per
   * item, so that no one donor, completing just before each hedge, can stretch everyone's hedge time; null
   * before any lease completed.
   */
  expectedBrowserMs(items: number): number | null {
    const times = [...this.msPerItem.values()].sort((a, b) => a - b);
    return expectedBatchMs(times.length === 0 ? null : (times[Math.floor((times.length - 1) / 4)] ?? null), items);
  }

  /**
   * The browser pool's rate with these workers ready, in items/s; null until one of them was observed. A
   * donor counts at no more batches than it may hold (donor_max_leases), whatever concurrency it claims.
   */
  browserRate(cfg: ModelConfig, ready: readonly LeaseHolder[]): number | null {
    const cap = (w: LeaseHolder) =>
      w.donor !== undefined && cfg.verification.enabled
        ? Math.min(w.max_concurrent_batches, cfg.verification.donor_max_leases)
        : w.max_concurrent_batches;
    return poolRate(ready.map((w) => ({ rate: this.rates.get(w.worker_id), concurrency: cap(w) })));
  }

  plan(cfg: ModelConfig, now: number, browserReady: readonly LeaseHolder[], inFlight: Record<Pool, number>): RoutePlan {
    const atOnce = gpuAtOnce(cfg);
    const row = this.sql.one<{
      routed: number;
      overdue: number | null;
      oldest: number | null;
      gpu: number;
      browser: number;
      tie: number;
    }>(
      `SELECT
         COUNT(*) FILTER (WHERE pool IS NULL) AS routed,
         SUM(pool IS NULL AND enqueued_at <= ?) AS overdue,
         MIN(enqueued_at) FILTER (WHERE pool IS NULL) AS oldest,
         COUNT(*) FILTER (WHERE pool = 'gpu') AS gpu,
         COUNT(*) FILTER (WHERE pool = 'browser') AS browser,
         COUNT(*) FILTER (WHERE ${atOnce.where}) AS tie
       FROM items WHERE state = 'queued'`,
      now - cfg.overflow_after_ms,
      ...atOnce.bindings,
    );
    const routed = row?.routed ?? 0;
    const overflow = gpuOverflow({
      browserWorkers: browserReady.length,
      browserItemsPerSecond: this.browserRate(cfg, browserReady),
      browserInFlight: inFlight.browser,
      autoQueued: routed,
      autoOverdue: row?.overdue ?? 0,
      latencyTargetMs: cfg.latency_target_ms,
    });
    return {
      gpu: (row?.gpu ?? 0) + Math.max(overflow, row?.tie ?? 0),
      browser: routed + (row?.browser ?? 0),
      overflow,
      nextOverdueAt:
        overflow < routed && row?.oldest !== null && row?.oldest !== undefined
          ? row.oldest + cfg.overflow_after_ms
          : null,
    };
  }

  /**
   * What a free GPU worker may take now, counted no further than a batch past what the browser pool
   * drains in time: each count stops early (items_routed index), so a hand-out costs the same with ten
   * queued items as with ten thousand. `gpu` is at most `batch` more than needed; stats() uses plan().
   */
  handOutPlan(
    cfg: ModelConfig,
    now: number,
    browserReady: readonly LeaseHolder[],
    browserInFlight: () => number,
    batch: number,
  ): RoutePlan {
    // No browser worker to wait for: the GPU pool may take anything, with nothing to count.
    if (browserReady.length === 0) return ALL_TO_GPU;
    const inFlight = browserInFlight();
    const upTo = (where: string, cap: number, ...bindings: SqlStorageValue[]) =>
      this.sql.one<{ n: number }>(
        `SELECT COUNT(*) AS n FROM (SELECT 1 FROM items WHERE state = 'queued' AND ${where} ${BOUND_LIMIT})`,
        ...bindings,
        cap,
      )?.n ?? 0;
    const rate = this.browserRate(cfg, browserReady);
    const drainable =
      browserReady.length === 0 || rate === null
        ? 0
        : Math.ceil(Math.max(0, (rate * cfg.latency_target_ms) / 1000 - inFlight));
    const routed = upTo("pool IS NULL", drainable + batch);
    const overflow = gpuOverflow({
      browserWorkers: browserReady.length,
      browserItemsPerSecond: rate,
      browserInFlight: inFlight,
      autoQueued: routed,
      autoOverdue: upTo("pool IS NULL AND enqueued_at <= ?", batch, now - cfg.overflow_after_ms),
      latencyTargetMs: cfg.latency_target_ms,
    });
    const pinned = upTo("pool = 'gpu'", batch);
    const atOnce = gpuAtOnce(cfg);
    const tie = upTo(atOnce.where, batch, ...atOnce.bindings);
    const oldest =
      overflow < routed
        ? this.sql.one<{ t: number | null }>(
            "SELECT MIN(enqueued_at) AS t FROM items WHERE state = 'queued' AND pool IS NULL",
          )?.t
        : null;
    return {
      gpu: pinned + overflow + tie, // an upper bound: the filter (gpuItems) says which items
      browser: routed,
      overflow,
      nextOverdueAt: oldest === null || oldest === undefined ? null : oldest + cfg.overflow_after_ms,
    };
  }

  /**
   * Items a GPU worker may lease under `plan`: pinned to it, those it takes at once, routed ones when some
   * overflow, and, while no donor could take them (none connected, or every one quarantined or tripped),
   * those pinned to the browser pool: a call is never left to wait for a pool that cannot serve it.
   */
  gpuItems(cfg: ModelConfig, plan: RoutePlan, donorReady: boolean): ItemFilter {
    const atOnce = gpuAtOnce(cfg);
    return {
      where: ` AND (pool = 'gpu' OR (${atOnce.where}) OR (pool IS NULL AND ?) OR (pool = 'browser' AND ?))`,
      bindings: [...atOnce.bindings, plan.overflow > 0 ? 1 : 0, donorReady ? 0 : 1],
    };
  }
}
