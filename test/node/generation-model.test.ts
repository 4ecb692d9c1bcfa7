// The bundled decoder (models/gpt-tiny) is what models/build/decoder-model.ts makes: registry hashes match the
// files, the graph is a GPT-style decoder (Softmax over Where-masked Q·Kᵀ scores, LayerNorm, GELU) with the
// Optimum KV-cache inputs and outputs, attention is causal and masked in fact (run with onnxruntime-node), the
// tokenizer round-trips, and the chat template and end-of-text ids in config.json agree with the tokenizer.
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { ModelRegistry } from "../../shared/config/model-config.ts";
import { createTokenizer } from "../../shared/tasks/tokenizer.ts";

const root = join(import.meta.dirname, "..", "..");
const folder = join(root, "models", "gpt-tiny");
const registry = ModelRegistry.parse(JSON.parse(readFileSync(join(root, "models", "registry.json"), "utf8")));
const entry = registry.models.find((m) => m.name === "gpt-tiny");
const json = (path: string) => JSON.parse(readFileSync(join(folder, path), "utf8"));
const config = json("config.json");
const layers: number = config.n_layer;
const kvNames = (prefix: string) =>
  Array.from({ length: layers }, (_, i) => [`${prefix}.${i}.key`, `${prefix}.${i}.value`]).flat();

describe("the bundled decoder", () => {
  it("is a text-generation entry whose files match their hashes, a few MB in all", () => {
    expect(entry?.task).toBe("text-generation");
    expect(entry?.max_sequence_length).toBe(config.n_positions);
    for (const ref of Object.values(entry?.files ?? {})) {
      if (typeof ref !== "object") continue;
      expect(
        createHash("sha256")
          .update(readFileSync(join(folder, ref.path)))
          .digest("hex"),
        ref.path,
      ).toBe(ref.sha256);
    }
    expect(readFileSync(join(folder, "onnx", "model.onnx")).length).toBeLessThan(8_000_000);
    expect(json("generation_config.json").eos_token_id).toEqual(config.eos_token_id);
    // The edge renders chats from the registry's copy of the template.
    expect(entry?.chat_template).toEqual(config.edgeswarm.chat_template);
  });

  it("has the KV-cache inputs and outputs, and per layer a Softmax over Where-masked scores, LayerNorms and GELU", () => {
    const model = onnxProto.onnx.ModelProto.decode(readFileSync(join(folder, "onnx", "model.onnx")));
    const graph = model.graph;
    expect(graph?.input?.map((i) => i.name)).toEqual([
      "input_ids",
      "attention_mask",
      "position_ids",
      ...kvNames("past_key_values"),
    ]);
    expect(graph?.output?.map((o) => o.name)).toEqual(["logits", ...kvNames("present")]);
    const nodes = (graph?.node ?? []) as { opType?: string | null; input?: string[] | null }[];
    const producer = new Map<string, { opType?: string | null }>();
    for (const n of nodes) for (const o of (n as { output?: string[] }).output ?? []) producer.set(o, n);
    const masked = nodes.filter((n) => n.opType === "Softmax" && producer.get(n.input?.[0] ?? "")?.opType === "Where");
    expect(masked).toHaveLength(layers);
    expect(nodes.filter((n) => n.opType === "LayerNormalization")).toHaveLength(2 * layers + 1);
    expect(nodes.filter((n) => n.opType === "Erf")).toHaveLength(layers);
  });

  it("attends causally and only to unmasked keys, and the cache gives what a full pass gives", async () => {
    const session = await ort.InferenceSession.create(join(folder, "onnx", "model.onnx"));
    const heads: number = config.n_head;
    const i64 = (v: number[], dims: number[]) => new ort.Tensor("int64", BigInt64Array.from(v.map(BigInt)), dims);
    const run = async (ids: number[], mask: number[], positions: number[], past?: Record<string, ort.Tensor>) => {
      const pastLength = mask.length - ids.length;
      const feeds: Record<string, ort.Tensor> = {
        input_ids: i64(ids, [1, ids.length]),
        attention_mask: i64(mask, [1, mask.length]),
        position_ids: i64(positions, [1, ids.length]),
      };
      for (const [i, name] of kvNames("past_key_values").entries()) {
        const present = past?.[kvNames("present")[i] as string];
        feeds[name] =
          present ?? new ort.Tensor("float32", new Float32Array(0), [1, heads, pastLength, config.n_embd / heads]);
      }
      return session.run(feeds);
    };
    const vocab: number = config.vocab_size;
    const row = (out: Record<string, ort.Tensor>, at: number) =>
      Array.from(((out.logits as ort.Tensor).data as Float32Array).subarray(at * vocab, (at + 1) * vocab));
    const close = (a: number[], b: number[]) =>
      expect(Math.max(...a.map((x, i) => Math.abs(x - (b[i] as number))))).toBeLessThan(1e-4);
    const full = await run([10, 20, 30, 40], [1, 1, 1, 1], [0, 1, 2, 3]);
    // Causal: changing the last token changes nothing before it.
    close(row(await run([10, 20, 30, 99], [1, 1, 1, 1], [0, 1, 2, 3]), 2), row(full, 2));
    // Masked: a left pad (mask 0) changes nothing for the real tokens.
    close(row(await run([7, 10, 20, 30, 40], [0, 1, 1, 1, 1], [0, 0, 1, 2, 3]), 4), row(full, 3));
    // Cached: a prefill of three, then one step, equals the full pass.
    const prefill = await run([10, 20, 30], [1, 1, 1], [0, 1, 2]);
    close(row(await run([40], [1, 1, 1, 1], [3], prefill), 0), row(full, 3));
    await session.release();
  });

  it("has a byte-level BPE tokenizer that round-trips text and knows the chat template's tokens", () => {
    const tokenizer = createTokenizer(json("tokenizer.json"), json("tokenizer_config.json"));
    const text = "the pizza was délicious, 100% — really!";
    const ids = tokenizer(text, { return_tensor: false }).input_ids as number[];
    expect(tokenizer.decode(ids)).toBe(text);
    expect(tokenizer.decode([])).toBe("");
    const template = config.edgeswarm.chat_template;
    const marker = tokenizer(template.roles.user.prefix, { return_tensor: false }).input_ids as number[];
    expect(marker).toHaveLength(1);
    expect(config.eos_token_id).toContain(
      tokenizer(template.roles.assistant.suffix, { return_tensor: false }).input_ids?.[0],
    );
  });
});
