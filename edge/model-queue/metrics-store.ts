// Counters and histograms of one model queue, kept in its SQLite storage so a restart keeps them.
// Observations are bucketed here; /metrics renders them with the model and pool labels.
import { COUNTERS, type CounterName, HISTOGRAMS, type HistogramName } from "../metrics/definitions.ts";
import type { Sql } from "../sql.ts";

export interface MetricsSnapshot {
  counters: { name: CounterName; pool: string; value: number }[];
  histograms: { name: HistogramName; pool: string; buckets: number[]; sum: number; count: number }[];
}

/** Metrics are written to storage this long after the first change since the last write, at the latest. */
export const METRICS_FLUSH_MS = 1_000;

interface PendingHistogram {
  name: HistogramName;
  pool: string;
  buckets: Map<number, number>;
  sum: number;
  count: number;
}

/**
 * Changes are gathered in memory and written together (METRICS_FLUSH_MS after the first, or when the
 * metrics are read): a busy queue writes its metrics about once a second rather than several rows per
 * lease. A restart loses at most that last second of counts, as a process restart resets Prometheus counters.
 */
export class MetricsStore {
  private readonly counters = new Map<string, { name: CounterName; pool: string; by: number }>();
  private readonly histograms = new Map<string, PendingHistogram>();
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly sql: Sql) {}

  inc(name: CounterName, pool: string, by = 1): void {
    if (by === 0) return;
    const key = `${name} ${pool}`;
    const pending = this.counters.get(key);
    if (pending) pending.by += by;
    else this.counters.set(key, { name, pool, by });
    this.flushSoon();
  }

  observe(name: HistogramName, pool: string, values: readonly number[]): void {
    if (values.length === 0) return;
    const key = `${name} ${pool}`;
    let pending = this.histograms.get(key);
    if (!pending) {
      pending = { name, pool, buckets: new Map(), sum: 0, count: 0 };
      this.histograms.set(key, pending);
    }
    const bounds = HISTOGRAMS[name].buckets;
    for (const v of values) {
      pending.sum += v;
      let bucket = bounds.findIndex((b) => v <= b);
      if (bucket < 0) bucket = bounds.length; // the +Inf bucket
      pending.buckets.set(bucket, (pending.buckets.get(bucket) ?? 0) + 1);
    }
    pending.count += values.length;
    this.flushSoon();
  }

  /** Writes the gathered changes to storage now. */
  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    for (const { name, pool, by } of this.counters.values()) {
      this.sql.run(
        "INSERT INTO counters (name, pool, value) VALUES (?, ?, ?) ON CONFLICT (name, pool) DO UPDATE SET value = value + excluded.value",
        name,
        pool,
        by,
      );
    }
    this.counters.clear();
    for (const { name, pool, buckets, sum, count } of this.histograms.values()) {
      for (const [bucket, n] of buckets) {
        this.sql.run(
          "INSERT INTO histograms (name, pool, bucket, count) VALUES (?, ?, ?, ?) ON CONFLICT (name, pool, bucket) DO UPDATE SET count = count + excluded.count",
          name,
          pool,
          bucket,
          n,
        );
      }
      this.sql.run(
        "INSERT INTO histogram_totals (name, pool, sum, count) VALUES (?, ?, ?, ?) ON CONFLICT (name, pool) DO UPDATE SET sum = sum + excluded.sum, count = count + excluded.count",
        name,
        pool,
        sum,
        count,
      );
    }
    this.histograms.clear();
  }

  private flushSoon(): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      try {
        this.flush();
      } catch (error) {
        // Metrics are best effort: what could not be written is dropped rather than counted twice later.
        this.counters.clear();
        this.histograms.clear();
        console.error("writing metrics failed", error);
      }
    }, METRICS_FLUSH_MS);
  }

  snapshot(): MetricsSnapshot {
    this.flush();
    const counters = this.sql
      .all<{ name: string; pool: string; value: number }>("SELECT name, pool, value FROM counters")
      .filter((r): r is { name: CounterName; pool: string; value: number } => r.name in COUNTERS);
    const totals = this.sql.all<{ name: string; pool: string; sum: number; count: number }>(
      "SELECT name, pool, sum, count FROM histogram_totals",
    );
    const rows = this.sql.all<{ name: string; pool: string; bucket: number; count: number }>(
      "SELECT name, pool, bucket, count FROM histograms",
    );
    const histograms: MetricsSnapshot["histograms"] = [];
    for (const t of totals) {
      if (!(t.name in HISTOGRAMS)) continue;
      const name = t.name as HistogramName;
      const buckets = new Array<number>(HISTOGRAMS[name].buckets.length + 1).fill(0);
      for (const r of rows) if (r.name === t.name && r.pool === t.pool) buckets[r.bucket] = r.count;
      histograms.push({ name, pool: t.pool, buckets, sum: t.sum, count: t.count });
    }
    return { counters, histograms };
  }
}
