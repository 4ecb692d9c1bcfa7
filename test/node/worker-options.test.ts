// edgeswarm-worker's command line: defaults, environment fallbacks, and refusals that say what to fix.
import { describe, expect, it } from "vitest";
import { parseOptions, UsageError, type WorkerOptions } from "../../worker-gpu/options.ts";

const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseOptions(argv, env) as WorkerOptions;

describe("edgeswarm-worker options", () => {
  it("has working defaults", () => {
    const o = parse([]);
    expect(o).toMatchObject({
      coordinator: "http://127.0.0.1:8787",
      pool: "gpu",
      device: "auto",
      maxBatchSize: 64,
      concurrency: 1,
      port: 9464,
      drainTimeoutMs: 25_000,
    });
    expect(o.models).toBeUndefined();
    expect(o.modelBase).toMatch(/^file:\/\/.*\/models\/$/);
  });

  it("takes flags over environment variables over defaults", () => {
    const env = { EDGESWARM_COORDINATOR: "http://env:1", EDGESWARM_WORKER_TOKEN: "t-env", EDGESWARM_MODELS: "a,b" };
    expect(parse([], env)).toMatchObject({ coordinator: "http://env:1", token: "t-env", models: ["a", "b"] });
    const o = parse(["--coordinator", "https://flag/", "--token", "t-flag", "--models", "sentiment"], env);
    expect(o).toMatchObject({ coordinator: "https://flag", token: "t-flag", models: ["sentiment"] });
  });

  it("runs onnxruntime-node by default; --runtime web joins the browser pool with a batch per thread", () => {
    expect(parse([])).toMatchObject({ runtime: "node", pool: "gpu", concurrency: 1 });
    expect(parse(["--runtime", "web", "--threads", "3"])).toMatchObject({
      runtime: "web",
      pool: "browser",
      threads: 3,
      concurrency: 3,
      runTimeoutMs: 120_000,
    });
    expect(
      parse(["--runtime", "web", "--pool", "gpu", "--concurrency", "1"], { EDGESWARM_THREADS: "2" }),
    ).toMatchObject({ pool: "gpu", threads: 2, concurrency: 1 });
    expect(() => parse(["--runtime", "deno"])).toThrow(/--runtime must be node or web/);
    expect(() => parse(["--runtime", "web", "--threads", "0"])).toThrow(/--threads/);
  });

  it("turns a model directory into a file URL ending in a slash", () => {
    expect(parse(["--model-base", "/srv/models"]).modelBase).toBe("file:///srv/models/");
    expect(parse(["--model-base", "https://cdn.example/m"]).modelBase).toBe("https://cdn.example/m/");
  });

  it("answers --help", () => {
    expect(parseOptions(["--help"], {})).toBe("help");
  });

  it("refuses bad values with a message naming the option", () => {
    expect(() => parse(["--pool", "laptop"])).toThrow(UsageError);
    expect(() => parse(["--pool", "laptop"])).toThrow(/--pool must be one of browser, gpu/);
    expect(() => parse(["--device", "tpu"])).toThrow(/--device/);
    expect(() => parse(["--max-batch-size", "0"])).toThrow(/--max-batch-size must be an integer >= 1/);
    expect(() => parse(["--coordinator", "ftp://x"])).toThrow(/http\(s\) URL/);
    expect(() => parse(["--bogus"])).toThrow(/bogus/);
  });
});
