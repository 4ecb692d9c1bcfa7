// The test harness's one retry (test/support/dev-proxy-loss.ts) is for wrangler dev's own 503 and nothing else:
// the suites assert the coordinator's 503s, which a retry would hide.
import { describe, expect, it } from "vitest";
import { lostByDevProxy } from "../support/dev-proxy-loss.ts";

// As wrangler 4.86 words it (node_modules/wrangler, its ProxyWorker).
const PROXY_BODY =
  "Your worker restarted mid-request. Please try sending the request again. Only GET or HEAD requests are retried automatically.";

describe("lostByDevProxy", () => {
  it("takes the dev proxy's 503 for a request the coordinator never saw", () => {
    expect(lostByDevProxy(503, "0", PROXY_BODY)).toBe(true);
  });

  it("leaves the coordinator's own answers alone", () => {
    const coordinator503 = JSON.stringify({ error: { code: "no_workers", message: "no worker is connected" } });
    expect(lostByDevProxy(503, "1", coordinator503)).toBe(false);
    expect(lostByDevProxy(503, "0", coordinator503)).toBe(false);
    expect(lostByDevProxy(503, null, PROXY_BODY)).toBe(false);
    expect(lostByDevProxy(502, "0", PROXY_BODY)).toBe(false);
  });
});
