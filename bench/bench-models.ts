// Which models a bench measures, read from its command line: the bundled ones by default, or any registry's
// (`--registry models/bench/registry.json --model minilm-l6-h384`, after `npm run build:models -- --bench`),
// with `--batch N` items per batch and `--seq N` tokens per item. Used by bench/runners.ts and bench/swarm.ts.
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { ModelConfig, ModelRegistry } from "../shared/config/model-config.ts";
import { BUNDLED_REGISTRY_URL, REVIEW_TEXTS } from "../test/support/reference-models.ts";
import { bundledSpec } from "../test/support/runner-cases.ts";

export interface BenchModels {
  /** The registry the specs' base_url are relative to. */
  registryUrl: URL;
  specs: ModelConfig[];
  /** One batch of inputs, `--batch` long (32 unless told). */
  batch: string[];
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
      batch: { type: "string", default: "32" },
      seq: { type: "string" },
    },
    strict: false,
  });
  const size = Number(values.batch);
  const seq = values.seq === undefined ? undefined : Number(values.seq);
  if (!Number.isInteger(size) || size < 1)
    throw new Error(`--batch wants a whole number of items, got ${values.batch}`);
  if (seq !== undefined && (!Number.isInteger(seq) || seq < 3)) throw new Error(`--seq wants at least 3, got ${seq}`);
  const registryUrl =
    typeof values.registry === "string" ? pathToFileURL(values.registry as string) : BUNDLED_REGISTRY_URL;
  const names = (values.model as string[] | undefined) ?? ["sentiment", "embedder"];
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
  const batch = Array.from({ length: size }, (_, i) => text(i));
  const command = `npm run ${script}${argv.length > 0 ? ` -- ${argv.join(" ")}` : ""}`;
  return { registryUrl, specs, batch, seq, command };
}
