// Per-model queue configuration with documented defaults (docs/operations.md's defaults table mirrors this).
// The registry (models/registry.json) or the MODELS variable supplies entries; omitted fields take these.
import { z } from "zod";
import { MODEL_NAME } from "../protocol/caller.ts";
import { ChatTemplate } from "../protocol/chat-template.ts";
import { MAX_SHARDS } from "../protocol/ids.ts";

/**
 * Trust in browser workers (donated, untrusted compute). The gpu pool is trusted and never verified.
 * A browser worker's batches are all run again on another worker until `trust_after` of them agreed,
 * then a `sample_rate` share of them; outputs that are verified are held back from callers until a
 * second run agrees. These defaults keep a lying browser worker's answers from reaching a caller.
 */
export const VERIFICATION_DEFAULTS = {
  /** false trusts the browser pool like the gpu pool: no second runs, no canaries, no quarantine. */
  enabled: true,
  /**
   * "strict": a browser output reaches a caller only once a trusted run, or a donor independent of its
   * producer (another identity on another network, both in good standing), agrees with it.
   * "sampled": BOINC's adaptive replication, an explicit trade of a bounded error rate for capacity: once a
   * donor is in good standing only `sample_rate` of its batches are run again, the rest released as they are.
   */
  mode: "strict",
  /** sampled mode: share of a donor's batches in good standing still run a second time on another worker. */
  sample_rate: 0.1,
  /** Agreements with trusted runs (canaries passed, trusted verifications) that put a donor in good standing. */
  trust_after: 5,
  /** Two outputs agree when every number is within abs + rel * max(|a|, |b|) and all else is equal. */
  tolerance: { abs: 1e-3, rel: 1e-3 },
  /** How long a worker (and its donor) caught answering wrongly gets no leases. */
  quarantine_ms: 600_000,
  /** Share of browser batches that carry one known-answer item (a canary), when known answers exist. */
  canary_rate: 0.1,
  /** Known answers (input, trusted output) kept per model to draw canaries from. */
  known_answers: 64,
  /** An untrusted batch is hedged (its items become the trusted pool's) after this multiple of its expected time... */
  hedge_factor: 4,
  /** ...but not sooner than this; never later than lease_ms, which also bounds an untrusted worker's extends. */
  hedge_min_ms: 1_000,
  /** Batches one donor identity holds at once, whatever concurrency it claims. */
  donor_max_leases: 2,
  /** Batches all donors of one client network (IPv4 /24, IPv6 /64) hold at once. */
  network_max_leases: 8,
  /** Sockets all donors of one client network keep open to one model's queue. */
  network_max_sockets: 16,
  /** Failed donor deliveries an item absorbs before it runs on the trusted pool only; they never spend max_attempts. */
  donor_fault_budget: 2,
} as const;

/** The circuit breaker every worker of a model goes through (both pools). */
export const BREAKER_DEFAULTS = {
  /** Failed batches in a row (expired, lost, hedged, or all errors) that stop a worker's leases. */
  failures: 3,
  /** How long a tripped worker gets nothing before one probe batch of one item. */
  cooldown_ms: 30_000,
} as const;

export const CircuitBreaker = z.strictObject({
  failures: z.int().min(1).max(1_000).default(BREAKER_DEFAULTS.failures),
  cooldown_ms: z.int().min(0).default(BREAKER_DEFAULTS.cooldown_ms),
});

export const Verification = z.strictObject({
  enabled: z.boolean().default(VERIFICATION_DEFAULTS.enabled),
  mode: z.enum(["strict", "sampled"]).default(VERIFICATION_DEFAULTS.mode),
  sample_rate: z.number().min(0).max(1).default(VERIFICATION_DEFAULTS.sample_rate),
  trust_after: z.int().min(0).max(1_000_000).default(VERIFICATION_DEFAULTS.trust_after),
  tolerance: z
    .strictObject({
      abs: z.number().min(0).default(VERIFICATION_DEFAULTS.tolerance.abs),
      rel: z.number().min(0).default(VERIFICATION_DEFAULTS.tolerance.rel),
    })
    .prefault({}),
  quarantine_ms: z.int().min(0).default(VERIFICATION_DEFAULTS.quarantine_ms),
  canary_rate: z.number().min(0).max(1).default(VERIFICATION_DEFAULTS.canary_rate),
  known_answers: z.int().min(0).max(1_000).default(VERIFICATION_DEFAULTS.known_answers),
  hedge_factor: z.number().min(1).max(1_000).default(VERIFICATION_DEFAULTS.hedge_factor),
  hedge_min_ms: z.int().min(0).default(VERIFICATION_DEFAULTS.hedge_min_ms),
  donor_max_leases: z.int().min(1).max(64).default(VERIFICATION_DEFAULTS.donor_max_leases),
  network_max_leases: z.int().min(1).max(4_096).default(VERIFICATION_DEFAULTS.network_max_leases),
  network_max_sockets: z.int().min(1).max(4_096).default(VERIFICATION_DEFAULTS.network_max_sockets),
  donor_fault_budget: z.int().min(1).max(100).default(VERIFICATION_DEFAULTS.donor_fault_budget),
});
export type Verification = z.infer<typeof Verification>;

export const QUEUE_DEFAULTS = {
  /** Triton's max_batch_size: the most items one batch holds. */
  max_batch_size: 32,
  /** Triton's max_queue_delay: a batch goes out when full or when its oldest item has waited this long. */
  max_queue_delay_ms: 5,
  /** Queued items (not calls) the model accepts before answering 429. */
  max_queue_size: 10_000,
  /** Queue objects (Durable Objects) the model's queue is spread over; docs/operations.md, "Sharded queues". */
  shards: 1,
  /** Most inputs in one call. */
  max_inputs_per_request: 256,
  /** How long a worker holds a batch before it must extend; an expired lease puts its items back. */
  lease_ms: 30_000,
  /** Deliveries of one item before it is dead-lettered as failed. */
  max_attempts: 3,
  /** Backoff before a redelivered item is eligible again: base * 2^(attempt-1), capped. */
  retry_backoff_ms: 100,
  retry_backoff_max_ms: 5_000,
  /** Per-request timeout when the caller gives none, and the most a caller may ask for. */
  default_timeout_ms: 30_000,
  max_timeout_ms: 300_000,
  /** Priorities 0..levels-1, higher served first, FIFO within a level. */
  priority_levels: 3,
  default_priority: 0,
  /** How long a finished job's result can still be read with GET /v1/jobs/{id}. */
  result_ttl_ms: 3_600_000,
  /** A queued item (of a call that named no pool) waiting this long may go to the GPU pool. */
  overflow_after_ms: 2_000,
  /** Items beyond what the browser pool drains within this long may go to the GPU pool. */
  latency_target_ms: 5_000,
  /** true: a call while no worker of any pool that could run it is connected is refused at once (503, Retry-After). */
  reject_without_workers: false,
  verification: VERIFICATION_DEFAULTS,
  circuit_breaker: BREAKER_DEFAULTS,
} as const;

const FileRef = z.strictObject({
  /** Path inside the model folder, e.g. "onnx/model.onnx". */
  path: z.string().min(1),
  /** Hex sha256 of the file; a download that does not match is refused. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits"),
});

/** A model folder in the Hugging Face layout (config.json, tokenizer.json, onnx/model.onnx), with hashes. */
export const ModelFiles = z.strictObject({
  /** Where the folder is: an http(s) URL, or a path relative to the registry file. Default "./<name>/". */
  base_url: z.string().min(1).optional(),
  model: FileRef,
  config: FileRef.optional(),
  tokenizer: FileRef.optional(),
  tokenizer_config: FileRef.optional(),
});
export type ModelFiles = z.infer<typeof ModelFiles>;

export const ModelConfig = z
  .strictObject({
    name: z.string().regex(MODEL_NAME),
    task: z.string().min(1).default("tensor"),
    max_batch_size: z.int().positive().max(4096).default(QUEUE_DEFAULTS.max_batch_size),
    max_queue_delay_ms: z.int().min(0).max(60_000).default(QUEUE_DEFAULTS.max_queue_delay_ms),
    max_queue_size: z.int().positive().default(QUEUE_DEFAULTS.max_queue_size),
    /** Calls are spread over the shards, every worker serves them all, max_queue_size is shared out between them. */
    shards: z.int().min(1).max(MAX_SHARDS).default(QUEUE_DEFAULTS.shards),
    max_inputs_per_request: z.int().positive().max(4096).default(QUEUE_DEFAULTS.max_inputs_per_request),
    lease_ms: z.int().positive().default(QUEUE_DEFAULTS.lease_ms),
    max_attempts: z.int().positive().max(100).default(QUEUE_DEFAULTS.max_attempts),
    retry_backoff_ms: z.int().min(0).default(QUEUE_DEFAULTS.retry_backoff_ms),
    retry_backoff_max_ms: z.int().min(0).default(QUEUE_DEFAULTS.retry_backoff_max_ms),
    default_timeout_ms: z.int().positive().default(QUEUE_DEFAULTS.default_timeout_ms),
    max_timeout_ms: z.int().positive().default(QUEUE_DEFAULTS.max_timeout_ms),
    priority_levels: z.int().min(1).max(16).default(QUEUE_DEFAULTS.priority_levels),
    default_priority: z.int().min(0).default(QUEUE_DEFAULTS.default_priority),
    result_ttl_ms: z.int().positive().default(QUEUE_DEFAULTS.result_ttl_ms),
    overflow_after_ms: z.int().min(0).default(QUEUE_DEFAULTS.overflow_after_ms),
    latency_target_ms: z.int().positive().default(QUEUE_DEFAULTS.latency_target_ms),
    reject_without_workers: z.boolean().default(QUEUE_DEFAULTS.reject_without_workers),
    /** Checks on browser workers' outputs; see VERIFICATION_DEFAULTS. */
    verification: Verification.prefault({}),
    /** Stops leases to a worker whose batches keep failing; see BREAKER_DEFAULTS. */
    circuit_breaker: CircuitBreaker.prefault({}),
    /** The files workers load; absent for a queue whose workers bring their own model. */
    files: ModelFiles.optional(),
    /** Tokenizer truncation for text tasks. */
    max_sequence_length: z.int().positive().max(8192).default(128),
    /** A text-generation model's chat template (its config.json's edgeswarm.chat_template); chat calls need one. */
    chat_template: ChatTemplate.optional(),
    description: z.string().optional(),
  })
  .refine((m) => m.default_timeout_ms <= m.max_timeout_ms, "default_timeout_ms must not exceed max_timeout_ms")
  .refine((m) => m.default_priority < m.priority_levels, "default_priority must be below priority_levels");
export type ModelConfig = z.infer<typeof ModelConfig>;

export const ModelRegistry = z
  .strictObject({ models: z.array(ModelConfig).min(1) })
  .refine((r) => new Set(r.models.map((m) => m.name)).size === r.models.length, "model names must be unique");
export type ModelRegistry = z.infer<typeof ModelRegistry>;
