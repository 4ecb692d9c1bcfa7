// The Hugging Face Inference API shape: POST /models/{name} with {inputs, parameters?, options?} over the
// same queues as /v1/infer, answering what the transformers pipelines answer, for the text-classification,
// feature-extraction and text-generation (hf-generation.ts) models. `@huggingface/inference` works pointed at
// <coordinator>/models/{name} as its endpoint URL. Every error here answers the API's {"error": "..."}, through hfError.
import { type Context, Hono } from "hono";
import { z } from "zod";
import { ErrorCode, type ModelConfig, ProtocolError, parseWith } from "../../shared/index.ts";
import {
  HfFeatureExtractionParameters,
  HfInferenceRequest,
  type HfInferenceResponse,
  HfTextClassificationParameters,
  HfTextGenerationParameters,
} from "../../shared/protocol/huggingface.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { shortenVectors } from "../embedding-vectors.ts";
import { ApiError, messageOnlyError } from "../errors.ts";
import { GENERATION_TASK } from "../model-queue/token-stream.ts";
import { modelOrThrow, readJson } from "../request.ts";
import { checkedTexts } from "../submit.ts";
import { classifyTexts, embedTexts } from "../text-jobs.ts";
import { generateTexts } from "./hf-generation.ts";
import { completions } from "./openai-chat.ts";

/** Errors answer {"error": "..."}, with the status the native API would give. */
export const hfError = messageOnlyError;

const bad = (message: string) => new ApiError(400, ErrorCode.badRequest, message);

const TASKS = ["text-classification", "feature-extraction", GENERATION_TASK];

function textModel(c: Context<HonoEnv>): ModelConfig {
  const model = modelOrThrow(c, c.req.param("name") ?? "");
  if (!TASKS.includes(model.task)) {
    throw bad(
      `model "${model.name}" has task "${model.task}"; /models/{name} serves ${TASKS.join(" and ")} models: call POST /v1/infer or /v2/models/${model.name}/infer`,
    );
  }
  return model;
}

/** A task's `parameters`, parsed with issues named from the body's root ("parameters.top_k: ..."). */
function parameters<T>(schema: z.ZodType<T>, value: unknown, task: string): T {
  const parsed = parseWith(z.object({ parameters: schema }), { parameters: value ?? {} }, `request for ${task}`);
  if (parsed instanceof ProtocolError) throw new ApiError(400, parsed.code, parsed.message);
  return parsed.parameters;
}

/** feature-extraction's settings, top-level (TEI, huggingface.js) over `parameters`, refused where unmet. */
function embeddingSettings(request: HfInferenceRequest, model: ModelConfig) {
  const { inputs: _inputs, parameters: nested, options: _options, ...topLevel } = request;
  const s = { ...parameters(HfFeatureExtractionParameters, nested, model.task), ...topLevel };
  const cannot = (what: string, why: string) => bad(`${what} cannot be honoured: ${why}`);
  if (s.normalize === false) throw cannot("normalize: false", "the workers answer unit-length vectors only");
  if (s.truncate === false || s.truncation_direction === "left") {
    throw cannot(
      s.truncate === false ? "truncate: false" : 'truncation_direction: "left"',
      `the workers keep the first ${model.max_sequence_length} tokens of each input (max_sequence_length)`,
    );
  }
  if (s.prompt_name !== undefined) throw cannot("prompt_name", `model "${model.name}" has no prompts configured`);
  if (s.encoding_format === "base64") {
    throw cannot('encoding_format: "base64"', "this API answers arrays of numbers; POST /v1/embeddings answers base64");
  }
  return s;
}

/** text-classification's parameters; feature-extraction's settings are refused, not ignored. */
function classificationSettings(request: HfInferenceRequest, model: ModelConfig) {
  const stray = Object.keys(HfFeatureExtractionParameters.shape).filter(
    (k) => request[k as keyof HfInferenceRequest] !== undefined,
  );
  if (stray.length > 0) {
    const verb = stray.length > 1 ? "apply" : "applies";
    throw bad(`${stray.join(", ")} ${verb} to feature-extraction models only; model "${model.name}" is ${model.task}`);
  }
  const p = parameters(HfTextClassificationParameters, request.parameters, model.task);
  if (p.function_to_apply !== undefined && p.function_to_apply !== "softmax") {
    throw bad(
      `parameters.function_to_apply "${p.function_to_apply}" cannot be honoured: the workers answer softmax probabilities only`,
    );
  }
  return p;
}

async function infer(c: Context<HonoEnv>) {
  const model = textModel(c);
  const request = await readJson(c, HfInferenceRequest, "request body");
  if (model.task === GENERATION_TASK) {
    const p = parameters(HfTextGenerationParameters, request.parameters, model.task);
    return c.json(await generateTexts(c, model, request.inputs, p));
  }
  const texts = checkedTexts(model, typeof request.inputs === "string" ? [request.inputs] : request.inputs);
  let answer: HfInferenceResponse;
  if (model.task === "text-classification") {
    const { top_k } = classificationSettings(request, model);
    // One list per input, also for a single string: the pipeline's answer with every label, [[...]].
    answer = (await classifyTexts(c, model, texts)).map((labels) => labels.slice(0, top_k));
  } else {
    const { dimensions } = embeddingSettings(request, model);
    const vectors = shortenVectors(await embedTexts(c, model, texts), dimensions, model.name);
    answer = typeof request.inputs === "string" ? (vectors[0] ?? []) : vectors;
  }
  return c.json(answer);
}

export const hfRoutes = new Hono<HonoEnv>();
hfRoutes.onError(hfError);
hfRoutes.use("/models/*", requireKey("caller"));
hfRoutes.post("/models/:name", infer);
// @huggingface/inference's textGeneration posts OpenAI's completions to <endpoint>/v1/completions.
hfRoutes.post("/models/:name/v1/completions", (c) => completions(c, c.req.param("name")));

hfRoutes.all("/models/*", (c) => {
  throw new ApiError(
    404,
    ErrorCode.notFound,
    `no route ${c.req.method} ${new URL(c.req.url).pathname}; Hugging Face-style inference is POST /models/{name}`,
  );
});
