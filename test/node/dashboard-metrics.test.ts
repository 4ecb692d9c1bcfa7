// The dashboard's arithmetic (client/dashboard/): Prometheus text as prom-client writes it parsed back,
// counters turned into rates and histograms into quantiles between two readings, as Prometheus's rate()
// and histogram_quantile() would, and the history that keeps series aligned on one time axis.
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { describe, expect, it } from "vitest";
import { History, PANELS, quantile, type Reading, type ScalingAnswer } from "../../client/dashboard/metric-history.ts";
import { parsePrometheus } from "../../client/dashboard/prometheus-text.ts";

const scaling: ScalingAnswer = {
  pools: {
    gpu: { queue_length: 70, raw_replicas: 2, desired_replicas: 3 },
    browser: { queue_length: 5, raw_replicas: 1, desired_replicas: 1 },
  },
  models: {
    sentiment: { queued: 5, in_flight: { browser: 0, gpu: 2 }, workers: { browser: 1, gpu: 2 } },
    embedder: { queued: 0, in_flight: { browser: 0, gpu: 0 }, workers: { browser: 0, gpu: 1 } },
  },
};

/** The coordinator's series as a standard Prometheus client writes them. */
function exposition(completed: number, latencies: number[], batches: number[]) {
  const registry = new Registry();
  const depth = new Gauge({ name: "edgeswarm_queue_depth", help: "h", labelNames: ["model"], registers: [registry] });
  depth.set({ model: "sentiment" }, 5);
  depth.set({ model: 'odd "name"' }, 1);
  const done = new Counter({
    name: "edgeswarm_items_completed_total",
    help: "h",
    labelNames: ["model", "pool"],
    registers: [registry],
  });
  done.inc({ model: "sentiment", pool: "gpu" }, completed);
  const histogram = (name: string, buckets: number[], values: number[]) => {
    const h = new Histogram({ name, help: "h", labelNames: ["model", "pool"], buckets, registers: [registry] });
    for (const v of values) h.observe({ model: "sentiment", pool: "gpu" }, v);
  };
  histogram("edgeswarm_request_duration_seconds", [0.01, 0.1, 1], latencies);
  histogram("edgeswarm_batch_size", [1, 8, 64], batches);
  return registry.metrics();
}

async function reading(at: number, completed: number, latencies: number[], batches: number[]): Promise<Reading> {
  return { at, samples: parsePrometheus(await exposition(completed, latencies, batches)), scaling };
}

const panel = (id: string) => {
  const found = PANELS.find((p) => p.id === id);
  if (!found) throw new Error(`no panel ${id}`);
  return found;
};

describe("parsePrometheus", () => {
  it("reads prom-client's gauges, counters and histogram buckets, escaped labels included", async () => {
    const samples = parsePrometheus(await exposition(12, [0.05], [4]));
    expect(samples).toContainEqual({ name: "edgeswarm_queue_depth", labels: { model: 'odd "name"' }, value: 1 });
    expect(samples).toContainEqual({
      name: "edgeswarm_items_completed_total",
      labels: { model: "sentiment", pool: "gpu" },
      value: 12,
    });
    expect(samples).toContainEqual({
      name: "edgeswarm_request_duration_seconds_bucket",
      labels: { le: "+Inf", model: "sentiment", pool: "gpu" },
      value: 1,
    });
    expect(samples.some((s) => s.name.startsWith("#"))).toBe(false);
  });
});

describe("quantile", () => {
  it("interpolates within the bucket the rank falls in, and stops at the last finite bound", () => {
    const buckets: [number, number][] = [
      [0.1, 10],
      [0.5, 30],
      [Number.POSITIVE_INFINITY, 40],
    ];
    expect(quantile(0.5, buckets)).toBeCloseTo(0.3, 10);
    expect(quantile(0.25, buckets)).toBeCloseTo(0.1, 10);
    expect(quantile(0.99, buckets)).toBe(0.5);
    expect(quantile(0.5, [[0.1, 0]])).toBeNull();
  });
});

describe("the panels between two readings", () => {
  it("turns counters into rates per second and histograms into what was observed in between", async () => {
    const first = await reading(10_000, 100, [0.005, 0.005], [2]);
    const second = await reading(12_000, 140, [0.005, 0.005, 0.05, 0.05, 0.05, 0.05], [2, 6, 6]);
    expect(panel("throughput").compute(first, second).get("sentiment · gpu")).toBe(20);
    const latency = panel("latency").compute(first, second);
    // The four new observations all fell in (0.01, 0.1]: p50 at rank 2 of 4 is halfway through it.
    expect(latency.get("sentiment · gpu p50")).toBeCloseTo(55, 6);
    expect(latency.get("sentiment · gpu p99")).toBeCloseTo(10 + 90 * 0.99, 6);
    expect(panel("batch-size").compute(first, second).get("sentiment · gpu")).toBe(6);
    // The first reading has nothing to compare with: no rate yet.
    expect(panel("throughput").compute(undefined, first).size).toBe(0);
  });

  it("counts a counter that went down (a restarted queue) from zero", async () => {
    const before = await reading(0, 500, [], []);
    const after = await reading(1_000, 30, [], []);
    expect(panel("throughput").compute(before, after).get("sentiment · gpu")).toBe(30);
  });

  it("reads queue depth, pool queue lengths and gpu replicas desired against connected", async () => {
    const now = await reading(0, 0, [], []);
    const depth = panel("queue-depth").compute(undefined, now);
    expect(depth.get("sentiment")).toBe(5);
    expect(depth.get("gpu pool queue length")).toBe(70);
    expect(Object.fromEntries(panel("replicas").compute(undefined, now))).toEqual({
      desired: 3,
      "formula (raw)": 2,
      "connected gpu workers": 2,
    });
  });
});

describe("History", () => {
  it("keeps every series as long as the time axis, filling gaps with null, and drops the oldest past its limit", () => {
    const history = new History(3);
    history.push(1_000, new Map([["a", 1]]));
    history.push(2_000, new Map([["b", 2]]));
    history.push(3_000, new Map([["a", 3]]));
    expect(history.times).toEqual([1, 2, 3]);
    expect(history.series.get("a")).toEqual([1, null, 3]);
    expect(history.series.get("b")).toEqual([null, 2, null]);
    history.push(4_000, new Map([["b", 4]]));
    expect(history.times).toEqual([2, 3, 4]);
    expect(history.series.get("a")).toEqual([null, 3, null]);
    expect(history.series.get("b")).toEqual([2, null, 4]);
  });
});
