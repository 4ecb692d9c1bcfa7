// Checks that an answer has the shape its endpoint promises before the SDK hands it over typed, so a
// proxy's page or a coordinator of another version fails at the call, with invalid_response, not later
// in the caller's code. Shallow by design: the coordinator is the one that validates deeply.
import { JobStatus } from "../../shared/protocol/job-status.ts";

export const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const hasId = (v: unknown): v is Record<string, unknown> & { id: string } => isRecord(v) && typeof v.id === "string";

export const isJobStatus = (v: unknown): boolean =>
  typeof v === "string" && (JobStatus as readonly string[]).includes(v);

export const isJob = (v: unknown): boolean => hasId(v) && isJobStatus(v.status);

/** 200 of a waited call; also what a call that did not wait gets when its job had already ended. */
export const isInferResult = (v: unknown): boolean => hasId(v) && Array.isArray(v.outputs);

export const isSubmitted = (v: unknown): boolean => isJob(v) || isInferResult(v);

export const isModelList = (v: unknown): boolean => isRecord(v) && Array.isArray(v.models);

export const isFloatEmbeddings = (v: unknown): boolean =>
  isRecord(v) && Array.isArray(v.data) && v.data.every((d) => isRecord(d) && Array.isArray(d.embedding));

export const isSessionBody = (v: unknown): boolean => hasId(v) && isRecord(v.state) && typeof v.expires_at === "number";
