// What the suites that have donors generate share (test/e2e/donor-generation.test.ts and
// test/browser/donor-generation.test.ts): calls pinned to the browser pool, one per prompt, with the test key
// "k"; onnxruntime-node's outputs for the same prompts; and a coordinator's counter for a model and pool.
import { expect } from "vitest";
import type { GenerationOutput } from "../../shared/protocol/generation.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";

const CALLER = { Authorization: "Bearer k", "Content-Type": "application/json" };

/** One call per prompt, pinned to the browser pool so a donor runs it first; each answer's output. */
export function pinnedGenerations(
  coordinator: string,
  model: string,
  prompts: readonly string[],
  params: Record<string, unknown>,
): Promise<GenerationOutput[]> {
  return Promise.all(
    prompts.map(async (prompt) => {
      const res = await fetch(`${coordinator}/v1/infer`, {
        method: "POST",
        headers: CALLER,
        body: JSON.stringify({ model, inputs: [{ prompt, params }], pool: "browser", timeout_ms: 60_000 }),
      });
      const body = (await res.json()) as { outputs?: GenerationOutput[] };
      expect(res.status, JSON.stringify(body)).toBe(200);
      return body.outputs?.[0] as GenerationOutput;
    }),
  );
}

/** The model's outputs for the prompts, run directly (onnxruntime-node in the suites). */
export async function directGenerations(
  model: LoadedModel,
  prompts: readonly string[],
  params: Record<string, unknown>,
): Promise<GenerationOutput[]> {
  const results = await model.run(prompts.map((prompt) => ({ prompt, params })));
  return results.map((r) => ("output" in r ? (r.output as GenerationOutput) : ({} as GenerationOutput)));
}

/**
 * A counter of the coordinator's /metrics for `model` and `pool` (0 when absent), once it exceeds `above`:
 * counters are written about once a second, so it is read again for a few seconds until then.
 */
export async function counterOf(
  coordinator: string,
  name: string,
  labels: { model: string; pool: string },
  above = -1,
): Promise<number> {
  let n = 0;
  for (let i = 0; i < 30; i++) {
    const text = await (await fetch(`${coordinator}/metrics`, { headers: CALLER })).text();
    const line = text.split("\n").find((l) => l.startsWith(`${name}{model="${labels.model}",pool="${labels.pool}"}`));
    n = line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
    if (n > above) return n;
    await new Promise((r) => setTimeout(r, 200));
  }
  return n;
}
