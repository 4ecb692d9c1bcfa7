// Trust in donated compute, as pure decisions the model queue applies: when two outputs agree (within a
// tolerance), and whether a browser worker's batch is run again elsewhere in sampled mode (BOINC's adaptive
// replication). What a set of runs of one item decides is donor-trust.ts (judgeStrict). Tested in Node.

export interface Tolerance {
  /** Absolute slack for numbers. */
  abs: number;
  /** Relative slack for numbers, of the larger magnitude of the two. */
  rel: number;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

const where = (path: string): string => path || "output";

/** A value for a message: short enough to log, whatever the worker sent. */
function brief(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

/** Numbers agree when |a - b| <= abs + rel * max(|a|, |b|) (numpy's isclose, made symmetric). */
export function numbersAgree(a: number, b: number, tol: Tolerance): boolean {
  if (!Number.isFinite(a) || !Number.isFinite(b)) return Object.is(a, b);
  return Math.abs(a - b) <= tol.abs + tol.rel * Math.max(Math.abs(a), Math.abs(b));
}

/**
 * Where two outputs first differ, or null when they agree: numbers within the tolerance, strings,
 * booleans and null equal, arrays of the same length and objects with the same keys, recursively.
 */
export function firstDifference(a: unknown, b: unknown, tol: Tolerance, path = ""): string | null {
  if (typeof a === "number" && typeof b === "number") {
    return numbersAgree(a, b, tol) ? null : `${where(path)}: ${a} vs ${b}`;
  }
  if (Array.isArray(a) && Array.isArray(b)) {
    if (a.length !== b.length) return `${where(path)}: ${a.length} vs ${b.length} elements`;
    for (let i = 0; i < a.length; i++) {
      const d = firstDifference(a[i], b[i], tol, `${path}[${i}]`);
      if (d !== null) return d;
    }
    return null;
  }
  if (isRecord(a) && isRecord(b)) {
    const keys = Object.keys(a).sort();
    const other = Object.keys(b).sort();
    if (keys.join("\u0000") !== other.join("\u0000")) {
      return `${where(path)}: keys ${brief(keys)} vs ${brief(other)}`;
    }
    for (const key of keys) {
      const d = firstDifference(a[key], b[key], tol, `${path}.${key}`);
      if (d !== null) return d;
    }
    return null;
  }
  return a === b ? null : `${where(path)}: ${brief(a)} vs ${brief(b)}`;
}

/**
 * An output in the order it is compared in. text-classification lists labels best first, so two honest
 * runs whose scores nearly tie may list them in another order: compare them by label instead. A generation's
 * log probabilities are left out: near ties order its top tokens either way, and its tokens say what it did (a
 * donor's values are held to the model's by the teacher-forced check, text-generation-check.ts).
 */
export function comparable(task: string, output: unknown): unknown {
  if (task === "text-generation" && isRecord(output)) {
    const { logprobs: _, prompt_logprobs: __, ...rest } = output;
    return rest;
  }
  if (task !== "text-classification" || !Array.isArray(output)) return output;
  const label = (v: unknown) => (isRecord(v) && typeof v.label === "string" ? v.label : "");
  return [...output].sort((x, y) => (label(x) < label(y) ? -1 : label(x) > label(y) ? 1 : 0));
}

/** Where two outputs of a task differ, or null when they agree. */
export function outputsDiffer(task: string, a: unknown, b: unknown, tol: Tolerance): string | null {
  return firstDifference(comparable(task, a), comparable(task, b), tol);
}

export interface SamplingPolicy {
  /** Agreeing verifications after which a worker is only sampled. */
  trustAfter: number;
  /** The share of a trusted worker's batches verified anyway. */
  sampleRate: number;
}

/**
 * Adaptive replication: every batch of a worker is verified until it has `trustAfter` agreeing
 * verifications; after that a `sampleRate` share of them, so a worker cannot tell which of its batches go unchecked.
 * `random` is a uniform draw in [0, 1).
 */
export function shouldVerify(agreed: number, policy: SamplingPolicy, random: number): boolean {
  return agreed < policy.trustAfter || random < policy.sampleRate;
}
