// A generating worker for the workerd suites, until they run the real decoder: a SocketWorker whose reply is a
// function of the prompt alone (as greedy decoding is), streamed word by word as token deltas, then completed.
// A redelivered item's resume prefix is not sent again. Used by openai-chat.test.ts and hf-generation.test.ts.
import type { SocketWorker } from "./helpers.ts";

/** The words a worker "generates" for a prompt: a function of the prompt alone, as greedy decoding is. */
export const replyTo = (prompt: string) => [" I", " read", ` ${prompt.length}`, " chars."];

/** Serves every batch of a worker: streams each item's reply word by word, then completes. */
export function serve(worker: SocketWorker, prompts: string[] = [], params: unknown[] = []): () => void {
  let stopped = false;
  void (async () => {
    while (!stopped) {
      const batch = await worker.next("batch", 60_000).catch(() => undefined);
      if (!batch) return;
      batch.items.forEach((item, pos) => {
        const { prompt, resume } = item.input as { prompt: string; resume?: { tokens: number[] } };
        prompts.push(prompt);
        params.push((item.input as { params?: unknown }).params);
        const words = replyTo(prompt);
        for (let i = resume?.tokens.length ?? 0; i < words.length; i++) {
          worker.send({ type: "tokens", lease_id: batch.lease_id, pos, offset: i, tokens: [100 + i], text: words[i] });
        }
      });
      worker.complete(batch, (input) => {
        const words = replyTo(input.prompt);
        return {
          generated_text: words.join(""),
          tokens: words.map((_, i) => 100 + i),
          finish_reason: "length",
          prompt_tokens: 7,
        };
      });
    }
  })();
  return () => {
    stopped = true;
  };
}
