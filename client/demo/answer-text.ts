// Turns a coordinator's answer to POST /v1/infer into a line a visitor reads on the demo page:
// "POSITIVE 99.9%" for a classifier, "a vector of 32 numbers" for an embedder, the error's own message
// otherwise. Pure: the Node suite tests it, the demo page (demo.ts) calls it.

interface Answer {
  outputs?: unknown[];
  timings?: { total_ms?: number; queued_ms?: number };
  error?: { message?: string };
}

const isLabelScore = (v: unknown): v is { label: string; score: number } =>
  typeof v === "object" && v !== null && typeof (v as { label?: unknown }).label === "string";

/** One output as words: the top label and its score, a vector's length, or compact JSON. */
export function describeOutput(output: unknown): string {
  if (Array.isArray(output) && output.length > 0 && output.every(isLabelScore)) {
    const top = output.reduce((best, o) => (o.score > best.score ? o : best));
    // Rounded down: a score of 0.9998 reads 99.9%, never a certainty the model did not give.
    return `${top.label} ${(Math.floor(top.score * 1000) / 10).toFixed(1)}%`;
  }
  if (Array.isArray(output) && output.every((v) => typeof v === "number"))
    return `a vector of ${output.length} numbers`;
  return JSON.stringify(output);
}

/** The whole answer: each output as words, then how long it took; or what went wrong. */
export function describeAnswer(status: number, body: unknown): string {
  const answer = (body ?? {}) as Answer;
  if (status >= 400 || !Array.isArray(answer.outputs)) {
    return `Not answered (${status}): ${answer.error?.message ?? "no message"}`;
  }
  const outputs = answer.outputs.map(describeOutput).join(" · ");
  const total = answer.timings?.total_ms;
  return total === undefined ? outputs : `${outputs} — in ${Math.round(total)} ms`;
}
