// scripts/build-client.ts writes only what changed: a coordinator's `wrangler dev` watches dist/public, and
// any write there reloads its worker, answering the POSTs in flight with 503 "Your worker restarted
// mid-request". npm start (and its test) run the build again beside other suites' running coordinators.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { buildClient, syncTree } from "../../scripts/build-client.ts";

const PUBLIC = fileURLToPath(new URL("../../dist/public/", import.meta.url));
const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), "edgeswarm-sync-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function put(dir: string, file: string, text: string) {
  mkdirSync(join(dir, file, ".."), { recursive: true });
  writeFileSync(join(dir, file), text);
}

describe("syncTree", () => {
  it("copies new and changed files, removes stale ones, keeps what it is told to, and leaves equal files alone", () => {
    const [from, to] = [tempDir(), tempDir()];
    put(from, "same.js", "a");
    put(from, "changed/file.js", "new");
    put(from, "added/deep/file.js", "b");
    put(to, "same.js", "a");
    put(to, "changed/file.js", "old");
    put(to, "stale.js", "gone");
    put(to, "ort/big.wasm.gz", "kept");
    const sameBefore = statSync(join(to, "same.js")).mtimeMs;

    expect(syncTree(from, to, new Set(["ort/big.wasm.gz"]))).toBe(3);
    expect(readFileSync(join(to, "changed/file.js"), "utf8")).toBe("new");
    expect(readFileSync(join(to, "added/deep/file.js"), "utf8")).toBe("b");
    expect(() => statSync(join(to, "stale.js"))).toThrow();
    expect(readFileSync(join(to, "ort/big.wasm.gz"), "utf8")).toBe("kept");
    expect(statSync(join(to, "same.js")).mtimeMs).toBe(sameBefore);
    expect(syncTree(from, to, new Set(["ort/big.wasm.gz"]))).toBe(0);
  });
});

describe("buildClient", () => {
  it("run again on a built tree writes nothing into dist/public", async () => {
    await buildClient();
    const worker = join(PUBLIC, "edgeswarm/donor-worker.js");
    const before = statSync(worker).mtimeMs;
    expect(await buildClient()).toBe(0);
    expect(statSync(worker).mtimeMs).toBe(before);
  }, 120_000);
});
