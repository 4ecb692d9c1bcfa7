// Three suites: pure logic in Node, the edge inside real workerd (vitest-pool-workers), and
// end-to-end runs against `wrangler dev` with real worker processes.
import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";
import { TEST_API_KEY, TEST_CPU_ONLY_KEY, TEST_REGISTRY, TEST_WORKER_TOKEN } from "./test/support/test-models.ts";

export default defineConfig({
  test: {
    projects: [
      { test: { name: "node", include: ["test/node/**/*.test.ts"], environment: "node" } },
      {
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                AUTH: "required",
                API_KEYS: `${TEST_API_KEY},${TEST_CPU_ONLY_KEY}`,
                GPU_POOL_KEYS: TEST_API_KEY,
                WORKER_TOKENS: TEST_WORKER_TOKEN,
                MODELS: JSON.stringify(TEST_REGISTRY),
                SITE_KEYS: JSON.stringify({ "site-a": { origins: ["https://a.example"], models: ["guarded"] } }),
                DONOR_TOKEN_SECRET: "workerd-test-secret",
              },
            },
          }),
        ],
        test: {
          name: "workers",
          include: ["test/workers/**/*.test.ts"],
          // Console output goes straight to workerd's stdout. Intercepted, a line logged by a Durable
          // Object that a test is aborting becomes an RPC to vitest whose answer never comes back, and
          // vitest then waits for it forever at the end of the file.
          disableConsoleIntercept: true,
        },
      },
      {
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          setupFiles: ["test/support/dev-proxy-retry.ts"],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: "browser",
          include: ["test/browser/**/*.test.ts"],
          environment: "node",
          setupFiles: ["test/support/dev-proxy-retry.ts"],
          testTimeout: 90_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
