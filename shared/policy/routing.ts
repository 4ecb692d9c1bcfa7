// Which pool serves a model's queued items: the browser pool first (donated, free), the GPU pool (paid
// per replica) only for what the browser pool cannot serve in time. A queued item that did not ask for a
// pool becomes eligible for the GPU pool when no browser worker can take work, when it has waited longer
// than `overflow_after_ms`, or when the queue holds more than the browser pool can drain within
// `latency_target_ms` at the rate it has been observed to serve.

export interface RoutingInputs {
  /** Browser workers that could take a batch now (connected, not draining, not quarantined). */
  browserWorkers: number;
  /** Items per second the browser pool serves while busy, from recent leases; null until observed. */
  browserItemsPerSecond: number | null;
  /** Items the browser pool holds in flight: they drain before the queued ones. */
  browserInFlight: number;
  /** Queued items that asked for no pool. */
  autoQueued: number;
  /** Of those, the ones enqueued at least overflow_after_ms ago. */
  autoOverdue: number;
  latencyTargetMs: number;
}

/**
 * How many of the queued items that asked for no pool the GPU pool may take now (from the head of the
 * queue): all of them with no browser worker, else the overdue ones or the excess over what the browser
 * pool drains within the latency target, whichever is more.
 */
export function gpuOverflow(r: RoutingInputs): number {
  if (r.autoQueued <= 0) return 0;
  if (r.browserWorkers <= 0) return r.autoQueued;
  const excess =
    r.browserItemsPerSecond === null
      ? 0
      : r.autoQueued - Math.max(0, r.browserItemsPerSecond * (r.latencyTargetMs / 1000) - r.browserInFlight);
  return Math.min(r.autoQueued, Math.max(r.autoOverdue, Math.ceil(excess), 0));
}

/** One worker's serving rate: items per second of lease time, smoothed (EWMA) over its recent leases. */
export function smoothedRate(previous: number | undefined, items: number, leaseMs: number, weight = 0.3): number {
  const sample = items / (Math.max(1, leaseMs) / 1000);
  return previous === undefined ? sample : previous + weight * (sample - previous);
}

/**
 * The browser pool's rate: each ready worker's observed rate times the batches it runs at once; a worker
 * not yet observed counts at the mean of those that were. Null when none was observed.
 */
export function poolRate(workers: readonly { rate: number | undefined; concurrency: number }[]): number | null {
  const known = workers.filter((w) => w.rate !== undefined).map((w) => w.rate as number);
  if (known.length === 0) return null;
  const mean = known.reduce((a, b) => a + b, 0) / known.length;
  return workers.reduce((sum, w) => sum + (w.rate ?? mean) * Math.max(1, w.concurrency), 0);
}
