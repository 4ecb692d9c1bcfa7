// A fetch for the Node worker that also reads file:// URLs (Node 20's fetch refuses them), so a registry
// on disk loads through the same hash-checked path as one on a CDN. Passed to loadModel as `fetch`.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

export async function nodeFetch(url: string): Promise<Response> {
  if (!url.startsWith("file:")) return fetch(url);
  try {
    return new Response(await readFile(fileURLToPath(url)));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // Answer like an HTTP server would, so the loader reports a missing file the same way for both.
    if (code === "ENOENT") return new Response(null, { status: 404, statusText: "Not Found" });
    throw error;
  }
}
