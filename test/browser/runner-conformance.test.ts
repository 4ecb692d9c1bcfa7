// The conformance cases (test/support/runner-cases.ts) on onnxruntime-web in Chromium's Web Worker, on wasm
// and on WebGPU (headless Chromium's SwiftShader adapter: slow to compile its shaders, then correct): the
// embed script's donor worker, driven through window.EdgeSwarm.loadModel/runModel, with the model files
// served by the real coordinator (`wrangler dev`). The Node runners run the same cases in
// test/node/runner-runtimes.test.ts.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { type Coordinator, startCoordinator } from "../../scripts/lib/wrangler-dev.ts";
import { type Chromium, launchChromium } from "../support/chromium.ts";
import { describeRunner } from "../support/runner-cases.ts";

for (const device of ["wasm", "webgpu"] as const) describeChromium(device);

function describeChromium(device: "wasm" | "webgpu"): void {
  describeRunner(
    `onnxruntime-web in Chromium's Web Worker on ${device}`,
    async () => {
      const persistTo = mkdtempSync(join(tmpdir(), "edgeswarm-runner-chromium-"));
      const coordinator: Coordinator = await startCoordinator({ persistTo, vars: { API_KEYS: "k" } });
      const chromium: Chromium = await launchChromium({ webgpu: device === "webgpu" });
      const page: Page = await chromium.context.newPage();
      const url = `${coordinator.url}/test/runner.html`;
      await page.route(url, (route) =>
        route.fulfill({
          contentType: "text/html",
          body: `<!doctype html><title>runner</title>
<script src="/embed.js" data-site-key="none" data-autostart="false" data-devices="${device}"></script>`,
        }),
      );
      await page.goto(url);
      await page.waitForFunction("window.EdgeSwarm !== undefined");
      return {
        device,
        async loadAll(specs) {
          const registryUrl = `${coordinator.url}/models/registry.json`;
          const models = new Map();
          for (const spec of specs) {
            const info = (await page.evaluate(
              `window.EdgeSwarm.loadModel(${JSON.stringify(spec)}, ${JSON.stringify(registryUrl)})`,
            )) as { device: string };
            models.set(spec.name, {
              device: info.device,
              run: (inputs: unknown[]) =>
                page.evaluate(`window.EdgeSwarm.runModel(${JSON.stringify(spec.name)}, ${JSON.stringify(inputs)})`),
            });
          }
          return models;
        },
        async close() {
          await chromium.close();
          await coordinator.stop();
          rmSync(persistTo, { recursive: true, force: true });
        },
      };
    },
    device === "wasm" ? 180_000 : 900_000,
  );
}
