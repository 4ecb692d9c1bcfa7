// The bundled models are what scripts/build-models.ts makes: a fresh run into a temporary folder gives the
// same bytes as the files in models/, and models/registry.json's hashes match the files on disk.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ModelRegistry } from "../../shared/config/model-config.ts";

const root = join(import.meta.dirname, "..", "..");
const registry = ModelRegistry.parse(JSON.parse(readFileSync(join(root, "models", "registry.json"), "utf8")));
const sha256 = (path: string) => createHash("sha256").update(readFileSync(path)).digest("hex");

describe("bundled models", () => {
  const out = mkdtempSync(join(tmpdir(), "edgeswarm-models-"));
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it("lists every file of sentiment and embedder with a hash that matches the file on disk", () => {
    for (const name of ["sentiment", "embedder"]) {
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

  it("keeps each model well under 2 MB", () => {
    for (const name of ["sentiment", "embedder"]) {
      expect(readFileSync(join(root, "models", name, "onnx", "model.onnx")).length).toBeLessThan(1_000_000);
    }
  });

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
  }, 60_000);
});
