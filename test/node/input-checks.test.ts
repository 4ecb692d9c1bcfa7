// The checks the edge runs on a call's inputs before queueing (shared/tasks/input-checks.ts): the same
// parsers as the workers' tasks, which inputs they refuse and why, and that the edge can import them
// without a tokenizer or a runtime coming along (workerd bundles whatever they import).
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { inputProblems, textProblems } from "../../shared/tasks/input-checks.ts";
import { CHARS_PER_TOKEN, MAX_TEXT_CHARS, maxTextChars, parseText } from "../../shared/tasks/text-item.ts";

const FILES = { model: { path: "onnx/model.onnx", sha256: "0".repeat(64) } };
const text = { task: "text-classification", files: FILES, max_sequence_length: 128 };

describe("text inputs", () => {
  it("takes non-empty strings up to max_sequence_length * 64 characters, at most 100,000", () => {
    expect(maxTextChars(128)).toBe(128 * CHARS_PER_TOKEN);
    expect(maxTextChars(8192)).toBe(MAX_TEXT_CHARS);
    expect(parseText("x".repeat(8192), 128)).toEqual({ value: "x".repeat(8192) });
    expect(parseText("x".repeat(8193), 128)).toEqual({
      error: "input is 8193 characters; the most is 8192 (the model reads its first 128 tokens): shorten or split it",
    });
    expect(parseText(" fine ", 1)).toEqual({ value: " fine " });
  });

  it("names each refused input by index, with what to fix", () => {
    const problems = inputProblems(text, ["fine", "", " \n", 7, null, { text: "x" }, ["x"], true]);
    expect(problems).toEqual([
      { index: 1, message: "input must be a non-empty string, got an empty string" },
      { index: 2, message: "input must be a non-empty string, got only whitespace" },
      { index: 3, message: "input must be a non-empty string, got a number" },
      { index: 4, message: "input must be a non-empty string, got null" },
      { index: 5, message: "input must be a non-empty string, got an object" },
      { index: 6, message: "input must be a non-empty string, got an array" },
      { index: 7, message: "input must be a non-empty string, got a boolean" },
    ]);
    expect(inputProblems({ ...text, task: "feature-extraction" }, [""])).toHaveLength(1);
    expect(textProblems(["ok", 1], 128)).toEqual([{ index: 1, message: expect.stringMatching(/got a number/) }]);
  });
});

describe("tensor inputs", () => {
  const tensorModel = { task: "tensor", files: FILES, max_sequence_length: 128 };
  const x = { name: "x", shape: [1, 2], datatype: "FP32", data: [1, 2] };

  it("checks what a tensor says of itself: fields, shape against data, values against datatype", () => {
    const problems = inputProblems(tensorModel, [
      x,
      [x, { ...x, name: "y" }],
      { ...x, shape: [2, 2] },
      { ...x, datatype: "UINT8", data: [1, -1] },
      { ...x, datatype: "BOOL", data: [1, 0] },
      { ...x, datatype: "FP16" },
      { ...x, data: [[1, 2]] },
      { ...x, shape: [1, 1], data: [[1]] },
      [],
      "x",
    ]);
    expect(problems.map((p) => p.index)).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
    expect(problems.map((p) => p.message)).toEqual([
      "tensor x: shape [2, 2] needs 4 values, data has 2",
      "tensor x: UINT8 data must be integers in [0, 255]",
      "tensor x: BOOL data must be true/false",
      expect.stringMatching(/^tensor 0 is not \{name, shape, datatype, data\} with flat data: datatype/),
      "tensor x: shape [1, 2] needs 2 values, data has 1",
      "tensor x: data must be flat, in row-major order, not nested",
      "input must be a tensor {name, shape, datatype, data} or a non-empty list of them",
      "tensor 0 is not {name, shape, datatype, data} with flat data: got a string",
    ]);
  });

  it("leaves what only the model knows (input names, its datatypes) to the worker", () => {
    expect(inputProblems(tensorModel, [{ ...x, name: "not-an-input", datatype: "INT64" }])).toEqual([]);
  });
});

it("takes any JSON for a model without files (its workers bring their own) or of a task it does not know", () => {
  expect(inputProblems({ ...text, files: undefined }, ["", null, 7])).toEqual([]);
  expect(inputProblems({ ...text, task: "speech" }, ["", null])).toEqual([]);
});

it("imports nothing but zod and its own pure modules, so workerd bundles no tokenizer or runtime", () => {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const visit = (url: URL) => {
    if (seen.has(url.href)) return;
    seen.add(url.href);
    const source = readFileSync(url, "utf8");
    for (const [, kind, from] of source.matchAll(/^import (type )?[^;]*? from "([^"]+)";/gms)) {
      if (kind) continue; // erased at build time
      if (from?.startsWith(".")) visit(new URL(from, url));
      else packages.add(from as string);
    }
  };
  visit(new URL("../../shared/tasks/input-checks.ts", import.meta.url));
  const files = [...seen].map((u) => u.split("/shared/")[1]);
  expect(files).toEqual(
    expect.arrayContaining(["tasks/text-item.ts", "tasks/tensor-inputs.ts", "tasks/task-types.ts"]),
  );
  expect(files).not.toContain("tasks/tokenizer.ts");
  expect([...packages]).toEqual(["zod"]);
});
