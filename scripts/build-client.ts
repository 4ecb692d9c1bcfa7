// `npm run build:client`: everything the edge serves as static assets, into dist/public:
//   embed.js                      the script a page embeds (classic script, runs on the page's thread)
//   edgeswarm/donor-worker.js     the donor Web Worker (ES module: onnxruntime-web, tokenizers, comlink)
//   ort/*.wasm.gz, ort/*.mjs      onnxruntime-web's WASM (gzipped: the raw file is over Workers' 25 MiB
//                                 asset limit, so the edge serves it with Content-Encoding: gzip) and loader
//   models/                       the bundled registry and model folders
//   demo/                         the demo page
//   dashboard/                    the operator's dashboard (uPlot charts; edge/routes/ops.ts serves /dashboard)
//   _headers                      CORS, CORP and cross-origin isolation headers for all of it
// npm start, npm test (vitest's global setup) and npm run deploy run it first.
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const OUT = join(ROOT, "dist/public");
const ortDist = join(ROOT, "node_modules/onnxruntime-web/dist");

/** The one onnxruntime-web both our runner and transformers.js's tokenizer code import (else two copies ship). */
const ORT_WASM = "ort-wasm-simd-threaded.jsep.wasm";

export async function buildClient(): Promise<void> {
  for (const dir of ["edgeswarm", "demo", "dashboard", "models"])
    rmSync(join(OUT, dir), { recursive: true, force: true });
  mkdirSync(join(OUT, "ort"), { recursive: true });
  const ortBundle = join(ortDist, "ort.bundle.min.mjs");
  const common = {
    bundle: true,
    minify: true,
    sourcemap: true,
    target: "es2022",
    logLevel: "warning" as const,
    legalComments: "none" as const,
    absWorkingDir: ROOT,
  };
  await build({
    ...common,
    entryPoints: { embed: "client/embed/embed.ts" },
    format: "iife",
    platform: "browser",
    outdir: OUT,
  });
  await build({
    ...common,
    entryPoints: {
      "edgeswarm/donor-worker": "client/worker/donor-worker.ts",
      "demo/demo": "client/demo/demo.ts",
      "dashboard/dashboard": "client/dashboard/dashboard.ts",
    },
    format: "esm",
    platform: "browser",
    outdir: OUT,
    // transformers.js brings its own onnxruntime-web build; point it at ours so one runtime (and one WASM) ships.
    alias: {
      "onnxruntime-web/webgpu": ortBundle,
      "onnxruntime-web": ortBundle,
      "onnxruntime-common": join(ROOT, "node_modules/onnxruntime-common"),
    },
  });
  // Compressing 28 MB takes seconds: only when onnxruntime-web's file is newer than ours.
  const wasmGz = join(OUT, "ort", `${ORT_WASM}.gz`);
  if (!existsSync(wasmGz) || statSync(wasmGz).mtimeMs < statSync(join(ortDist, ORT_WASM)).mtimeMs) {
    writeFileSync(wasmGz, gzipSync(readFileSync(join(ortDist, ORT_WASM)), { level: 9 }));
  }
  // Its loader too: given a wasmPaths prefix, onnxruntime-web imports the .mjs from there as well.
  cpSync(join(ortDist, ORT_WASM.replace(/\.wasm$/, ".mjs")), join(OUT, "ort", ORT_WASM.replace(/\.wasm$/, ".mjs")));
  cpSync(join(ROOT, "client/demo/index.html"), join(OUT, "demo/index.html"));
  cpSync(join(ROOT, "client/dashboard/index.html"), join(OUT, "dashboard/index.html"));
  cpSync(join(ROOT, "node_modules/uplot/dist/uPlot.min.css"), join(OUT, "dashboard/uPlot.min.css"));
  mkdirSync(join(OUT, "models"), { recursive: true });
  const registry = JSON.parse(readFileSync(join(ROOT, "models/registry.json"), "utf8")) as {
    models: { name: string; files?: { base_url?: string } }[];
  };
  cpSync(join(ROOT, "models/registry.json"), join(OUT, "models/registry.json"));
  for (const model of registry.models) {
    if (!model.files || model.files.base_url) continue;
    cpSync(join(ROOT, "models", model.name), join(OUT, "models", model.name), { recursive: true });
  }
  writeFileSync(join(OUT, "_headers"), HEADERS);
}

// Any page may embed the script and load the worker, models and WASM (CORS + CORP cross-origin, so a
// cross-origin-isolated page can too). The demo page is itself cross-origin isolated, for WASM threads.
const HEADERS = `/*
  Access-Control-Allow-Origin: *
  Cross-Origin-Resource-Policy: cross-origin
  Cross-Origin-Embedder-Policy: require-corp
  X-Content-Type-Options: nosniff

/demo/*
  Cross-Origin-Opener-Policy: same-origin
`;

if (import.meta.url === `file://${process.argv[1]}`) {
  const started = performance.now();
  await buildClient();
  console.log(`client built into dist/public in ${Math.round(performance.now() - started)} ms`);
}
