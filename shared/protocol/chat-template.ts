// A text-generation model's chat template as its registry entry carries it (ModelConfig.chat_template, the same
// object as the model folder's config.json `edgeswarm.chat_template`, see models/build/decoder-text.ts): each
// message is `prefix + content + suffix`, the prompt ends with `generation_prompt`. No Jinja: the edge renders
// chats (edge/routes/openai-chat.ts) and reads a session's last prompt back into messages with plain strings.
import { z } from "zod";

const Wrap = z.strictObject({ prefix: z.string().max(64), suffix: z.string().max(64) });

/**
 * A tool call's tag: printable ASCII (and tabs and newlines), as the mask judges each token by its own text, and a
 * byte-level tokenizer writes any other character across tokens that each read as none (a tag a tokenizer keeps as a
 * special token is not written as text either: such a template cannot take tool_call).
 */
export const Tag = z
  .string()
  .max(64)
  .regex(/^[\x20-\x7E\t\n]*$/, "must be printable ASCII, tabs and newlines (the mask reads tokens' text)")
  // A tokenizer's clean-up of spaces (clean_up_tokenization_spaces: " ," reads ",") rewrites the decoded text around
  // these, so the reply's text could hold a tag that its tokens, read one by one, do not.
  .regex(/^[^.,!?']*$/, "must not hold . , ! ? or ' (a tokenizer's clean-up of the spaces before them would move it)");

/**
 * A tool call's opening tag: whitespace before it is the model's own, so it begins with none; and it does not end
 * in "n", which a tokenizer's clean-up of spaces (" n't" reads "n't") could join onto text written before it.
 */
export const CallPrefix = Tag.min(1)
  .regex(/^[^ \t\n]/, "must not begin with whitespace (whitespace before it is the model's)")
  .regex(/[^n]$/, `must not end in "n" (a tokenizer's clean-up of spaces, " n't" reading "n't", could write it)`);

export const ChatTemplate = z
  .strictObject({
    format: z.literal("edgeswarm-prefix-suffix-v1"),
    /** `tool`: a tool's result, answering an assistant's tool call (left out: the model's chats carry none). */
    roles: z.strictObject({ system: Wrap, user: Wrap, assistant: Wrap, tool: Wrap.optional() }),
    generation_prompt: z.string().max(64),
    /**
     * How the model writes a tool call in its reply: `prefix + {"name": ..., "arguments": {...}} + suffix` (Hermes' and
     * Qwen's <tool_call> tags; the object spaced or compact but never with newlines, so newlines the model writes
     * around it belong in the tags). With it, a reply that begins with the prefix, or (tool_choice "auto") has it
     * after text, is a call, and one that does not is text, so the model decides; left out, a chat with tools must
     * say which to call. `tools`: how the tools are shown to the model (a system message of their own, first: prefix,
     * each tool as sent a line, suffix); left out, they are not (say what they do in your own system message).
     */
    tool_call: z
      .strictObject({
        prefix: CallPrefix,
        suffix: Tag,
        tools: Wrap.extend({ prefix: z.string().min(1).max(256), suffix: z.string().max(256) }).optional(),
      })
      .optional(),
  })
  .refine(
    (t) => {
      const wrap = t.tool_call?.tools;
      const markers = [...Object.values(t.roles).flatMap((r) => (r ? [r.prefix, r.suffix] : [])), t.generation_prompt];
      return !wrap || !markers.some((k) => k !== "" && (wrap.prefix + wrap.suffix).includes(k));
    },
    {
      path: ["tool_call", "tools"],
      message: "the tools' wrap must not hold a role's markers: the tools' message would read as other messages",
    },
  )
  .refine(
    (t) =>
      !t.tool_call ||
      t.roles.assistant.suffix === "" ||
      !(t.tool_call.prefix + t.tool_call.suffix).includes(t.roles.assistant.suffix),
    {
      path: ["tool_call"],
      message:
        "a tool call's markers must not hold the assistant's suffix: the call would end the message when read back",
    },
  );
export type ChatTemplate = z.infer<typeof ChatTemplate>;

export const CHAT_ROLES = ["system", "user", "assistant", "tool"] as const;
export type ChatRole = (typeof CHAT_ROLES)[number];

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** The prompt a model continues: every message wrapped in its role's markers, then the generation prompt. */
export function renderChat(template: ChatTemplate, messages: readonly ChatMessage[]): string {
  const body = messages.map((m) => {
    const wrap = template.roles[m.role];
    if (!wrap) throw new Error(`the chat template has no ${m.role} role`);
    return wrap.prefix + m.content + wrap.suffix;
  });
  return body.join("") + template.generation_prompt;
}

/**
 * The messages a prompt rendered by renderChat holds (its generation prompt dropped), or null when the text
 * is not one. A session keeps each turn's prompt and reply (its history); the next turn reads them back.
 */
export function parseRenderedChat(template: ChatTemplate, prompt: string): ChatMessage[] | null {
  if (!prompt.endsWith(template.generation_prompt)) return null;
  let rest = prompt.slice(0, prompt.length - template.generation_prompt.length);
  const messages: ChatMessage[] = [];
  while (rest.length > 0) {
    const wrapOf = (r: ChatRole) => template.roles[r] ?? { prefix: "", suffix: "" };
    // The longest prefix that matches: one role's may begin another's (a tool turn written as a user turn and a tag).
    const role = CHAT_ROLES.filter((r) => wrapOf(r).prefix !== "" && rest.startsWith(wrapOf(r).prefix)).sort(
      (a, b) => wrapOf(b).prefix.length - wrapOf(a).prefix.length,
    )[0];
    if (!role) return null;
    const { prefix, suffix } = wrapOf(role);
    const end = suffix === "" ? -1 : rest.indexOf(suffix, prefix.length);
    if (end < 0) return null;
    messages.push({ role, content: rest.slice(prefix.length, end) });
    rest = rest.slice(end + suffix.length);
  }
  return messages;
}

/**
 * A conversation cut to fit `maxChars` once rendered (the documented rule): system messages stay; the oldest
 * other messages go first, one at a time, but the last message always stays. Null when even that is too long.
 */
export function trimChat(
  template: ChatTemplate,
  messages: readonly ChatMessage[],
  maxChars: number,
): ChatMessage[] | null {
  const kept = [...messages];
  for (;;) {
    if (renderChat(template, kept).length <= maxChars) return kept;
    const oldest = kept.findIndex((m, i) => m.role !== "system" && i < kept.length - 1);
    if (oldest < 0) return null;
    kept.splice(oldest, 1);
  }
}
