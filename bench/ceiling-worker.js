// The runtime's ceiling for bench/coordinator.ts: a Worker that answers `POST /v1/infer` as the coordinator does
// (outputs equal to inputs) after one RPC to one SQLite-backed Durable Object doing one write, so the bench's
// callers measure what an HTTP hop, an RPC and a write cost on each path. Run by the bench only, with the
// config bench/coordinator.ts writes for it; not part of the product. Plain JS: bench/ is type-checked for Node.
import { DurableObject } from "cloudflare:workers";

export class CeilingObject extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    ctx.storage.sql.exec("CREATE TABLE IF NOT EXISTS calls (id INTEGER PRIMARY KEY, inputs TEXT NOT NULL)");
  }

  /** One write per call, as a submit stores its call; answers with the inputs, as the echo workers do. */
  submit(inputs) {
    this.ctx.storage.sql.exec("INSERT INTO calls (inputs) VALUES (?)", JSON.stringify(inputs));
    return inputs;
  }
}

export default {
  async fetch(request, env) {
    const path = new URL(request.url).pathname;
    if (path === "/healthz") return Response.json({ status: "ok" });
    if (path !== "/v1/infer" || request.method !== "POST") return new Response("not found", { status: 404 });
    const body = await request.json().catch(() => undefined);
    if (typeof body?.model !== "string" || !Array.isArray(body.inputs)) {
      return new Response("expected {model, inputs: [...]}", { status: 400 });
    }
    const outputs = await env.CEILING.get(env.CEILING.idFromName(body.model)).submit(body.inputs);
    return Response.json({ outputs });
  },
};
