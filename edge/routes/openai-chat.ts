// OpenAI-compatible text generation: POST /v1/chat/completions and POST /v1/completions over the text-generation
// queues, streamed (`stream: true`: `data: {chunk}` with each delta as the queue relays the worker's tokens, then
// `data: [DONE]`) or not, with `usage`; errors in OpenAI's shape (openAiError). A caller that hangs up mid-stream
// cancels its job, so no worker generates for nobody. Mounted by edge/routes/openai.ts.
import { type Context, Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { z } from "zod";
import {
  describeIssues,
  ErrorCode,
  type GenerationItem,
  type GenerationOutput,
  type JobView,
} from "../../shared/index.ts";
import type { JobEvent } from "../../shared/protocol/job-events.ts";
import {
  type ChatCompletion,
  type ChatCompletionChunk,
  ChatCompletionRequest,
  CompletionRequest,
  type TextCompletion,
  type Usage,
} from "../../shared/protocol/openai-chat.ts";
import type { HonoEnv } from "../app-env.ts";
import { requireKey } from "../auth.ts";
import { ApiError } from "../errors.ts";
import {
  awaitSessionAppend,
  chatItem,
  chatMessages,
  generationModel,
  generationParams,
  promptItem,
} from "../generation-calls.ts";
import { afterAnswer, readJson, stubOfId } from "../request.ts";
import { ownerOf, submitJob, succeededOrThrow } from "../submit.ts";
import { streamClosed, traceStreamEvent } from "../telemetry/call-trace.ts";

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

const usageOf = (out: GenerationOutput): Usage => ({
  prompt_tokens: out.prompt_tokens,
  completion_tokens: out.tokens.length,
  total_tokens: out.prompt_tokens + out.tokens.length,
});

/** An error mid-stream, as OpenAI sends one: a data line holding {error}. */
const streamError = (code: string, message: string) =>
  JSON.stringify({ error: { message, type: "server_error", param: null, code } });

const KEEP_ALIVE_MS = 15_000;

const created = () => Math.floor(Date.now() / 1000);

interface Call {
  model: string;
  item: GenerationItem;
  session?: string | undefined;
  timeout_ms?: number | undefined;
}

/** The finished job's one output, or the error the job ended with (succeededOrThrow). */
function outputOf(job: JobView): GenerationOutput {
  return succeededOrThrow(job).outputs?.[0] as GenerationOutput;
}

/** Runs the call to its end: the job and its output. */
async function generate(c: Context<HonoEnv>, call: Call): Promise<{ job: JobView; output: GenerationOutput }> {
  const job = await submitJob(c, { ...callOf(call), wait: true });
  const output = outputOf(job);
  if (call.session !== undefined) await awaitSessionAppend(c, call.session, job.id);
  return { job, output };
}

const callOf = (call: Call) => ({
  model: call.model,
  inputs: [call.item],
  ...(call.session === undefined ? {} : { session: call.session }),
  ...(call.timeout_ms === undefined ? {} : { timeout_ms: call.timeout_ms }),
});

/**
 * Streams the job's text as it is generated: `delta(text)` per token event, then `end(output)`. An output
 * whose text the deltas did not carry (a worker that did not stream) is sent whole as the last delta.
 */
async function streamTokens(
  c: Context<HonoEnv>,
  call: Call,
  chunks: { delta(text: string): unknown; end(output: GenerationOutput): unknown[] },
) {
  const job = await submitJob(c, { ...callOf(call), wait: false }, { streamed: true });
  const owner = await ownerOf(c);
  const { name, queue } = stubOfId(c, job.id, "job");
  const lines = await queue.watchJob(name, job.id, owner, "lines");
  if (typeof lines === "string") {
    throw new ApiError(429, ErrorCode.queueFull, `the queue of "${call.model}" serves no more streams now; retry`);
  }
  return streamSSE(c, async (sse) => {
    const gone = new AbortController();
    // A comment now and then keeps an idle connection open, and finds a caller that left while nothing came.
    const keepAlive = setInterval(() => void sse.write(": keep-alive\n\n").catch(() => {}), KEEP_ALIVE_MS);
    // A caller that hangs up cancels its job (DELETE /v1/jobs/{id}'s path): seen as the request's signal
    // (workerd's enable_request_signal) or as the stream's cancellation when a write finds the caller gone.
    const hangUp = () => {
      if (gone.signal.aborted) return;
      clearInterval(keepAlive);
      gone.abort();
      const cancel = queue.cancelJob(name, job.id, owner, "hung_up").catch(() => {});
      afterAnswer(c, cancel);
    };
    sse.onAbort(hangUp);
    c.req.raw.signal.addEventListener("abort", hangUp, { once: true });
    let sent = "";
    let pending = "";
    try {
      for await (const chunk of lines.pipeThrough(new TextDecoderStream(), { signal: gone.signal })) {
        pending += chunk;
        for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
          const event = JSON.parse(pending.slice(0, nl)) as JobEvent<GenerationOutput>;
          pending = pending.slice(nl + 1);
          if (event.event === "token" && event.data.text !== "") {
            sent += event.data.text;
            await sse.writeSSE({ data: JSON.stringify(chunks.delta(event.data.text)) });
          } else if (event.event === "output") {
            const out = event.data.output;
            const rest = out.generated_text.startsWith(sent) ? out.generated_text.slice(sent.length) : "";
            if (rest !== "") await sse.writeSSE({ data: JSON.stringify(chunks.delta(rest)) });
            for (const last of chunks.end(out)) await sse.writeSSE({ data: JSON.stringify(last) });
          } else if (event.event === "completed") {
            // As a waited call: the session holds this turn before the caller can send the next.
            if (call.session !== undefined) await awaitSessionAppend(c, call.session, job.id);
            await sse.writeSSE({ data: "[DONE]" });
          } else if (event.event === "error") {
            await sse.writeSSE({ data: streamError(event.data.code, event.data.message) });
          } else if (event.event === "failed" || event.event === "expired" || event.event === "cancelled") {
            // The job ended without its output (failed, expired, cancelled): said as OpenAI streams an error.
            const e = event.data.error ?? { code: event.event, message: `the job ${event.event}` };
            await sse.writeSSE({ data: streamError(e.code, e.message) });
          }
          traceStreamEvent(c, event);
        }
      }
    } catch (error) {
      if (!gone.signal.aborted) throw error;
    } finally {
      clearInterval(keepAlive);
      c.req.raw.signal.removeEventListener("abort", hangUp);
      streamClosed(c);
    }
  });
}

export const openAiChatRoutes = new Hono<HonoEnv>();
openAiChatRoutes.use("/v1/chat/completions", requireKey("caller"));
openAiChatRoutes.use("/v1/completions", requireKey("caller"));

openAiChatRoutes.post("/v1/chat/completions", async (c) => {
  const req = await readBody(c, ChatCompletionRequest);
  const model = generationModel(c, req.model);
  const maxParam = req.max_completion_tokens != null ? "max_completion_tokens" : "max_tokens";
  const params = generationParams(model, { ...req, max_tokens: req.max_completion_tokens ?? req.max_tokens }, maxParam);
  const item = await chatItem(c, model, chatMessages(req.messages), params, req.session);
  const call: Call = { model: model.name, item, session: req.session, timeout_ms: req.timeout_ms };
  const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  if (!req.stream) {
    const { job, output } = await generate(c, call);
    const answer: ChatCompletion = {
      id,
      object: "chat.completion",
      created: created(),
      model: model.name,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: output.generated_text },
          finish_reason: output.finish_reason,
          logprobs: null,
        },
      ],
      usage: usageOf(output),
      edgeswarm: { ttft_ms: job.generation?.ttft_ms ?? null, tokens_per_s: job.generation?.tokens_per_s ?? null },
    };
    return c.json(answer);
  }
  const chunk = (
    delta: ChatCompletionChunk["choices"][0]["delta"],
    finish: ChatCompletionChunk["choices"][0]["finish_reason"],
  ) =>
    ({
      id,
      object: "chat.completion.chunk",
      created: created(),
      model: model.name,
      choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }],
    }) satisfies ChatCompletionChunk;
  let first = true;
  return streamTokens(c, call, {
    delta: (text) => {
      const role = first ? { role: "assistant" as const } : {};
      first = false;
      return chunk({ ...role, content: text }, null);
    },
    end: (out) => [
      chunk({}, out.finish_reason),
      ...(req.stream_options?.include_usage ? [{ ...chunk({}, null), choices: [], usage: usageOf(out) }] : []),
    ],
  });
});

openAiChatRoutes.post("/v1/completions", (c) => completions(c));

/**
 * POST /v1/completions; `modelName` names the model where the path does (Hugging Face's client posts to
 * <endpoint>/v1/completions with the endpoint's URL as `model`: edge/routes/huggingface.ts).
 */
export async function completions(c: Context<HonoEnv>, modelName?: string) {
  const req = await readBody(c, CompletionRequest);
  const model = generationModel(c, modelName ?? req.model);
  const item = promptItem(model, req.prompt, generationParams(model, req));
  const call: Call = { model: model.name, item, session: req.session, timeout_ms: req.timeout_ms };
  const id = `cmpl-${crypto.randomUUID().replaceAll("-", "")}`;
  const completion = (text: string, finish: TextCompletion["choices"][0]["finish_reason"]): TextCompletion => ({
    id,
    object: "text_completion",
    created: created(),
    model: model.name,
    choices: [{ index: 0, text, finish_reason: finish, logprobs: null }],
  });
  if (!req.stream) {
    const { output } = await generate(c, call);
    return c.json({ ...completion(output.generated_text, output.finish_reason), usage: usageOf(output) });
  }
  return streamTokens(c, call, {
    delta: (text) => completion(text, null),
    end: (out) => [
      completion("", out.finish_reason),
      ...(req.stream_options?.include_usage ? [{ ...completion("", null), choices: [], usage: usageOf(out) }] : []),
    ],
  });
}
