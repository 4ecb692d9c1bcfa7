// What each hostile donor mode answers (test/support/donor-process.ts): which items it lies on, and the
// wrong but well-shaped output it gives. Liars each lie in their own way; colluders all give the same
// wrong answer, derived from the input alone, so any two of them agree. Pure: its tests import it too.
import { createHash } from "node:crypto";
import type { Batch, BatchItem, ItemResult } from "../../shared/index.ts";

export const DONOR_MODES = [
  "honest",
  "hoard-ws",
  "hoard-http",
  "lie",
  "collude",
  "canary-aware",
  "honest-then-lie",
  "substitute",
] as const;
export type DonorMode = (typeof DONOR_MODES)[number];

/**
 * How a canary-aware donor tells a canary from a caller's item. Named, so a test can pick the rules that
 * worked against the coordinator of its day and show that they no longer do.
 */
export const CANARY_GUESSES = {
  /** Canaries were the only items sent without the caller's trace context. */
  "no-traceparent": (item: BatchItem) => item.traceparent === undefined,
  /** Canaries were appended to the end of a batch. */
  "last-item": (_item: BatchItem, index: number, batch: Batch) =>
    batch.items.length > 1 && index === batch.items.length - 1,
  /** A caller's item on its first try; a canary might carry another attempt number. */
  "not-first-attempt": (item: BatchItem) => item.attempt !== 1,
} as const satisfies Record<string, (item: BatchItem, index: number, batch: Batch) => boolean>;
export type CanaryGuess = keyof typeof CANARY_GUESSES;
/** What canaries looked like on the wire when issue 12 was filed. */
export const TODAYS_CANARY_GUESS: readonly CanaryGuess[] = ["no-traceparent", "last-item"];

export interface AnswerPolicy {
  mode: DonorMode;
  /** honest-then-lie: batches answered truthfully before the lies start. */
  honestBatches: number;
  canaryGuess: readonly CanaryGuess[];
  /** What makes this liar's lies its own (a random per process); colluders share one. */
  salt: string;
}

/** Whether the donor guesses that item `index` of `batch` is a canary. */
export function guessedCanary(policy: AnswerPolicy, batch: Batch, index: number): boolean {
  const item = batch.items[index];
  return item !== undefined && policy.canaryGuess.some((name) => CANARY_GUESSES[name](item, index, batch));
}

/** Whether this donor lies on item `index` of its `batchNumber`th batch (1-based). */
export function liesOn(policy: AnswerPolicy, batch: Batch, index: number, batchNumber: number): boolean {
  switch (policy.mode) {
    case "lie":
    case "collude":
      return true;
    case "canary-aware":
      return !guessedCanary(policy, batch, index);
    case "honest-then-lie":
      return batchNumber > policy.honestBatches;
    default:
      return false;
  }
}

/** The salt colluders share: their lies depend on the input only. */
export const COLLUSION_SALT = "edgeswarm-colluders";

/** A number in [0, 1) from the salt and the input, the same in every process. */
function unitHash(salt: string, input: unknown): number {
  return createHash("sha256").update(salt).update(JSON.stringify(input)).digest().readUInt32BE(0) / 2 ** 32;
}

type LabelScore = { label: string; score: number };
const isLabelScores = (v: unknown): v is LabelScore[] =>
  Array.isArray(v) && v.length > 1 && v.every((x) => typeof x?.label === "string" && typeof x?.score === "number");
const isVector = (v: unknown): v is number[] =>
  Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "number");

/**
 * A wrong output of the honest one's shape: labels rotated by one (the best label is never the true best)
 * with a top score moved by the salt; a vector turned away from the true one, still of unit length; any
 * other JSON with its numbers changed.
 */
export function wrongOutput(output: unknown, input: unknown, salt: string): unknown {
  const u = unitHash(salt, input);
  if (isLabelScores(output)) {
    const top = (output[0] as LabelScore).score;
    const newTop = top + (1 - top) * (0.1 + 0.4 * u);
    const restSum = 1 - top;
    return output.map((o, i) => ({
      label: (output[(i + 1) % output.length] as LabelScore).label,
      score: i === 0 ? newTop : restSum > 0 ? (o.score / restSum) * (1 - newTop) : (1 - newTop) / (output.length - 1),
    }));
  }
  if (isVector(output)) {
    const turned = output.map((x, i) => -x + 0.1 * (unitHash(`${salt}:${i}`, input) - 0.5));
    const norm = Math.hypot(...turned) || 1;
    return turned.map((x) => x / norm);
  }
  return mapNumbers(output, (x) => -x - 1 - u);
}

function mapNumbers(value: unknown, f: (x: number) => number): unknown {
  if (typeof value === "number") return f(value);
  if (Array.isArray(value)) return value.map((v) => mapNumbers(v, f));
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapNumbers(v, f)]));
  }
  return value;
}

export interface Answered {
  results: ItemResult[];
  lies: number;
  guessedCanaries: number;
}

/** The results this donor sends for `batch`, given the honest ones (errors stay errors: nothing to lie about). */
export function answerBatch(policy: AnswerPolicy, batch: Batch, honest: ItemResult[], batchNumber: number): Answered {
  let lies = 0;
  let guessedCanaries = 0;
  const results = honest.map((result, i) => {
    if (guessedCanary(policy, batch, i)) guessedCanaries++;
    if (!("output" in result) || !liesOn(policy, batch, i, batchNumber)) return result;
    lies++;
    const salt = policy.mode === "collude" ? COLLUSION_SALT : policy.salt;
    const output = wrongOutput(result.output, batch.items[i]?.input, salt) as Extract<
      ItemResult,
      { output: unknown }
    >["output"];
    return { ...result, output };
  });
  return { results, lies, guessedCanaries };
}

/**
 * substitute: the item a text-generation liar runs instead of the one it was given, or null to answer this one
 * honestly (a check it was sent, an output with no token). The middle token of the honest output is swapped for
 * the next id and the model continues from there (resume), so the lie is the model's own text after one
 * substitution: well-shaped, self-consistent, wrong at one index. Ids stay below 1024, the bundled decoder's
 * byte-level tokens.
 */
export function substitutedItem(input: unknown, output: unknown): { item: unknown; at: number } | null {
  const tokens = (output as { tokens?: unknown })?.tokens;
  if (typeof input !== "object" || input === null || "verify" in input || !Array.isArray(tokens)) return null;
  if (tokens.length === 0) return null;
  const at = Math.floor(tokens.length / 2);
  const swapped = ((tokens[at] as number) + 1) % 1024;
  return { item: { ...input, resume: { tokens: [...tokens.slice(0, at), swapped], text: "" } }, at };
}

/** What a donor process did, printed as one JSON line (`{"donor_report": …}`) when it ends. */
export interface DonorReport {
  mode: DonorMode;
  worker_id: string;
  donor_id?: string;
  local_address?: string;
  /** Batches and items the coordinator handed this donor. */
  batches: number;
  items: number;
  /** Items it sent a result for, and of those, how many were true and how many lies. */
  answered: number;
  honest: number;
  lies: number;
  /** Items it took for canaries (canary-aware answers those truthfully). */
  guessed_canaries: number;
  /** Lease extensions sent, and leases the coordinator said were no longer this donor's. */
  extends: number;
  leases_lost: number;
  /** Requests that failed or were refused (a token 429, a lease request error). */
  errors: number;
  /** Why the donor could not join, when it could not. */
  refused?: string;
}

export function emptyReport(mode: DonorMode, workerId: string): DonorReport {
  return {
    mode,
    worker_id: workerId,
    batches: 0,
    items: 0,
    answered: 0,
    honest: 0,
    lies: 0,
    guessed_canaries: 0,
    extends: 0,
    leases_lost: 0,
    errors: 0,
  };
}

/**
 * Whether two outputs say the same within `tolerance` (labels in the same order with close scores, or
 * close numbers): how the tests and bench:donors tell a donor's answer from the trusted one's.
 */
export function sameOutput(a: unknown, b: unknown, tolerance: number): boolean {
  if (typeof a === "number" && typeof b === "number") return Math.abs(a - b) <= tolerance;
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((x, i) => sameOutput(x, b[i], tolerance));
  if (a && b && typeof a === "object" && typeof b === "object") {
    const keys = Object.keys(a);
    return (
      keys.length === Object.keys(b).length &&
      keys.every((k) => sameOutput((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], tolerance))
    );
  }
  return a === b;
}
