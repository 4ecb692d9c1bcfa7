// The replica formula KEDA and the HPA apply, computed by the coordinator so KEDA can read it:
// desired = ceil(queue / target) clamped to [min, max]; activation decides 0 <-> 1; scale-down is
// held to the highest recommendation within a stabilisation window (HPA scaleDown behaviour).
import type { PoolScaling } from "../config/scaling-config.ts";

export function rawDesiredReplicas(queue: number, s: PoolScaling): number {
  // As in KEDA, activation only decides 0 <-> 1: a pool with a floor of 1 or more scales on the formula alone.
  const active = queue > s.activation_threshold;
  if (!active && s.min_replicas === 0) return 0;
  const wanted = Math.ceil(Math.max(0, queue) / s.target_per_replica);
  return Math.min(s.max_replicas, Math.max(s.min_replicas, active ? 1 : 0, wanted));
}

export interface Recommendation {
  at: number;
  desired: number;
}

/**
 * Scale up at once; scale down only to the highest recommendation made within the window
 * (the current one included), so a brief dip does not make the pool flap.
 */
export function stabilisedReplicas(
  current: Recommendation,
  history: readonly Recommendation[],
  windowMs: number,
): number {
  let highest = current.desired;
  for (const r of history) {
    if (r.at > current.at - windowMs && r.at <= current.at && r.desired > highest) highest = r.desired;
  }
  return highest;
}
