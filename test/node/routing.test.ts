// The routing policy: how much of a model's queue may overflow to the GPU pool, and the browser pool's rate.
import { describe, expect, it } from "vitest";
import { gpuOverflow, poolRate, type RoutingInputs, smoothedRate } from "../../shared/index.ts";

const base: RoutingInputs = {
  browserWorkers: 2,
  browserItemsPerSecond: 100,
  browserInFlight: 0,
  autoQueued: 50,
  autoOverdue: 0,
  latencyTargetMs: 1_000,
};

describe("gpuOverflow", () => {
  it("gives the gpu pool everything when no browser worker can take work", () => {
    expect(gpuOverflow({ ...base, browserWorkers: 0 })).toBe(50);
  });

  it("gives it nothing while the browser pool drains the queue within the latency target", () => {
    expect(gpuOverflow(base)).toBe(0);
    expect(gpuOverflow({ ...base, autoQueued: 100 })).toBe(0);
  });

  it("gives it the excess over what the browser pool drains in time, counting what it holds", () => {
    expect(gpuOverflow({ ...base, autoQueued: 130 })).toBe(30);
    expect(gpuOverflow({ ...base, autoQueued: 130, browserInFlight: 40 })).toBe(70);
    expect(gpuOverflow({ ...base, autoQueued: 130, latencyTargetMs: 500 })).toBe(80);
  });

  it("gives it the overdue items when they are more than the excess", () => {
    expect(gpuOverflow({ ...base, autoOverdue: 7 })).toBe(7);
    expect(gpuOverflow({ ...base, autoQueued: 130, autoOverdue: 7 })).toBe(30);
  });

  it("does not overflow on depth before the browser pool's rate is known", () => {
    expect(gpuOverflow({ ...base, browserItemsPerSecond: null, autoQueued: 10_000 })).toBe(0);
    expect(gpuOverflow({ ...base, browserItemsPerSecond: null, autoQueued: 10_000, autoOverdue: 3 })).toBe(3);
  });

  it("never gives more than is queued, nor anything from an empty queue", () => {
    expect(gpuOverflow({ ...base, autoQueued: 5, autoOverdue: 9 })).toBe(5);
    expect(gpuOverflow({ ...base, autoQueued: 0, browserWorkers: 0 })).toBe(0);
  });
});

describe("the browser pool's rate", () => {
  it("takes a worker's first lease as its rate, then smooths", () => {
    expect(smoothedRate(undefined, 10, 500)).toBe(20);
    expect(smoothedRate(20, 10, 250, 0.5)).toBe(30);
  });

  it("sums ready workers times their concurrency, counting unobserved ones at the mean", () => {
    expect(poolRate([])).toBeNull();
    expect(poolRate([{ rate: undefined, concurrency: 1 }])).toBeNull();
    expect(
      poolRate([
        { rate: 10, concurrency: 2 },
        { rate: 30, concurrency: 1 },
        { rate: undefined, concurrency: 1 },
      ]),
    ).toBe(10 * 2 + 30 + 20);
  });
});
