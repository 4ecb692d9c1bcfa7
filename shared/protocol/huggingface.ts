// The Hugging Face Inference API shape as EdgeSwarm serves it at POST /models/{name}: what
// `@huggingface/inference` (given an endpoint URL) and plain HF-style callers send, and what the
// transformers pipelines answer. edge/routes/huggingface.ts validates with these; tests use the types.
import { z } from "zod";
import { Penalty, RepetitionPenalty } from "./generation.ts";
import { ParsedJson } from "./validate.ts";

/** The text-classification pipeline's parameters (huggingface.js `TextClassificationParameters`). */
export const HfTextClassificationParameters = z.strictObject({
  /** Keep only the K most probable labels; all of them when absent. */
  top_k: z.int().positive().optional(),
  /** Workers answer softmax probabilities, so "softmax" is the only one honoured. */
  function_to_apply: z.enum(["softmax", "sigmoid", "none"]).optional(),
});
export type HfTextClassificationParameters = z.infer<typeof HfTextClassificationParameters>;

/**
 * feature-extraction's settings, which TEI and huggingface.js `FeatureExtractionInput` put at the top level
 * of the body (also read from `parameters`). Checked against what the workers do: see the route.
 */
export const HfFeatureExtractionParameters = z.strictObject({
  normalize: z.boolean().optional(),
  truncate: z.boolean().optional(),
  truncation_direction: z.enum(["left", "right"]).optional(),
  prompt_name: z.string().optional(),
  /** As OpenAI's: the first N dimensions, scaled back to unit length. */
  dimensions: z.int().positive().optional(),
  encoding_format: z.enum(["float", "base64"]).optional(),
});
export type HfFeatureExtractionParameters = z.infer<typeof HfFeatureExtractionParameters>;

/** TGI's guidance: {type: "json", value: <a JSON Schema>} holds the reply to the schema (structured outputs). */
export const HfGrammar = z.strictObject({
  type: z.literal("json", { error: () => 'grammar.type "json" (a JSON Schema in value) is served; a regex is not' }),
  value: z.record(z.string(), ParsedJson, { error: () => "grammar.value must be a JSON Schema (an object)" }),
});

/**
 * text-generation's parameters, as the transformers pipeline and TGI name them. return_full_text defaults to
 * false (as TGI answers): generated_text is only the continuation unless asked.
 */
export const HfTextGenerationParameters = z.strictObject({
  max_new_tokens: z.int().optional(),
  min_new_tokens: z.int().optional(),
  temperature: z.number().min(0).max(10).optional(),
  top_k: z.int().min(0).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  seed: z
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .optional(),
  stop: z.array(z.string()).optional(),
  stop_sequences: z.array(z.string()).optional(),
  do_sample: z.boolean().optional(),
  return_full_text: z.boolean().default(false),
  /** Above 1 discourages repeats (transformers' rule, over the prompt and the reply). */
  repetition_penalty: RepetitionPenalty.optional(),
  /** Lowers a token's logit by this for each time it was generated (OpenAI's rule). */
  frequency_penalty: Penalty.optional(),
  grammar: HfGrammar.optional(),
});
export type HfTextGenerationParameters = z.infer<typeof HfTextGenerationParameters>;

/** The Inference API's legacy options; accepted, with nothing to do: no cache, and calls always wait. */
const HfOptions = z.strictObject({ use_cache: z.boolean().optional(), wait_for_model: z.boolean().optional() });

export const HfInferenceRequest = z.strictObject({
  // Each item is parsed as the model's workers parse it (shared/tasks/text-item.ts), so an empty, non-string
  // or over-long one is a 422 that names its index, as on every API shape.
  inputs: z.union([z.string(), z.array(ParsedJson).min(1, "must hold at least one string")], {
    error: (issue) => (issue.code === "invalid_union" ? "must be a string or an array of strings" : undefined),
  }),
  /** Per task: HfTextClassificationParameters, HfFeatureExtractionParameters or HfTextGenerationParameters. */
  parameters: z.record(z.string(), z.unknown()).optional(),
  options: HfOptions.optional(),
  ...HfFeatureExtractionParameters.shape,
});
export type HfInferenceRequest = z.infer<typeof HfInferenceRequest>;

export type HfLabelScore = { label: string; score: number };

/**
 * text-classification: one list of {label, score}, best first, per input, also for a single string
 * (`[[...]]`, which huggingface.js `textClassification` unwraps). feature-extraction: a vector for a
 * single string, a list of vectors for a list, as the sentence-transformers pipeline answers.
 */
export type HfInferenceResponse = HfLabelScore[][] | number[] | number[][] | { generated_text: string }[];

/** Every error at /models/{name}: the Inference API's shape. */
export interface HfErrorBody {
  error: string;
}
