// Which models a bench measures, read from its command line: the bundled ones by default, or any registry's
// (`--registry models/bench/registry.json --model minilm-l6-h384`, after `npm run build:models -- --bench`),
// with `--batch N[,N…]` items per batch and `--seq N` tokens per item. `--bench` is the benchmark-size encoder
// as the README quotes it: fp32 and int8, seq 128, batches of 8 and 32. Used by bench/runners.ts.
import { readFileSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { ModelConfig, ModelRegistry } from "../shared/config/model-config.ts";
import { BUNDLED_REGISTRY_URL, REVIEW_TEXTS } from "../test/support/reference-models.ts";
import { bundledSpec } from "../test/support/runner-cases.ts";

/** Where `npm run build:models -- --bench` writes the benchmark models (git-ignored). */
const BENCH_REGISTRY = fileURLToPath(new URL("../models/bench/registry.json", import.meta.url));

export interface BenchModels {
  /** The registry the specs' base_url are relative to. */
  registryUrl: URL;
  specs: ModelConfig[];
  /** One batch of inputs per size `--batch` names (32 unless told), smallest first. */
  batches: string[][];
  /** The benchmark-size encoder's preset (`--bench`), or models named by hand. */
  preset: boolean;
  /** Tokens per item when `--seq` was given (texts long enough to be truncated there), else undefined. */
  seq: number | undefined;
  /** How the command was run, for the results file. */
  command: string;
}

export function benchModels(script: string, argv = process.argv.slice(2)): BenchModels {
  const { values } = parseArgs({
    args: argv,
    options: {
      registry: { type: "string" },
      model: { type: "string", multiple: true },
      batch: { type: "string" },
      seq: { type: "string" },
      bench: { type: "boolean" },
    },
    strict: false,
  });
  const preset = values.bench === true;
  const batchArg = String(values.batch ?? (preset ? "8,32" : "32"));
  const sizes = batchArg.split(",").map(Number);
  const seqArg = values.seq ?? (preset ? "128" : undefined);
  const seq = seqArg === undefined ? undefined : Number(seqArg);
  if (sizes.some((n) => !Number.isInteger(n) || n < 1))
    throw new Error(`--batch wants whole numbers of items, comma-separated, got ${batchArg}`);
  if (seq !== undefined && (!Number.isInteger(seq) || seq < 3)) throw new Error(`--seq wants at least 3, got ${seq}`);
  const registryArg = values.registry ?? (preset ? BENCH_REGISTRY : undefined);
  const registryUrl = typeof registryArg === "string" ? pathToFileURL(registryArg) : BUNDLED_REGISTRY_URL;
  const names =
    (values.model as string[] | undefined) ??
    (preset ? ["minilm-l6-h384", "minilm-l6-h384-int8"] : ["sentiment", "embedder"]);
  const registry = ModelRegistry.parse(JSON.parse(readFileSync(registryUrl, "utf8")));
  const specs = names.map((name) => {
    const entry =
      registryUrl === BUNDLED_REGISTRY_URL ? bundledSpec(name) : registry.models.find((m) => m.name === name);
    if (!entry) throw new Error(`${registryUrl.pathname} has no model named ${name}`);
    return ModelConfig.parse(seq === undefined ? entry : { ...entry, max_sequence_length: seq });
  });
  // With --seq every review is lengthened well past it (about one token a word), so truncation makes each
  // item exactly seq tokens, [CLS] and [SEP] included.
  const text = (i: number) => {
    const review = `${REVIEW_TEXTS[i % REVIEW_TEXTS.length]} (${i})`;
    return seq === undefined ? review : `${review} ${"and the rest was much the same ".repeat(Math.ceil(seq / 6))}`;
  };
  const batches = [...sizes].sort((a, b) => a - b).map((size) => Array.from({ length: size }, (_, i) => text(i)));
  const command = `npm run ${script}${argv.length > 0 ? ` -- ${argv.join(" ")}` : ""}`;
  return { registryUrl, specs, batches, preset, seq, command };
}
