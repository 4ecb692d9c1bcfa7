// Model registries the suites run against: millisecond leases and delays, so expiry is tested without sleeps of seconds.
export const TEST_REGISTRY = {
  models: [
    {
      name: "alpha",
      task: "tensor",
      max_batch_size: 4,
      max_queue_delay_ms: 40,
      max_queue_size: 12,
      max_inputs_per_request: 8,
      lease_ms: 150,
      max_attempts: 2,
      retry_backoff_ms: 0,
      default_timeout_ms: 5_000,
      max_timeout_ms: 10_000,
      priority_levels: 3,
    },
    { name: "bravo", task: "tensor", max_batch_size: 64, max_queue_delay_ms: 0, lease_ms: 5_000 },
    // A delay no test waits out: a batch that arrives proves it went out because it was full.
    { name: "charlie", task: "tensor", max_batch_size: 4, max_queue_delay_ms: 60_000 },
  ],
};

export const TEST_API_KEY = "test-api-key";
export const TEST_WORKER_TOKEN = "test-worker-token";
