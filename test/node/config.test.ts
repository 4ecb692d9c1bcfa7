import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { ModelConfig, ModelRegistry, QUEUE_DEFAULTS } from "../../shared/config/model-config.ts";
import { PoolScaling, SCALING_DEFAULTS, ScalingConfig } from "../../shared/config/scaling-config.ts";

describe("ModelConfig", () => {
  it("fills every omitted field from QUEUE_DEFAULTS", () => {
    const m = ModelConfig.parse({ name: "sentiment" });
    expect(m).toEqual({ name: "sentiment", task: "tensor", max_sequence_length: 128, ...QUEUE_DEFAULTS });
  });

  it("keeps the values it is given", () => {
    const m = ModelConfig.parse({ name: "m", max_batch_size: 4, max_queue_delay_ms: 0, retry_backoff_ms: 0 });
    expect(m.max_batch_size).toBe(4);
    expect(m.max_queue_delay_ms).toBe(0);
    expect(m.retry_backoff_ms).toBe(0);
    expect(m.lease_ms).toBe(QUEUE_DEFAULTS.lease_ms);
  });

  it("keeps files and description as given, and checks the hashes' form", () => {
    const files = { base_url: "https://models.example/m/", model: { path: "onnx/model.onnx", sha256: "a".repeat(64) } };
    const m = ModelConfig.parse({ name: "m", files, description: "d" });
    expect(m.files).toEqual(files);
    expect(m.description).toBe("d");
    const short = ModelConfig.safeParse({ name: "m", files: { model: { path: "onnx/model.onnx", sha256: "ab" } } });
    expect(short.success).toBe(false);
    expect(short.error?.issues[0]?.path).toEqual(["files", "model", "sha256"]);
  });

  it("rejects unknown fields", () => {
    const r = ModelConfig.safeParse({ name: "m", max_batch: 4 });
    expect(r.success).toBe(false);
    expect(r.error?.issues[0]?.code).toBe("unrecognized_keys");
  });

  it("requires a name and checks it", () => {
    expect(ModelConfig.safeParse({}).success).toBe(false);
    expect(ModelConfig.safeParse({ name: "bad name" }).success).toBe(false);
    expect(ModelConfig.safeParse({ name: "-lead" }).success).toBe(false);
  });

  it("refuses default_timeout_ms above max_timeout_ms", () => {
    const r = ModelConfig.safeParse({ name: "m", default_timeout_ms: 2_000, max_timeout_ms: 1_000 });
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.message)).toContain("default_timeout_ms must not exceed max_timeout_ms");
  });

  it("accepts default_timeout_ms equal to max_timeout_ms", () => {
    expect(ModelConfig.safeParse({ name: "m", default_timeout_ms: 1_000, max_timeout_ms: 1_000 }).success).toBe(true);
  });

  it("refuses a default_timeout_ms that only exceeds the default max", () => {
    expect(ModelConfig.safeParse({ name: "m", default_timeout_ms: QUEUE_DEFAULTS.max_timeout_ms + 1 }).success).toBe(
      false,
    );
  });

  it("refuses default_priority at or above priority_levels", () => {
    expect(ModelConfig.safeParse({ name: "m", priority_levels: 2, default_priority: 2 }).success).toBe(false);
    expect(ModelConfig.safeParse({ name: "m", priority_levels: 2, default_priority: 1 }).success).toBe(true);
  });

  it.each([
    ["max_batch_size", 0],
    ["max_batch_size", 4097],
    ["max_batch_size", 1.5],
    ["max_queue_delay_ms", -1],
    ["lease_ms", 0],
    ["max_attempts", 0],
    ["retry_backoff_ms", -1],
    ["priority_levels", 0],
    ["priority_levels", 17],
  ])("rejects %s = %s", (field, value) => {
    expect(ModelConfig.safeParse({ name: "m", [field]: value }).success).toBe(false);
  });
});

describe("ModelRegistry", () => {
  it("parses several models and defaults each", () => {
    const r = ModelRegistry.parse({ models: [{ name: "a" }, { name: "b", max_batch_size: 2 }] });
    expect(r.models.map((m) => [m.name, m.max_batch_size])).toEqual([
      ["a", QUEUE_DEFAULTS.max_batch_size],
      ["b", 2],
    ]);
  });

  it("refuses duplicate names", () => {
    const r = ModelRegistry.safeParse({ models: [{ name: "a" }, { name: "b" }, { name: "a" }] });
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.message)).toContain("model names must be unique");
  });

  it("refuses an empty registry", () => {
    expect(ModelRegistry.safeParse({ models: [] }).success).toBe(false);
  });

  it("refuses unknown top-level fields", () => {
    expect(ModelRegistry.safeParse({ models: [{ name: "a" }], extra: 1 }).success).toBe(false);
  });

  it("accepts the bundled models/registry.json", () => {
    const json: unknown = JSON.parse(readFileSync(new URL("../../models/registry.json", import.meta.url), "utf8"));
    const r = ModelRegistry.safeParse(json);
    expect(r.error).toBeUndefined();
    expect(r.data?.models.length).toBeGreaterThan(0);
  });
});

describe("ScalingConfig", () => {
  it("defaults both pools to SCALING_DEFAULTS", () => {
    expect(ScalingConfig.parse({})).toEqual(SCALING_DEFAULTS);
  });

  it("defaults a missing pool while keeping the given one", () => {
    const gpu = { ...SCALING_DEFAULTS.gpu, max_replicas: 3 };
    expect(ScalingConfig.parse({ gpu })).toEqual({ gpu, browser: SCALING_DEFAULTS.browser });
  });

  it("the defaults themselves are valid PoolScaling", () => {
    expect(PoolScaling.safeParse(SCALING_DEFAULTS.gpu).success).toBe(true);
    expect(PoolScaling.safeParse(SCALING_DEFAULTS.browser).success).toBe(true);
  });

  it("does not fill fields inside a pool that is given partially", () => {
    expect(ScalingConfig.safeParse({ gpu: { max_replicas: 3 } }).success).toBe(false);
  });

  it("rejects unknown fields and bad values", () => {
    expect(ScalingConfig.safeParse({ cpu: SCALING_DEFAULTS.gpu }).success).toBe(false);
    expect(PoolScaling.safeParse({ ...SCALING_DEFAULTS.gpu, extra: 1 }).success).toBe(false);
    expect(PoolScaling.safeParse({ ...SCALING_DEFAULTS.gpu, target_per_replica: 0 }).success).toBe(false);
    expect(PoolScaling.safeParse({ ...SCALING_DEFAULTS.gpu, min_replicas: -1 }).success).toBe(false);
    expect(PoolScaling.safeParse({ ...SCALING_DEFAULTS.gpu, max_replicas: 0 }).success).toBe(false);
    expect(PoolScaling.safeParse({ ...SCALING_DEFAULTS.gpu, activation_threshold: -1 }).success).toBe(false);
  });

  // Known gap (reported, not fixed here): nothing ties min_replicas to max_replicas, so min 5 / max 2
  // parses, and rawDesiredReplicas then answers 5 for an idle queue but 2 for a busy one.
  it("refuses min_replicas above max_replicas", () => {
    expect(PoolScaling.safeParse({ ...SCALING_DEFAULTS.gpu, min_replicas: 5, max_replicas: 2 }).success).toBe(false);
  });

  it("accepts a fractional target", () => {
    expect(PoolScaling.safeParse({ ...SCALING_DEFAULTS.gpu, target_per_replica: 0.5 }).success).toBe(true);
  });
});
