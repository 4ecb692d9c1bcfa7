// A fresh clone's npm: every config key in .npmrc is one npm knows (npm 11 warns "Unknown project
// config" on every command otherwise), every dependency with an install script is allowed or denied in
// package.json's allowScripts (else each install lists it), and onnxruntime-node's script, which would
// download the CUDA provider from NuGet, is denied: the GPU image runs it by hand (worker-gpu/Dockerfile).
// The check that `npm install` then leaves the tree clean needs the registry; README says how to run it.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";

const ROOT = new URL("../../", import.meta.url);
const json = (path: string) => JSON.parse(readFileSync(new URL(path, ROOT), "utf8"));

describe("npm on a fresh clone", () => {
  it("reads .npmrc without a warning", () => {
    const npm = spawnSync("npm", ["config", "get", "engine-strict"], { cwd: ROOT, encoding: "utf8" });
    expect(npm.status, npm.stderr).toBe(0);
    expect(npm.stdout.trim()).toBe("true");
    expect(npm.stderr).not.toMatch(/warn/i);
  });

  it("names every dependency that has an install script in allowScripts", () => {
    const allow = json("package.json").allowScripts as Record<string, boolean>;
    const lock = json("package-lock.json") as { packages: Record<string, { hasInstallScript?: boolean }> };
    const withScripts = Object.entries(lock.packages)
      .filter(([, p]) => p.hasInstallScript)
      .map(([path]) => path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length));
    expect(withScripts).toContain("onnxruntime-node");
    expect(withScripts.filter((name) => !(name in allow))).toEqual([]);
  });

  it("denies onnxruntime-node's CUDA download, and its CPU runtime is bundled without it", () => {
    expect(json("package.json").allowScripts["onnxruntime-node"]).toBe(false);
    const cpu = execFileSync(
      process.execPath,
      ["-e", `require("onnxruntime-node").listSupportedBackends().forEach((b) => console.log(b.name))`],
      { cwd: ROOT, encoding: "utf8" },
    );
    expect(cpu.split("\n")).toContain("cpu");
  });
});
