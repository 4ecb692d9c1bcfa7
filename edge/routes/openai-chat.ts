// OpenAI-compatible text generation: POST /v1/chat/completions and POST /v1/completions over the text-generation
// queues, streamed (`stream: true`: `data: {chunk}` with each delta as the queue relays the worker's tokens, then
// `data: [DONE]`) or not, with `usage`; errors in OpenAI's shape (openAiError). A caller that hangs up mid-stream
// cancels its job, so no worker generates for nobody. Mounted by edge/routes/openai.ts.
import { type Context, Hono } from "hono";
import { z } from "zod";
import {
  describeIssues,
  ErrorCode,
  type GenerationItem,
  type GenerationOutput,
  type JobView,
  MAX_LOGPROB_ENTRIES,
  type ModelConfig,
} from "../../shared/index.ts";
import {
  type ChatCompletion,
  ChatCompletionRequest,
  CompletionRequest,
  HfCompletionRequest,
  type TextCompletion,
} from "../../shared/protocol/openai-chat.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { ApiError } from "../errors.ts";
import { pipeEvents } from "../event-streams.ts";
import {
  awaitSessionAppend,
  chatItem,
  chatMessages,
  generationModel,
  generationParams,
  hfTemperature,
  promptItem,
  refuse,
} from "../generation-calls.ts";
import { chatLogprobs, completionLogprobs } from "../openai-logprobs.ts";
import { created, type OpenAiStreamSpec, usageOf } from "../openai-stream.ts";
import { toolFinish, toolFormat, toolMessage, withAnswer } from "../openai-tools.ts";
import { readJson } from "../request.ts";
import { submitJob, submitStreamed, succeededOrThrow } from "../submit.ts";

/** The body against a schema, or a 400 naming the first field at fault as `param`. */
async function readBody<T extends z.ZodType>(c: Context<HonoEnv>, schema: T): Promise<z.infer<T>> {
  const raw = await readJson(c, z.unknown(), "request body");
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const param = issue?.code === "unrecognized_keys" ? issue.keys[0] : issue?.path.join(".");
  throw new ApiError(400, ErrorCode.validation, `invalid request: ${describeIssues(parsed.error)}`, {
    extra: { param: param || null },
  });
}

interface Call {
  model: string;
  /** One item a choice (`n`). */
  items: GenerationItem[];
  session?: string | undefined;
  timeout_ms?: number | undefined;
}

/**
 * The call's items: `n` of each prompt's, the i-th sampled with seed + i so the choices differ (greedy ones are
 * the same, as OpenAI's are), a prompt's choices in a row. A session keeps one reply, so it takes one choice.
 */
function choices(
  model: ModelConfig,
  prompts: readonly GenerationItem[],
  n: number | null | undefined,
  session: string | undefined,
) {
  const count = n ?? 1;
  if (count > 1 && session !== undefined) {
    throw refuse("n", `n is ${count}; a call in a session keeps one reply: leave n out, or the session`);
  }
  const most = model.max_inputs_per_request;
  const param = prompts.length === 1 ? "n" : "prompt";
  const many =
    prompts.length === 1
      ? `n is ${count}`
      : `${prompts.length} prompts × n ${count} are ${count * prompts.length} choices`;
  if (count * prompts.length > most) {
    throw refuse(param, `${many}; model "${model.name}" takes at most ${most} a call`);
  }
  // Each choice's log probabilities fit its answer (logprobsProblem); all of them must fit the call's.
  const params = prompts[0]?.params;
  const entries = params?.logprobs === undefined ? 0 : params.max_new_tokens * (params.logprobs + 1);
  if (entries * count * prompts.length > MAX_CALL_LOGPROB_ENTRIES) {
    throw refuse(
      param,
      `${many}, each with up to ${entries} log probabilities: a call's answer holds at most ${MAX_CALL_LOGPROB_ENTRIES}; send fewer, or lower max_tokens or the top tokens asked for`,
    );
  }
  return prompts.flatMap((item) =>
    Array.from({ length: count }, (_, i) =>
      i === 0 ? item : { ...item, params: { ...item.params, seed: (item.params.seed + i) % 2 ** 32 } },
    ),
  );
}

/** The most log-probability entries one call's answer may hold, over its choices: 8 choices of the most each may. */
const MAX_CALL_LOGPROB_ENTRIES = 8 * MAX_LOGPROB_ENTRIES;

/** The finished job's outputs, one a choice, or the error the job ended with (succeededOrThrow). */
function outputsOf(job: JobView): GenerationOutput[] {
  return (succeededOrThrow(job).outputs ?? []) as GenerationOutput[];
}

/** Runs the call to its end: the job and its outputs. */
async function generate(c: Context<HonoEnv>, call: Call): Promise<{ job: JobView; outputs: GenerationOutput[] }> {
  const job = await submitJob(c, { ...callOf(call), wait: true });
  const outputs = outputsOf(job);
  if (call.session !== undefined) await awaitSessionAppend(c, call.session, job.id);
  return { job, outputs };
}

const callOf = (call: Call) => ({
  model: call.model,
  inputs: call.items,
  ...(call.session === undefined ? {} : { session: call.session }),
  ...(call.timeout_ms === undefined ? {} : { timeout_ms: call.timeout_ms }),
});

/**
 * Streams the job's text as it is generated, in OpenAI's chunks (edge/openai-stream.ts, written by the queue
 * object); a caller that hangs up cancels the job.
 */
async function streamTokens(c: Context<HonoEnv>, call: Call, spec: OpenAiStreamSpec) {
  const { job, events } = await submitStreamed(c, callOf(call), { openai: spec });
  return pipeEvents(c, job.id, events, { cancelOnHangUp: true });
}

/**
 * Hugging Face's parameter names (HfCompletionRequest) as the OpenAI ones they stand for; both at once, or
 * return_full_text with stream, is a 400.
 */
function hfCompletion(req: HfCompletionRequest): CompletionRequest {
  const { do_sample, min_new_tokens, stop_sequences, grammar, return_full_text: _, ...rest } = req;
  const both = (hf: string, openai: string) => refuse(hf, `invalid request: give ${hf} or ${openai}, not both`);
  if (min_new_tokens != null && rest.min_tokens != null) throw both("min_new_tokens", "min_tokens");
  if (stop_sequences != null && rest.stop != null) throw both("stop_sequences", "stop");
  if (grammar != null && rest.response_format != null) throw both("grammar", "response_format");
  if (req.return_full_text && req.stream) {
    throw refuse(
      "return_full_text",
      "return_full_text is not served with stream: leave it out and prepend the prompt yourself",
    );
  }
  return {
    ...rest,
    temperature: hfTemperature(do_sample, rest.temperature),
    ...(min_new_tokens == null ? {} : { min_tokens: min_new_tokens }),
    ...(stop_sequences == null ? {} : { stop: stop_sequences }),
    ...(grammar == null ? {} : { response_format: { type: "json_schema", json_schema: { schema: grammar.value } } }),
  };
}

export const openAiChatRoutes = new Hono<HonoEnv>();
openAiChatRoutes.use("/v1/chat/completions", requireKey("caller"));
openAiChatRoutes.use("/v1/completions", requireKey("caller"));

openAiChatRoutes.post("/v1/chat/completions", async (c) => {
  const req = await readBody(c, ChatCompletionRequest);
  const model = generationModel(c, req.model);
  const maxParam = req.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
  const logprobs = req.logprobs === true;
  const tooling = toolFormat(model, req);
  const optional = tooling?.format.json_markers?.optional === true;
  const answerFormat = req.response_format != null && req.response_format.type !== "text";
  if (tooling && answerFormat && optional && tooling.format.json_markers?.prefix.startsWith("{")) {
    throw refuse(
      "response_format",
      `model "${model.name}" writes a tool call after ${JSON.stringify(tooling.format.json_markers.prefix)}, as an answer's object begins: beside tools its reply could not be told from a call; send tool_choice "none" for the answer, or leave response_format out`,
    );
  }
  if (tooling && answerFormat && !optional) {
    throw refuse(
      "response_format",
      'give response_format or a tool_choice that makes a call, not both: a call\'s arguments are JSON already (with "auto" a reply that makes no call is held to response_format)',
    );
  }
  const asked = generationParams(
    model,
    {
      ...req,
      max_tokens: req.max_completion_tokens ?? req.max_tokens,
      logprobs: logprobs ? (req.top_logprobs ?? 0) : null,
      ...(tooling && !answerFormat ? { response_format: { type: "json_object" } } : {}),
    },
    { max: maxParam, top: "top_logprobs", ...(tooling && !answerFormat ? { json: "tools (a call is JSON)" } : {}) },
    // Where the model decides, stop strings cut text and never a call (shared stopScope); a reply that
    // must be a call, or a JSON answer, has no text for them, so they are refused there, as with JSON mode.
    optional && !answerFormat,
  );
  // The tools' schema, compiled and checked by toolFormat, and the template's markers around a call; with "auto"
  // and response_format, a reply that makes no call is the object response_format asks for.
  const tools = tooling && answerFormat ? withAnswer(tooling, asked.schema ?? { type: "object" }) : tooling;
  const params = tools ? { ...asked, ...tools.format } : asked;
  const plan = tools?.plan;
  const messages = chatMessages(req.messages, model.chat_template);
  const item = await chatItem(c, model, messages, params, req.session, tools?.shown);
  const items = choices(model, [item], req.n, req.session);
  const call: Call = { model: model.name, items, session: req.session, timeout_ms: req.timeout_ms };
  const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  if (!req.stream) {
    const { job, outputs } = await generate(c, call);
    const answer: ChatCompletion = {
      id,
      object: "chat.completion",
      created: created(),
      model: model.name,
      choices: outputs.map((output, index) => ({
        index,
        message: plan ? toolMessage(plan, output, index) : { role: "assistant", content: output.generated_text },
        finish_reason: plan ? toolFinish(plan, output) : output.finish_reason,
        logprobs: logprobs ? chatLogprobs(output.logprobs ?? []) : null,
      })),
      usage: usageOf(outputs, items.length),
      edgeswarm: { ttft_ms: job.generation?.ttft_ms ?? null, tokens_per_s: job.generation?.tokens_per_s ?? null },
    };
    return c.json(answer);
  }
  const includeUsage = req.stream_options?.include_usage ?? false;
  const spec = {
    endpoint: "chat" as const,
    id,
    model: model.name,
    includeUsage,
    logprobs,
    perPrompt: items.length,
    ...(plan ? { tools: plan } : {}),
  };
  return streamTokens(c, call, spec);
});

openAiChatRoutes.post("/v1/completions", (c) => completions(c));

/**
 * POST /v1/completions; `modelName` names the model where the path does (Hugging Face's client posts to
 * <endpoint>/v1/completions with the endpoint's URL as `model`: edge/routes/huggingface.ts).
 */
export async function completions(c: Context<HonoEnv>, modelName?: string) {
  const hf = modelName === undefined ? undefined : await readBody(c, HfCompletionRequest);
  const req = hf ? hfCompletion(hf) : await readBody(c, CompletionRequest);
  const model = generationModel(c, modelName ?? req.model);
  const names = {
    min: hf?.min_new_tokens != null ? "min_new_tokens" : "min_tokens",
    stop: hf?.stop_sequences != null ? "stop_sequences" : "stop",
  };
  const prompts = typeof req.prompt === "string" ? [req.prompt] : req.prompt;
  if (prompts.length > 1 && req.session !== undefined) {
    throw refuse("prompt", `${prompts.length} prompts; a call in a session keeps one reply: send one prompt`);
  }
  const echo = req.echo === true;
  if (echo && req.stream) {
    throw refuse("echo", "echo is served without stream: leave stream out, or echo and put the prompt first yourself");
  }
  if (echo && hf?.return_full_text)
    throw refuse("echo", "give echo or return_full_text, not both: each puts the prompt first");
  // With echo, logprobs covers the prompt's tokens too (OpenAI's): the worker reads them as prompt_logprobs.
  const params = generationParams(model, { ...req, prompt_logprobs: echo ? req.logprobs : null }, names);
  const one = prompts.length === 1;
  const perPrompt = req.n ?? 1;
  const items = choices(
    model,
    prompts.map((p, i) => promptItem(model, p, params, one ? "prompt" : `prompt.${i}`)),
    req.n,
    req.session,
  );
  // Choice i·n + j is prompt i's: echo (and return_full_text) puts that prompt before it.
  const prefixed = echo || hf?.return_full_text === true;
  const before = (index: number) => (prefixed ? (prompts[Math.floor(index / perPrompt)] ?? "") : "");
  // The end-of-text token that ended a reply has its entry last, as vLLM's (a scoring client reads a place a token).
  const entries = (output: GenerationOutput, index: number) => {
    const reply = [...(output.logprobs ?? []), ...(output.end_logprob ? [output.end_logprob] : [])];
    return echo
      ? completionLogprobs([...(output.prompt_logprobs ?? []), ...reply], 0)
      : completionLogprobs(reply, before(index).length);
  };
  const call: Call = { model: model.name, items, session: req.session, timeout_ms: req.timeout_ms };
  const id = `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  if (!req.stream) {
    const { outputs } = await generate(c, call);
    const completion: TextCompletion = {
      id,
      object: "text_completion",
      created: created(),
      model: model.name,
      choices: outputs.map((output, index) => ({
        index,
        text: before(index) + output.generated_text,
        finish_reason: output.finish_reason,
        logprobs: req.logprobs == null ? null : entries(output, index),
      })),
      usage: usageOf(outputs, perPrompt),
    };
    return c.json(completion);
  }
  const includeUsage = req.stream_options?.include_usage ?? false;
  const logprobs = req.logprobs != null;
  const spec = { endpoint: "completions" as const, id, model: model.name, includeUsage, logprobs, perPrompt };
  return streamTokens(c, call, spec);
}
