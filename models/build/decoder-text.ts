// The documents the bundled decoder learns from: the review sentences the project ships (models/data/sentiment.tsv,
// models/data/written.tsv) as plain text, and the same sentences as one-turn chats in the decoder's chat template
// (a question about the topic, the sentence as the answer). Called by models/build/decoder-model.ts.

import type { Example } from "./dataset.ts";
import { LABELS } from "./dataset.ts";

/** Special tokens, after the BPE vocabulary: end of document, and the chat template's role markers. */
export const SPECIALS = {
  eos: "<|endoftext|>",
  user: "<|user|>",
  assistant: "<|assistant|>",
  system: "<|system|>",
  end: "<|end|>",
};

/**
 * The chat template, in config.json: each message is `prefix + content + suffix`, and the prompt ends with
 * `generation_prompt`; no Jinja, so the edge renders it with string concatenation.
 */
export const CHAT_TEMPLATE = {
  format: "edgeswarm-prefix-suffix-v1",
  roles: {
    system: { prefix: SPECIALS.system, suffix: SPECIALS.end },
    user: { prefix: SPECIALS.user, suffix: SPECIALS.end },
    assistant: { prefix: SPECIALS.assistant, suffix: SPECIALS.end },
  },
  generation_prompt: SPECIALS.assistant,
};

/** How a user asks about each topic, in words the chats use. */
const TOPIC_WORDS: Record<string, string> = {
  books: "the book",
  film: "the film",
  food: "the food",
  general: "it",
  music: "the music",
  shopping: "the shop",
  tech: "the gadget",
  travel: "the trip",
  weather: "the weather",
};
const QUESTIONS = [
  (t: string) => `how was ${t}?`,
  (t: string) => `tell me about ${t}.`,
  (t: string) => `what did you think of ${t}?`,
];
const REVIEW_ASK = (t: string, label: string) => `write a ${label} review of ${t}.`;

export function chat(messages: { role: "system" | "user" | "assistant"; content: string }[], prompt: boolean): string {
  const body = messages.map((m) => CHAT_TEMPLATE.roles[m.role].prefix + m.content + CHAT_TEMPLATE.roles[m.role].suffix);
  return body.join("") + (prompt ? CHAT_TEMPLATE.generation_prompt : "");
}

/** Every sentence as plain text (ending in the end-of-document token) and as two chats about it. */
export function decoderDocuments(examples: readonly Example[]): string[] {
  const docs: string[] = [];
  examples.forEach((e, i) => {
    const topic = TOPIC_WORDS[e.topic] ?? `the ${e.topic}`;
    const question = QUESTIONS[i % QUESTIONS.length] as (t: string) => string;
    const label = (LABELS[e.label] ?? "POSITIVE").toLowerCase();
    docs.push(`${e.text}.${SPECIALS.eos}`);
    docs.push(
      chat(
        [
          { role: "user", content: question(topic) },
          { role: "assistant", content: `${e.text}.` },
        ],
        false,
      ) + SPECIALS.eos,
    );
    docs.push(
      chat(
        [
          { role: "user", content: REVIEW_ASK(topic, label) },
          { role: "assistant", content: `${e.text}.` },
        ],
        false,
      ) + SPECIALS.eos,
    );
  });
  return docs;
}
