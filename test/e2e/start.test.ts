// `npm start` for real (scripts/start.ts: wrangler dev and a worker process) with --port, --site-origin and
// --auth required on free ports: a page on the extra origin gets a donor token for site key "demo", another
// origin gets 403, the printed keys work; --help and bad flags answer without starting anything.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../scripts/lib/wrangler-dev.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const START = [process.execPath, "--import", "tsx", "scripts/start.ts"] as const;

const startSync = (...args: string[]) =>
  spawnSync(START[0], [...START.slice(1), ...args], { cwd: ROOT, encoding: "utf8", timeout: 60_000 });

describe("npm start's options", () => {
  it("prints usage for --help and exits 0", () => {
    const run = startSync("--help");
    expect(run.status).toBe(0);
    expect(run.stdout).toContain("--site-origin ORIGIN");
    expect(run.stdout).toContain(".dev.vars");
  });

  it("refuses an unknown flag or a bad value with exit 2, naming --help or the fix", () => {
    const unknown = startSync("--site-orign", "http://127.0.0.1:8099");
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain("Unknown option '--site-orign'; see npm start -- --help");
    const bad = startSync("--site-origin", "127.0.0.1:8099");
    expect(bad.status).toBe(2);
    expect(bad.stderr).toContain("--site-origin must be an origin such as http://127.0.0.1:8099");
  });
});

describe("npm start -- --port P --site-origin O --auth required", () => {
  const state = mkdtempSync(join(tmpdir(), "edgeswarm-start-"));
  let child: ChildProcess | undefined;
  let output = "";
  let url = "";
  let siteOrigin = "";
  let otherOrigin = "";
  let apiKey = "";

  beforeAll(async () => {
    const [port, workerPort, sitePort, otherPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    url = `http://127.0.0.1:${port}`;
    siteOrigin = `http://127.0.0.1:${sitePort}`;
    otherOrigin = `http://127.0.0.1:${otherPort}`;
    const args = ["--port", String(port), "--worker-port", String(workerPort), "--site-origin", siteOrigin];
    child = spawn(START[0], [...START.slice(1), ...args, "--auth", "required", "--state", state], {
      cwd: ROOT,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const started = child;
    await new Promise<void>((resolve, reject) => {
      const collect = (d: Buffer) => {
        output += d;
        if (output.includes("EdgeSwarm is running")) setTimeout(resolve, 100);
      };
      started.stdout?.on("data", collect);
      started.stderr?.on("data", collect);
      started.once("exit", (code) => reject(new Error(`npm start exited (${code}):\n${output}`)));
    });
    apiKey = output.match(/API key\s+(\S+)/)?.[1] ?? "";
  }, 300_000);

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child?.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child?.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(state, { recursive: true, force: true });
  }, 60_000);

  const donorToken = (origin: string) =>
    fetch(`${url}/v1/donors/token`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Origin: origin },
      body: JSON.stringify({ site_key: "demo" }),
    });

  it("gives a page on the --site-origin a donor token for site key demo", async () => {
    const res = await donorToken(siteOrigin);
    expect(res.status).toBe(200);
    expect(res.headers.get("Access-Control-Allow-Origin")).toBe(siteOrigin);
    const body = (await res.json()) as { token: string; models: { name: string }[] };
    expect(body.token.split(".")).toHaveLength(3);
    expect(body.models.length).toBeGreaterThan(0);
    expect((await donorToken(url)).status).toBe(200);
  });

  it("refuses an origin it was not given", async () => {
    const res = await donorToken(otherOrigin);
    expect(res.status).toBe(403);
    const body = (await res.json()) as { error: { message: string } };
    expect(body.error.message).toContain(`site key "demo" is not allowed on ${otherOrigin}`);
  });

  it("prints an API key that callers need, and a worker token its worker connected with", async () => {
    expect(apiKey).toMatch(/^local-api-key-[0-9a-f]{32}$/);
    expect(output).toMatch(/worker token\s+local-worker-token-/);
    expect((await fetch(`${url}/v1/models`)).status).toBe(401);
    const infer = await fetch(`${url}/v1/infer`, {
      method: "POST",
      headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
      body: JSON.stringify({ model: "sentiment", inputs: ["I love this"], pool: "gpu", timeout_ms: 60_000 }),
    });
    expect(infer.status).toBe(200);
  });
});
