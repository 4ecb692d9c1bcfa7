// Per-pool autoscaling settings, KEDA's names: the coordinator's formula reads these, and the
// Kubernetes manifests are checked against the same values.
import { z } from "zod";

export const PoolScaling = z
  .strictObject({
    /** KEDA targetValue: queued + in-flight items one replica is expected to carry. */
    target_per_replica: z.number().positive(),
    /** KEDA activationTargetValue: at or below this the pool may sit at zero replicas. */
    activation_threshold: z.number().min(0),
    min_replicas: z.int().min(0),
    max_replicas: z.int().positive(),
    /** HPA scaleDown stabilizationWindowSeconds, in ms: scale down to the highest desired value seen in this window. */
    scale_down_window_ms: z.int().min(0),
  })
  .refine((s) => s.min_replicas <= s.max_replicas, "min_replicas must not exceed max_replicas");
export type PoolScaling = z.infer<typeof PoolScaling>;

export const SCALING_DEFAULTS = {
  gpu: {
    target_per_replica: 64,
    activation_threshold: 0,
    min_replicas: 1,
    max_replicas: 10,
    scale_down_window_ms: 300_000,
  },
  browser: {
    target_per_replica: 16,
    activation_threshold: 0,
    min_replicas: 0,
    max_replicas: 10_000,
    scale_down_window_ms: 60_000,
  },
} as const satisfies Record<string, PoolScaling>;

export const ScalingConfig = z.strictObject({
  gpu: PoolScaling.default(SCALING_DEFAULTS.gpu),
  browser: PoolScaling.default(SCALING_DEFAULTS.browser),
});
export type ScalingConfig = z.infer<typeof ScalingConfig>;
