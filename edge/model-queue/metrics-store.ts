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
  private counters = new Map<string, { name: CounterName; pool: string; by: number }>();
  private histograms = new Map<string, PendingHistogram>();
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly sql: Sql,
    /** The object's storage transactions: a flush writes all of its rows or none. */
    private readonly transactionSync: <T>(run: () => T) => T,
  ) {}

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

  /**
   * Runs `run` (a storage transaction that counts as it goes) so that what it counted is kept only if it
   * returns: a transaction that throws rolls its rows back, and its counts go with them.
   */
  counting<T>(run: () => T): T {
    const counters = new Map([...this.counters].map(([k, c]) => [k, { ...c }]));
    const histograms = new Map(
      [...this.histograms].map(([k, h]) => [k, { ...h, buckets: new Map(h.buckets) }] as const),
    );
    try {
      return run();
    } catch (error) {
      this.counters = counters;
      this.histograms = histograms;
      throw error;
    }
  }

  /**
   * Writes the gathered changes to storage now, in one transaction. Metrics are best effort: changes
   * that could not be written are dropped (and logged) rather than kept to be counted twice later.
   */
  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    const counters = this.counters;
    const histograms = this.histograms;
    if (counters.size === 0 && histograms.size === 0) return;
    this.counters = new Map();
    this.histograms = new Map();
    try {
      this.transactionSync(() => this.write(counters, histograms));
    } catch (error) {
      console.error("writing metrics failed; these changes are dropped", error);
    }
  }

  private write(
    counters: ReadonlyMap<string, { name: CounterName; pool: string; by: number }>,
    histograms: ReadonlyMap<string, PendingHistogram>,
  ): void {
    for (const { name, pool, by } of counters.values()) {
      this.sql.run(
        "INSERT INTO counters (name, pool, value) VALUES (?, ?, ?) ON CONFLICT (name, pool) DO UPDATE SET value = value + excluded.value",
        name,
        pool,
        by,
      );
    }
    for (const { name, pool, buckets, sum, count } of histograms.values()) {
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
  }

  private flushSoon(): void {
    if (this.timer !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
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
