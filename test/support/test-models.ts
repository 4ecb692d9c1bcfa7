// Model registries the suites run against: millisecond leases and delays, so expiry is tested without sleeps of seconds.
const FAKE_FILES = { model: { path: "onnx/model.onnx", sha256: "0".repeat(64) } };
/** The bundled decoder's chat template (models/build/decoder-text.ts). */
const CHAT_TEMPLATE = {
  format: "edgeswarm-prefix-suffix-v1",
  roles: {
    system: { prefix: "<|system|>", suffix: "<|end|>" },
    user: { prefix: "<|user|>", suffix: "<|end|>" },
    assistant: { prefix: "<|assistant|>", suffix: "<|end|>" },
  },
  generation_prompt: "<|assistant|>",
};

const TOOL_SCRIBE = {
  name: "tool-scribe",
  task: "text-generation",
  max_batch_size: 4,
  max_queue_delay_ms: 0,
  lease_ms: 2_000,
  max_sequence_length: 256,
  verification: { enabled: false },
  chat_template: {
    ...CHAT_TEMPLATE,
    roles: { ...CHAT_TEMPLATE.roles, tool: { prefix: "<|tool|>", suffix: "<|end|>" } },
  },
};

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
    // Its browser-pool tests are about scaling, not trust: browser outputs are taken as they come.
    {
      name: "bravo",
      task: "tensor",
      max_batch_size: 64,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      verification: { enabled: false },
    },
    // A delay no test waits out: a batch that arrives proves it went out because it was full.
    { name: "charlie", task: "tensor", max_batch_size: 4, max_queue_delay_ms: 60_000 },
    // Trust in browser workers (test/workers/trust.test.ts). Files make the coordinator check outputs'
    // shapes; the hash is never downloaded here.
    // Verification as shipped: every default.
    { name: "guarded", task: "text-classification", files: FAKE_FILES, max_queue_delay_ms: 0, lease_ms: 5_000 },
    // Every browser batch verified until 2 agreed, then none sampled; no canaries: deterministic.
    {
      name: "verified",
      task: "text-classification",
      files: FAKE_FILES,
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      verification: { trust_after: 2, sample_rate: 0, canary_rate: 0, quarantine_ms: 60_000 },
    },
    // A verifying lease that expires in 150 ms.
    {
      name: "verified-short",
      task: "text-classification",
      files: FAKE_FILES,
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 150,
      max_attempts: 2,
      retry_backoff_ms: 0,
      verification: { trust_after: 100, canary_rate: 0 },
    },
    // Trusted at once and never sampled, but every batch carries a canary once known answers exist.
    {
      name: "canaried",
      task: "feature-extraction",
      files: FAKE_FILES,
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      verification: { trust_after: 0, sample_rate: 0, canary_rate: 1, tolerance: { abs: 1e-4, rel: 0 } },
    },
    // Donors in good standing from the start and no canaries: whether two donors may vouch for each other
    // turns on their independence alone (test/workers/donors-trust.test.ts).
    {
      name: "independent",
      task: "text-classification",
      files: FAKE_FILES,
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      verification: {
        trust_after: 0,
        sample_rate: 0,
        canary_rate: 0,
        quarantine_ms: 60_000,
        hedge_min_ms: 5_000,
        network_max_sockets: 3,
      },
    },
    // Sampled mode, the explicit trade: a donor in good standing (at once here) has its outputs released
    // unverified, except a sample_rate share (none here): test/workers/donor-pool.test.ts.
    {
      name: "sampled",
      task: "text-classification",
      files: FAKE_FILES,
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      verification: { mode: "sampled", trust_after: 0, sample_rate: 0, canary_rate: 0 },
    },
    // A worker whose batches keep failing trips its circuit breaker after two (test/workers/donor-pool.test.ts).
    {
      name: "flaky",
      task: "tensor",
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      max_attempts: 10,
      retry_backoff_ms: 0,
      circuit_breaker: { failures: 2, cooldown_ms: 400 },
      verification: { enabled: false },
    },
    // Routing to the GPU pool (test/workers/routing.test.ts): "delta" overflows on age alone (its latency
    // target is beyond any test), "echo" on queue depth alone (nothing waits a minute).
    {
      name: "delta",
      task: "tensor",
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      overflow_after_ms: 1_000,
      latency_target_ms: 3_600_000,
      verification: { enabled: false },
    },
    {
      name: "echo",
      task: "tensor",
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      overflow_after_ms: 60_000,
      latency_target_ms: 5_000,
      verification: { enabled: false },
    },
    // Text generation (test/workers/generation.test.ts): SocketWorkers stream token deltas by hand; the chat
    // template is the bundled decoder's (models/build/decoder-text.ts).
    {
      name: "scribe",
      task: "text-generation",
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 2_000,
      max_attempts: 3,
      retry_backoff_ms: 0,
      max_sequence_length: 256,
      verification: { enabled: false },
      chat_template: CHAT_TEMPLATE,
    },
    // Tool calling (test/workers/openai-tools.test.ts): scribe with a tool role, so a chat can carry tools' results.
    TOOL_SCRIBE,
    // Tool calls the model decides on (tool_choice "auto"): its template says how it writes one.
    {
      ...TOOL_SCRIBE,
      name: "tool-caller",
      chat_template: {
        ...TOOL_SCRIBE.chat_template,
        tool_call: {
          prefix: "<tool_call>",
          suffix: "</tool_call>",
          tools: { prefix: "You may call these tools:\n", suffix: "" },
        },
      },
    },
    // Generation with verification as shipped: a donor's deltas are neither relayed nor resumed from.
    {
      name: "scribe-guarded",
      task: "text-generation",
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      max_sequence_length: 256,
    },
    // Donated generation checked by verdicts (test/workers/generation-verify.test.ts): donors in good standing at
    // once and no canaries, so who checks a held output turns on independence alone; files make the shapes checked.
    {
      name: "scribe-verified",
      task: "text-generation",
      files: FAKE_FILES,
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      max_sequence_length: 256,
      verification: { trust_after: 0, sample_rate: 0, canary_rate: 0, quarantine_ms: 60_000, hedge_min_ms: 5_000 },
    },
    // A generating model with a long context and files (so /v1/infer parses its items): room to ask for more log
    // probabilities than an answer holds (test/workers/generation-logprobs.test.ts).
    {
      name: "long-writer",
      task: "text-generation",
      files: FAKE_FILES,
      max_queue_delay_ms: 0,
      max_sequence_length: 4096,
      verification: { enabled: false },
    },
    // A generating model without a chat template: completions only.
    {
      name: "plain-writer",
      task: "text-generation",
      max_queue_delay_ms: 0,
      max_sequence_length: 64,
      verification: { enabled: false },
    },
    // A queue spread over 4 objects (test/workers/shards.test.ts); room for 40 items, 10 in each shard.
    {
      name: "sharded",
      task: "tensor",
      shards: 4,
      max_batch_size: 8,
      max_queue_delay_ms: 0,
      max_queue_size: 40,
      lease_ms: 5_000,
      verification: { enabled: false },
    },
    // Donors checked as "verified" is, over 2 shards (test/workers/shards.test.ts).
    {
      name: "sharded-verified",
      task: "text-classification",
      files: FAKE_FILES,
      shards: 2,
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      verification: { trust_after: 2, sample_rate: 0, canary_rate: 0, quarantine_ms: 60_000 },
    },
    // Calls refused at once while no worker is connected (test/workers/job-admin.test.ts).
    {
      name: "lonely",
      task: "tensor",
      max_batch_size: 4,
      max_queue_delay_ms: 0,
      lease_ms: 5_000,
      reject_without_workers: true,
      verification: { enabled: false },
    },
  ],
};

export const TRUST_MODELS = ["guarded", "verified", "verified-short", "canaried", "independent", "sampled"] as const;

export const TEST_API_KEY = "test-api-key";
/** A caller key GPU_POOL_KEYS leaves out: it may not pin calls to the gpu pool. */
export const TEST_CPU_ONLY_KEY = "test-key-browser-only";
export const TEST_WORKER_TOKEN = "test-worker-token";
