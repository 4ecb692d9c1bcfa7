// What bench/burst.ts reads besides its own calls: the coordinator's scaling signal and served counters,
// every accepted job's outcome afterwards, and how much CPU this bench and everyone else used (two shared
// cores make that part of the result).
import { readFileSync } from "node:fs";
import os from "node:os";
import { performance } from "node:perf_hooks";
import type { Pool } from "../shared/index.ts";
import { type HttpClient, processTree, readProcs, TICKS_PER_S } from "./bench-kit.ts";

export interface ScalingView {
  /** pools.*.queue_length, raw and desired gpu replicas. */
  queue: Record<Pool, number>;
  gpuRaw: number;
  gpuDesired: number;
  /** The model's queued items, eligible per pool, in flight per pool. */
  queued: number;
  eligible: Record<Pool, number>;
  inFlight: Record<Pool, number>;
  /** The model's queue did not answer in time and /v1/scaling gave its last-seen numbers. */
  stale: boolean;
}

/** The fields of GET /v1/scaling the bench reads for `model`; undefined when the answer lacks any of them. */
export function parseScaling(text: string, model: string): ScalingView | undefined {
  try {
    const body = JSON.parse(text) as {
      pools?: Record<Pool, { queue_length?: unknown; raw_replicas?: unknown; desired_replicas?: unknown }>;
      models?: Record<
        string,
        { queued?: unknown; eligible?: Record<Pool, unknown>; in_flight?: Record<Pool, unknown> }
      >;
      stale?: unknown;
    };
    const m = body.models?.[model];
    const n = (v: unknown) => (typeof v === "number" ? v : Number.NaN);
    const view: ScalingView = {
      queue: { browser: n(body.pools?.browser.queue_length), gpu: n(body.pools?.gpu.queue_length) },
      gpuRaw: n(body.pools?.gpu.raw_replicas),
      gpuDesired: n(body.pools?.gpu.desired_replicas),
      queued: n(m?.queued),
      eligible: { browser: n(m?.eligible?.browser), gpu: n(m?.eligible?.gpu) },
      inFlight: { browser: n(m?.in_flight?.browser), gpu: n(m?.in_flight?.gpu) },
      stale: Array.isArray(body.stale) && body.stale.includes(model),
    };
    const all = [view.gpuRaw, view.gpuDesired, view.queued, ...Object.values(view.queue)];
    return all.every(Number.isFinite) ? view : undefined;
  } catch {
    return undefined;
  }
}

/** Sum of a counter's samples for `model` (and `pool`, when given), from Prometheus text. */
export function counterSum(text: string, metric: string, model: string, pool?: Pool): number {
  let n = 0;
  for (const line of text.split("\n")) {
    if (
      line.startsWith(`${metric}{`) &&
      line.includes(`model="${model}"`) &&
      (pool === undefined || line.includes(`pool="${pool}"`))
    )
      n += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return n;
}

/** edgeswarm_items_completed_total of `model` by pool, from Prometheus text. */
export function completedByPool(text: string, model: string): Record<Pool, number> {
  const metric = "edgeswarm_items_completed_total";
  return { browser: counterSum(text, metric, model, "browser"), gpu: counterSum(text, metric, model, "gpu") };
}

export interface JobTally {
  succeeded: number;
  failed: number;
  expired: number;
  /** Not found, or still open when the lookups gave up. */
  lost: number;
  /** Succeeded with a number of outputs other than the call's inputs. */
  wrongOutputs: number;
  /** Each succeeded job's `timings.total_ms`. */
  totalMs: number[];
  /** The last answer each lost job got, by kind, with the first one seen. */
  lostBecause: { kind: string; count: number; example: string }[];
}

/**
 * Looks up every job (`concurrency` at a time) until it has ended or `limitMs` passes, so that no request
 * goes unaccounted for.
 */
export async function accountJobs(
  client: HttpClient,
  base: URL,
  ids: readonly string[],
  opts: { inputsPerCall: number; concurrency: number; limitMs: number },
): Promise<JobTally> {
  const tally: Omit<JobTally, "lostBecause"> = {
    succeeded: 0,
    failed: 0,
    expired: 0,
    lost: 0,
    wrongOutputs: 0,
    totalMs: [],
  };
  const lostBecause = new Map<string, { count: number; example: string }>();
  const deadline = performance.now() + opts.limitMs;
  let next = 0;
  const lookup = async (id: string) => {
    let last = "never looked up";
    let example = "";
    while (performance.now() < deadline) {
      const res = await client.request(base, "GET", `/v1/jobs/${encodeURIComponent(id)}`);
      if ("error" in res) last = `no answer (${res.error})`;
      else {
        last = `HTTP ${res.status}`;
        example = res.text.replace(/\s+/g, " ").slice(0, 200);
      }
      if ("status" in res && res.status === 404) break;
      if ("status" in res && res.status === 200) {
        const job = JSON.parse(res.text) as { status?: string; outputs?: unknown[]; timings?: { total_ms?: number } };
        if (job.status === "succeeded") {
          tally.succeeded++;
          if (job.outputs?.length !== opts.inputsPerCall) tally.wrongOutputs++;
          if (typeof job.timings?.total_ms === "number") tally.totalMs.push(job.timings.total_ms);
          return;
        }
        if (job.status === "failed" || job.status === "expired") {
          tally[job.status]++;
          return;
        }
        last = `still ${job.status}`;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    tally.lost++;
    const seen = lostBecause.get(last);
    if (seen) seen.count++;
    else lostBecause.set(last, { count: 1, example: `${id}: ${example}` });
  };
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (next < ids.length) await lookup(ids[next++] as string);
    }),
  );
  return { ...tally, lostBecause: [...lostBecause].map(([kind, r]) => ({ kind, ...r })) };
}

// CPU from /proc (Linux; elsewhere n/a).

/** CPU seconds so far of the whole machine (busy, steal excluded) and of this process and all below it. */
function cpuSeconds(): { machine: number; ours: number } | undefined {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
    // user nice system idle iowait irq softirq steal
    const machine = ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0)) / TICKS_PER_S;
    const procs = readProcs();
    // The bench, wrangler and its workerd, the workers: this process and its descendants.
    const ours = processTree(procs, process.pid);
    return { machine, ours: [...ours].reduce((t, pid) => t + (procs.get(pid)?.ticks ?? 0), 0) / TICKS_PER_S };
  } catch {
    return undefined;
  }
}

export interface CpuMark {
  at: number;
  cpu: ReturnType<typeof cpuSeconds>;
  /** 1-minute load average. */
  load: number;
}

export const cpuMark = (): CpuMark => ({
  at: performance.now(),
  cpu: cpuSeconds(),
  load: os.loadavg()[0] ?? Number.NaN,
});

/** Cores in use between two marks: this bench's processes, and the rest of the machine. */
export function cpuShares(a: CpuMark, b: CpuMark): { ours: number; others: number } | undefined {
  if (!a.cpu || !b.cpu) return undefined;
  const wall = (b.at - a.at) / 1000;
  const ours = (b.cpu.ours - a.cpu.ours) / wall;
  return { ours, others: Math.max(0, (b.cpu.machine - a.cpu.machine) / wall - ours) };
}
