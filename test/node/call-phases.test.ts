// The coordinator's phases of a call (edge/telemetry/call-phases.ts), read from the job view the queue answers.
import { describe, expect, it } from "vitest";
import { callPhases } from "../../edge/telemetry/call-phases.ts";
import type { JobView } from "../../shared/index.ts";

const T = 1_800_000_000_000;
const job = (over: Partial<JobView>): JobView => ({
  id: "m:1",
  model: "m",
  status: "succeeded",
  created_at: T + 2,
  ...over,
});

describe("a call's phases", () => {
  it("accept, queue wait, lease and answer, end to end", () => {
    const done = job({ timings: { queued_ms: 10, compute_ms: 4.5, total_ms: 30 } });
    expect(callPhases(done, T, T + 40)).toEqual([
      { name: "accept", start: T, end: T + 2 },
      { name: "queue wait", start: T + 2, end: T + 12 },
      { name: "lease", start: T + 12, end: T + 32 },
      { name: "answer", start: T + 32, end: T + 40 },
    ]);
  });

  it("has no lease for a job no worker took, and only accept for a job still open", () => {
    const unleased = job({ status: "expired", timings: { queued_ms: 50, compute_ms: 0, total_ms: 50 } });
    expect(callPhases(unleased, T, T + 60).map((p) => p.name)).toEqual(["accept", "queue wait", "answer"]);
    expect(callPhases(job({ status: "queued" }), T, T + 3)).toEqual([{ name: "accept", start: T, end: T + 2 }]);
    const open = job({ status: "running", timings: { queued_ms: 5, compute_ms: 0, total_ms: 9 } });
    expect(callPhases(open, T, T + 11).map((p) => p.name)).toEqual(["accept"]);
  });

  it("keeps a lease that ended in the ms it began, and never runs a phase backwards", () => {
    const quick = job({ timings: { queued_ms: 3, compute_ms: 0.2, total_ms: 3 } });
    expect(callPhases(quick, T, T + 5).map((p) => p.name)).toEqual(["accept", "queue wait", "lease", "answer"]);
    // The queue's clock a little behind the edge's: nothing starts before the call arrived.
    const skewed = job({ created_at: T - 3, timings: { queued_ms: 1, compute_ms: 1, total_ms: 2 } });
    for (const p of callPhases(skewed, T, T + 1)) {
      expect(p.start).toBeGreaterThanOrEqual(T);
      expect(p.end).toBeGreaterThanOrEqual(p.start);
    }
  });

  it("has none for an Idempotency-Key replay: the job ran for an earlier call", () => {
    expect(callPhases(job({ timings: { queued_ms: 1, compute_ms: 1, total_ms: 2 } }), T, T + 5, true)).toEqual([]);
  });
});
