// bench:runners' comparisons: how far one runner's outputs are from another's (largest difference, least cosine
// similarity per item), and the int8-vs-fp32 section (speed per runner and batch size, agreement on
// onnxruntime-node). Used by bench/runners.ts.
import { fmt } from "./bench-kit.ts";
import type { ModelMeasure } from "./runners-chromium.ts";

/** Every number in an output, in order: vectors as they are, {label, score} lists by their scores. */
function numbers(output: unknown, into: number[] = []): number[] {
  if (typeof output === "number") into.push(output);
  else if (Array.isArray(output)) for (const x of output) numbers(x, into);
  else if (output && typeof output === "object") for (const x of Object.values(output)) numbers(x, into);
  return into;
}

export interface Agreement {
  maxDiff: number;
  minCos: number;
  meanCos: number;
}

/** Outputs of the same inputs, item by item. */
export function agreement(reference: readonly unknown[], outputs: readonly unknown[]): Agreement {
  let maxDiff = 0;
  let minCos = 1;
  let sumCos = 0;
  for (const [i, ref] of reference.entries()) {
    const a = numbers(ref);
    const b = numbers(outputs[i]);
    if (a.length !== b.length) return { maxDiff: Number.NaN, minCos: Number.NaN, meanCos: Number.NaN };
    let dot = 0;
    let na = 0;
    let nb = 0;
    for (const [j, x] of a.entries()) {
      const y = b[j] as number;
      maxDiff = Math.max(maxDiff, Math.abs(x - y));
      dot += x * y;
      na += x * x;
      nb += y * y;
    }
    const cos = dot / Math.sqrt(na * nb);
    minCos = Math.min(minCos, cos);
    sumCos += cos;
  }
  return { maxDiff, minCos, meanCos: sumCos / reference.length };
}

/** The int8 section: for each `X-int8` measured beside `X`, int8's speed over fp32's per runner, and agreement. */
export function int8Rows(
  rows: readonly { runner: string; measures: Map<string, ModelMeasure> }[],
  models: readonly string[],
  sizes: readonly number[],
  reference: Map<string, ModelMeasure> | undefined,
): string[] {
  const lines: string[] = [];
  for (const int8 of models.filter((m) => m.endsWith("-int8") && models.includes(m.slice(0, -5)))) {
    const fp32 = int8.slice(0, -5);
    const rate = (m: ModelMeasure | undefined, size: number) => {
      const cell = m?.cells.get(size);
      return cell && "rate" in cell ? cell.rate : Number.NaN;
    };
    const ratio = (x: number) => (Number.isFinite(x) ? `${fmt(x, 2)}×` : "—");
    lines.push(
      `## int8 (${int8}) vs fp32 (${fp32})`,
      "",
      `| runner | ${sizes.map((s) => `batch ${s}: int8 / fp32 items/s`).join(" | ")} |`,
      `| --- | ${sizes.map(() => "---:").join(" | ")} |`,
      ...rows.map(
        (r) =>
          `| ${r.runner} | ${sizes.map((s) => ratio(rate(r.measures.get(int8), s) / rate(r.measures.get(fp32), s))).join(" | ")} |`,
      ),
      "",
    );
    const a = reference?.get(fp32);
    const b = reference?.get(int8);
    if (a && b) {
      const agree = agreement(a.first, b.first);
      lines.push(
        `Agreement on onnxruntime-node, the same ${a.first.length} inputs: int8's outputs against fp32's differ by at most ${agree.maxDiff.toExponential(2)}; cosine similarity per item mean ${agree.meanCos.toFixed(4)}, least ${agree.minCos.toFixed(4)}. (Random weights: this measures quantisation error, not task accuracy.)`,
        "",
      );
    }
  }
  return lines;
}
