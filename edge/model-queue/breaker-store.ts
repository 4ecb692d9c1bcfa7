// Each worker's circuit breaker on one model queue (shared/policy/hold-and-breaker.ts decides): kept in
// SQLite so a restart does not forgive a failing worker, cached in memory since every hand-out asks. Only
// workers with failures have a row; a success deletes it, and rows idle past their cooldown are dropped.
import {
  BREAKER_CLOSED,
  type BreakerRule,
  type BreakerState,
  breakerAfter,
  breakerAllows,
  breakerLeased,
  type ModelConfig,
  type Pool,
} from "../../shared/index.ts";
import type { Sql } from "../sql.ts";
import type { MetricsStore } from "./metrics-store.ts";

interface BreakerRow extends Record<string, SqlStorageValue> {
  worker: string;
  pool: string;
  state: string;
  failures: number;
  until: number | null;
  probing: number;
}

/** A breaker row untouched this long past its cooldown belongs to a worker that is gone. */
const IDLE_MS = 60 * 60_000;

/** The key a worker's breaker is kept under: its donor (which a page cannot change at will), else its id. */
export function breakerKey(w: { worker_id: string; donor?: string | null | undefined }): string {
  return w.donor ? `donor:${w.donor}` : `worker:${w.worker_id}`;
}

export class BreakerStore {
  private readonly cache = new Map<string, { pool: string; b: BreakerState }>();
  private loaded = false;

  constructor(
    private readonly sql: Sql,
    private readonly metrics: MetricsStore,
  ) {}

  private state(key: string): BreakerState {
    this.load();
    return this.cache.get(key)?.b ?? BREAKER_CLOSED;
  }

  /** Whether the worker may be given a batch now, and at most how many items (one for a probe). */
  allows(key: string, now: number): { allowed: boolean; maxItems: number | null } {
    if (this.cache.size === 0 && this.loaded) return { allowed: true, maxItems: null };
    return breakerAllows(this.state(key), now);
  }

  /** A worker's breaker as an operator reads it; closed with no failures for one that has no row. */
  describe(key: string): BreakerState {
    return this.state(key);
  }

  leased(key: string, pool: string, now: number): void {
    const b = this.state(key);
    if (b.state === "closed") return;
    this.write(key, pool, breakerLeased(b, now), now);
  }

  /** A batch of the worker ended: ok, or failed (expired, lost, or nothing but errors). */
  ended(key: string, pool: string, ok: boolean, now: number, cfg: ModelConfig): void {
    const b = this.state(key);
    if (ok && b.state === "closed" && b.failures === 0) return;
    const rule: BreakerRule = { failures: cfg.circuit_breaker.failures, cooldownMs: cfg.circuit_breaker.cooldown_ms };
    const next = breakerAfter(b, ok, now, rule);
    if (next.state === "open" && b.state !== "open") this.metrics.inc("breaker_trips", pool);
    this.write(key, pool, next, now);
  }

  /** Workers whose breaker is open or half-open now, by pool. */
  openByPool(now: number): Record<Pool, number> {
    this.load();
    const open: Record<Pool, number> = { browser: 0, gpu: 0 };
    for (const { pool, b } of this.cache.values()) {
      if ((pool === "browser" || pool === "gpu") && !breakerAllows(b, now).allowed) open[pool]++;
    }
    return open;
  }

  /** When the next open breaker lets a probe through (the alarm wakes the queue then); null if none is open. */
  nextProbeAt(now: number): number | null {
    let next: number | null = null;
    for (const { b } of this.cache.values()) {
      if (b.state === "open" && b.until > now && (next === null || b.until < next)) next = b.until;
    }
    return next;
  }

  /** Drops the rows of workers long gone. */
  dropIdle(now: number): void {
    const dropped = this.sql.all<{ worker: string }>(
      "DELETE FROM breakers WHERE updated_at <= ? AND (until IS NULL OR until <= ?) RETURNING worker",
      now - IDLE_MS,
      now,
    );
    for (const r of dropped) this.cache.delete(r.worker);
  }

  private write(key: string, pool: string, b: BreakerState, now: number): void {
    if (b.state === "closed" && b.failures === 0) {
      this.sql.run("DELETE FROM breakers WHERE worker = ?", key);
      this.cache.delete(key);
      return;
    }
    this.sql.run(
      `INSERT INTO breakers (worker, pool, state, failures, until, probing, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (worker) DO UPDATE SET state = excluded.state, failures = excluded.failures, until = excluded.until,
         probing = excluded.probing, updated_at = excluded.updated_at`,
      key,
      pool,
      b.state,
      b.failures,
      b.state === "open" ? b.until : null,
      b.state === "half-open" && b.probing ? 1 : 0,
      now,
    );
    this.cache.set(key, { pool, b });
  }

  private load(): void {
    if (this.loaded) return;
    this.loaded = true;
    for (const r of this.sql.all<BreakerRow>("SELECT worker, pool, state, failures, until, probing FROM breakers")) {
      const b: BreakerState =
        r.state === "open"
          ? { state: "open", failures: r.failures, until: r.until ?? 0 }
          : r.state === "half-open"
            ? { state: "half-open", failures: r.failures, probing: r.probing === 1 }
            : { state: "closed", failures: r.failures };
      this.cache.set(r.worker, { pool: r.pool, b });
    }
  }
}
