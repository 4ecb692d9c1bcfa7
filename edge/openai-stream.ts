// OpenAI's streamed answer made from a text-generation job's events: a `data: {chunk}` line per token delta, a
// last chunk with `finish_reason` (and, when asked, one with `usage`), then `data: [DONE]`; an error as OpenAI
// streams one. The queue object writes it (model-queue/job-events.ts), so the edge hands its bytes to the caller
// unread; edge/routes/openai-chat.ts says what to shape.
import type { GenerationOutput, TokenLogprob } from "../shared/index.ts";
import type { JobEvent } from "../shared/protocol/job-events.ts";
import type {
  ChatCompletionChunk,
  OpenAiFinishReason,
  TextCompletion,
  ToolCallDelta,
  Usage,
} from "../shared/protocol/openai-chat.ts";
import { chatLogprobs, completionLogprobs } from "./openai-logprobs.ts";
import { type ReplyPiece, type ToolPlan, toolCallStream, toolFinish } from "./openai-tools.ts";

/** What a stream's chunks carry besides the text: its answer's id and model, the endpoint, and `include_usage`. */
export interface OpenAiStreamSpec {
  endpoint: "chat" | "completions";
  id: string;
  model: string;
  includeUsage: boolean;
  /** Choices a prompt (`n`; the choices of a prompt follow one another): usage counts each prompt once. */
  perPrompt: number;
  /** The call asked for log probabilities: each chunk carries its tokens'. */
  logprobs?: boolean;
  /** Chat's replies may be tool calls (edge/openai-tools.ts): a call is sent as `tool_calls` deltas, not content. */
  tools?: ToolPlan;
}

/**
 * The usage of a call's outputs (one a choice, `perPrompt` choices of each prompt in a row): each prompt counted
 * once, as OpenAI counts it.
 */
export const usageOf = (outs: readonly (GenerationOutput | undefined)[], perPrompt: number): Usage => {
  const prompt = outs.reduce((sum, out, i) => sum + (i % perPrompt === 0 ? (out?.prompt_tokens ?? 0) : 0), 0);
  const completion = outs.reduce((sum, out) => sum + (out?.tokens.length ?? 0), 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
};

/** An error mid-stream, as OpenAI sends one: a data line holding {error}. */
export const streamError = (code: string, message: string) =>
  JSON.stringify({ error: { message, type: "server_error", param: null, code } });

export const created = () => Math.floor(Date.now() / 1000);

type Finish = OpenAiFinishReason | null;

/**
 * The SSE text for each of a job's events, in order (one shaper a stream: it remembers the text sent for each
 * choice, the job's input of the same index). An output whose text the deltas did not carry (a worker that did
 * not stream) is sent whole as its choice's last delta; usage, when asked for, comes once, after every choice.
 * With log probabilities, a chunk carries those of the tokens relayed since the last chunk (a token whose text is
 * held back, as the start of a possible stop string, goes with the next), and a choice's last chunk the rest.
 */
export function openAiStream(spec: OpenAiStreamSpec): (event: JobEvent<GenerationOutput>) => string {
  const { id, model } = spec;
  const sent = new Map<number, string>();
  const outputs: GenerationOutput[] = [];
  /**
   * Each choice's log-probability entries relayed and not yet in a chunk; how many went in chunks, and the
   * characters of their tokens' texts (where the next token starts in the choice's text).
   */
  const pending = new Map<number, TokenLogprob[]>();
  const emitted = new Map<number, { entries: number; chars: number }>();
  /** Takes a choice's pending entries for its next chunk (null when there are none, or none were asked for). */
  const takeLogprobs = (index: number) => {
    const entries = pending.get(index) ?? [];
    pending.delete(index);
    if (!spec.logprobs || entries.length === 0) return null;
    const before = emitted.get(index) ?? { entries: 0, chars: 0 };
    const chars = entries.reduce((n, e) => n + e.token.length, before.chars);
    emitted.set(index, { entries: before.entries + entries.length, chars });
    return { entries, offset: before.chars };
  };
  const calls = spec.tools && toolCallStream(spec.tools);
  const choice =
    spec.endpoint === "chat"
      ? (index: number, text: string | null, finish: Finish): ChatCompletionChunk["choices"][number] => {
          // A choice's first delta says whose it is.
          const role = text !== null && !sent.has(index) ? { role: "assistant" as const } : {};
          const lp = takeLogprobs(index);
          return {
            index,
            delta: text === null ? {} : { ...role, content: text },
            finish_reason: finish,
            logprobs: lp && chatLogprobs(lp.entries),
          };
        }
      : (index: number, text: string | null, finish: Finish): TextCompletion["choices"][number] => {
          const lp = takeLogprobs(index);
          return {
            index,
            text: text ?? "",
            finish_reason: finish,
            logprobs: lp && completionLogprobs(lp.entries, lp.offset),
          };
        };
  const chunk = (
    choices: (ChatCompletionChunk["choices"][number] | TextCompletion["choices"][number])[],
    usage?: Usage,
  ) => ({
    id,
    object: spec.endpoint === "chat" ? "chat.completion.chunk" : "text_completion",
    created: created(),
    model,
    choices,
    ...(usage ? { usage } : {}),
  });
  const data = (payload: unknown) => `data: ${typeof payload === "string" ? payload : JSON.stringify(payload)}\n\n`;
  const delta = (index: number, text: string) => {
    const line = data(chunk([choice(index, text, null)]));
    sent.set(index, (sent.get(index) ?? "") + text);
    return line;
  };
  /**
   * A chunk of tool-call deltas, where a tool call is the reply (the text itself is not sent); a choice's first
   * chunk says whose it is (content null) even before the call is named, as clients need a role.
   */
  const callDelta = (index: number, deltas: ToolCallDelta[]) => {
    const first = !sent.has(index);
    if (deltas.length === 0 && !first) return "";
    sent.set(index, "");
    const lp = takeLogprobs(index);
    const piece = {
      index,
      delta: {
        ...(first ? { role: "assistant" as const, content: null } : {}),
        ...(deltas.length > 0 ? { tool_calls: deltas } : {}),
      },
      finish_reason: null,
      logprobs: lp && chatLogprobs(lp.entries),
    };
    return data(chunk([piece]));
  };
  /** A tool plan's piece of a reply as its chunks: content, tool-call deltas (content first), or nothing while undecided. */
  const sendPiece = (index: number, piece: ReplyPiece) => {
    if (piece.kind === "undecided") return "";
    if (piece.kind === "text") return piece.text === "" ? "" : delta(index, piece.text);
    return (piece.text ? delta(index, piece.text) : "") + callDelta(index, piece.deltas);
  };
  return (event) => {
    switch (event.event) {
      case "token": {
        const { index, text, logprobs } = event.data;
        if (spec.logprobs && logprobs) pending.set(index, [...(pending.get(index) ?? []), ...logprobs]);
        if (calls) return sendPiece(index, calls.push(index, text));
        return text === "" ? "" : delta(index, text);
      }
      case "output": {
        const { index, output: out } = event.data;
        outputs[index] = out;
        // What the chunks did not carry comes with the last ones: the output's entries are the truth.
        if (spec.logprobs) {
          // Completions' last entry is the end-of-text token that ended the reply, if one did (chat's content has none).
          const end = spec.endpoint === "completions" && out.end_logprob ? [out.end_logprob] : [];
          pending.set(index, [...(out.logprobs ?? []).slice(emitted.get(index)?.entries ?? 0), ...end]);
        }
        if (calls) {
          return (
            sendPiece(index, calls.end(index, out)) +
            data(chunk([choice(index, null, toolFinish(spec.tools as ToolPlan, out))]))
          );
        }
        const before = sent.get(index) ?? "";
        const rest = out.generated_text.startsWith(before) ? out.generated_text.slice(before.length) : "";
        return (rest === "" ? "" : delta(index, rest)) + data(chunk([choice(index, null, out.finish_reason)]));
      }
      case "completed":
        return (spec.includeUsage ? data(chunk([], usageOf(outputs, spec.perPrompt))) : "") + data("[DONE]");
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
