// `node --import tsx bench/generation-check.ts`: what checking a donor's generation costs against generating it
// again (issue 14, point 8): a batch of prompts generated on onnxruntime-node, then the same outputs checked as
// `verify` claims (one teacher-forced prefill, shared/tasks/text-generation-check.ts), greedy and sampled, on the
// bundled decoder and the benchmark decoder (models/bench/gpt-bench: `npm run build:models -- --bench`; skipped
// when absent). Prints a table; gates nothing.
import { existsSync, readFileSync } from "node:fs";
import os from "node:os";
import { ModelConfig, ModelRegistry } from "../shared/config/model-config.ts";
import type { GenerationOutput } from "../shared/protocol/generation.ts";
import { loadModel } from "../shared/runner/load-model.ts";
import { nodeFetch } from "../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../worker-gpu/runner/ort-node-session.ts";

const MODELS = [
  { name: "gpt-tiny", registry: new URL("../models/registry.json", import.meta.url) },
  { name: "gpt-bench", registry: new URL("../models/bench/registry.json", import.meta.url) },
];
const BATCH = Number(process.env.BENCH_BATCH ?? 8);
const NEW_TOKENS = Number(process.env.BENCH_NEW_TOKENS ?? 64);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const MODES = { greedy: { temperature: 0 }, sampled: { temperature: 1, top_k: 40, top_p: 0.95, seed: 3 } };

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

console.log(`batch ${BATCH}, max_new_tokens ${NEW_TOKENS}, median of ${ROUNDS}; ${os.cpus().length} cores`);
console.log("| model | sampling | tokens per item | generate (ms) | check (ms) | generate / check |");
console.log("| --- | --- | --- | --- | --- | --- |");
for (const { name, registry } of MODELS) {
  if (!existsSync(registry)) continue;
  const entry = ModelRegistry.parse(JSON.parse(readFileSync(registry, "utf8"))).models.find((m) => m.name === name);
  if (!entry) continue;
  const model = await loadModel(ModelConfig.parse(entry), createOrtNodeFactory(), {
    registryUrl: registry,
    fetch: nodeFetch,
    devices: ["cpu"],
  });
  for (const [mode, sampling] of Object.entries(MODES)) {
    const items = Array.from({ length: BATCH }, (_, i) => ({
      prompt: `the hotel room ${i} was`,
      params: { max_new_tokens: NEW_TOKENS, ...sampling },
    }));
    const outputs = (await model.run(items)).map((r) => ("output" in r ? (r.output as GenerationOutput) : null));
    const claims = items.map((item, i) => ({ ...item, verify: { ...outputs[i], tolerance: 1e-3 } }));
    const verdicts = await model.run(claims);
    if (!verdicts.every((v) => "output" in v && (v.output as { verdict?: string }).verdict === "agreed")) {
      throw new Error(`${name} ${mode}: an honest output was not agreed: ${JSON.stringify(verdicts)}`);
    }
    const time = async (inputs: unknown[]) => {
      const ms: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        const start = performance.now();
        await model.run(inputs);
        ms.push(performance.now() - start);
      }
      return median(ms);
    };
    const generate = await time(items);
    const check = await time(claims);
    const tokens = outputs.reduce((n, o) => n + (o?.tokens.length ?? 0), 0) / BATCH;
    console.log(
      `| ${name} | ${mode} | ${tokens.toFixed(1)} | ${generate.toFixed(1)} | ${check.toFixed(1)} | ${(generate / check).toFixed(1)}x |`,
    );
  }
  await model.dispose();
}
