// What operators and autoscalers read: liveness, readiness, the KEDA scaling signal, Prometheus metrics,
// and the dashboard's page. /v1/scaling must stay cheap and answer even when a queue does not: KEDA scales
// to zero on errors.
import { type Context, Hono } from "hono";
import { ErrorCode, type Pool, rawDesiredReplicas } from "../../shared/index.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { loadConfig } from "../config.ts";
import { ApiError } from "../errors.ts";
import { type ModelMetrics, renderPrometheus } from "../metrics/prometheus.ts";
import { byModel, sumSnapshots, sumStats } from "../metrics/shard-sum.ts";
import type { QueueStats } from "../model-queue/model-queue.ts";
import { eachQueue, type QueueStub, shardQueues } from "../request.ts";
import type { PoolSignal } from "../scaling/scaling-window.ts";

export const healthRoutes = new Hono<HonoEnv>();
export const opsRoutes = new Hono<HonoEnv>();

healthRoutes.get("/healthz", (c) => c.json({ status: "ok" }));

healthRoutes.get("/readyz", (c) => {
  try {
    const config = loadConfig(c.env);
    return c.json({ status: "ready", models: [...config.models.keys()] });
  } catch (error) {
    return c.json(
      { status: "not_ready", error: { code: ErrorCode.misconfigured, message: (error as Error).message } },
      503,
    );
  }
});

/** Per pool: the queued items routing lets it take now, plus the items it holds (KEDA's queue length). */
function poolQueues(stats: readonly QueueStats[]): Record<Pool, number> {
  const sum = (pool: Pool) => stats.reduce((n, s) => n + s.eligible[pool] + s.in_flight[pool], 0);
  return { browser: sum("browser"), gpu: sum("gpu") };
}

async function scalingSignal(c: Context<HonoEnv>, stats: readonly QueueStats[]): Promise<Record<Pool, PoolSignal>> {
  const scaling = c.get("config").scaling;
  const queues = poolQueues(stats);
  try {
    const window = c.env.SCALING_WINDOW.get(c.env.SCALING_WINDOW.idFromName("global"));
    return await window.observe(queues, scaling);
  } catch (error) {
    // Without the window we still answer: the raw formula, so KEDA never sees a failing endpoint.
    console.error("scaling window unavailable", error);
    const raw = (pool: Pool): PoolSignal => {
      const desired = rawDesiredReplicas(queues[pool], scaling[pool]);
      return {
        queue_length: queues[pool],
        raw_replicas: desired,
        desired_replicas: desired,
        active: queues[pool] > scaling[pool].activation_threshold,
      };
    };
    return { browser: raw("browser"), gpu: raw("gpu") };
  }
}

/**
 * KEDA gives the metrics call a few seconds (KEDA_HTTP_DEFAULT_TIMEOUT, 3 s by default) and counts a slow
 * answer as a failure, and a Prometheus scrape has its own timeout: a queue object that does not answer
 * within this long is reported as last seen.
 */
const QUEUE_WAIT_MS = 1_500;
/** A queue never read in this isolate gets this much longer; then it is reported unavailable. */
const FIRST_READ_WAIT_MS = 1_000;
/** Last-seen values older than this are not given out: the queue is reported unavailable instead. */
const LAST_SEEN_MAX_AGE_MS = 300_000;
/** What each endpoint last read from each model's queue in this isolate, for a queue slow to answer. */
const lastSeen = new Map<string, { value: unknown; at: number }>();

const LATE = Symbol("late");

/** The promise's value if it settles within `ms`, else LATE (the promise runs on). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | typeof LATE> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<typeof LATE>((resolve) => {
    timer = setTimeout(() => resolve(LATE), ms);
  });
  return Promise.race([promise, late]).finally(() => {
    if (timer !== undefined) clearTimeout(timer);
  });
}

/**
 * `read` on every queue within QUEUE_WAIT_MS: fresh, else what this isolate last read (those queues are
 * named in `stale`); a queue that fails, or is slow and was never read, is left out (`failed`). Every shard
 * of a sharded model is read, and the shards it dropped but still drains (their count is in shard 0's
 * `served`) after them.
 */
async function readQueues<T>(
  c: Context<HonoEnv>,
  what: string,
  read: (queue: QueueStub, name: string) => Promise<T>,
  served: (value: T) => number | undefined,
): Promise<{ values: { model: { name: string }; value: T }[]; failed: string[]; stale: string[] }> {
  const stale: string[] = [];
  const readOne = async (queue: QueueStub, name: string): Promise<T> => {
    const key = `${what}/${name}`;
    const fresh = read(queue, name).then((value) => {
      lastSeen.set(key, { value, at: Date.now() });
      return value;
    });
    const first = await within(fresh, QUEUE_WAIT_MS);
    if (first !== LATE) return first;
    const seen = lastSeen.get(key);
    if (seen && Date.now() - seen.at <= LAST_SEEN_MAX_AGE_MS) {
      stale.push(name);
      return seen.value as T;
    }
    // Never read here (a new isolate), or long ago: a little longer, then it counts as unavailable.
    const second = await within(fresh, FIRST_READ_WAIT_MS);
    if (second !== LATE) return second;
    throw new Error(`the queue ${name} did not answer within ${QUEUE_WAIT_MS + FIRST_READ_WAIT_MS} ms`);
  };
  const configured = await eachQueue(c, readOne);
  const draining = new Map<string, number>();
  for (const r of configured.results) {
    const count = served(r.value) ?? 0;
    if (count > r.model.shards) draining.set(r.model.name, count);
  }
  const dropped =
    draining.size === 0
      ? { results: [], failed: [] }
      : await eachQueue(c, readOne, (m) => shardQueues(m, draining.get(m.name) ?? 0).slice(m.shards));
  return {
    values: [...configured.results, ...dropped.results],
    failed: [...configured.failed, ...dropped.failed],
    stale,
  };
}

opsRoutes.get("/v1/scaling", requireKey("metrics"), async (c) => {
  const read = await readQueues(
    c,
    "scaling",
    (queue, name) => queue.stats(name),
    (s) => s.served_shards,
  );
  const { failed, stale } = read;
  const stats = [...byModel(read.values).values()].map(sumStats);
  const pools = await scalingSignal(c, stats);
  const config = c.get("config").scaling;
  return c.json({
    pools,
    config,
    models: Object.fromEntries(
      stats.map((s) => [
        s.model,
        { queued: s.queued, eligible: s.eligible, in_flight: s.in_flight, workers: s.workers },
      ]),
    ),
    ...(failed.length > 0 ? { unavailable: failed } : {}),
    ...(stale.length > 0 ? { stale } : {}),
    at: Date.now(),
  });
});

opsRoutes.get("/metrics", requireKey("metrics"), async (c) => {
  const read = await readQueues(
    c,
    "metrics",
    async (queue, name): Promise<ModelMetrics> => ({
      stats: await queue.stats(name),
      snapshot: await queue.metricsSnapshot(name),
    }),
    (m) => m.stats.served_shards,
  );
  const models = [...byModel(read.values).values()].map((shards) => ({
    stats: sumStats(shards.map((s) => s.stats)),
    snapshot: sumSnapshots(shards.map((s) => s.snapshot)),
  }));
  const pools = await scalingSignal(
    c,
    models.map((m) => m.stats),
  );
  const reads = { stale: read.stale, unavailable: read.failed };
  return c.body(renderPrometheus(models, pools, reads), 200, {
    "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
  });
});

/**
 * The dashboard (client/dashboard/, built into dist/public/dashboard/). The page holds no data, so it is
 * served to anyone; everything it shows comes from /metrics and /v1/scaling, which it reads with the
 * operator key given in its #key= fragment or form (under AUTH=open, with none).
 */
opsRoutes.get("/dashboard", async (c) => {
  const page = await c.env.ASSETS?.fetch(new URL("/dashboard/", c.req.url));
  if (!page?.ok) {
    throw new ApiError(404, ErrorCode.notFound, "the dashboard is not built here; run `npm run build:client`");
  }
  return page;
});
