// scripts/gpu-check.sh without its 7-minute pack: the usage text, and `run` in a folder laid out as the pack
// is, whose steps hang as the real ones did (issue 16: a process that never ended kept the summary from
// ever printing). The script must end each step in bounded time and always print its summary and exit code.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SCRIPT = path.join(ROOT, "scripts/gpu-check.sh");

/** A folder shaped like the unpacked pack: the script, a "vitest" that never ends, a bench that writes its
 * table and then never ends (as bench:runners did in Node's exit), and the repository's tsx to run it. */
function packLike(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "edgeswarm-gpu-check-test-"));
  mkdirSync(path.join(dir, "scripts"));
  writeFileSync(path.join(dir, "scripts/gpu-check.sh"), readFileSync(SCRIPT), { mode: 0o755 });
  mkdirSync(path.join(dir, "node_modules/vitest"), { recursive: true });
  writeFileSync(
    path.join(dir, "node_modules/vitest/vitest.mjs"),
    'console.log("31 passed"); setInterval(() => {}, 1000);\n',
  );
  symlinkSync(path.join(ROOT, "node_modules/tsx"), path.join(dir, "node_modules/tsx"));
  mkdirSync(path.join(dir, "bench"));
  writeFileSync(
    path.join(dir, "bench/runners.ts"),
    [
      'import { mkdirSync, writeFileSync } from "node:fs";',
      'mkdirSync("bench/results", { recursive: true });',
      'writeFileSync("bench/results/runners.md", "| runner | items/s |\\n");',
      'console.log("| runner | items/s |");',
      "setInterval(() => {}, 1000);",
      "",
    ].join("\n"),
  );
  return dir;
}

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe("scripts/gpu-check.sh", () => {
  it("prints its usage for --help (exit 0) and for anything unknown (exit 2)", () => {
    const help = spawnSync(SCRIPT, ["--help"], { encoding: "utf8" });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/gpu-check\.sh pack/);
    expect(help.stdout).toMatch(/gpu-check\.sh run/);
    expect(help.stdout).toMatch(/GPU_CHECK_STEP_TIMEOUT/);
    const wrong = spawnSync(SCRIPT, ["bench"], { encoding: "utf8" });
    expect(wrong.status).toBe(2);
    expect(wrong.stderr).toMatch(/gpu-check\.sh run/);
  });

  it("ends a hung step at its timeout and a bench stuck after writing its table, then prints the summary", () => {
    const dir = packLike();
    dirs.push(dir);
    // Through bash rather than exec'd: a script file written a moment ago can fail to exec with ETXTBSY
    // while another test's child process, forked meanwhile, still holds its write descriptor.
    const run = spawnSync("bash", [path.join(dir, "scripts/gpu-check.sh"), "run"], {
      encoding: "utf8",
      // Generous: the bench's node has to start on a busy machine before the grace counts.
      env: { ...process.env, GPU_CHECK_STEP_TIMEOUT: "30", GPU_CHECK_EXIT_GRACE: "1", VK_ICD_FILENAMES: "/dev/null" },
      timeout: 180_000,
    });
    expect(run.error).toBeUndefined();
    expect(run.signal).toBeNull();
    expect(run.stdout, run.stderr).toContain("31 passed");
    expect(run.stdout).toMatch(/conformance: exit 124 in \d+ s \(timed out after 30 s\)/);
    expect(run.stdout).toMatch(/runners: exit 0 in \d+ s \(results written; its process had not exited 1 s later/);
    expect(run.stdout).toContain(`results in ${dir}/results (exit 1)`);
    expect(run.status).toBe(1);
    expect(readFileSync(path.join(dir, "results/runners.md"), "utf8")).toContain("| runner |");
    expect(readFileSync(path.join(dir, "results/summary.txt"), "utf8")).toMatch(/^conformance: .*\nrunners: /);
  }, 240_000);
});
