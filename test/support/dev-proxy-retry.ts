// Set up for the e2e and browser suites (vitest.config.ts), whose coordinator runs under `wrangler dev`. Its proxy
// keeps idle connections to the coordinator's workerd for as long as that workerd keeps them open (5 s on both
// sides), so a request sent as one is closed finds it gone; the proxy then answers any method but GET and HEAD
// with 503 "Your worker restarted mid-request" (wrangler's templates/startDevWorker/ProxyWorker.ts), and the
// coordinator never saw it. Reproduced: 1 of 21 POSTs sent 4.9–5.1 s after the one before. A deployed Worker has
// no such hop. This sends such a request once more, when its body can be sent again, and says so on stderr.
const PROXY_RESTARTED = "Your worker restarted mid-request";

const realFetch = globalThis.fetch;

/** A body fetch can send twice: none, or one held whole in memory. */
function replayable(body: RequestInit["body"]): boolean {
  return (
    body == null ||
    typeof body === "string" ||
    body instanceof URLSearchParams ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body)
  );
}

async function lostByDevProxy(res: Response): Promise<boolean> {
  if (res.status !== 503 || res.headers.get("retry-after") !== "0") return false;
  return (await res.clone().text()).startsWith(PROXY_RESTARTED);
}

globalThis.fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
  const res = await realFetch(input, init);
  if (input instanceof Request || !replayable(init?.body) || !(await lostByDevProxy(res))) return res;
  console.error(`dev proxy lost ${init?.method ?? "GET"} ${String(input)} on its idle connection; sending it again`);
  return realFetch(input, init);
};
