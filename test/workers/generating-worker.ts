// A generating worker for the workerd suites: a SocketWorker whose reply is a function of the prompt alone (as
// greedy decoding is), streamed word by word as token deltas, then completed; a redelivered item's resume prefix
// is not sent again. Used by openai-chat.test.ts and hf-generation.test.ts, which test the routes' shapes and
// checks. The real decoder cannot run in these suites (workerd refuses to compile WebAssembly at run time: "Wasm
// code generation disallowed by embedder", so onnxruntime-web cannot load); it runs through both routes end to
// end, on onnxruntime-node behind a real coordinator, in test/e2e/generation-stream.test.ts.
import { SELF } from "cloudflare:test";
import OpenAI from "openai";
import type { Batch } from "../../shared/protocol/worker.ts";
import { TEST_API_KEY } from "../support/test-models.ts";
import type { SocketWorker } from "./helpers.ts";

/** The official openai client, calling the Worker under test. */
export const openAiClient = () =>
  new OpenAI({
    apiKey: TEST_API_KEY,
    baseURL: "http://edge/v1",
    maxRetries: 0,
    fetch: (url: RequestInfo | URL, init?: RequestInit) => SELF.fetch(url, init),
  });

/** The words a worker "generates" for a prompt: a function of the prompt alone, as greedy decoding is. */
export const replyTo = (prompt: string) => [" I", " read", ` ${prompt.length}`, " chars."];

/** Serves every batch of a worker: streams each item's reply word by word, then completes. */
export function serve(worker: SocketWorker, prompts: string[] = [], params: unknown[] = []): () => void {
  let stopped = false;
  void (async () => {
    while (!stopped) {
      const batch = await worker.next("batch", 60_000).catch(() => undefined);
      if (!batch) return;
      // A lease cancelled or taken back meanwhile, or the object wiped after the test: its completion is sent
      // all the same, and refused, as a real worker's would be.
      await streamReplies(worker, batch, prompts, params).catch(() => {});
      if (stopped) return;
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

/** Streams each item's reply word by word, each delta held by the queue before the next goes. */
async function streamReplies(
  worker: SocketWorker,
  batch: Pick<Batch, "lease_id" | "items">,
  prompts: string[],
  params: unknown[],
): Promise<void> {
  for (const [pos, item] of batch.items.entries()) {
    const { prompt, resume } = item.input as { prompt: string; resume?: { tokens: number[] } };
    prompts.push(prompt);
    params.push((item.input as { params?: unknown }).params);
    const words = replyTo(prompt);
    // Each delta held by the queue before the next frame goes: frames sent at once on this in-process
    // socket can be handled in either order (helpers.ts, sendTokens).
    for (let i = resume?.tokens.length ?? 0; i < words.length; i++) {
      await worker.sendTokens({
        lease_id: batch.lease_id,
        pos,
        offset: i,
        tokens: [100 + i],
        text: words[i] ?? "",
      });
    }
  }
}
