// The text-generation task on WebGPU: onnxruntime-web's WebGPU build in a --runtime web thread on Dawn
// (SwiftShader's Vulkan here, a GPU where there is one) decodes the same greedy tokens as onnxruntime-node
// on the CPU, the KV cache going through GPU kernels. Slow on SwiftShader, so one short batch.
import { readFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { ModelConfig, ModelRegistry } from "../../shared/config/model-config.ts";
import type { GenerationOutput } from "../../shared/protocol/generation.ts";
import type { ItemResult } from "../../shared/protocol/worker.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";
import { WebThreadPool } from "../../worker-gpu/web/thread-pool.ts";
import { useSoftwareVulkan } from "../support/runner-cases.ts";

const registryUrl = new URL("../../models/registry.json", import.meta.url);
const registry = ModelRegistry.parse(JSON.parse(readFileSync(registryUrl, "utf8")));
const spec = ModelConfig.parse(registry.models.find((m) => m.name === "gpt-tiny"));
const tokensOf = (results: readonly ItemResult[]) =>
  results.map((r) => ("output" in r ? (r.output as GenerationOutput).tokens : r.error.message));

let pool: WebThreadPool | undefined;
afterAll(async () => pool?.close(), 60_000);

describe("text-generation on Dawn's WebGPU", () => {
  it("decodes the same greedy tokens as onnxruntime-node on the CPU", async () => {
    useSoftwareVulkan();
    pool = await WebThreadPool.start(
      { size: 1, device: "webgpu", runTimeoutMs: 600_000, registryUrl: registryUrl.href, log: () => {} },
      [spec],
    );
    const model = pool.models()[0];
    expect(model?.device).toBe("webgpu");
    const items = ["the film", "<|user|>how was the trip?<|end|><|assistant|>"].map((prompt) => ({
      prompt,
      params: { max_new_tokens: 10 },
    }));
    const node = await loadModel(spec, createOrtNodeFactory(), { registryUrl, fetch: nodeFetch, devices: ["cpu"] });
    const expected = tokensOf(await node.run(items));
    await node.dispose();
    expect(tokensOf((await model?.run(items)) ?? [])).toEqual(expected);
  }, 600_000);
});
