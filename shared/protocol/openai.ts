// OpenAI's embeddings API as EdgeSwarm serves it at POST /v1/embeddings: the request schema, the answer
// and error shapes. edge/routes/openai.ts validates with these; callers and tests use the types.
// Reference: platform.openai.com/docs/api-reference/embeddings (what the official `openai` client sends).
import { z } from "zod";
import type { ModelConfig } from "../config/model-config.ts";
import { ParsedJson } from "./validate.ts";

// Strict: OpenAI refuses an argument it does not know, and so does this, naming it.
export const EmbeddingsRequest = z.strictObject({
  model: z.string().min(1, "must name a model"),
  // Each item is parsed as the model's workers parse it (shared/tasks/text-item.ts), so an empty, non-string
  // or over-long one is a 422 that names its index, as on every API shape.
  input: z.union([z.string(), z.array(ParsedJson).min(1, "must hold at least one string")], {
    error: (issue) =>
      issue.code === "invalid_union"
        ? "must be a string or an array of strings (token-id arrays are not supported: send text)"
        : undefined,
  }),
  /** "float" answers arrays of numbers; "base64" the little-endian float32 bytes, base64-encoded. */
  encoding_format: z.enum(["float", "base64"]).default("float"),
  /** Truncate each vector to this many dimensions and scale it back to unit length. */
  dimensions: z.int().positive().optional(),
  /** An end-user id, for OpenAI's abuse monitoring; accepted and not used. */
  user: z.string().optional(),
});
export type EmbeddingsRequest = z.infer<typeof EmbeddingsRequest>;

export interface Embedding {
  object: "embedding";
  index: number;
  /** The vector, or its float32 bytes (little-endian) in base64 when encoding_format is "base64". */
  embedding: number[] | string;
}

export interface EmbeddingsResponse {
  object: "list";
  data: Embedding[];
  model: string;
  /** An estimate, not the tokenizer's count: see estimateTokens in edge/embedding-vectors.ts. */
  usage: { prompt_tokens: number; total_tokens: number };
}

/** Every error at /v1/embeddings: OpenAI's shape. `code` is OpenAI's where it has one, else EdgeSwarm's. */
export interface OpenAiErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** OpenAI's error `type` for a status. */
export function openAiErrorType(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 403) return "permission_error";
  if (status === 429) return "rate_limit_error";
  return status >= 500 ? "server_error" : "invalid_request_error";
}

/**
 * A model as OpenAI's GET /v1/models lists it (and GET /v1/models/{id} answers), with vLLM's `max_model_len` for a
 * model that generates and EdgeSwarm's `task`, so a chat app that discovers models by that call finds them.
 * `created` is the time of the call, as vLLM answers: a coordinator does not know when a model was made.
 */
export interface OpenAiModel {
  id: string;
  object: "model";
  created: number;
  owned_by: "edgeswarm";
  task: string;
  max_model_len?: number;
}

export function openAiModel(
  model: Pick<ModelConfig, "name" | "task" | "max_sequence_length">,
  now: number,
): OpenAiModel {
  return {
    id: model.name,
    object: "model",
    created: Math.floor(now / 1000),
    owned_by: "edgeswarm",
    task: model.task,
    ...(model.task === "text-generation" ? { max_model_len: model.max_sequence_length } : {}),
  };
}
