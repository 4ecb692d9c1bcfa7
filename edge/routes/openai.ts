// OpenAI-compatible embeddings (and, mounted from openai-chat.ts, chat and text completions): POST /v1/embeddings over the same queues, batching and leases as
// /v1/infer, for the feature-extraction models, so the official `openai` client (and anything built on
// it) works with `baseURL: <coordinator>/v1`. Every error here answers in OpenAI's shape, through openAiError.
import { type Context, Hono } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { z } from "zod";
import { describeIssues, ErrorCode, type ModelConfig } from "../../shared/index.ts";
import {
  EmbeddingsRequest,
  type EmbeddingsResponse,
  type OpenAiErrorBody,
  openAiErrorType,
  openAiModel,
} from "../../shared/protocol/openai.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { ConfigError } from "../config.ts";
import { estimateTokens, float32Base64, shortenVectors } from "../embedding-vectors.ts";
import { ApiError } from "../errors.ts";
import { readJson } from "../request.ts";
import { checkedTexts } from "../submit.ts";
import { embedTexts } from "../text-jobs.ts";
import { openAiChatRoutes } from "./openai-chat.ts";

/** OpenAI's codes where it has one for the same refusal; elsewhere EdgeSwarm's own (queue_full, expired...). */
const OPENAI_CODES: Record<string, string> = {
  [ErrorCode.unknownModel]: "model_not_found",
  [ErrorCode.unauthorized]: "invalid_api_key",
};

const body = (status: number, message: string, param: string | null, code: string | null): OpenAiErrorBody => ({
  error: { message, type: openAiErrorType(status), param, code },
});

/** Any error as OpenAI's {"error": {message, type, param, code}}, with the status the native API would give. */
export function openAiError(err: Error, c: Context): Response {
  if (err instanceof ApiError) {
    const param = typeof err.extra.param === "string" ? err.extra.param : null;
    const headers: Record<string, string> = { ...err.headers };
    // The openai client retries 5xx answers; a call that timed out would be queued again behind itself.
    if (err.status === 504) headers["x-should-retry"] = "false";
    return c.json(body(err.status, err.message, param, OPENAI_CODES[err.code] ?? err.code), err.status, headers);
  }
  if (err instanceof HTTPException) {
    const status = err.status as ContentfulStatusCode;
    return c.json(body(status, err.message || "request refused", null, null), status);
  }
  if (err instanceof ConfigError) {
    return c.json(body(500, `the coordinator is misconfigured: ${err.message}`, null, ErrorCode.misconfigured), 500);
  }
  console.error("unhandled error", err);
  return c.json(body(500, "internal error; the request may be retried", null, ErrorCode.internal), 500);
}

/** The body as an EmbeddingsRequest, or a 400 naming the first field at fault as `param`. */
async function readRequest(c: Context<HonoEnv>): Promise<EmbeddingsRequest> {
  // readJson refuses broken and over-deep JSON; the schema is applied here to keep each issue's path.
  const raw = await readJson(c, z.unknown(), "request body");
  const parsed = EmbeddingsRequest.safeParse(raw);
  if (parsed.success) {
    // OpenAI also takes token ids (numbers, or arrays of them); the workers take text and tokenize it.
    const { input } = parsed.data;
    if (Array.isArray(input) && input.every((v) => typeof v === "number" || Array.isArray(v))) {
      throw new ApiError(
        400,
        ErrorCode.validation,
        "invalid request: input: token-id arrays are not supported: send text",
        {
          extra: { param: "input" },
        },
      );
    }
    return parsed.data;
  }
  const issue = parsed.error.issues[0];
  const param = issue?.code === "unrecognized_keys" ? issue.keys[0] : issue?.path[0];
  throw new ApiError(400, ErrorCode.validation, `invalid request: ${describeIssues(parsed.error)}`, {
    extra: { param: typeof param === "string" ? param : null },
  });
}

function embeddingModel(c: Context<HonoEnv>, name: string): ModelConfig {
  const models = c.get("config").models;
  const model = models.get(name);
  const embedders = [...models.values()].filter((m) => m.task === "feature-extraction").map((m) => m.name);
  const served =
    embedders.length > 0 ? `its embedding models: ${embedders.join(", ")}` : "it serves no embedding model";
  const refuse = (status: 400 | 404, code: string, message: string) =>
    new ApiError(status, code, `${message}; ${served}`, { extra: { param: "model" } });
  if (!model) throw refuse(404, ErrorCode.unknownModel, `the model "${name}" does not exist on this coordinator`);
  if (model.task !== "feature-extraction") {
    throw refuse(400, ErrorCode.badRequest, `model "${name}" is a ${model.task} model, not an embedding model`);
  }
  return model;
}

export const openAiRoutes = new Hono<HonoEnv>();
openAiRoutes.onError(openAiError);
openAiRoutes.use("/v1/embeddings", requireKey("caller"));
// Chat and text completions (openai-chat.ts), under this app's onError: OpenAI's error shape.
openAiRoutes.route("/", openAiChatRoutes);

// OpenAI's models.retrieve: one model (GET /v1/models, in caller.ts, lists them all in the same shape).
openAiRoutes.get("/v1/models/:model", requireKey("caller"), (c) => {
  const name = c.req.param("model");
  const model = c.get("config").models.get(name);
  if (!model) {
    const names = [...c.get("config").models.keys()].join(", ");
    throw new ApiError(
      404,
      ErrorCode.unknownModel,
      `the model "${name}" does not exist on this coordinator; it serves ${names}`,
      {
        extra: { param: "model" },
      },
    );
  }
  return c.json(openAiModel(model, Date.now()));
});

openAiRoutes.post("/v1/embeddings", async (c) => {
  const request = await readRequest(c);
  const model = embeddingModel(c, request.model);
  const texts = checkedTexts(model, typeof request.input === "string" ? [request.input] : request.input);
  const vectors = shortenVectors(await embedTexts(c, model, texts), request.dimensions, model.name);
  const tokens = texts.reduce((sum, t) => sum + estimateTokens(t, model.max_sequence_length), 0);
  const answer: EmbeddingsResponse = {
    object: "list",
    data: vectors.map((v, index) => ({
      object: "embedding",
      index,
      embedding: request.encoding_format === "base64" ? float32Base64(v) : v,
    })),
    model: model.name,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  };
  return c.json(answer);
});

openAiRoutes.all("/v1/embeddings", (c) => {
  throw new ApiError(
    404,
    ErrorCode.notFound,
    `no route ${c.req.method} /v1/embeddings; embeddings are POST /v1/embeddings`,
  );
});
