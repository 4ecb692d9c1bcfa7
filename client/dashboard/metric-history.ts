// What the dashboard charts, worked out from two readings of the coordinator in a row (/metrics parsed,
// /v1/scaling): gauges as read, counters as rates, histograms as quantiles of what was observed between
// the readings, as Prometheus's rate() and histogram_quantile() would. Pure: tested in Node.
import type { Sample } from "./prometheus-text.ts";

/** The parts of GET /v1/scaling the dashboard reads. */
export interface ScalingAnswer {
  pools: Record<string, { queue_length: number; raw_replicas: number; desired_replicas: number }>;
  models: Record<string, { queued: number; in_flight: Record<string, number>; workers: Record<string, number> }>;
}

export interface Reading {
  /** ms since the epoch */
  at: number;
  samples: readonly Sample[];
  scaling: ScalingAnswer;
}

/** One value per series at one reading; null where it has no value (no new observations). */
export type Point = Map<string, number | null>;

type Labels = Readonly<Record<string, string>>;
const modelPool = (l: Labels) => `${l.model} · ${l.pool}`;

function byKey(samples: readonly Sample[], name: string, key: (l: Labels) => string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples) {
    if (s.name !== name) continue;
    const k = key(s.labels);
    out.set(k, (out.get(k) ?? 0) + s.value);
  }
  return out;
}

/** Per second between the readings; a counter that went down (a queue object restarted) counts from zero. */
function rate(prev: Reading | undefined, cur: Reading, name: string, key: (l: Labels) => string): Point {
  const now = byKey(cur.samples, name, key);
  const out: Point = new Map();
  if (!prev) return out;
  const before = byKey(prev.samples, name, key);
  const seconds = (cur.at - prev.at) / 1000;
  for (const [k, v] of now) {
    const delta = v - (before.get(k) ?? 0);
    out.set(k, seconds > 0 ? (delta >= 0 ? delta : v) / seconds : null);
  }
  return out;
}

/** Bucket counts per upper bound of one histogram's series, observed between the readings. */
function bucketDeltas(prev: Reading, cur: Reading, name: string): Map<string, [number, number][]> {
  const count = (r: Reading) => {
    const m = new Map<string, Map<number, number>>();
    for (const s of r.samples) {
      if (s.name !== `${name}_bucket`) continue;
      const k = modelPool(s.labels);
      const le = s.labels.le === "+Inf" ? Number.POSITIVE_INFINITY : Number(s.labels.le);
      if (!m.has(k)) m.set(k, new Map());
      m.get(k)?.set(le, s.value);
    }
    return m;
  };
  const before = count(prev);
  const out = new Map<string, [number, number][]>();
  for (const [k, buckets] of count(cur)) {
    const old = before.get(k);
    const deltas = [...buckets]
      .sort((a, b) => a[0] - b[0])
      .map(([le, v]): [number, number] => [le, v - (old?.get(le) ?? 0)]);
    // A restarted queue object counts from zero again: take its buckets as they are.
    out.set(k, deltas.some(([, d]) => d < 0) ? [...buckets].sort((a, b) => a[0] - b[0]) : deltas);
  }
  return out;
}

/** histogram_quantile over cumulative buckets: linear within the bucket the rank falls in. */
export function quantile(q: number, cumulative: readonly [number, number][]): number | null {
  const total = cumulative.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const [le, count] of cumulative) {
    if (count >= rank) {
      // Past the last finite bound there is nothing to interpolate to: the highest finite bound.
      if (!Number.isFinite(le)) return lowerBound;
      return lowerBound + ((le - lowerBound) * (rank - lowerCount)) / Math.max(count - lowerCount, 1e-12);
    }
    lowerBound = le;
    lowerCount = count;
  }
  return lowerBound;
}

function latency(prev: Reading | undefined, cur: Reading): Point {
  const out: Point = new Map();
  if (!prev) return out;
  for (const [k, buckets] of bucketDeltas(prev, cur, "edgeswarm_request_duration_seconds")) {
    for (const [label, q] of [
      ["p50", 0.5],
      ["p99", 0.99],
    ] as const) {
      const seconds = quantile(q, buckets);
      out.set(`${k} ${label}`, seconds === null ? null : seconds * 1000);
    }
  }
  return out;
}

/** Mean items per batch between the readings: Δsum / Δcount of edgeswarm_batch_size. */
function batchSize(prev: Reading | undefined, cur: Reading): Point {
  const out: Point = new Map();
  if (!prev) return out;
  const sums = rate(prev, cur, "edgeswarm_batch_size_sum", modelPool);
  const counts = rate(prev, cur, "edgeswarm_batch_size_count", modelPool);
  for (const [k, n] of counts) out.set(k, n ? (sums.get(k) ?? 0) / n : null);
  return out;
}

function gauge(cur: Reading, name: string, key: (l: Labels) => string): Point {
  return new Map(byKey(cur.samples, name, key));
}

function replicas(cur: Reading): Point {
  const gpu = cur.scaling.pools.gpu;
  // One gpu worker holds a socket per model it serves: the most on any model is how many are connected.
  const connected = Math.max(0, ...Object.values(cur.scaling.models).map((m) => m.workers.gpu ?? 0));
  return new Map([
    ["desired", gpu?.desired_replicas ?? null],
    ["formula (raw)", gpu?.raw_replicas ?? null],
    ["connected gpu workers", connected],
  ]);
}

export interface PanelSpec {
  id: string;
  title: string;
  unit: string;
  compute(prev: Reading | undefined, cur: Reading): Point;
}

const byModel = (l: Labels) => l.model ?? "";

export const PANELS: readonly PanelSpec[] = [
  {
    id: "queue-depth",
    title: "Queue depth",
    unit: "items",
    compute: (_p, cur) => {
      const out = gauge(cur, "edgeswarm_queue_depth", byModel);
      for (const [pool, s] of Object.entries(cur.scaling.pools)) out.set(`${pool} pool queue length`, s.queue_length);
      return out;
    },
  },
  {
    id: "throughput",
    title: "Items answered per second",
    unit: "items/s",
    compute: (p, cur) => rate(p, cur, "edgeswarm_items_completed_total", modelPool),
  },
  { id: "latency", title: "Latency p50 / p99, accept to answer", unit: "ms", compute: latency },
  {
    id: "workers",
    title: "Workers (gpu pool) and donors (browser pool)",
    unit: "connected",
    compute: (_p, cur) => gauge(cur, "edgeswarm_workers", modelPool),
  },
  { id: "batch-size", title: "Mean batch size", unit: "items", compute: batchSize },
  {
    id: "trust",
    title: "Verification and quarantine",
    unit: "count",
    compute: (p, cur) => {
      const out: Point = new Map();
      const add = (label: string, point: Point) => {
        for (const [k, v] of point) out.set(`${k} ${label}`, v);
      };
      add("verifications/s", rate(p, cur, "edgeswarm_verifications_total", byModel));
      add("disagreements/s", rate(p, cur, "edgeswarm_verification_disagreements_total", byModel));
      add("awaiting verification", gauge(cur, "edgeswarm_items_awaiting_verification", byModel));
      add("quarantined", gauge(cur, "edgeswarm_quarantined_workers", byModel));
      return out;
    },
  },
  {
    id: "replicas",
    title: "GPU replicas: desired and connected",
    unit: "replicas",
    compute: (_p, cur) => replicas(cur),
  },
];

/** A panel's series over time, aligned on one time axis (seconds), the oldest dropped past `limit` points. */
export class History {
  readonly times: number[] = [];
  readonly series = new Map<string, (number | null)[]>();

  constructor(private readonly limit: number) {}

  push(at: number, point: Point): void {
    this.times.push(at / 1000);
    for (const [key, value] of point) {
      if (!this.series.has(key)) this.series.set(key, new Array(this.times.length - 1).fill(null));
      this.series.get(key)?.push(value);
    }
    for (const values of this.series.values()) if (values.length < this.times.length) values.push(null);
    if (this.times.length > this.limit) {
      this.times.shift();
      for (const values of this.series.values()) values.shift();
    }
  }
}
