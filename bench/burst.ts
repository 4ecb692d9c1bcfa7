// The burst benchmark for issue 5 (`node --import tsx bench/burst.ts [--quick]`): a small browser pool
// (real `edgeswarm-worker --pool browser` processes, limited on purpose) and one `--pool gpu` worker behind
// the real coordinator (`wrangler dev`). It measures the browser pool's rate, replays a burst at a multiple
// of it, and samples /v1/scaling and /metrics every second until both queues are empty and the gpu pool's
// desired replicas are back at the floor. Writes bench/results/burst.md and burst.svg. Not a test.

import { readFile, writeFile } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { startWorker, type WorkerProcess } from "../scripts/lib/worker-process.ts";
import { ModelRegistry, type Pool, SCALING_DEFAULTS } from "../shared/index.ts";
import { REVIEW_TEXTS } from "../test/support/reference-models.ts";
import { BenchSession, closedLoop, HttpClient, newestSourceMtime } from "./bench-kit.ts";
import {
  accountJobs,
  type CpuMark,
  completedByPool,
  counterSum,
  cpuMark,
  cpuShares,
  parseScaling,
} from "./burst-probes.ts";
import { type BurstOptions, type BurstRun, renderMarkdown, renderSvg, type Sample } from "./burst-report.ts";

// ---- the scenario's numbers, all in one place (the report prints them) ----------------------------------

const MODEL = "sentiment";
/** Overrides of the bundled registry entry: routing that reacts within the run, and room for the burst. */
const MODEL_OVERRIDES = {
  overflow_after_ms: 1_000,
  latency_target_ms: 2_000,
  max_queue_size: 200_000,
  verification: { enabled: false },
} as const;
/** The SCALING variable: a gpu window short enough to see the scale-down within the run. */
const SCALING = {
  gpu: {
    ...SCALING_DEFAULTS.gpu,
    target_per_replica: 500,
    min_replicas: 1,
    max_replicas: 100,
    scale_down_window_ms: 10_000,
  },
  browser: SCALING_DEFAULTS.browser,
};
/**
 * A browser pool kept small on purpose, and one gpu worker (on cpu here: the pool is what routing reads),
 * also held to small batches: unlimited, it serves more than two cores can send, no backlog builds and the
 * replica formula has nothing to follow. So it stands for a gpu fleet at its floor that the burst outgrows.
 */
const BROWSER_WORKERS = 1;
const BROWSER_ARGS = ["--pool", "browser", "--max-batch-size", "2", "--concurrency", "1"] as const;
const GPU_ARGS = ["--pool", "gpu", "--max-batch-size", "16", "--concurrency", "1"] as const;
/** Items per call, warm-up and burst alike. */
const CALL_SIZE = 16;
/** Warm-up: closed-loop callers pinned to the browser pool, so what it drains is its own rate. */
const WARMUP = {
  callers: 4,
  full: { warmupMs: 2_000, measureMs: 6_000 },
  quick: { warmupMs: 1_000, measureMs: 3_000 },
};
/** Burst: `multiplier` × the browser pool's rate for `seconds`, capped at `maxItemsPerS` (two cores also send it). */
const BURST_DEFAULTS = { multiplier: 20, seconds: 30, quickSeconds: 10, maxItemsPerS: 1_000 };
/** Submissions still unanswered at most; past this the sender falls behind and the report says so. */
const MAX_OUTSTANDING = 64;
/** Tries of a call the edge answered 503 (its queue object did not answer), 250 ms × attempt apart. */
const SUBMIT_TRIES = 3;
/** timeout_ms of each burst call: long enough that a slow drain shows as time, not as expired jobs. */
const JOB_TIMEOUT_MS = 120_000;
const SAMPLE_MS = 1_000;
const SAMPLE_TIMEOUT_MS = 5_000;
/** After the burst, sampling stops this long after desired gpu replicas reach the floor, or at the limit. */
const AFTER_FLOOR_MS = 3_000;
const TAIL_LIMIT_MS = 150_000;
/** Job lookups at once when accounting for every request, and how long they may keep finding open jobs. */
const POLL_CONCURRENCY = 16;
const POLL_LIMIT_MS = 60_000;
const HTTP_TIMEOUT_MS = 30_000;

const REGISTRY_URL = new URL("../models/registry.json", import.meta.url);
const RESULTS_MD = new URL("./results/burst.md", import.meta.url);
const RESULTS_SVG = new URL("./results/burst.svg", import.meta.url);

// ---- options ------------------------------------------------------------------------------------------

function readOptions(): BurstOptions {
  const { values } = parseArgs({
    options: {
      quick: { type: "boolean", default: false },
      "burst-s": { type: "string" },
      multiplier: { type: "string" },
      "max-rate": { type: "string" },
    },
  });
  const positive = (name: string, raw: string | undefined, fallback: number): number => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!(n > 0)) throw new Error(`${name} must be a positive number, got "${raw}"`);
    return n;
  };
  const quick = values.quick ?? false;
  return {
    quick,
    seconds: positive(
      "--burst-s",
      values["burst-s"] ?? process.env.BENCH_BURST_S,
      quick ? BURST_DEFAULTS.quickSeconds : BURST_DEFAULTS.seconds,
    ),
    multiplier: positive("--multiplier", values.multiplier ?? process.env.BENCH_BURST_X, BURST_DEFAULTS.multiplier),
    maxItemsPerS: positive("--max-rate", values["max-rate"] ?? process.env.BENCH_MAX_RATE, BURST_DEFAULTS.maxItemsPerS),
  };
}

// ---- coordinator reads ----------------------------------------------------------------------------------

const client = new HttpClient(HTTP_TIMEOUT_MS);
/**
 * The per-second reads, on their own sockets and with a short timeout: a /metrics stuck behind a busy queue
 * must not hold up /v1/scaling, which answers from last-seen stats, or the scaling window misses its readings.
 */
const probe = new HttpClient(SAMPLE_TIMEOUT_MS);

const completed = (text: string) => completedByPool(text, MODEL);

async function scrape(base: URL): Promise<string | undefined> {
  const res = await client.request(base, "GET", "/metrics");
  return "status" in res && res.status === 200 ? res.text : undefined;
}

// ---- workers ------------------------------------------------------------------------------------------

const liveWorkers = new Set<WorkerProcess>();
/** Every worker started, by id, so their own logs can be read once the run is over. */
const startedWorkers = new Map<string, WorkerProcess>();

async function spawnWorker(coordinator: string, id: string, args: readonly string[]): Promise<WorkerProcess> {
  const w = startWorker([
    "--coordinator",
    coordinator,
    "--models",
    MODEL,
    "--worker-id",
    id,
    "--device",
    "cpu",
    "--port",
    "0",
    "--status-interval-ms",
    "0",
    ...args,
  ]);
  liveWorkers.add(w);
  startedWorkers.set(id, w);
  await w.waitFor(new RegExp(`\\[${MODEL}\\] connected`), 60_000);
  return w;
}

async function stopWorker(w: WorkerProcess): Promise<void> {
  liveWorkers.delete(w);
  if (w.child.exitCode !== null) return;
  w.child.kill("SIGTERM");
  const timer = setTimeout(() => w.child.kill("SIGKILL"), 10_000);
  await w.exited;
  clearTimeout(timer);
}

// ---- the run ------------------------------------------------------------------------------------------

let rotation = 0;
function nextInputs(): string[] {
  const start = rotation;
  rotation = (rotation + CALL_SIZE) % REVIEW_TEXTS.length;
  return Array.from({ length: CALL_SIZE }, (_, i) => REVIEW_TEXTS[(start + i) % REVIEW_TEXTS.length] as string);
}

/** Closed-loop calls pinned to the browser pool; its rate is what its workers completed over the window. */
async function measureBrowserRate(base: URL, window: { warmupMs: number; measureMs: number }) {
  let from: Promise<string | undefined> | undefined;
  let to: Promise<string | undefined> | undefined;
  let errors = 0;
  await closedLoop({
    callers: WARMUP.callers,
    ...window,
    call: () =>
      client.request(
        base,
        "POST",
        "/v1/infer",
        JSON.stringify({ model: MODEL, inputs: nextInputs(), pool: "browser" }),
      ),
    record: (res) => {
      if (!("status" in res) || res.status !== 200) errors++;
    },
    atStart: () => {
      from = scrape(base);
    },
    atEnd: () => {
      to = scrape(base);
    },
  });
  const [a, b] = [await from, await to];
  if (a === undefined || b === undefined) throw new Error("could not read /metrics around the warm-up");
  const [ca, cb] = [completed(a), completed(b)];
  return {
    itemsPerS: (cb.browser - ca.browser) / (window.measureMs / 1000),
    gpuItems: cb.gpu - ca.gpu,
    errors,
  };
}

/** Every submission of the burst: accepted job ids, and what went wrong with the others. */
class Submissions {
  readonly ids: string[] = [];
  acceptedItems = 0;
  sentCalls = 0;
  outstanding = 0;
  readonly refused = new Map<string, { count: number; example: string }>();
  /** Calls accepted only after a 503 and a retry (the edge answers 503 when the queue object did not answer). */
  retried = 0;
  /** ms after the burst start when the last submission was answered. */
  lastAnsweredAt = 0;

  refuse(kind: string, body = ""): void {
    const seen = this.refused.get(kind);
    if (seen) seen.count++;
    else this.refused.set(kind, { count: 1, example: body.replace(/\s+/g, " ").slice(0, 200) });
  }
}

/** Open loop: calls of CALL_SIZE items sent on schedule at `itemsPerS` for `seconds`, `wait: false`. */
async function sendBurst(base: URL, itemsPerS: number, seconds: number, t0: number, subs: Submissions) {
  const totalCalls = Math.round((itemsPerS * seconds) / CALL_SIZE);
  const open = new Set<Promise<void>>();
  let maxLagCalls = 0;
  const submit = async () => {
    subs.sentCalls++;
    subs.outstanding++;
    const body = JSON.stringify({ model: MODEL, inputs: nextInputs(), wait: false, timeout_ms: JOB_TIMEOUT_MS });
    let res = await client.request(base, "POST", "/v1/infer", body);
    // 503 says "retry the call" (the queue object did not answer, so rarely the first try was kept after all and
    // runs unseen); no answer at all is not retried: that job may well have been accepted.
    for (let attempt = 1; attempt < SUBMIT_TRIES && "status" in res && res.status === 503; attempt++) {
      await new Promise((r) => setTimeout(r, 250 * attempt));
      res = await client.request(base, "POST", "/v1/infer", body);
      if ("status" in res && res.status === 202) subs.retried++;
    }
    subs.outstanding--;
    subs.lastAnsweredAt = performance.now() - t0;
    if ("error" in res) return subs.refuse(`no answer (${res.error})`);
    if (res.status !== 202 && res.status !== 200) return subs.refuse(`HTTP ${res.status}`, res.text);
    let id: unknown;
    try {
      id = (JSON.parse(res.text) as { id?: unknown }).id;
    } catch {
      // not JSON: refused below
    }
    if (typeof id !== "string") return subs.refuse("answer without a job id", res.text);
    subs.ids.push(id);
    subs.acceptedItems += CALL_SIZE;
  };
  const endAt = t0 + seconds * 1000;
  while (performance.now() < endAt && subs.sentCalls < totalCalls) {
    const due = Math.min(totalCalls, Math.floor((itemsPerS * (performance.now() - t0)) / 1000 / CALL_SIZE));
    while (subs.sentCalls < due && subs.outstanding < MAX_OUTSTANDING) {
      const p = submit().finally(() => open.delete(p));
      open.add(p);
    }
    maxLagCalls = Math.max(maxLagCalls, due - subs.sentCalls);
    await new Promise((r) => setTimeout(r, 5));
  }
  const windowClosedAt = performance.now() - t0;
  await Promise.all(open);
  return { plannedCalls: totalCalls, maxLagCalls, windowClosedAt };
}

/**
 * Every second from the burst start: the scaling signal and the served counters. Stops `AFTER_FLOOR_MS`
 * after desired gpu replicas are back at the floor with both queues empty, or at TAIL_LIMIT_MS past the burst.
 */
async function sample(
  base: URL,
  t0: number,
  subs: Submissions,
  burstDone: () => number | undefined,
  baseline: Record<Pool, number>,
) {
  const samples: Sample[] = [];
  // The served counts since the last answered /metrics; submissions since the last row.
  let counted = { served: baseline, at: t0 };
  let lastRow = { accepted: 0, at: t0 };
  let missed = 0;
  let drainedAt: number | undefined;
  let floorAt: number | undefined;
  let timedOut = false;
  for (let k = 0; ; ) {
    const wait = t0 + k * SAMPLE_MS - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const at = performance.now();
    const [s, m] = await Promise.all([
      probe.request(base, "GET", "/v1/scaling"),
      probe.request(base, "GET", "/metrics"),
    ]);
    const view = "status" in s && s.status === 200 ? parseScaling(s.text, MODEL) : undefined;
    k = Math.max(k + 1, Math.ceil((performance.now() - t0) / SAMPLE_MS));
    const end = burstDone();
    // Checked whether or not this sample was answered: a coordinator that stops answering must end the run.
    if (end !== undefined && at - t0 > end + TAIL_LIMIT_MS) {
      timedOut = true;
      break;
    }
    if (!view) {
      missed++;
      console.error(
        `t=${((at - t0) / 1000).toFixed(1)}s no answer from /v1/scaling (${"error" in s ? s.error : `HTTP ${s.status}`})`,
      );
      continue;
    }
    // A late /metrics leaves this row's served counts empty; the next answered one covers the whole interval.
    const served = "status" in m && m.status === 200 ? completed(m.text) : undefined;
    const dt = (at - counted.at) / 1000;
    const delta = served && { browser: served.browser - counted.served.browser, gpu: served.gpu - counted.served.gpu };
    const accepted = subs.acceptedItems;
    const row: Sample = {
      t: (at - t0) / 1000,
      submitted: accepted - lastRow.accepted,
      submittedPerS: (accepted - lastRow.accepted) / Math.max(0.001, (at - lastRow.at) / 1000),
      ...view,
      served: delta ?? null,
      perS: delta ? { browser: delta.browser / dt, gpu: delta.gpu / dt } : null,
    };
    samples.push(row);
    console.error(
      `t=${row.t.toFixed(1)}s submitted ${row.submitted} queued ${row.queued} queue b/g ${row.queue.browser}/${row.queue.gpu} served b/g ${delta ? `${delta.browser}/${delta.gpu}` : "(no /metrics)"} gpu replicas raw ${row.gpuRaw} desired ${row.gpuDesired}${row.stale ? " (stale)" : ""}`,
    );
    lastRow = { accepted, at };
    if (served) counted = { served, at };
    if (end === undefined) continue;
    const empty = view.queue.browser === 0 && view.queue.gpu === 0 && view.queued === 0 && !view.stale;
    if (drainedAt === undefined && empty) drainedAt = row.t;
    if (drainedAt !== undefined && floorAt === undefined && view.gpuDesired <= SCALING.gpu.min_replicas)
      floorAt = row.t;
    if (floorAt !== undefined && row.t * 1000 >= floorAt * 1000 + AFTER_FLOOR_MS) break;
  }
  return { samples, missed, drainedAt, floorAt, timedOut };
}

async function main(): Promise<number> {
  const opts = readOptions();
  const bundled = ModelRegistry.parse(JSON.parse(await readFile(REGISTRY_URL, "utf8")));
  const models = bundled.models.map((m) => (m.name === MODEL ? { ...m, ...MODEL_OVERRIDES } : m));
  const model = models.find((m) => m.name === MODEL);
  if (!model) {
    console.error(`models/registry.json has no ${MODEL} entry`);
    return 1;
  }
  const stopWorkers = () => {
    probe.destroy();
    return Promise.all([...liveWorkers].map(stopWorker));
  };
  return BenchSession.run("edgeswarm-bench-burst-", client, stopWorkers, async (session) => {
    const coordinator = await session.startCoordinator(
      models,
      async (c) => {
        await Promise.all([
          ...Array.from({ length: BROWSER_WORKERS }, (_, i) =>
            spawnWorker(c.url, `bench-browser-${i + 1}`, BROWSER_ARGS),
          ),
          spawnWorker(c.url, "bench-gpu", GPU_ARGS),
        ]);
      },
      { SCALING: JSON.stringify(SCALING) },
    );
    if (!coordinator) return 1;
    const base = new URL(coordinator.url);
    const sourcesBefore = newestSourceMtime();
    const window = opts.quick ? WARMUP.quick : WARMUP.full;
    console.error(
      `coordinator at ${base}; warm-up pinned to the browser pool (${window.measureMs / 1000} s measured)…`,
    );
    const warmup = await measureBrowserRate(base, window);
    if (!(warmup.itemsPerS > 0)) {
      console.error("the browser pool served nothing during the warm-up");
      return 1;
    }
    const wanted = warmup.itemsPerS * opts.multiplier;
    const itemsPerS = Math.min(wanted, opts.maxItemsPerS);
    console.error(
      `browser pool: ${warmup.itemsPerS.toFixed(1)} items/s; burst at ${itemsPerS.toFixed(0)} items/s for ${opts.seconds} s${itemsPerS < wanted ? ` (capped from ${wanted.toFixed(0)})` : ""}…`,
    );
    const before = await scrape(base);
    if (before === undefined) throw new Error("could not read /metrics before the burst");
    const cpuFrom = cpuMark();
    const subs = new Submissions();
    const t0 = performance.now();
    let burstEnd: number | undefined;
    let cpuBurstEnd: CpuMark | undefined;
    const sender = sendBurst(base, itemsPerS, opts.seconds, t0, subs).then((r) => {
      burstEnd = subs.lastAnsweredAt;
      cpuBurstEnd = cpuMark();
      return r;
    });
    const sampled = await sample(base, t0, subs, () => burstEnd, completed(before));
    const sent = await sender;
    const cpuTo = cpuMark();
    console.error(`accounting for ${subs.ids.length} jobs…`);
    const jobs = await accountJobs(client, base, subs.ids, {
      inputsPerCall: CALL_SIZE,
      concurrency: POLL_CONCURRENCY,
      limitMs: POLL_LIMIT_MS,
    });
    const after = await scrape(base);
    const health = await probe.request(base, "GET", "/healthz");
    // Leases that ran out and items put back: a worker's result that never settled shows here.
    const troubles = (metric: string) =>
      after === undefined ? Number.NaN : counterSum(after, metric, MODEL) - counterSum(before, metric, MODEL);
    // What the workers themselves said went wrong (disconnects, socket and coordinator errors).
    const workerEvents = [...startedWorkers].flatMap(([id, w]) =>
      w
        .output()
        .split("\n")
        .filter((line) => /disconnected|connection error|coordinator error|unreadable|warning|fatal/i.test(line))
        .slice(0, 5)
        .map((line) => `${id}: ${line.trim()}`),
    );
    const run: BurstRun = {
      opts,
      config: {
        model: MODEL,
        modelOverrides: MODEL_OVERRIDES,
        maxBatchSize: model.max_batch_size,
        scaling: SCALING,
        browserWorkers: BROWSER_WORKERS,
        browserArgs: BROWSER_ARGS,
        gpuArgs: GPU_ARGS,
        callSize: CALL_SIZE,
        warmupCallers: WARMUP.callers,
        warmup: window,
        maxOutstanding: MAX_OUTSTANDING,
        submitTries: SUBMIT_TRIES,
        jobTimeoutMs: JOB_TIMEOUT_MS,
      },
      warmup,
      wantedItemsPerS: wanted,
      targetItemsPerS: itemsPerS,
      ...sent,
      burstEndMs: burstEnd ?? sent.windowClosedAt,
      subs: {
        sentCalls: subs.sentCalls,
        acceptedCalls: subs.ids.length,
        acceptedItems: subs.acceptedItems,
        retried: subs.retried,
        refused: [...subs.refused].map(([kind, r]) => ({ kind, ...r })),
      },
      ...sampled,
      jobs,
      totals: after ? completed(after) : undefined,
      baseline: completed(before),
      cpu: { burst: cpuBurstEnd && cpuShares(cpuFrom, cpuBurstEnd), whole: cpuShares(cpuFrom, cpuTo) },
      load: [cpuFrom.load, cpuTo.load],
      sourcesChanged: newestSourceMtime() !== sourcesBefore,
      health: "status" in health ? `HTTP ${health.status}` : `no answer (${health.error})`,
      leasesExpired: troubles("edgeswarm_leases_expired_total"),
      redelivered: troubles("edgeswarm_items_redelivered_total"),
      workerEvents,
    };
    const command = `\`node --import tsx bench/burst.ts${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(" ")}` : ""}\``;
    const header = session.reportHeader("Burst benchmark (issue 5)", ", onnxruntime-node on cpu", command);
    await session.publish(renderMarkdown(header, run), RESULTS_MD);
    await writeFile(RESULTS_SVG, renderSvg(run));
    console.error(`wrote ${RESULTS_MD.pathname} and ${RESULTS_SVG.pathname}`);
    const lostOrFailed = run.jobs.lost + run.jobs.failed + run.jobs.expired + run.jobs.wrongOutputs + subs.refused.size;
    return lostOrFailed > 0 ? 1 : 0;
  });
}

process.exitCode = await main();
