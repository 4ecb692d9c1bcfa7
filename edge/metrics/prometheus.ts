// Renders the queues' metrics in the Prometheus text exposition format (version 0.0.4).
// Written here rather than with prom-client: that library keeps live in-process registries and needs
// Node; our series are aggregated in each queue's SQLite and only need formatting on scrape.
import type { Pool } from "../../shared/index.ts";
import type { MetricsSnapshot } from "../model-queue/metrics-store.ts";
import type { QueueStats } from "../model-queue/model-queue.ts";
import type { PoolSignal } from "../scaling/scaling-window.ts";
import { COUNTERS, HISTOGRAMS } from "./definitions.ts";

export interface ModelMetrics {
  stats: QueueStats;
  snapshot: MetricsSnapshot;
}

type Labels = Record<string, string>;

const escapeLabel = (v: string): string => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
const fmtLabels = (labels: Labels): string => {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length > 0 ? `{${parts.join(",")}}` : "";
};
const fmtNumber = (n: number): string => {
  if (Number.isNaN(n)) return "NaN";
  if (Number.isFinite(n)) return String(n);
  return n > 0 ? "+Inf" : "-Inf";
};

class Exposition {
  private readonly lines: string[] = [];
  private readonly declared = new Set<string>();

  family(name: string, type: "counter" | "gauge" | "histogram", help: string): this {
    if (!this.declared.has(name)) {
      this.declared.add(name);
      this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    }
    return this;
  }

  sample(name: string, labels: Labels, value: number): void {
    this.lines.push(`${name}${fmtLabels(labels)} ${fmtNumber(value)}`);
  }

  text(): string {
    return `${this.lines.join("\n")}\n`;
  }
}

const POOLS: readonly Pool[] = ["browser", "gpu"];

export function renderPrometheus(
  models: readonly ModelMetrics[],
  scaling: Record<Pool, PoolSignal> | null,
  /** Queue objects (model, or model~shard) slow to answer this scrape: shown as last seen, or left out. */
  reads: { stale: readonly string[]; unavailable: readonly string[] } = { stale: [], unavailable: [] },
): string {
  const out = new Exposition();
  out.family("edgeswarm_queue_depth", "gauge", "Items waiting in the queue.");
  for (const m of models) out.sample("edgeswarm_queue_depth", { model: m.stats.model }, m.stats.queued);
  const modelGauges = [
    [
      "edgeswarm_items_awaiting_verification",
      "Items whose output is held until a run on another worker agrees.",
      "awaiting_verification",
    ],
    ["edgeswarm_quarantined_workers", "Browser workers quarantined now for answering wrongly.", "quarantined"],
  ] as const;
  for (const [name, help, key] of modelGauges) {
    out.family(name, "gauge", help);
    for (const m of models) out.sample(name, { model: m.stats.model }, m.stats[key]);
  }
  const gauges = [
    ["edgeswarm_in_flight_items", "Items leased to workers and not yet completed.", "in_flight"],
    ["edgeswarm_active_leases", "Batches leased to workers and not yet completed.", "leases"],
    ["edgeswarm_workers", "Workers connected (sockets) or polling (HTTP, last minute).", "workers"],
    [
      "edgeswarm_workers_breaker_open",
      "Workers whose circuit breaker keeps leases from them now (failed batches in a row; half-open while a probe runs).",
      "breaker_open",
    ],
  ] as const;
  for (const [name, help, key] of gauges) {
    out.family(name, "gauge", help);
    for (const m of models)
      for (const pool of POOLS) out.sample(name, { model: m.stats.model, pool }, m.stats[key][pool]);
  }
  for (const [key, def] of Object.entries(COUNTERS)) {
    out.family(def.metric, "counter", def.help);
    for (const m of models) {
      for (const c of m.snapshot.counters) {
        if (c.name === key) out.sample(def.metric, { model: m.stats.model, pool: c.pool }, c.value);
      }
    }
  }
  for (const [key, def] of Object.entries(HISTOGRAMS)) {
    out.family(def.metric, "histogram", def.help);
    for (const m of models) {
      for (const h of m.snapshot.histograms) {
        if (h.name !== key) continue;
        const labels = { model: m.stats.model, pool: h.pool };
        let cumulative = 0;
        def.buckets.forEach((bound, i) => {
          cumulative += h.buckets[i] ?? 0;
          out.sample(`${def.metric}_bucket`, { ...labels, le: String(bound) }, cumulative);
        });
        out.sample(`${def.metric}_bucket`, { ...labels, le: "+Inf" }, h.count);
        out.sample(`${def.metric}_sum`, labels, h.sum);
        out.sample(`${def.metric}_count`, labels, h.count);
      }
    }
  }
  out.family(
    "edgeswarm_queue_stale",
    "gauge",
    "1 for a queue object that did not answer this scrape in time: its samples are the last ones read.",
  );
  for (const queue of reads.stale) out.sample("edgeswarm_queue_stale", { queue }, 1);
  out.family(
    "edgeswarm_queue_unavailable",
    "gauge",
    "1 for a queue object whose read failed, or was slow with no recent samples to show: its samples are left out.",
  );
  for (const queue of reads.unavailable) out.sample("edgeswarm_queue_unavailable", { queue }, 1);
  if (scaling) {
    out.family("edgeswarm_pool_queue_length", "gauge", "Queued plus in-flight items the pool's autoscaler reads.");
    for (const pool of POOLS) out.sample("edgeswarm_pool_queue_length", { pool }, scaling[pool].queue_length);
    out.family("edgeswarm_desired_replicas", "gauge", "Replicas the pool should run (KEDA formula, stabilised).");
    for (const pool of POOLS) out.sample("edgeswarm_desired_replicas", { pool }, scaling[pool].desired_replicas);
  }
  return out.text();
}
