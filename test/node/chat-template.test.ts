// A chat template's rendering and its reading back (shared/protocol/chat-template.ts): a session's next turn reads
// its last prompt back into messages, so the two must agree, whatever prefixes the roles have.
import { describe, expect, it } from "vitest";
import { type ChatMessage, ChatTemplate, parseRenderedChat, renderChat } from "../../shared/protocol/chat-template.ts";

const wrap = (prefix: string, suffix = "<|im_end|>\n") => ({ prefix, suffix });

describe("a chat template", () => {
  const chat: ChatMessage[] = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Weather in Oslo?" },
    { role: "assistant", content: '{"name":"get_weather","arguments":{"city":"Oslo"}}' },
    { role: "tool", content: "-3 and snowing" },
  ];

  it("reads back what it rendered, a tool role included", () => {
    const template: ChatTemplate = {
      format: "edgeswarm-prefix-suffix-v1",
      roles: {
        system: wrap("<|system|>"),
        user: wrap("<|user|>"),
        assistant: wrap("<|assistant|>"),
        tool: wrap("<|tool|>"),
      },
      generation_prompt: "<|assistant|>",
    };
    expect(parseRenderedChat(template, renderChat(template, chat))).toEqual(chat);
  });

  it("reads a role whose prefix begins with another's as its own (the longest prefix that matches)", () => {
    // Qwen's way: a tool's result is a user turn that opens with a tag.
    const template: ChatTemplate = {
      format: "edgeswarm-prefix-suffix-v1",
      roles: {
        system: wrap("<|im_start|>system\n"),
        user: wrap("<|im_start|>user\n"),
        assistant: wrap("<|im_start|>assistant\n"),
        tool: wrap("<|im_start|>user\n<tool_response>\n", "\n</tool_response><|im_end|>\n"),
      },
      generation_prompt: "<|im_start|>assistant\n",
    };
    expect(parseRenderedChat(template, renderChat(template, chat))).toEqual(chat);
  });

  it("answers null for a text it did not render", () => {
    const template: ChatTemplate = {
      format: "edgeswarm-prefix-suffix-v1",
      roles: { system: wrap("<s>"), user: wrap("<u>"), assistant: wrap("<a>") },
      generation_prompt: "<a>",
    };
    expect(parseRenderedChat(template, "hello<a>")).toBeNull();
    expect(parseRenderedChat(template, "<u>no end<a>")).toBeNull();
  });

  it("takes tool-call tags the mask can write and a call that does not end the assistant's message", () => {
    const base = {
      format: "edgeswarm-prefix-suffix-v1",
      roles: { system: wrap("<s>"), user: wrap("<u>"), assistant: wrap("<a>") },
      generation_prompt: "<a>",
    };
    const problem = (tool_call: object) =>
      ChatTemplate.safeParse({ ...base, tool_call }).error?.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
    expect(
      problem({ prefix: "<tool_call>\n", suffix: "\n</tool_call>", tools: wrap("# Tools\n", "") }),
    ).toBeUndefined();
    expect(problem({ prefix: "【call】", suffix: "" })?.[0]).toMatch(/^tool_call\.prefix: must be printable ASCII/);
    // A tokenizer's clean-up of spaces (" ," reads ",") would move a tag holding these: refused, the tools' wrap not.
    expect(problem({ prefix: "<c>,", suffix: "" })?.[0]).toMatch(/^tool_call\.prefix: must not hold \. , ! \? or '/);
    expect(problem({ prefix: "<c>", suffix: "done." })?.[0]).toMatch(/^tool_call\.suffix: must not hold/);
    expect(problem({ prefix: "```json", suffix: "```" })?.[0]).toMatch(/^tool_call\.prefix: must not end in "n"/);
    expect(problem({ prefix: "```json\n", suffix: "\n```" })).toBeUndefined();
    expect(problem({ prefix: "<c>", suffix: "", tools: wrap("You may call these tools.\n", "") })).toBeUndefined();
    expect(problem({ prefix: "\n<tool_call>", suffix: "" })?.[0]).toMatch(
      /^tool_call\.prefix: must not begin with whitespace/,
    );
    expect(problem({ prefix: "<c>", suffix: "<|im_end|>\n" })?.[0]).toMatch(
      /^tool_call: .* must not hold the assistant's suffix/,
    );
    expect(problem({ prefix: "<c>", suffix: "", tools: wrap("", "") })?.[0]).toMatch(/^tool_call\.tools\.prefix/);
    expect(problem({ prefix: "<c>", suffix: "", tools: wrap("Tools:", "<|im_end|>\n") })?.[0]).toMatch(
      /^tool_call\.tools: .* must not hold a role's markers/,
    );
  });
});
