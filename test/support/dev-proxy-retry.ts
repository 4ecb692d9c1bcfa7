// Set up for the e2e and browser suites (vitest.config.ts), whose coordinator runs under `wrangler dev`: a request
// its proxy lost on an idle connection (dev-proxy-loss.ts) is sent once more, when its body can be sent again,
// and says so on stderr.
import { lostByDevProxy } from "./dev-proxy-loss.ts";

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

async function lost(res: Response): Promise<boolean> {
  return res.status === 503 && lostByDevProxy(res.status, res.headers.get("retry-after"), await res.clone().text());
}

globalThis.fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
  const res = await realFetch(input, init);
  if (input instanceof Request || !replayable(init?.body) || !(await lost(res))) return res;
  console.error(`dev proxy lost ${init?.method ?? "GET"} ${String(input)} on its idle connection; sending it again`);
  return realFetch(input, init);
};
