// The metrics a model queue records, with Prometheus names, help and histogram buckets.
// Durations are in seconds and sizes in items, as Prometheus conventions ask.

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300] as const;

export const HISTOGRAMS = {
  queue_wait: {
    metric: "edgeswarm_queue_wait_seconds",
    help: "Time an item waited in the queue before a worker leased it.",
    buckets: LATENCY_BUCKETS,
  },
  compute: {
    metric: "edgeswarm_compute_seconds",
    help: "Time a worker reported computing one batch.",
    buckets: LATENCY_BUCKETS,
  },
  request_duration: {
    metric: "edgeswarm_request_duration_seconds",
    help: "End-to-end time of an inference request, from accepted to its last output.",
    buckets: LATENCY_BUCKETS,
  },
  batch_size: {
    metric: "edgeswarm_batch_size",
    help: "Items per leased batch.",
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
  },
} as const;
export type HistogramName = keyof typeof HISTOGRAMS;

export const COUNTERS = {
  completed: { metric: "edgeswarm_items_completed_total", help: "Items that ended with an output." },
  failed: { metric: "edgeswarm_items_failed_total", help: "Items that ended failed (bad input or max_attempts)." },
  expired: { metric: "edgeswarm_items_expired_total", help: "Items whose request timed out before they were served." },
  redelivered: {
    metric: "edgeswarm_items_redelivered_total",
    help: "Items put back after a lost, expired or failed delivery.",
  },
  leases: { metric: "edgeswarm_leases_total", help: "Batches leased to workers." },
  lease_extensions: {
    metric: "edgeswarm_lease_extensions_total",
    help: "Lease extensions granted to workers still working.",
  },
  leases_expired: { metric: "edgeswarm_leases_expired_total", help: "Leases that passed their deadline." },
  rejected: {
    metric: "edgeswarm_requests_rejected_total",
    help: "Requests refused with 429 because the queue was full.",
  },
  // Trust in browser workers; `pool` is the pool of the worker whose run it was.
  verifications: {
    metric: "edgeswarm_verifications_total",
    help: "Items run again to check a browser worker's output, by the pool of the checking run.",
  },
  verification_agreements: {
    metric: "edgeswarm_verification_agreements_total",
    help: "Verifying runs that agreed with every earlier run of the item.",
  },
  verification_disagreements: {
    metric: "edgeswarm_verification_disagreements_total",
    help: "Verifying runs that disagreed with an earlier run of the item.",
  },
  canaries_sent: {
    metric: "edgeswarm_canaries_sent_total",
    help: "Known-answer items slipped into browser workers' batches.",
  },
  canaries_failed: {
    metric: "edgeswarm_canaries_failed_total",
    help: "Known-answer items a browser worker answered wrongly.",
  },
  invalid_outputs: {
    metric: "edgeswarm_outputs_invalid_total",
    help: "Outputs refused because they did not have their task's shape.",
  },
  quarantined: {
    metric: "edgeswarm_workers_quarantined_total",
    help: "Browser workers quarantined for answering wrongly.",
  },
  discarded: {
    metric: "edgeswarm_results_discarded_total",
    help: "Browser workers' outputs thrown away unused: out-voted, or from a worker caught answering wrongly.",
  },
  donor_faults: {
    metric: "edgeswarm_donor_faults_total",
    help: "Items an untrusted worker failed to deliver (expired, lost, errors): charged to the item's donor-fault budget, never its attempts.",
  },
  breaker_trips: {
    metric: "edgeswarm_worker_breaker_trips_total",
    help: "Workers whose circuit breaker opened after failed batches in a row.",
  },
} as const;
export type CounterName = keyof typeof COUNTERS;

/** The pool label of things no worker has touched yet (an item that expired in the queue). */
export const NO_POOL = "none";
