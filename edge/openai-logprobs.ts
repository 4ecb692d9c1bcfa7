// Log probabilities in OpenAI's shapes, from the entries a worker returns (shared/protocol/generation.ts
// TokenLogprob): a chat choice's `logprobs.content`, and a completion's legacy `logprobs` (tokens, token_logprobs,
// top_logprobs, text_offset). Used for answers (edge/routes/openai-chat.ts) and stream chunks (openai-stream.ts).
import type { PromptLogprob, TokenLogprob } from "../shared/index.ts";
import type { ChatLogprobs, ChatTokenLogprob, CompletionLogprobs } from "../shared/protocol/openai-chat.ts";

const encoder = new TextEncoder();

/** A token as chat's entries give it: its bytes the worker's where its text cannot carry them (a split character). */
const chatToken = (e: { token: string; bytes?: number[] | undefined; logprob: number }): ChatTokenLogprob => ({
  token: e.token,
  logprob: e.logprob,
  bytes: e.bytes ?? [...encoder.encode(e.token)],
});

export function chatLogprobs(entries: readonly TokenLogprob[]): ChatLogprobs {
  return {
    content: entries.map((e) => ({
      ...chatToken(e),
      top_logprobs: e.top.map(chatToken),
    })),
  };
}

/**
 * `start`: where the first of these tokens begins in the choice's text (characters). An echoed prompt's entries
 * come first, its first token's figures null, as OpenAI's.
 */
export function completionLogprobs(
  entries: readonly (TokenLogprob | PromptLogprob)[],
  start: number,
): CompletionLogprobs {
  let at = start;
  const text_offset = entries.map((e) => {
    const offset = at;
    at += e.token.length;
    return offset;
  });
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    // The token itself among them (OpenAI's "up to logprobs + 1"); tokens of the same text keep the likelier
    // one's figure (a map by text, as OpenAI's own).
    top_logprobs: entries.map((e) => {
      if (e.logprob === null) return null;
      const top: Record<string, number> = {};
      for (const t of e.top) if (!(t.token in top)) top[t.token] = t.logprob;
      if (!(e.token in top)) top[e.token] = e.logprob;
      return top;
    }),
    text_offset,
  };
}
