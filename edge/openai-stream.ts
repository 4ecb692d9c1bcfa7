// OpenAI's streamed answer made from a text-generation job's events: a `data: {chunk}` line per token delta, a
// last chunk with `finish_reason` (and, when asked, one with `usage`), then `data: [DONE]`; an error as OpenAI
// streams one. The queue object writes it (model-queue/job-events.ts), so the edge hands its bytes to the caller
// unread; edge/routes/openai-chat.ts says what to shape.
import type { GenerationOutput } from "../shared/index.ts";
import type { JobEvent } from "../shared/protocol/job-events.ts";
import type { ChatCompletionChunk, TextCompletion, Usage } from "../shared/protocol/openai-chat.ts";

/** What a stream's chunks carry besides the text: its answer's id and model, the endpoint, and `include_usage`. */
export interface OpenAiStreamSpec {
  endpoint: "chat" | "completions";
  id: string;
  model: string;
  includeUsage: boolean;
}

export const usageOf = (out: GenerationOutput): Usage => ({
  prompt_tokens: out.prompt_tokens,
  completion_tokens: out.tokens.length,
  total_tokens: out.prompt_tokens + out.tokens.length,
});

/** An error mid-stream, as OpenAI sends one: a data line holding {error}. */
export const streamError = (code: string, message: string) =>
  JSON.stringify({ error: { message, type: "server_error", param: null, code } });

export const created = () => Math.floor(Date.now() / 1000);

type Finish = GenerationOutput["finish_reason"] | null;

/**
 * The SSE text for each of a job's events, in order (one shaper a stream: it remembers the text sent). An output
 * whose text the deltas did not carry (a worker that did not stream) is sent whole as the last delta.
 */
export function openAiStream(spec: OpenAiStreamSpec): (event: JobEvent<GenerationOutput>) => string {
  const { id, model } = spec;
  let sent = "";
  let first = true;
  const chunk =
    spec.endpoint === "chat"
      ? (text: string | null, finish: Finish, usage?: Usage): ChatCompletionChunk => {
          const role = first && text !== null ? { role: "assistant" as const } : {};
          if (text !== null) first = false;
          return {
            id,
            object: "chat.completion.chunk",
            created: created(),
            model,
            choices: usage
              ? []
              : [
                  {
                    index: 0,
                    delta: text === null ? {} : { ...role, content: text },
                    finish_reason: finish,
                    logprobs: null,
                  },
                ],
            ...(usage ? { usage } : {}),
          };
        }
      : (text: string | null, finish: Finish, usage?: Usage): TextCompletion => ({
          id,
          object: "text_completion",
          created: created(),
          model,
          choices: usage ? [] : [{ index: 0, text: text ?? "", finish_reason: finish, logprobs: null }],
          ...(usage ? { usage } : {}),
        });
  const data = (payload: unknown) => `data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`;
  return (event) => {
    switch (event.event) {
      case "token":
        if (event.data.text === "") return "";
        sent += event.data.text;
        return data(chunk(event.data.text, null));
      case "output": {
        const out = event.data.output;
        const rest = out.generated_text.startsWith(sent) ? out.generated_text.slice(sent.length) : "";
        sent = out.generated_text;
        return (
          (rest === "" ? "" : data(chunk(rest, null))) +
          data(chunk(null, out.finish_reason)) +
          (spec.includeUsage ? data(chunk(null, null, usageOf(out))) : "")
        );
      }
      case "completed":
        return data("[DONE]");
      case "error":
        return data(streamError(event.data.code, event.data.message));
      case "failed":
      case "expired":
      case "cancelled": {
        // The job ended without its output: said as OpenAI streams an error.
        const e = event.data.error ?? { code: event.event, message: `the job ${event.event}` };
        return data(streamError(e.code, e.message));
      }
      default:
        return "";
    }
  };
}
