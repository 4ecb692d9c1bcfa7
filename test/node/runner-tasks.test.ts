// The shared tasks against scripted sessions, for what the bundled models cannot show: models that take
// token_type_ids or only return token vectors, fixed batch axes, mixed shapes, and runs that fail.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import type { InferenceSession, TensorMetadata, WireTensor } from "../../shared/runner/model-runner.ts";
import { createTask } from "../../shared/tasks/index.ts";
import { createTokenizer } from "../../shared/tasks/tokenizer.ts";

const read = (file: string) =>
  JSON.parse(readFileSync(new URL(`../../models/sentiment/${file}`, import.meta.url), "utf8"));
const tokenizer = createTokenizer(read("tokenizer.json"), read("tokenizer_config.json"));

type Run = (feeds: Record<string, WireTensor>) => Record<string, WireTensor>;

/** A session whose outputs are computed by `run` in plain TS, recording every call's feeds. */
function scripted(inputs: TensorMetadata[], outputNames: string[], run: Run) {
  const calls: Record<string, WireTensor>[] = [];
  const session: InferenceSession = {
    device: "cpu",
    inputNames: inputs.map((m) => m.name),
    outputNames,
    inputMetadata: inputs,
    async run(feeds) {
      calls.push(feeds);
      return run(feeds);
    },
    async release() {},
  };
  return { session, calls };
}

const output = (r: ItemResult | undefined) => (r && "output" in r ? r.output : undefined) as never;
const errorOf = (r: ItemResult | undefined) => (r && "error" in r ? r.error : undefined);
const ids = (texts: string[]) => texts.map((t) => tokenizer(t, { return_tensor: false }).input_ids as number[]);

describe("text tasks", () => {
  const textInputs = ["input_ids", "attention_mask", "token_type_ids"].map((name) => ({
    name,
    datatype: "INT64" as const,
    shape: ["batch", "sequence"],
  }));

  it("feeds token_type_ids when the model declares it, padded to the longest text", async () => {
    const { session, calls } = scripted(textInputs, ["logits"], (feeds) => {
      const batch = feeds.input_ids?.shape[0] ?? 0;
      return { logits: { name: "logits", shape: [batch, 3], datatype: "FP32", data: new Array(batch * 3).fill(0) } };
    });
    const task = createTask("text-classification", { session, tokenizer, maxSequenceLength: 128 });
    const results = await task.run(["I love this", "the pizza was delicious"]);
    expect(calls).toHaveLength(1);
    const [short, long] = ids(["I love this", "the pizza was delicious"]) as [number[], number[]];
    const feeds = calls[0] as Record<string, WireTensor>;
    expect(feeds.input_ids).toEqual({
      name: "input_ids",
      shape: [2, long.length],
      datatype: "INT64",
      data: [...short, ...new Array(long.length - short.length).fill(0), ...long],
    });
    expect(feeds.attention_mask?.data).toEqual([
      ...short.map(() => 1),
      ...new Array(long.length - short.length).fill(0),
      ...long.map(() => 1),
    ]);
    expect(feeds.token_type_ids?.data).toEqual(new Array(2 * long.length).fill(0));
    // No id2label in a config: labels are named like transformers.js names them.
    expect(output(results[0])).toEqual([0, 1, 2].map((i) => ({ label: `LABEL_${i}`, score: 1 / 3 })));
  });

  it("mean-pools and normalises token vectors when the model has no sentence_embedding", async () => {
    // Token vector = [id, 1]: the masked mean of a row is [mean id, 1]; padding ids (0) must not count.
    const { session } = scripted(textInputs.slice(0, 2), ["last_hidden_state"], (feeds) => {
      const [batch = 0, seq = 0] = feeds.input_ids?.shape ?? [];
      const data = (feeds.input_ids as WireTensor).data.flatMap((id) => [id as number, 1]);
      return { last_hidden_state: { name: "last_hidden_state", shape: [batch, seq, 2], datatype: "FP32", data } };
    });
    const task = createTask("feature-extraction", { session, tokenizer, maxSequenceLength: 128 });
    const texts = ["I love this", "the pizza was delicious and the crust was perfect"];
    const results = await task.run(texts);
    for (const [i, row] of ids(texts).entries()) {
      const mean = row.reduce((a, b) => a + b, 0) / row.length;
      const norm = Math.hypot(mean, 1);
      const [x, y] = output(results[i]) as [number, number];
      expect(x).toBeCloseTo(mean / norm, 10);
      expect(y).toBeCloseTo(1 / norm, 10);
    }
  });

  it("refuses to build without a tokenizer, or for inputs a tokenizer cannot make", () => {
    const { session } = scripted(textInputs, ["logits"], () => ({}));
    expect(() => createTask("text-classification", { session, maxSequenceLength: 8 })).toThrow(/needs a tokenizer/);
    const odd = scripted([{ name: "pixel_values", datatype: "FP32", shape: [1, 3] }], ["y"], () => ({}));
    expect(() => createTask("feature-extraction", { session: odd.session, tokenizer, maxSequenceLength: 8 })).toThrow(
      /also wants pixel_values/,
    );
    expect(() => createTask("summarization", { session, maxSequenceLength: 8 })).toThrow(/unknown task summarization/);
  });
});

describe("tensor task", () => {
  const doubling = (inputs: TensorMetadata[], fail?: (values: number[]) => boolean) =>
    scripted(inputs, ["y"], (feeds) => {
      const x = feeds.x as WireTensor;
      if (fail?.(x.data as number[])) throw new Error("the graph cannot take a negative value");
      return { y: { ...x, name: "y", data: (x.data as number[]).map((v) => v * 2) } };
    });
  const x = (data: number[], shape = [1, data.length]) => ({ name: "x", shape, datatype: "FP32", data });

  it("groups items by shape: one run per shape, results back in order", async () => {
    const { session, calls } = doubling([{ name: "x", datatype: "FP32", shape: ["batch", "n"] }]);
    const task = createTask("tensor", { session, maxSequenceLength: 8 });
    const results = await task.run([x([1, 2]), x([3]), x([4, 5]), x([6])]);
    expect(calls.map((c) => c.x?.shape)).toEqual([
      [2, 2],
      [2, 1],
    ]);
    expect(results.map((r) => (output(r) as WireTensor[])[0]?.data)).toEqual([[2, 4], [6], [8, 10], [12]]);
  });

  it("runs items alone when the model's batch axis is fixed", async () => {
    const { session, calls } = doubling([{ name: "x", datatype: "FP32", shape: [1, 2] }]);
    const task = createTask("tensor", { session, maxSequenceLength: 8 });
    const results = await task.run([x([1, 2]), x([3, 4])]);
    expect(calls).toHaveLength(2);
    expect(results.map((r) => (output(r) as WireTensor[])[0]?.data)).toEqual([
      [2, 4],
      [6, 8],
    ]);
  });

  it("isolates an item the model fails on at run time; a failure of every item is the model's, and throws", async () => {
    const { session, calls } = doubling([{ name: "x", datatype: "FP32", shape: ["batch", 2] }], (v) =>
      v.some((n) => n < 0),
    );
    const task = createTask("tensor", { session, maxSequenceLength: 8 });
    const results = await task.run([x([1, 2]), x([-1, 2]), x([3, 4])]);
    expect(calls).toHaveLength(4);
    expect((output(results[0]) as WireTensor[])[0]?.data).toEqual([2, 4]);
    expect(errorOf(results[1])?.message).toMatch(/could not run this input: the graph cannot take a negative value/);
    expect((output(results[2]) as WireTensor[])[0]?.data).toEqual([6, 8]);
    await expect(task.run([x([-1, 0]), x([0, -1])])).rejects.toThrow(/negative/);
    await expect(task.run([x([-1, 0])])).rejects.toThrow(/negative/);
  });

  it("answers items one by one when an output has no batch axis to split them by", async () => {
    const { session } = scripted([{ name: "x", datatype: "FP32", shape: ["batch", 2] }], ["total"], (feeds) => ({
      total: {
        name: "total",
        shape: [1],
        datatype: "FP32",
        data: [((feeds.x as WireTensor).data as number[]).reduce((a, b) => a + b)],
      },
    }));
    const task = createTask("tensor", { session, maxSequenceLength: 8 });
    expect(output((await task.run([x([1, 2])]))[0])).toEqual([
      { name: "total", shape: [1], datatype: "FP32", data: [3] },
    ]);
    // Two items: the batched run cannot be split and each alone succeeds, so each gets its own answer.
    const results = await task.run([x([1, 2]), x([3, 4])]);
    expect(results.map((r) => (output(r) as WireTensor[])[0]?.data)).toEqual([[3], [7]]);
  });
});
