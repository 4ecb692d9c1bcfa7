// Each runtime folder imports shared/ and packages, never another runtime folder: edge/ runs in workerd,
// client/ in browsers, worker-gpu/ in Node, and a file crossing over is what once left --runtime web
// without its runner in the worker image. shared/ imports none of them. Imports are read by TypeScript's
// own scanner (static, dynamic and type-only alike).
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const RUNTIMES = ["edge", "client", "worker-gpu"] as const;
const FOLDERS = [...RUNTIMES, "shared"] as const;

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.(ts|mts|mjs|js)$/.test(e.name) && !e.name.endsWith(".d.ts"))
    .map((e) => join(e.parentPath, e.name));
}

/** The top folder a relative import lands in, or undefined for packages. */
function target(file: string, specifier: string): string | undefined {
  if (!specifier.startsWith(".")) return undefined;
  return relative(ROOT, resolve(dirname(file), specifier)).split(sep)[0];
}

/** Every import of a runtime folder from outside it, as "from -> specifier". */
function crossings(folder: string): string[] {
  const found: string[] = [];
  for (const file of sources(folder)) {
    const { importedFiles } = ts.preProcessFile(readFileSync(file, "utf8"), true, true);
    for (const { fileName } of importedFiles) {
      const to = target(file, fileName);
      if (to !== folder && (RUNTIMES as readonly string[]).includes(to ?? "")) {
        found.push(`${relative(ROOT, file)} -> ${fileName}`);
      }
    }
  }
  return found;
}

describe("runtime folders meet only through shared/", () => {
  it.each(FOLDERS)("%s imports no runtime folder but its own", (folder) => {
    expect(sources(folder).length).toBeGreaterThan(0);
    expect(crossings(folder)).toEqual([]);
  });

  it("sees an import that crosses over", () => {
    const file = join(ROOT, "worker-gpu/web/example.ts");
    expect(target(file, "../../client/worker/donor-api.ts")).toBe("client");
    expect(target(file, "../../shared/runner/web-runner.ts")).toBe("shared");
    expect(target(file, "onnxruntime-web/webgpu")).toBeUndefined();
  });
});
