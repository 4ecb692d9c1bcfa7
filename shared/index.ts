// The one place the EdgeSwarm protocol and its pure policies live; edge/, client/ and worker-gpu/ import from here.
export * from "./config/model-config.ts";
export * from "./config/scaling-config.ts";
export * from "./policy/batching.ts";
export * from "./policy/job-outcome.ts";
export * from "./policy/lease.ts";
export * from "./policy/output-shape.ts";
export * from "./policy/replicas.ts";
export * from "./policy/routing.ts";
export * from "./policy/verification.ts";
export * from "./protocol/caller.ts";
export * from "./protocol/donor.ts";
export * from "./protocol/errors.ts";
export * from "./protocol/ids.ts";
export * from "./protocol/trace.ts";
export * from "./protocol/validate.ts";
export * from "./protocol/worker.ts";
