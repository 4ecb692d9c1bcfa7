// The bundled models are what scripts/build-models.ts makes: models/registry.json's hashes match the files on
// disk, and each graph really is a transformer encoder (masked self-attention, LayerNorm), read with onnx-proto.
// Rebuilding needs PyTorch, which CI lacks: EDGESWARM_REBUILD_MODELS=1 also retrains and compares the bytes.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import { afterAll, describe, expect, it } from "vitest";
import { ModelRegistry } from "../../shared/config/model-config.ts";

const root = join(import.meta.dirname, "..", "..");
const registry = ModelRegistry.parse(JSON.parse(readFileSync(join(root, "models", "registry.json"), "utf8")));
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");
const BUNDLED = ["sentiment", "embedder"] as const;

type Node = { opType?: string | null; input?: string[] | null; output?: string[] | null };

/** The nodes of a model's graph, with who produces and who reads each tensor. */
function graphOf(name: string) {
  const model = onnxProto.onnx.ModelProto.decode(readFileSync(join(root, "models", name, "onnx", "model.onnx")));
  const nodes = (model.graph?.node ?? []) as Node[];
  const producer = new Map<string, Node>();
  for (const n of nodes) for (const o of n.output ?? []) producer.set(o, n);
  const readers = (tensor: string) => nodes.filter((n) => n.input?.includes(tensor));
  /** Whether `tensor` is computed (through any chain of nodes) from the graph input `source`. */
  const dependsOn = (tensor: string, source: string, seen = new Set<string>()): boolean => {
    if (tensor === source) return true;
    if (seen.has(tensor)) return false;
    seen.add(tensor);
    return (producer.get(tensor)?.input ?? []).some((t) => dependsOn(t, source, seen));
  };
  return { model, nodes, producer, readers, dependsOn };
}

describe("bundled models", () => {
  it("lists every file of sentiment and embedder with a hash that matches the file on disk", () => {
    for (const name of BUNDLED) {
      const files = registry.models.find((m) => m.name === name)?.files;
      expect(files?.base_url).toBeUndefined();
      const refs = [files?.model, files?.config, files?.tokenizer, files?.tokenizer_config];
      expect(refs.every((r) => r !== undefined)).toBe(true);
      for (const ref of refs) {
        if (!ref) continue;
        expect(sha256(join(root, "models", name, ref.path)), `${name}/${ref.path}`).toBe(ref.sha256);
      }
    }
  });

  it("keeps each model under 2 MB", () => {
    for (const name of BUNDLED) {
      expect(readFileSync(join(root, "models", name, "onnx", "model.onnx")).length).toBeLessThan(2_000_000);
    }
  });

  it("has masked self-attention: MatMul -> Softmax over the key axis, with the attention mask added -> MatMul", () => {
    for (const name of BUNDLED) {
      const g = graphOf(name);
      const attention = g.nodes.filter((n) => {
        if (n.opType !== "Softmax") return false;
        const scores = g.producer.get(n.input?.[0] ?? "");
        // Scores + mask bias: one side Q·Kᵀ (a MatMul, maybe scaled), the other from attention_mask alone.
        const sides = scores?.input ?? [];
        const isMatMul = (t: string) => g.producer.get(t)?.opType === "MatMul";
        const fromMatMul = sides.some((t) => isMatMul(t) || (g.producer.get(t)?.input ?? []).some(isMatMul));
        const masked = sides.some((t) => g.dependsOn(t, "attention_mask") && !g.dependsOn(t, "input_ids"));
        const toMatMul = g.readers(n.output?.[0] ?? "").some((r) => r.opType === "MatMul");
        const lastAxis = (n as { attribute?: { name?: string; i?: unknown }[] }).attribute?.find(
          (a) => a.name === "axis",
        );
        return scores?.opType === "Add" && fromMatMul && masked && toMatMul && Number(lastAxis?.i ?? -1) === -1;
      });
      expect(attention.length, `${name}: masked attention blocks`).toBeGreaterThanOrEqual(2);
      const config = JSON.parse(readFileSync(join(root, "models", name, "config.json"), "utf8"));
      expect(attention).toHaveLength(config.num_hidden_layers);
    }
  });

  it("has LayerNormalization after the embeddings and twice in each layer, and GELU (Erf) feed-forwards", () => {
    for (const name of BUNDLED) {
      const g = graphOf(name);
      const config = JSON.parse(readFileSync(join(root, "models", name, "config.json"), "utf8"));
      expect(g.nodes.filter((n) => n.opType === "LayerNormalization")).toHaveLength(1 + 2 * config.num_hidden_layers);
      expect(g.nodes.filter((n) => n.opType === "Erf")).toHaveLength(config.num_hidden_layers);
      expect(g.model.graph?.input?.map((i) => i.name)).toEqual(["input_ids", "attention_mask"]);
    }
  });

  it("records held-out figures: the classifier's accuracy, the embedder's paraphrase ranking", () => {
    const sentiment = JSON.parse(readFileSync(join(root, "models", "sentiment", "config.json"), "utf8")).edgeswarm;
    const embedder = JSON.parse(readFileSync(join(root, "models", "embedder", "config.json"), "utf8")).edgeswarm;
    expect(sentiment.held_out_accuracy).toBeGreaterThan(0.5);
    // Settings were chosen on a validation split kept out of training, apart from the held-out set.
    expect(sentiment.validation_accuracy).toBeGreaterThan(0.5);
    expect(sentiment.training.validation.shipped).toMatch(/^(student|teacher \d)$/);
    expect(embedder.held_out_paraphrase_ranking).toBeGreaterThan(0.9);
  });
});

describe.runIf(process.env.EDGESWARM_REBUILD_MODELS === "1")(
  "rebuilding the bundled models (needs python3-torch)",
  () => {
    const out = mkdtempSync(join(tmpdir(), "edgeswarm-models-"));
    afterAll(() => rmSync(out, { recursive: true, force: true }));

    it("rebuilds byte-identical files and registry from the script", () => {
      const log = execFileSync(process.execPath, ["--import", "tsx", "scripts/build-models.ts", "--out", out], {
        cwd: root,
        encoding: "utf8",
      });
      expect(log).toMatch(/held-out accuracy \d+\.\d%/);
      expect(readFileSync(join(out, "registry.json"), "utf8")).toBe(
        readFileSync(join(root, "models", "registry.json"), "utf8"),
      );
      for (const model of registry.models) {
        for (const ref of Object.values(model.files ?? {})) {
          if (typeof ref === "string") continue;
          expect(sha256(join(out, model.name, ref.path)), `${model.name}/${ref.path}`).toBe(ref.sha256);
        }
      }
    }, 900_000);
  },
);
