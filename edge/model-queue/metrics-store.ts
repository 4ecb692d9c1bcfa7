// Counters and histograms of one model queue, kept in its SQLite storage so a restart keeps them.
// Observations are bucketed here; /metrics renders them with the model and pool labels.
import { COUNTERS, type CounterName, HISTOGRAMS, type HistogramName } from "../metrics/definitions.ts";
import type { Sql } from "../sql.ts";

export interface MetricsSnapshot {
  counters: { name: CounterName; pool: string; value: number }[];
  histograms: { name: HistogramName; pool: string; buckets: number[]; sum: number; count: number }[];
}

export class MetricsStore {
  constructor(private readonly sql: Sql) {}

  inc(name: CounterName, pool: string, by = 1): void {
    if (by === 0) return;
    this.sql.run(
      "INSERT INTO counters (name, pool, value) VALUES (?, ?, ?) ON CONFLICT (name, pool) DO UPDATE SET value = value + excluded.value",
      name,
      pool,
      by,
    );
  }

  observe(name: HistogramName, pool: string, values: readonly number[]): void {
    if (values.length === 0) return;
    const bounds = HISTOGRAMS[name].buckets;
    const perBucket = new Map<number, number>();
    let sum = 0;
    for (const v of values) {
      sum += v;
      let bucket = bounds.findIndex((b) => v <= b);
      if (bucket < 0) bucket = bounds.length; // the +Inf bucket
      perBucket.set(bucket, (perBucket.get(bucket) ?? 0) + 1);
    }
    for (const [bucket, count] of perBucket) {
      this.sql.run(
        "INSERT INTO histograms (name, pool, bucket, count) VALUES (?, ?, ?, ?) ON CONFLICT (name, pool, bucket) DO UPDATE SET count = count + excluded.count",
        name,
        pool,
        bucket,
        count,
      );
    }
    this.sql.run(
      "INSERT INTO histogram_totals (name, pool, sum, count) VALUES (?, ?, ?, ?) ON CONFLICT (name, pool) DO UPDATE SET sum = sum + excluded.sum, count = count + excluded.count",
      name,
      pool,
      sum,
      values.length,
    );
  }

  snapshot(): MetricsSnapshot {
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
