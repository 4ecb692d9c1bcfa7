// A real Chromium for the browser suites and bench/browser: Debian's `chromium` (.ci/run installs it)
// driven by playwright-core, headless, with a fresh profile per launch. With `webgpu`, headless Chromium
// gets a software WebGPU adapter (SwiftShader): correct, slow, good for testing the WebGPU path.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

export interface Chromium {
  context: BrowserContext;
  close(): Promise<void>;
}

export async function launchChromium(opts: { webgpu?: boolean; profile?: string } = {}): Promise<Chromium> {
  const profile = opts.profile ?? mkdtempSync(join(tmpdir(), "edgeswarm-chromium-"));
  const args = [
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    ...(opts.webgpu
      ? ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-angle=swiftshader"]
      : ["--disable-gpu"]),
  ];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM_PATH,
    headless: true,
    args,
  });
  return {
    context,
    async close() {
      await context.close();
      if (!opts.profile) rmSync(profile, { recursive: true, force: true });
    },
  };
}
