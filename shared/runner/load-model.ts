// loadModel: fetch a registry entry's files (hash-checked, cached), create a session on the best device
// the factory can give, and wrap it in the entry's task. Both workers call this: the Node worker with
// onnxruntime-node, the browser with onnxruntime-web; only the SessionFactory differs.
import type { ModelConfig } from "../config/model-config.ts";
import { createTask, isTextTask } from "../tasks/index.ts";
import { ModelJsonConfig, type TaskContext } from "../tasks/task-types.ts";
import { createTokenizer } from "../tasks/tokenizer.ts";
import { type FetchFn, fetchVerified, type ModelFileCache, ModelFileError, modelFolderUrl } from "./model-files.ts";
import type { LoadedModel, SessionFactory } from "./model-runner.ts";

export interface LoadModelOptions {
  /** The registry file's URL: relative base_url values (default "./<name>/") resolve against it. */
  registryUrl: string | URL;
  /** Defaults to the global fetch; Node callers pass one that also reads file:// URLs. */
  fetch?: FetchFn;
  cache?: ModelFileCache;
  /** Devices to try in order; defaults to the factory's preference table. */
  devices?: readonly string[];
  /** A download silent this long is tried again (default model-files' STALL_MS). */
  stallMs?: number;
}

type FileKey = "model" | "config" | "tokenizer" | "tokenizer_config";

export async function loadModel(
  spec: ModelConfig,
  factory: SessionFactory,
  opts: LoadModelOptions,
): Promise<LoadedModel> {
  const files = spec.files;
  if (!files) throw new ModelFileError("no_files", `model ${spec.name} lists no files to load`);
  const folder = modelFolderUrl(spec, opts.registryUrl);
  // text-generation reads a tokenizer too, but its items are objects, not the text tasks' strings.
  const text = isTextTask(spec.task) || spec.task === "text-generation";
  if (text && (!files.tokenizer || !files.tokenizer_config)) {
    throw new ModelFileError(
      "no_files",
      `model ${spec.name} is ${spec.task} and needs files.tokenizer and files.tokenizer_config`,
    );
  }

  const get = async (key: FileKey): Promise<Uint8Array | undefined> => {
    const ref = files[key];
    if (!ref) return undefined;
    const url = new URL(ref.path, folder).href;
    const label = `${spec.name}/${ref.path}`;
    return fetchVerified(url, ref.sha256, { fetch: opts.fetch, cache: opts.cache, label, stallMs: opts.stallMs });
  };
  // Tokenizer files are only worth fetching for text tasks; the four downloads run at once.
  const [model, config, tokenizer, tokenizerConfig] = await Promise.all([
    get("model") as Promise<Uint8Array>,
    get("config"),
    text ? get("tokenizer") : undefined,
    text ? get("tokenizer_config") : undefined,
  ]);

  const ctx: Omit<TaskContext, "session"> = {
    config: config ? parseConfig(spec.name, config) : undefined,
    tokenizer: tokenizer && tokenizerConfig ? buildTokenizer(spec.name, tokenizer, tokenizerConfig) : undefined,
    maxSequenceLength: spec.max_sequence_length,
    maxBatchSize: spec.max_batch_size,
  };
  const session = await factory.create(model, opts.devices ?? factory.devices);
  let task: ReturnType<typeof createTask>;
  try {
    task = createTask(spec.task, { ...ctx, session });
  } catch (error) {
    await session.release();
    throw new Error(`model ${spec.name}: ${(error as Error).message}`);
  }

  let disposed: Promise<void> | undefined;
  return {
    name: spec.name,
    task: spec.task,
    device: session.device,
    runtime: factory.runtime,
    run: (inputs, runOpts) => task.run(inputs, runOpts),
    dispose: () => {
      disposed ??= session.release();
      return disposed;
    },
  };
}

function parseJson(model: string, file: string, bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new Error(`model ${model}: ${file} is not valid JSON: ${(error as Error).message}`);
  }
}

function buildTokenizer(model: string, tokenizer: Uint8Array, tokenizerConfig: Uint8Array) {
  const json = parseJson(model, "tokenizer.json", tokenizer);
  const config = parseJson(model, "tokenizer_config.json", tokenizerConfig);
  try {
    return createTokenizer(json, config);
  } catch (error) {
    throw new Error(`model ${model}: tokenizer.json cannot be loaded: ${(error as Error).message}`);
  }
}

function parseConfig(model: string, bytes: Uint8Array): ModelJsonConfig {
  const parsed = ModelJsonConfig.safeParse(parseJson(model, "config.json", bytes));
  if (!parsed.success) throw new Error(`model ${model}: config.json: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}
