// One object for the whole deployment: remembers recent replica recommendations per pool so that
// scale-down waits out the stabilisation window (HPA behaviour), even across restarts.
// The edge calls observe() on every GET /v1/scaling and /metrics.
import { DurableObject } from "cloudflare:workers";
import { type Pool, rawDesiredReplicas, type ScalingConfig, stabilisedReplicas } from "../../shared/index.ts";
import type { Env } from "../env.ts";
import { Sql } from "../sql.ts";

export interface PoolSignal {
  /** Items eligible for the pool plus items it holds in flight: the value KEDA divides by targetValue. */
  queue_length: number;
  /** ceil(queue / target) clamped, before stabilisation. */
  raw_replicas: number;
  /** What the pool should run now: scale-ups at once, scale-downs after the window. */
  desired_replicas: number;
  active: boolean;
}

const MIGRATIONS = [
  `CREATE TABLE recommendations (pool TEXT NOT NULL, at INTEGER NOT NULL, desired INTEGER NOT NULL);
   CREATE INDEX recommendations_at ON recommendations (pool, at);`,
] as const;

export class ScalingWindow extends DurableObject<Env> {
  private readonly sql: Sql;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.sql = new Sql(ctx.storage.sql);
    ctx.blockConcurrencyWhile(async () => this.sql.migrate(MIGRATIONS));
  }

  observe(queues: Record<Pool, number>, scaling: ScalingConfig, now = Date.now()): Record<Pool, PoolSignal> {
    const signal = (pool: Pool): PoolSignal => {
      const settings = scaling[pool];
      const queue = queues[pool];
      const raw = rawDesiredReplicas(queue, settings);
      this.sql.run("DELETE FROM recommendations WHERE pool = ? AND at <= ?", pool, now - settings.scale_down_window_ms);
      const history = this.sql.all<{ at: number; desired: number }>(
        "SELECT at, desired FROM recommendations WHERE pool = ?",
        pool,
      );
      this.sql.run("INSERT INTO recommendations (pool, at, desired) VALUES (?, ?, ?)", pool, now, raw);
      const desired = stabilisedReplicas({ at: now, desired: raw }, history, settings.scale_down_window_ms);
      return {
        queue_length: queue,
        raw_replicas: raw,
        desired_replicas: desired,
        active: queue > settings.activation_threshold,
      };
    };
    return { browser: signal("browser"), gpu: signal("gpu") };
  }
}
