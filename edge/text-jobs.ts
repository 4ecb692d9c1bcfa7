// Texts run on a text model for the compatible API shapes (edge/routes/openai.ts, huggingface.ts): one
// job through submitJob, waited for. Inputs a worker refused are the caller's to fix: a 422 naming them,
// as when submitJob refuses them first; outputs are checked against the task's shape before any route reads them.
import type { Context } from "hono";
import { ErrorCode, type JobView, type ModelConfig, outputProblem } from "../shared/index.ts";
import type { HfLabelScore } from "../shared/protocol/huggingface.ts";
import type { HonoEnv } from "./app-env.ts";
import { ApiError } from "./errors.ts";
import { describeItemErrors, submitJob, succeededOrThrow } from "./submit.ts";

async function run(c: Context<HonoEnv>, model: ModelConfig, texts: string[]): Promise<unknown[]> {
  const job: JobView = await submitJob(c, { model: model.name, inputs: texts, wait: true });
  let outputs: unknown[];
  try {
    outputs = succeededOrThrow(job).outputs ?? [];
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 422) throw error;
    const failed = job.errors ?? [];
    const message =
      failed.length > 0
        ? `${failed.length} of ${texts.length} inputs refused; ${describeItemErrors(failed, "input")}`
        : error.message;
    throw new ApiError(422, error.code, message, { extra: { param: "input" } });
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
