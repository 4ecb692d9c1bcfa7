// `wrangler dev`'s proxy keeps idle connections to the coordinator's workerd for as long as that workerd keeps
// them open (5 s on both sides), so a request sent as one is closed finds it gone; the proxy then answers any
// method but GET and HEAD with 503 "Your worker restarted mid-request" (wrangler's
// templates/startDevWorker/ProxyWorker.ts), and the coordinator never saw it. Reproduced: 1 of 21 POSTs sent
// 4.9–5.1 s after the one before. A deployed Worker has no such hop. The e2e and browser suites' requests
// (dev-proxy-retry.ts) and the donor processes' (donor-wire.ts) send such a request once more.
const PROXY_RESTARTED = "Your worker restarted mid-request";

/** Whether an answer is that proxy's, for a request the coordinator never saw. */
export function lostByDevProxy(status: number, retryAfter: string | null | undefined, body: string): boolean {
  return status === 503 && retryAfter === "0" && body.startsWith(PROXY_RESTARTED);
}
