// The answers a swarm is checked against: every model of a registry loaded directly in onnxruntime-node
// (cpu) from the repo's model folders, by the same loader the workers use.
import { ModelRegistry } from "../../shared/index.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import type { LoadedModel } from "../../shared/runner/model-runner.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";

/** Short reviews, some positive, some negative: inputs whose answers the reference models give. */
export const REVIEW_TEXTS = [
  "I love this",
  "this is terrible",
  "what a wonderful day",
  "the service was awful and slow",
  "great value, would buy again",
  "not good at all",
  "absolutely fantastic experience",
  "I hate waiting",
];

export const BUNDLED_REGISTRY_URL = new URL("../../models/registry.json", import.meta.url);

export async function loadReferenceModels(registry: unknown): Promise<Map<string, LoadedModel>> {
  const factory = createOrtNodeFactory({ warn: () => {} });
  const models = new Map<string, LoadedModel>();
  for (const m of ModelRegistry.parse(registry).models) {
    models.set(
      m.name,
      await loadModel(m, factory, { registryUrl: BUNDLED_REGISTRY_URL, fetch: nodeFetch, devices: ["cpu"] }),
    );
  }
  return models;
}
