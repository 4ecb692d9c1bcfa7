// A sharded model's queue read as one (docs/operations.md, "Sharded queues"): what /v1/scaling, /metrics,
// /v1/models and the operators' routes answer is each shard's answer summed, or merged where a sum would
// count one worker once per shard it serves. Pure: the routes read the shards and call these.
import type { MetricsSnapshot } from "../model-queue/metrics-store.ts";
import type { DeadLetter, QueueStats, Roster } from "../model-queue/model-queue.ts";
import type { RosterEntry } from "../model-queue/worker-roster.ts";

type PoolCounts = { browser: number; gpu: number };

const addPools = (a: PoolCounts, b: PoolCounts): PoolCounts => ({ browser: a.browser + b.browser, gpu: a.gpu + b.gpu });
const maxPools = (a: PoolCounts, b: PoolCounts): PoolCounts => ({
  browser: Math.max(a.browser, b.browser),
  gpu: Math.max(a.gpu, b.gpu),
});

/** Values grouped by the model they belong to, in the order models first appear. */
export function byModel<T>(results: readonly { model: { name: string }; value: T }[]): Map<string, T[]> {
  const grouped = new Map<string, T[]>();
  for (const r of results) grouped.set(r.model.name, [...(grouped.get(r.model.name) ?? []), r.value]);
  return grouped;
}

/**
 * One model's shards as one queue: items (queued, eligible, in flight, held for verification) and leases
 * summed; workers and what is known of them (quarantined, breakers open) the most any shard sees, as every
 * worker serves every shard.
 */
export function sumStats(shards: readonly QueueStats[]): QueueStats {
  const [first, ...rest] = shards;
  if (!first) throw new Error("sumStats needs one shard's stats at least");
  const sum = { ...first, shard: 0 };
  for (const s of rest) {
    sum.queued += s.queued;
    sum.eligible = addPools(sum.eligible, s.eligible);
    sum.in_flight = addPools(sum.in_flight, s.in_flight);
    sum.leases = addPools(sum.leases, s.leases);
    sum.awaiting_verification += s.awaiting_verification;
    sum.workers = maxPools(sum.workers, s.workers);
    sum.breaker_open = maxPools(sum.breaker_open, s.breaker_open);
    sum.quarantined = Math.max(sum.quarantined, s.quarantined);
  }
  return sum;
}

/** One model's shards' counters and histograms, summed series by series (name and pool). */
export function sumSnapshots(shards: readonly MetricsSnapshot[]): MetricsSnapshot {
  const counters = new Map<string, MetricsSnapshot["counters"][number]>();
  const histograms = new Map<string, MetricsSnapshot["histograms"][number]>();
  for (const snapshot of shards) {
    for (const c of snapshot.counters) {
      const key = `${c.name}\u0000${c.pool}`;
      const seen = counters.get(key);
      counters.set(key, seen ? { ...seen, value: seen.value + c.value } : { ...c });
    }
    for (const h of snapshot.histograms) {
      const key = `${h.name}\u0000${h.pool}`;
      const seen = histograms.get(key);
      if (!seen) histograms.set(key, { ...h, buckets: [...h.buckets] });
      else {
        const length = Math.max(seen.buckets.length, h.buckets.length);
        seen.buckets = Array.from({ length }, (_, i) => (seen.buckets[i] ?? 0) + (h.buckets[i] ?? 0));
        seen.sum += h.sum;
        seen.count += h.count;
      }
    }
  }
  return { counters: [...counters.values()], histograms: [...histograms.values()] };
}

const BREAKER_RANK: Record<RosterEntry["breaker"]["state"], number> = { closed: 0, "half-open": 1, open: 2 };

/**
 * One model's workers over its shards: a worker (by transport, id and donor) listed once, with the leases
 * it holds in all of them, draining if it drains anywhere, the worst of its breakers, the latest of its
 * quarantines and its standing only where every shard grants it; every quarantine running in any shard.
 */
export function mergeRosters(shards: readonly Roster[]): Roster {
  const [first] = shards;
  if (!first) throw new Error("mergeRosters needs one shard's roster at least");
  const workers = new Map<string, RosterEntry>();
  const quarantines = new Map<string, Roster["quarantines"][number]>();
  for (const roster of shards) {
    for (const w of roster.workers) {
      const key = `${w.transport}\u0000${w.worker_id}\u0000${w.donor ?? ""}`;
      const seen = workers.get(key);
      if (!seen) {
        workers.set(key, { ...w });
        continue;
      }
      seen.leases_held += w.leases_held;
      seen.items_held += w.items_held;
      seen.draining ||= w.draining;
      if (BREAKER_RANK[w.breaker.state] > BREAKER_RANK[seen.breaker.state]) seen.breaker = w.breaker;
      if (w.quarantine && (!seen.quarantine || w.quarantine.until > seen.quarantine.until))
        seen.quarantine = w.quarantine;
      if (seen.standing && w.standing) {
        seen.standing = {
          agreed: Math.min(seen.standing.agreed, w.standing.agreed),
          in_good_standing: seen.standing.in_good_standing && w.standing.in_good_standing,
        };
      }
    }
    for (const q of roster.quarantines) {
      const key = `${q.kind}\u0000${q.id}`;
      const seen = quarantines.get(key);
      if (!seen || q.until > seen.until) quarantines.set(key, q);
    }
  }
  return { model: first.model, workers: [...workers.values()], quarantines: [...quarantines.values()] };
}

/** One model's dead letters over its shards: every shard's total, the newest `limit` (as each shard lists them). */
export function mergeDeadLetters(
  shards: readonly { total: number; dead_letters: DeadLetter[] }[],
  limit: number,
): { total: number; dead_letters: DeadLetter[] } {
  const all = shards.flatMap((s) => s.dead_letters);
  all.sort((a, b) => b.created_at - a.created_at || a.job_id.localeCompare(b.job_id) || a.index - b.index);
  return { total: shards.reduce((n, s) => n + s.total, 0), dead_letters: all.slice(0, limit) };
}
