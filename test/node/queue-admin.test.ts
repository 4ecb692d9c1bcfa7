import { describe, expect, it } from "vitest";
import {
  cancelledMessage,
  idempotencyKeyProblem,
  leasesToStop,
  noWorkerExpiry,
  noWorkerReason,
  noWorkerRefusal,
  poolsThatCanRun,
} from "../../shared/policy/queue-admin.ts";

describe("leasesToStop", () => {
  it("stops a lease holding only the cancelled job's items, and leaves one shared with another job running", () => {
    const leased = [
      { lease_id: "L1", job_id: "J" },
      { lease_id: "L1", job_id: "J" },
      { lease_id: "L2", job_id: "J" },
      { lease_id: "L2", job_id: "K" },
      { lease_id: "L3", job_id: "K" },
    ];
    expect(leasesToStop(leased, "J")).toEqual({ stop: ["L1"], shared: ["L2"] });
    expect(leasesToStop(leased, "K")).toEqual({ stop: ["L3"], shared: ["L2"] });
    expect(leasesToStop([], "J")).toEqual({ stop: [], shared: [] });
  });
});

describe("poolsThatCanRun and noWorkerReason", () => {
  it("routed and browser-pinned calls can run on either pool; gpu-pinned ones on the gpu pool only", () => {
    expect(poolsThatCanRun(null)).toEqual(["browser", "gpu"]);
    expect(poolsThatCanRun(undefined)).toEqual(["browser", "gpu"]);
    expect(poolsThatCanRun("browser")).toEqual(["browser", "gpu"]);
    expect(poolsThatCanRun("gpu")).toEqual(["gpu"]);
  });

  it("names the pools when none of them has a worker, and is null when one has", () => {
    expect(noWorkerReason("m", ["browser", "gpu"], { browser: 0, gpu: 0 })).toBe(
      'no worker of the browser or gpu pool is connected for model "m"',
    );
    expect(noWorkerReason("m", ["gpu"], { browser: 3, gpu: 0 })).toBe(
      'no worker of the gpu pool is connected for model "m"',
    );
    expect(noWorkerReason("m", ["browser", "gpu"], { browser: 1, gpu: 0 })).toBeNull();
  });

  it("says what to do in the refusal and in the expiry", () => {
    expect(noWorkerRefusal("no worker", 5)).toMatch(/^no worker; .*reject_without_workers.* retry in 5 s$/);
    expect(noWorkerExpiry("no worker")).toMatch(/^no worker, and none took any of its inputs: start a worker/);
  });
});

describe("idempotencyKeyProblem", () => {
  it("takes 1 to 255 visible ASCII characters", () => {
    expect(idempotencyKeyProblem("8e03978e-40d5-43e8-bc93-6894a57f9324")).toBeNull();
    expect(idempotencyKeyProblem("x".repeat(255))).toBeNull();
    for (const bad of ["", "x".repeat(256), "has space", "naïve", "tab\t"]) {
      expect(idempotencyKeyProblem(bad)).toMatch(/visible ASCII/);
    }
  });
});

describe("cancelledMessage", () => {
  it("says who cancelled and how much had finished", () => {
    expect(cancelledMessage("caller", 1, 3)).toBe(
      "cancelled by DELETE /v1/jobs/{id} (1 of 3 inputs had finished; the rest will not run)",
    );
    expect(cancelledMessage("hung_up", 0, 1)).toMatch(/^the caller hung up on its waiting call/);
  });
});
