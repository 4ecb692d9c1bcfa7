// Hugging Face's text-generation shape on POST /models/{name} (edge/routes/huggingface.ts calls it): one item
// per input, [{generated_text}] per input as the transformers pipeline answers, the continuation only unless
// return_full_text. Parameters pass through the same checks as the OpenAI routes (generation-calls.ts).
import type { Context } from "hono";
import { ErrorCode, type GenerationOutput, type ModelConfig } from "../../shared/index.ts";
import type { HfTextGenerationParameters } from "../../shared/protocol/huggingface.ts";
import type { HonoEnv } from "../app-env.ts";
import { ApiError } from "../errors.ts";
import { generationParams, hfTemperature, promptItem } from "../generation-calls.ts";
import { submitJob, succeededOrThrow } from "../submit.ts";

export async function generateTexts(
  c: Context<HonoEnv>,
  model: ModelConfig,
  inputs: string | unknown[],
  p: HfTextGenerationParameters,
): Promise<{ generated_text: string }[]> {
  const prompts = typeof inputs === "string" ? [inputs] : inputs;
  const params = generationParams(
    model,
    {
      max_tokens: p.max_new_tokens,
      min_tokens: p.min_new_tokens,
      temperature: hfTemperature(p.do_sample, p.temperature),
      top_k: p.top_k,
      top_p: p.top_p,
      seed: p.seed,
      stop: p.stop ?? p.stop_sequences,
      repetition_penalty: p.repetition_penalty,
      frequency_penalty: p.frequency_penalty,
      response_format: p.grammar && { type: "json_schema", json_schema: { schema: p.grammar.value } },
    },
    {
      schema: "parameters.grammar.value",
      max: "parameters.max_new_tokens",
      min: "parameters.min_new_tokens",
      stop: p.stop != null ? "parameters.stop" : "parameters.stop_sequences",
    },
  );
  const items = prompts.map((prompt, i) => {
    if (typeof prompt !== "string" || prompt === "") {
      throw new ApiError(400, ErrorCode.validation, `inputs[${i}] must be a non-empty string`);
    }
    return promptItem(model, prompt, params, "inputs");
  });
  const job = succeededOrThrow(await submitJob(c, { model: model.name, inputs: items, wait: true }));
  return (job.outputs as GenerationOutput[]).map((out, i) => ({
    generated_text: p.return_full_text ? `${items[i]?.prompt ?? ""}${out.generated_text}` : out.generated_text,
  }));
}
