// Texts run on a text model for the compatible API shapes (edge/routes/openai.ts, huggingface.ts): one
// job through submitJob, waited for. Inputs a worker refused are the caller's to fix, so a 400 naming
// them (the native API's 422); outputs are checked against the task's shape before any route reads them.
import type { Context } from "hono";
import { ErrorCode, type JobView, type ModelConfig, outputProblem } from "../shared/index.ts";
import type { HfLabelScore } from "../shared/protocol/huggingface.ts";
import type { HonoEnv } from "./app-env.ts";
import { ApiError } from "./errors.ts";
import { submitJob, succeededOrThrow } from "./submit.ts";

/** "inputs 0, 2: <message>; input 1: <message>": a worker's refusals by message, so one cause is said once. */
function refusals(errors: readonly { index: number; message: string }[]): string {
  const byMessage = new Map<string, number[]>();
  for (const e of errors) byMessage.set(e.message, [...(byMessage.get(e.message) ?? []), e.index]);
  const parts = [...byMessage].map(
    ([message, at]) => `${at.length > 1 ? "inputs" : "input"} ${at.join(", ")}: ${message}`,
  );
  return parts.slice(0, 5).join("; ") + (parts.length > 5 ? `; and ${parts.length - 5} more` : "");
}

async function run(c: Context<HonoEnv>, model: ModelConfig, texts: string[]): Promise<unknown[]> {
  const job: JobView = await submitJob(c, { model: model.name, inputs: texts, wait: true });
  let outputs: unknown[];
  try {
    outputs = succeededOrThrow(job).outputs ?? [];
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 422) throw error;
    const failed = job.errors ?? [];
    const message =
      failed.length > 0 ? `${failed.length} of ${texts.length} inputs refused; ${refusals(failed)}` : error.message;
    throw new ApiError(400, error.code, message, { extra: { param: "input" } });
  }
  const unusable = (problem: string) =>
    new ApiError(502, ErrorCode.invalidOutput, `the worker's answer for model "${model.name}" is unusable: ${problem}`);
  if (outputs.length !== texts.length) throw unusable(`${outputs.length} outputs for ${texts.length} inputs`);
  const first = outputs[0];
  const dimensions = Array.isArray(first) ? first.length : undefined;
  outputs.forEach((output, i) => {
    const problem = outputProblem(model.task, output, model.task === "feature-extraction" ? { dimensions } : {});
    if (problem !== null) throw unusable(`input ${i}: ${problem}`);
  });
  return outputs;
}

/** One vector per text, all of one length (a feature-extraction model). */
export async function embedTexts(c: Context<HonoEnv>, model: ModelConfig, texts: string[]): Promise<number[][]> {
  // Checked by outputProblem("feature-extraction"): non-empty arrays of finite numbers, one length.
  return (await run(c, model, texts)) as number[][];
}

/** Every label with its probability, best first, per text (a text-classification model). */
export async function classifyTexts(
  c: Context<HonoEnv>,
  model: ModelConfig,
  texts: string[],
): Promise<HfLabelScore[][]> {
  // Checked by outputProblem("text-classification"): non-empty arrays of exactly {label, score}.
  const outputs = (await run(c, model, texts)) as HfLabelScore[][];
  // The worker sorts them; a sort here keeps the promise whoever answered.
  return outputs.map((labels) => [...labels].sort((a, b) => b.score - a.score));
}
