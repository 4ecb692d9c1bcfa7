// loadModel over real HTTP: relative and absolute base URLs, clear errors for missing and tampered files,
// and the cache hook (a hit skips the download; a corrupt entry is hashed, refused and fetched again).
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelConfig, ModelRegistry } from "../../shared/config/model-config.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import { MemoryFileCache, ModelFileError, sha256Hex } from "../../shared/runner/model-files.ts";
import type { SessionFactory } from "../../shared/runner/model-runner.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";

/** cpu only: the cuda fallback has its own test in runner-conformance, and would log here on every load. */
const cpu = () => createOrtNodeFactory({ warn: () => {} });

const modelsDir = new URL("../../models/", import.meta.url);
let server: Server;
let origin: string;
const requests: string[] = [];
/** Paths the server answers with altered bytes, as a compromised mirror would. */
const tampered = new Set<string>();
/** Paths and how many more requests for them get half the body and then nothing, as a stalled connection does. */
const stalls = new Map<string, number>();

beforeAll(async () => {
  server = createServer(async (req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    requests.push(path);
    try {
      const bytes = await readFile(new URL(`.${path.replace(/^\/models/, "")}`, modelsDir));
      if (tampered.has(path)) bytes.writeUInt8((bytes.at(-1) ?? 0) ^ 1, bytes.length - 1);
      const stallsLeft = stalls.get(path) ?? 0;
      if (stallsLeft > 0) {
        stalls.set(path, stallsLeft - 1);
        res.writeHead(200, { "Content-Length": bytes.length }).write(bytes.subarray(0, bytes.length >> 1));
        return; // the rest never comes; the client gives up on the connection
      }
      res.writeHead(200).end(bytes);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const registry = async () =>
  ModelRegistry.parse(JSON.parse(await readFile(new URL("registry.json", modelsDir), "utf8")));
const sentiment = async (files: Partial<NonNullable<ModelConfig["files"]>> = {}) => {
  const entry = (await registry()).models.find((m) => m.name === "sentiment") as ModelConfig;
  return { ...entry, files: { ...(entry.files as NonNullable<ModelConfig["files"]>), ...files } };
};

/** A factory that records releases, to check a failed load leaves no session behind. */
function tracking(): { factory: SessionFactory; released: number[] } {
  const inner = cpu();
  const released: number[] = [];
  return {
    released,
    factory: {
      runtime: inner.runtime,
      devices: ["cpu"],
      async create(model, devices) {
        const session = await inner.create(model, devices);
        const release = () => {
          released.push(1);
          return session.release();
        };
        return { ...session, release };
      },
    },
  };
}

describe("loadModel over HTTP", () => {
  it("resolves ./<name>/ against the registry URL and runs the model", async () => {
    requests.length = 0;
    const { factory } = tracking();
    const model = await loadModel(await sentiment(), factory, { registryUrl: `${origin}/models/registry.json` });
    expect(requests.sort()).toEqual(
      ["config.json", "onnx/model.onnx", "tokenizer.json", "tokenizer_config.json"].map(
        (f) => `/models/sentiment/${f}`,
      ),
    );
    const [result] = await model.run(["I love this"]);
    expect(result).toMatchObject({ output: [{ label: "POSITIVE" }, { label: "NEGATIVE" }] });
    await model.dispose();
  });

  it("takes an absolute base_url, with or without a trailing slash", async () => {
    for (const base_url of [`${origin}/models/sentiment`, `${origin}/models/sentiment/`]) {
      const model = await loadModel(await sentiment({ base_url }), cpu(), {
        registryUrl: "https://elsewhere.invalid/registry.json",
        devices: ["cpu"],
      });
      await model.dispose();
    }
  });

  it("names the file and URL of a download that fails", async () => {
    const spec = await sentiment({ base_url: `${origin}/models/nowhere/` });
    const error = await loadModel(spec, cpu(), { registryUrl: origin }).catch((e) => e);
    expect(error).toBeInstanceOf(ModelFileError);
    expect(error.code).toBe("fetch_failed");
    expect(error.message).toMatch(
      new RegExp(`could not fetch sentiment/\\S+ from ${origin}/models/nowhere/\\S+: HTTP 404`),
    );
  });

  it("gives up on a download that stalls and fetches it again; says so when it stalls twice", async () => {
    const spec = await sentiment();
    const registryUrl = `${origin}/models/registry.json`;
    const configPath = "/models/sentiment/config.json";
    stalls.set(configPath, 1);
    const before = requests.length;
    const model = await loadModel(spec, cpu(), { registryUrl, stallMs: 1_000 });
    expect(requests.slice(before).filter((p) => p === configPath)).toHaveLength(2);
    await model.dispose();

    stalls.set(configPath, 2);
    const error = await loadModel(spec, cpu(), { registryUrl, stallMs: 1_000 }).catch((e) => e);
    expect(error).toBeInstanceOf(ModelFileError);
    expect(error.code).toBe("fetch_failed");
    expect(error.message).toMatch(/sentiment\/config\.json .*no data for 1 s/);
  });

  it("refuses bytes that do not match the registry's sha256", async () => {
    tampered.add("/models/sentiment/onnx/model.onnx");
    try {
      const { factory, released } = tracking();
      const error = await loadModel(await sentiment(), factory, {
        registryUrl: `${origin}/models/registry.json`,
      }).catch((e) => e);
      expect(error.code).toBe("integrity_mismatch");
      expect(error.message).toMatch(
        /refusing sentiment\/onnx\/model.onnx from http:\/\/\S+: sha256 is [0-9a-f]{64}, the registry expects/,
      );
      expect(released).toHaveLength(0);
    } finally {
      tampered.clear();
    }
  });

  it("serves repeat loads from the cache, and re-downloads a corrupt cache entry", async () => {
    const cache = new MemoryFileCache();
    const opts = { registryUrl: `${origin}/models/registry.json`, cache, devices: ["cpu"] };
    await (await loadModel(await sentiment(), cpu(), opts)).dispose();
    requests.length = 0;
    await (await loadModel(await sentiment(), cpu(), opts)).dispose();
    expect(requests).toEqual([]);

    const url = `${origin}/models/sentiment/onnx/model.onnx`;
    const spec = await sentiment();
    const entry = (await cache.get(url, spec.files.model.sha256)) as Uint8Array;
    await cache.put(url, spec.files.model.sha256, entry.slice(1));
    const model = await loadModel(spec, cpu(), opts);
    expect(requests).toEqual(["/models/sentiment/onnx/model.onnx"]);
    await model.dispose();
  });

  it("releases the session when the task cannot be built", async () => {
    const { factory, released } = tracking();
    const spec = { ...(await sentiment()), task: "summarization" };
    await expect(loadModel(spec, factory, { registryUrl: `${origin}/models/registry.json` })).rejects.toThrow(
      /model sentiment: unknown task summarization/,
    );
    expect(released).toHaveLength(1);
  });

  it("asks a text model for its tokenizer files, and a model for any files at all", async () => {
    const { tokenizer: _, ...noTokenizer } = (await sentiment()).files;
    const spec = { ...(await sentiment()), files: noTokenizer };
    await expect(loadModel(spec, cpu(), { registryUrl: origin })).rejects.toThrow(
      /text-classification and needs files.tokenizer/,
    );
    const bare = ModelConfig.parse({ name: "bare" });
    await expect(loadModel(bare, cpu(), { registryUrl: origin })).rejects.toThrow(/lists no files/);
  });

  it("says which file is broken when a hash-valid file is not what it should be", async () => {
    const bodies: Record<string, string> = { "tokenizer.json": "{}", "config.json": "{not json" };
    for (const [file, body] of Object.entries(bodies)) {
      const bytes = new TextEncoder().encode(body);
      const key = file === "config.json" ? "config" : "tokenizer";
      const spec = await sentiment({ [key]: { path: file, sha256: await sha256Hex(bytes) } });
      const fetch = async (url: string) =>
        url.endsWith(`/${file}`)
          ? new Response(bytes)
          : new Response(await readFile(new URL(url.replace(/^.*\/sentiment\//, "sentiment/"), modelsDir)));
      await expect(loadModel(spec, cpu(), { registryUrl: "https://cdn.invalid/registry.json", fetch })).rejects.toThrow(
        file === "config.json"
          ? /model sentiment: config.json is not valid JSON/
          : /model sentiment: tokenizer.json cannot be loaded/,
      );
    }
  });
});
