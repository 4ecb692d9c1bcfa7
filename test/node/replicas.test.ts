import { describe, expect, it } from "vitest";
import { type PoolScaling, SCALING_DEFAULTS } from "../../shared/config/scaling-config.ts";
import { rawDesiredReplicas, stabilisedReplicas } from "../../shared/policy/replicas.ts";

const pool = (over: Partial<PoolScaling> = {}): PoolScaling => ({
  target_per_replica: 10,
  activation_threshold: 0,
  min_replicas: 0,
  max_replicas: 5,
  scale_down_window_ms: 1_000,
  ...over,
});

describe("rawDesiredReplicas (KEDA: ceil(queue / target) clamped to [min, max])", () => {
  it("rounds up", () => {
    expect(rawDesiredReplicas(1, pool())).toBe(1);
    expect(rawDesiredReplicas(10, pool())).toBe(1);
    expect(rawDesiredReplicas(11, pool())).toBe(2);
    expect(rawDesiredReplicas(40, pool())).toBe(4);
  });

  it("clamps a huge queue to max_replicas", () => {
    expect(rawDesiredReplicas(1_000_000, pool())).toBe(5);
    expect(rawDesiredReplicas(Number.MAX_SAFE_INTEGER, pool())).toBe(5);
  });

  it("does not go below min_replicas while active", () => {
    expect(rawDesiredReplicas(1, pool({ min_replicas: 3 }))).toBe(3);
  });

  it("handles a fractional target", () => {
    expect(rawDesiredReplicas(1, pool({ target_per_replica: 0.5 }))).toBe(2);
    expect(rawDesiredReplicas(3, pool({ target_per_replica: 2.5, max_replicas: 100 }))).toBe(2);
    expect(rawDesiredReplicas(5, pool({ target_per_replica: 2.5, max_replicas: 100 }))).toBe(2);
    expect(rawDesiredReplicas(5.1, pool({ target_per_replica: 2.5, max_replicas: 100 }))).toBe(3);
  });

  describe("activation (0 <-> 1)", () => {
    it("gates only 0 <-> 1: with a floor of 1 or more, a queue under the threshold still scales on the formula", () => {
      // KEDA: target 10, activation 50, min 1, queue 40 -> 4 replicas, not the floor.
      expect(rawDesiredReplicas(40, pool({ activation_threshold: 50, min_replicas: 1 }))).toBe(4);
      expect(rawDesiredReplicas(40, pool({ activation_threshold: 50, min_replicas: 0 }))).toBe(0);
    });

    it("an empty queue with min 0 scales to zero", () => {
      expect(rawDesiredReplicas(0, pool({ min_replicas: 0 }))).toBe(0);
    });

    it("an empty queue with min 1 keeps one replica", () => {
      expect(rawDesiredReplicas(0, pool({ min_replicas: 1 }))).toBe(1);
    });

    it("a queue at or below the activation threshold stays at zero", () => {
      const s = pool({ activation_threshold: 5 });
      expect(rawDesiredReplicas(4, s)).toBe(0);
      expect(rawDesiredReplicas(5, s)).toBe(0);
    });

    it("a queue just above the activation threshold activates at least one replica", () => {
      // ceil(6 / 10) is 1 anyway; a large target shows the floor of 1 from activation.
      expect(rawDesiredReplicas(6, pool({ activation_threshold: 5 }))).toBe(1);
      expect(rawDesiredReplicas(6, pool({ activation_threshold: 5, target_per_replica: 1_000 }))).toBe(1);
    });

    it("above the threshold the formula applies in full", () => {
      expect(rawDesiredReplicas(31, pool({ activation_threshold: 5 }))).toBe(4);
    });

    it("with min 1 an inactive queue stays at min 1", () => {
      expect(rawDesiredReplicas(5, pool({ activation_threshold: 5, min_replicas: 1 }))).toBe(1);
    });
  });

  it("follows the shipped defaults", () => {
    expect(rawDesiredReplicas(0, SCALING_DEFAULTS.gpu)).toBe(1);
    expect(rawDesiredReplicas(65, SCALING_DEFAULTS.gpu)).toBe(2);
    expect(rawDesiredReplicas(0, SCALING_DEFAULTS.browser)).toBe(0);
    expect(rawDesiredReplicas(17, SCALING_DEFAULTS.browser)).toBe(2);
  });
});

describe("stabilisedReplicas (HPA scale-down stabilisation)", () => {
  const now = 10_000;

  it("with no history answers the current recommendation", () => {
    expect(stabilisedReplicas({ at: now, desired: 3 }, [], 1_000)).toBe(3);
  });

  it("scales up at once, whatever the history", () => {
    const history = [
      { at: now - 500, desired: 1 },
      { at: now - 100, desired: 2 },
    ];
    expect(stabilisedReplicas({ at: now, desired: 7 }, history, 1_000)).toBe(7);
  });

  it("holds a scale-down to the highest recommendation within the window", () => {
    const history = [
      { at: now - 900, desired: 6 },
      { at: now - 500, desired: 4 },
      { at: now - 100, desired: 2 },
    ];
    expect(stabilisedReplicas({ at: now, desired: 1 }, history, 1_000)).toBe(6);
  });

  it("ignores recommendations older than the window", () => {
    const history = [
      { at: now - 5_000, desired: 9 },
      { at: now - 1_000, desired: 8 }, // exactly at the window's edge: outside
      { at: now - 999, desired: 3 },
    ];
    expect(stabilisedReplicas({ at: now, desired: 1 }, history, 1_000)).toBe(3);
  });

  it("ignores recommendations from the future", () => {
    expect(stabilisedReplicas({ at: now, desired: 1 }, [{ at: now + 1, desired: 9 }], 1_000)).toBe(1);
  });

  it("scales down once the high recommendation leaves the window", () => {
    const history = [{ at: now, desired: 6 }];
    expect(stabilisedReplicas({ at: now + 999, desired: 1 }, history, 1_000)).toBe(6);
    expect(stabilisedReplicas({ at: now + 1_000, desired: 1 }, history, 1_000)).toBe(1);
  });

  it("with window 0 follows the current recommendation down at once", () => {
    const history = [
      { at: now, desired: 9 },
      { at: now - 1, desired: 8 },
    ];
    expect(stabilisedReplicas({ at: now, desired: 2 }, history, 0)).toBe(2);
  });

  it("can scale to zero once the window has passed", () => {
    expect(stabilisedReplicas({ at: now, desired: 0 }, [{ at: now - 2_000, desired: 4 }], 1_000)).toBe(0);
  });
});
