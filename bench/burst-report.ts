// What bench/burst.ts found, as Markdown (bench/results/burst.md) and as a figure (bench/results/burst.svg):
// the per-second table, the summary figures and the plot. Also the shape of one run's record.
import os from "node:os";
import type { Pool } from "../shared/index.ts";
import { fmt, fmtRate, percentile } from "./bench-kit.ts";
import type { JobTally, ScalingView } from "./burst-probes.ts";
import { svgPlot } from "./svg-plot.ts";

export interface BurstOptions {
  quick: boolean;
  seconds: number;
  multiplier: number;
  maxItemsPerS: number;
}

/** One second of the run: GET /v1/scaling (see ScalingView) and the /metrics counters. */
export interface Sample extends ScalingView {
  /** Seconds since the burst started. */
  t: number;
  /** Items accepted (2xx) since the last sample, and that per second. */
  submitted: number;
  submittedPerS: number;
  /**
   * edgeswarm_items_completed_total since the last answered /metrics, and that per second; null when /metrics
   * did not answer within the sample's timeout (the next row then covers the whole interval).
   */
  served: Record<Pool, number> | null;
  perS: Record<Pool, number> | null;
}

type CpuShares = { ours: number; others: number };

export interface BurstRun {
  opts: BurstOptions;
  config: {
    model: string;
    modelOverrides: object;
    maxBatchSize: number;
    scaling: { gpu: { min_replicas: number; scale_down_window_ms: number; target_per_replica: number } };
    browserWorkers: number;
    browserArgs: readonly string[];
    gpuArgs: readonly string[];
    callSize: number;
    warmupCallers: number;
    warmup: { warmupMs: number; measureMs: number };
    maxOutstanding: number;
    submitTries: number;
    jobTimeoutMs: number;
  };
  warmup: { itemsPerS: number; gpuItems: number; errors: number };
  wantedItemsPerS: number;
  targetItemsPerS: number;
  plannedCalls: number;
  maxLagCalls: number;
  /** ms after the burst start: the sending window closed; the last submission was answered. */
  windowClosedAt: number;
  burstEndMs: number;
  subs: {
    sentCalls: number;
    acceptedCalls: number;
    acceptedItems: number;
    retried: number;
    refused: { kind: string; count: number; example: string }[];
  };
  samples: Sample[];
  missed: number;
  /** Seconds since the burst start of the first sample after it with both queues empty, and with desired gpu replicas at the floor. */
  drainedAt: number | undefined;
  floorAt: number | undefined;
  timedOut: boolean;
  jobs: JobTally;
  totals: Record<Pool, number> | undefined;
  baseline: Record<Pool, number>;
  /** Cores in use from the burst start to its end, and to the end of sampling: this bench's processes and the rest. */
  cpu: { burst: CpuShares | undefined; whole: CpuShares | undefined };
  load: [number, number];
  sourcesChanged: boolean;
  /** GET /healthz once every job was accounted for. */
  health: string;
  /** Over the burst and after it: leases that passed their deadline, items put back in the queue. */
  leasesExpired: number;
  redelivered: number;
  /** Lines of the workers' own output about disconnects and errors (at most five per worker). */
  workerEvents: string[];
}

const peak = (samples: readonly Sample[], value: (s: Sample) => number) =>
  samples.reduce<{ value: number; t: number }>(
    (best, s) => (value(s) > best.value ? { value: value(s), t: s.t } : best),
    {
      value: 0,
      t: 0,
    },
  );

const seconds = (ms: number) => `${fmt(ms / 1000)} s`;
const count = (n: number) => (Number.isFinite(n) ? fmtRate(n) : "n/a");

function failures(run: BurstRun): number {
  const refused = run.subs.refused.reduce((n, r) => n + r.count, 0);
  return refused + run.jobs.failed + run.jobs.expired + run.jobs.lost + run.jobs.wrongOutputs;
}

function setup(run: BurstRun): string[] {
  const { config: c, opts } = run;
  const achieved = run.subs.acceptedItems / opts.seconds;
  const capped = run.targetItemsPerS < run.wantedItemsPerS;
  const lines = [
    `- Model: \`${c.model}\` from models/registry.json (max_batch_size ${c.maxBatchSize}) with \`${JSON.stringify(c.modelOverrides)}\``,
    `- SCALING: \`${JSON.stringify(c.scaling)}\``,
    `- Browser pool: ${c.browserWorkers} × \`edgeswarm-worker ${c.browserArgs.join(" ")} --device cpu\`; gpu pool: 1 × \`edgeswarm-worker ${c.gpuArgs.join(" ")} --device cpu\` (no GPU here: the pool is what routing and scaling read; its batches are kept small so that the burst outgrows it, as it would a gpu fleet at its floor)`,
    `- Warm-up: ${c.warmupCallers} closed-loop callers, calls of ${c.callSize} pinned to \`pool: "browser"\`, ${c.warmup.warmupMs / 1000} s then ${c.warmup.measureMs / 1000} s measured: **browser pool ${fmt(run.warmup.itemsPerS)} items/s** (gpu served ${run.warmup.gpuItems} items meanwhile, ${run.warmup.errors} errors)`,
    `- Burst: ${opts.multiplier}× the browser rate = ${fmtRate(run.wantedItemsPerS)} items/s${capped ? `, **capped at ${fmtRate(opts.maxItemsPerS)} items/s** (\`--max-rate\`) so two cores keep up with sending` : ""}, for ${opts.seconds} s; open loop, calls of ${c.callSize} inputs with \`wait: false\` and \`timeout_ms: ${c.jobTimeoutMs}\`, at most ${c.maxOutstanding} submissions unanswered, a 503 tried again (${c.submitTries} tries in all); every accepted job looked up afterwards with \`GET /v1/jobs/{id}\``,
    `- Sent: ${run.subs.sentCalls} of ${run.plannedCalls} planned calls; ${fmtRate(run.subs.acceptedItems)} items accepted = **${fmtRate(achieved)} items/s achieved** (${fmt(achieved / run.warmup.itemsPerS)}× the browser rate${achieved < 0.95 * run.targetItemsPerS ? `; **below the ${fmtRate(run.targetItemsPerS)} items/s asked: the sender fell up to ${run.maxLagCalls} calls behind**` : ""}); last submission answered at t = ${seconds(run.burstEndMs)}`,
    `- Load on the machine: load average ${fmt(run.load[0], 2)} at the burst start, ${fmt(run.load[1], 2)} at the end of sampling; CPU cores in use during the burst: this bench's processes (coordinator, workers, sender) ${fmt(run.cpu.burst?.ours, 2)}, everything else ${fmt(run.cpu.burst?.others, 2)}; from the burst start to the end of sampling: ${fmt(run.cpu.whole?.ours, 2)} and ${fmt(run.cpu.whole?.others, 2)} (of ${os.cpus().length})`,
  ];
  if ((run.cpu.burst?.others ?? 0) > 0.25 || (run.cpu.whole?.others ?? 0) > 0.25)
    lines.push(
      "- **Other work was running on this machine during the run (others' CPU above): rates and drain times are noisy.**",
    );
  return lines;
}

function table(samples: readonly Sample[]): string[] {
  const lines = [
    "| t s | submitted | queued | browser queue | gpu queue | eligible b / g | in flight b / g | served browser | served gpu | gpu raw | gpu desired |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const s of samples) {
    lines.push(
      `| ${fmt(s.t)}${s.stale ? " ‡" : ""} | ${s.submitted} | ${s.queued} | ${s.queue.browser} | ${s.queue.gpu} | ${s.eligible.browser} / ${s.eligible.gpu} | ${s.inFlight.browser} / ${s.inFlight.gpu} | ${s.served?.browser ?? "—"} | ${s.served?.gpu ?? "—"} | ${s.gpuRaw} | ${s.gpuDesired} |`,
    );
  }
  return lines;
}

function summary(run: BurstRun): string[] {
  const s = run.samples;
  const end = run.burstEndMs / 1000;
  const floor = run.config.scaling.gpu.min_replicas;
  const window = run.config.scaling.gpu.scale_down_window_ms;
  const served = (pool: Pool) => (run.totals ? run.totals[pool] - run.baseline[pool] : Number.NaN);
  const pb = peak(s, (x) => x.queue.browser);
  const pg = peak(s, (x) => x.queue.gpu);
  const pq = peak(s, (x) => x.queued);
  const pd = peak(s, (x) => x.gpuDesired);
  const pr = peak(s, (x) => x.gpuRaw);
  const rb = peak(s, (x) => x.perS?.browser ?? 0);
  const rg = peak(s, (x) => x.perS?.gpu ?? 0);
  const rawFloor = s.find((x) => x.t >= end && x.gpuRaw <= floor);
  // Rows up to the burst's end: what each pool served while the burst was on.
  const during = s.filter((x) => x.t <= end + 0.5 && x.served !== null);
  const duringS = during.at(-1)?.t ?? Number.NaN;
  const meanDuring = (pool: Pool) => during.reduce((n, x) => n + (x.served?.[pool] ?? 0), 0) / duringS;
  // The scaling window only learns from reads of /v1/scaling: a long gap between them lets its history lapse.
  const gap = s.reduce((g, x, i) => Math.max(g, i > 0 ? x.t - (s[i - 1] as Sample).t : 0), 0);
  const failed = failures(run);
  const lines = [
    "| | browser pool | gpu pool |",
    "|---|---:|---:|",
    `| peak queue depth (queue_length) | ${pb.value} (t = ${fmt(pb.t)} s) | ${pg.value} (t = ${fmt(pg.t)} s) |`,
    `| peak items served per second | ${fmtRate(rb.value)} (t = ${fmt(rb.t)} s) | ${fmtRate(rg.value)} (t = ${fmt(rg.t)} s) |`,
    `| mean items served per second during the burst (to t = ${fmt(duringS)} s) | ${fmtRate(meanDuring("browser"))} | ${fmtRate(meanDuring("gpu"))} |`,
    `| items served, burst to end of sampling | ${count(served("browser"))} | ${count(served("gpu"))} |`,
    "",
    `- Peak items queued for the model: ${pq.value} (t = ${fmt(pq.t)} s)`,
    `- Peak desired gpu replicas: **${pd.value}** (t = ${fmt(pd.t)} s); peak raw ${pr.value} (t = ${fmt(pr.t)} s); floor ${floor}, target_per_replica ${run.config.scaling.gpu.target_per_replica}`,
    `- End of the burst (last submission answered): t = ${fmt(end)} s`,
    run.drainedAt !== undefined
      ? `- Both queues empty at t = ${fmt(run.drainedAt)} s: **time to drain ${fmt(run.drainedAt - end)} s** after the burst (to the sample, ±${fmt(1)} s)`
      : "- **The queues did not drain within the sampling limit.**",
    rawFloor
      ? `- Raw gpu replicas back at the floor from t = ${fmt(rawFloor.t)} s`
      : "- Raw gpu replicas never back at the floor",
    run.floorAt !== undefined
      ? `- Desired gpu replicas back at the floor (${floor}) at t = ${fmt(run.floorAt)} s: **${fmt(run.floorAt - end)} s after the burst**${run.drainedAt !== undefined ? `, ${fmt(run.floorAt - run.drainedAt)} s after the drain` : ""} (scale_down_window_ms ${window})`
      : `- **Desired gpu replicas were not back at the floor within ${seconds(run.burstEndMs)} + the sampling limit.**`,
    `- Requests: ${run.subs.sentCalls} calls sent, ${run.subs.acceptedCalls} accepted (${fmtRate(run.subs.acceptedItems)} items${run.subs.retried ? `; ${run.subs.retried} of them on a retry after a 503` : ""}); of those ${run.jobs.succeeded} succeeded, ${run.jobs.failed} failed, ${run.jobs.expired} expired, ${run.jobs.lost} lost (not found or never ended${run.jobs.lostBecause.length ? `: ${run.jobs.lostBecause.map((r) => `${r.count} × ${r.kind}, e.g. \`${r.example}\``).join("; ")}` : ""}), ${run.jobs.wrongOutputs} with the wrong number of outputs${run.subs.refused.length ? `; refused at submission: ${run.subs.refused.map((r) => `${r.count} × ${r.kind} (first: \`${r.example}\`)`).join(", ")}` : ""}`,
    `- Burst calls end to end (the jobs' \`timings.total_ms\`): p50 ${fmt(percentile(run.jobs.totalMs, 50) / 1000)} s, p99 ${fmt(percentile(run.jobs.totalMs, 99) / 1000)} s, max ${fmt(percentile(run.jobs.totalMs, 100) / 1000)} s`,
    failed === 0
      ? "- **Every submitted request succeeded.**"
      : `- **${failed} requests did not succeed: the bench failed.**`,
  ];
  if (gap > 2)
    lines.push(
      `- The longest gap between answered samples was ${fmt(gap)} s${gap * 1000 >= window ? `, longer than scale_down_window_ms: the window had no readings to hold replicas up with, so desired replicas may have dropped early` : ""}.`,
    );
  if (s.some((x) => x.served === null))
    lines.push(
      "- — in the table: /metrics did not answer within the sample's timeout; the next row's served count covers both seconds.",
    );
  if (run.timedOut) lines.push("- Sampling stopped at its time limit before the run settled.");
  const stale = run.samples.filter((x) => x.stale).length;
  if (stale > 0)
    lines.push(
      `- ‡ ${stale} samples were stale: the queue did not answer \`/v1/scaling\` within its wait and the coordinator gave its last-seen numbers (the served counts, from /metrics, are fresh).`,
    );
  if (run.missed > 0) lines.push(`- ${run.missed} samples got no answer from the coordinator in time and are missing.`);
  lines.push(
    `- Leases that passed their deadline (lease_ms) and were taken back: ${count(run.leasesExpired)}; items put back in the queue: ${count(run.redelivered)}`,
  );
  if (run.workerEvents.length > 0)
    lines.push(`- The workers reported: ${run.workerEvents.map((e) => `\`${e}\``).join("; ")}`);
  if (run.health !== "HTTP 200")
    lines.push(`- **The coordinator did not answer /healthz at the end (${run.health}).**`);
  if (run.sourcesChanged)
    lines.push("- **edge/ or shared/ changed during the run: wrangler dev reloaded the coordinator; discard it.**");
  return lines;
}

export function renderMarkdown(header: readonly string[], run: BurstRun): string {
  return `${[
    ...header,
    ...setup(run),
    "",
    "![queue depth, items served and gpu replicas over time](burst.svg)",
    "",
    "## Summary",
    "",
    ...summary(run),
    "",
    "## Every second",
    "",
    "t is seconds since the burst started. queue is `pools.*.queue_length` of `GET /v1/scaling` (items the pool may",
    "lease now plus those it holds): the browser pool may take every queued item that named no pool, the gpu pool only",
    "the overflow, so an overflowing item counts in both. eligible and in flight are the model's, queued is every queued",
    "item; served is `edgeswarm_items_completed_total` by pool since the last row; gpu raw and desired are the replica",
    "formula before and after the scale-down window.",
    "",
    ...table(run.samples),
    "",
  ].join("\n")}`;
}

export function renderSvg(run: BurstRun): string {
  const s = run.samples;
  const line = (value: (x: Sample) => number | null) => s.map((x) => [x.t, value(x)] as const);
  const markers = [
    ...(run.drainedAt !== undefined ? [{ x: run.drainedAt, label: "queues empty" }] : []),
    ...(run.floorAt !== undefined ? [{ x: run.floorAt, label: "gpu back to floor" }] : []),
  ];
  return svgPlot({
    title: `Burst of ${fmtRate(run.subs.acceptedItems / run.opts.seconds)} items/s for ${run.opts.seconds} s (browser pool ${fmt(run.warmup.itemsPerS)} items/s)`,
    width: 960,
    xLabel: "seconds since the burst started",
    spans: [{ from: 0, to: run.burstEndMs / 1000, label: "burst" }],
    markers,
    panels: [
      {
        title: "Queue depth (pools.*.queue_length) and gpu replicas",
        height: 260,
        left: "items",
        right: "gpu replicas",
        rightIntegers: true,
        series: [
          { name: "browser queue", color: "#1f77b4", points: line((x) => x.queue.browser) },
          { name: "gpu queue", color: "#ff7f0e", points: line((x) => x.queue.gpu) },
          { name: "gpu desired", color: "#2ca02c", axis: "right", points: line((x) => x.gpuDesired) },
          { name: "gpu raw", color: "#2ca02c", axis: "right", dashed: true, points: line((x) => x.gpuRaw) },
        ],
      },
      {
        title: "Items served per second, by pool",
        height: 200,
        left: "items/s",
        series: [
          { name: "browser", color: "#1f77b4", points: line((x) => x.perS?.browser ?? null) },
          { name: "gpu", color: "#ff7f0e", points: line((x) => x.perS?.gpu ?? null) },
          { name: "submitted", color: "#888888", dashed: true, points: line((x) => x.submittedPerS) },
        ],
      },
    ],
  });
}
