// Text generation in the SDK (issue 14): OpenAI-compatible chat on a text-generation model, waited for or
// streamed as typed deltas read from POST /v1/chat/completions with stream: true (eventsource-parser, up to
// `data: [DONE]`). `session` keeps the conversation at the coordinator: send only the new messages. Used as
// client.generation (client.ts).
import { createParser, type EventSourceMessage } from "eventsource-parser";
import type { ChatMessage } from "../../shared/protocol/chat-template.ts";
import type {
  ChatCompletion,
  ChatCompletionChunk,
  ChatLogprobs,
  ChatRequestMessage,
  OpenAiFinishReason,
  Tool,
  ToolChoice,
  Usage,
} from "../../shared/protocol/openai-chat.ts";
import { isRecord } from "./answer-shapes.ts";
import { ClientErrorCode, EdgeSwarmError } from "./errors.ts";
import { bodyReader, callOptions, invalidResponse, type Transport } from "./transport.ts";
import type { CallOptions } from "./types.ts";

export type { ChatMessage } from "../../shared/protocol/chat-template.ts";
export type { ChatCompletion } from "../../shared/protocol/openai-chat.ts";

export interface ChatOptions extends CallOptions {
  max_tokens?: number | undefined;
  /** Tokens to generate before an end-of-text token may end the reply (a stop string still does). */
  min_tokens?: number | undefined;
  /** 0 (the default) is greedy: the same answer every time, and a resumed stream continues exactly. */
  temperature?: number | undefined;
  top_k?: number | undefined;
  top_p?: number | undefined;
  seed?: number | undefined;
  stop?: string[] | undefined;
  /** -2 to 2: lower a token's odds once it has appeared in the reply (presence) and for each time (frequency). */
  presence_penalty?: number | undefined;
  frequency_penalty?: number | undefined;
  /** Above 1 discourages repeating the prompt's and the reply's tokens (transformers' rule). */
  repetition_penalty?: number | undefined;
  /** Token ids (as keys) to a bias of -100 to 100 on their logits: -100 bans a token, 100 all but forces it. */
  logit_bias?: Record<string, number> | undefined;
  /**
   * {type: "json_object"}: the reply is one compact JSON object (JSON mode); {type: "json_schema", json_schema:
   * {name, schema}}: one the JSON Schema accepts (structured outputs: docs/api.md lists the keywords served);
   * "text" is the default.
   */
  response_format?:
    | { type: "text" | "json_object" }
    | { type: "json_schema"; json_schema: { name?: string; schema?: Record<string, unknown>; strict?: boolean } }
    | undefined;
  /**
   * Each reply token's log probability under the model's own distribution (before temperature, penalties and
   * bias), with top_logprobs (0 to 20) most likely tokens at each place: the answer's choices[].logprobs, and
   * each streamed text delta's `logprobs`.
   */
  logprobs?: boolean | undefined;
  top_logprobs?: number | undefined;
  /**
   * Functions the reply may call, each with its arguments' JSON Schema; tool_choice "required" (a call of one the
   * model picks) or {type: "function", function: {name}} makes the reply a call (the answer's
   * message.tool_calls; streamed, "tool_call" deltas). "auto" (the default with tools) lets the model decide, its
   * reply text or a call, where its chat template says how it writes one (docs/api.md); elsewhere it is a 400.
   */
  tools?: Tool[] | undefined;
  tool_choice?: ToolChoice | undefined;
  /** Left out or true: a reply may make several calls, where the model's template tags them. */
  parallel_tool_calls?: boolean | undefined;
  /** A session (PUT /v1/sessions/{id}) that holds the conversation: send only the new messages. */
  session?: string | undefined;
  timeout_ms?: number | undefined;
}

/**
 * One piece of a streamed answer: text as it is generated (with its tokens' log probabilities when asked for: a
 * token whose text is held back, as a possible stop string's start, comes with the next piece, so a last piece
 * may carry entries and no text), then the end with why and the token counts.
 */
export type ChatDelta =
  | { type: "text"; text: string; logprobs?: ChatLogprobs["content"] }
  /**
   * A piece of one of the reply's tool calls (`index`: its place among them): the first names it (id, name), the
   * others add to its arguments' text.
   */
  | { type: "tool_call"; index: number; id?: string; name?: string; arguments: string }
  | { type: "end"; finish_reason: OpenAiFinishReason; usage: Usage };

/** A message: text from a role, an assistant's tool calls (content null), or a tool's result (role "tool"). */
export type ChatInput = ChatMessage | ChatRequestMessage;

export class Generation {
  constructor(private readonly http: Transport) {}

  /** The model's answer to `messages`, once generated. */
  async chat(model: string, messages: ChatInput[], opts: ChatOptions = {}): Promise<ChatCompletion> {
    const { body } = await this.http.json<ChatCompletion>(
      {
        method: "POST",
        path: "/v1/chat/completions",
        body: chatBody(model, messages, opts, false),
        ...callOptions(opts),
      },
      (b) => isRecord(b) && Array.isArray(b.choices),
    );
    return body;
  }

  /** The answer as it is generated; leaving the loop early hangs up, which cancels the generation. */
  async *chatStream(model: string, messages: ChatInput[], opts: ChatOptions = {}): AsyncGenerator<ChatDelta, void> {
    const res = await this.http.send({
      method: "POST",
      path: "/v1/chat/completions",
      body: chatBody(model, messages, opts, true),
      accept: "text/event-stream",
      ...callOptions(opts),
    });
    if (!res.body) throw invalidResponse(res.status, "the chat stream answer has no body");
    const reader = bodyReader(res.body, opts.signal);
    const decoder = new TextDecoder();
    const messagesIn: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (m) => messagesIn.push(m) });
    let finish: OpenAiFinishReason | undefined;
    try {
      for (;;) {
        for (let m = messagesIn.shift(); m; m = messagesIn.shift()) {
          opts.signal?.throwIfAborted();
          if (m.data === "[DONE]") return;
          const chunk = parseChunk(m.data, res.status);
          const choice = chunk.choices[0];
          const logprobs = choice?.logprobs?.content ?? [];
          // A tool call's chunks carry no text: their entries are the call's.
          if (choice?.delta.content || (logprobs.length > 0 && !choice?.delta.tool_calls)) {
            const text = choice?.delta.content ?? "";
            yield { type: "text", text, ...(choice?.logprobs ? { logprobs } : {}) };
          }
          for (const call of choice?.delta.tool_calls ?? []) {
            const { id, index, function: fn } = call;
            yield {
              type: "tool_call",
              index,
              ...(id ? { id } : {}),
              ...(fn.name ? { name: fn.name } : {}),
              arguments: fn.arguments,
            };
          }
          if (choice?.finish_reason) finish = choice.finish_reason;
          if (chunk.usage && finish) yield { type: "end", finish_reason: finish, usage: chunk.usage };
        }
        const { done, value } = await reader.read();
        if (done) break;
        parser.feed(decoder.decode(value, { stream: true }));
      }
      throw new EdgeSwarmError({
        status: res.status,
        code: ClientErrorCode.streamEnded,
        message: "the chat stream closed before [DONE]; the answer is incomplete",
      });
    } finally {
      reader.close();
    }
  }
}

function chatBody(model: string, messages: ChatInput[], opts: ChatOptions, stream: boolean) {
  const { signal: _s, traceparent: _t, ...fields } = opts;
  return { model, messages, ...fields, stream, ...(stream ? { stream_options: { include_usage: true } } : {}) };
}

/** A data line: a chunk, or the error the coordinator streams when the job ends without its answer. */
function parseChunk(data: string, status: number): ChatCompletionChunk {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw invalidResponse(status, `a chat stream chunk is not JSON: ${data.slice(0, 200)}`);
  }
  if (isRecord(parsed) && isRecord(parsed.error)) {
    const e = parsed.error;
    throw new EdgeSwarmError({
      status,
      code: typeof e.code === "string" ? e.code : "failed",
      message: typeof e.message === "string" ? e.message : "the generation failed",
    });
  }
  if (!isRecord(parsed) || !Array.isArray(parsed.choices)) {
    throw invalidResponse(status, "a chat stream chunk does not have the shape this SDK expects", parsed);
  }
  return parsed as unknown as ChatCompletionChunk;
}
