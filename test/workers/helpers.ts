// Helpers for the edge suites that run inside workerd: call the app as a client would, and act as a
// worker over the real WebSocket and HTTP lease protocol.
import { abortAllDurableObjects, env, runInDurableObject, SELF } from "cloudflare:test";
import { DONOR_HEADER, HOLDER_HEADER, NETWORK_HEADER, POOL_HEADER } from "../../edge/model-queue/model-queue.ts";
import type { CoordinatorFrame } from "../../shared/index.ts";
import { queueName, queueOfId } from "../../shared/protocol/ids.ts";
import { TEST_API_KEY, TEST_REGISTRY, TEST_WORKER_TOKEN } from "../support/test-models.ts";

export const CALLER = { Authorization: `Bearer ${TEST_API_KEY}` };
export const WORKER = { Authorization: `Bearer ${TEST_WORKER_TOKEN}` };

export interface Answer<T = any> {
  status: number;
  headers: Headers;
  body: T;
}

export async function call(
  path: string,
  init: { method?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const hasBody = init.body !== undefined || init.raw !== undefined;
  const res = await SELF.fetch(`http://edge${path}`, {
    method: init.method ?? (hasBody ? "POST" : "GET"),
    headers: { ...CALLER, ...(hasBody ? { "Content-Type": "application/json" } : {}), ...init.headers },
    ...(hasBody ? { body: init.raw ?? JSON.stringify(init.body) } : {}),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // Prometheus text and the like stay strings
  }
  return { status: res.status, headers: res.headers, body };
}

export const infer = (body: Record<string, unknown>) => call("/v1/infer", { body });
export const workerCall = (path: string, body?: unknown) => call(path, { body: body ?? {}, headers: WORKER });

/** `POST /v1/leases` as a gpu-pool HTTP worker with a worker token, waiting up to 2 s for a batch. */
export const leaseOverHttp = (model: string, workerId: string) =>
  workerCall("/v1/leases", {
    model,
    worker_id: workerId,
    pool: "gpu",
    device: "cpu",
    max_batch_size: 4,
    wait_ms: 2_000,
  });

export function queue(model: string) {
  return env.MODEL_QUEUE.get(env.MODEL_QUEUE.idFromName(model));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 3_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(10);
  }
}

/**
 * GET /metrics once every queue object answered it in time. On a slow or loaded machine one can answer late,
 * and the scrape then shows that queue's last-seen samples (edgeswarm_queue_stale) or leaves it out
 * (edgeswarm_queue_unavailable), which a test must not read as the state now: it scrapes again.
 */
export async function scrape(): Promise<Answer> {
  return waitFor(async () => {
    const res = await call("/metrics");
    return /^edgeswarm_queue_(stale|unavailable)\{/m.test(res.body as string) ? undefined : res;
  }, 30_000);
}

type Frame<T extends CoordinatorFrame["type"]> = Extract<CoordinatorFrame, { type: T }>;

/** A worker over the real WebSocket endpoint; it does exactly what the test tells it to. */
export class SocketWorker {
  readonly frames: CoordinatorFrame[] = [];
  private cursor = 0;

  private constructor(readonly ws: WebSocket) {
    ws.addEventListener("message", (e) => {
      this.frames.push(JSON.parse(e.data as string));
    });
  }

  /**
   * Opens a socket without saying hello. With `donor`, the socket is opened on the queue object as the
   * route forwards one a browser donor token opened: pinned to the browser pool, named by its donor id.
   */
  static async open(
    model: string,
    opts: { donor?: string; network?: string; shard?: number } = {},
  ): Promise<SocketWorker> {
    const shard = opts.shard ? `&shard=${opts.shard}` : "";
    const res =
      opts.donor === undefined
        ? await SELF.fetch(`http://edge/v1/workers/connect?model=${model}${shard}`, {
            headers: { Upgrade: "websocket", ...WORKER },
          })
        : await queue(queueName(model, opts.shard ?? 0)).fetch(
            `http://queue/v1/workers/connect?model=${model}${shard}`,
            {
              headers: {
                Upgrade: "websocket",
                [POOL_HEADER]: "browser",
                [DONOR_HEADER]: opts.donor,
                [HOLDER_HEADER]: `donor:${opts.donor}`,
                ...(opts.network ? { [NETWORK_HEADER]: opts.network } : {}),
              },
            },
          );
    if (!res.webSocket) throw new Error(`no websocket: ${res.status} ${await res.text()}`);
    res.webSocket.accept();
    return new SocketWorker(res.webSocket);
  }

  static async connect(
    model: string,
    info: {
      worker_id?: string;
      pool?: "gpu" | "browser";
      max_batch_size?: number;
      max_concurrent_batches?: number;
      max_items_in_flight?: number;
      donor?: string;
      /** The donor's client network, as the route derives it from the connection's address. */
      network?: string;
      /** The shard of a sharded model's queue to serve (0 by default). */
      shard?: number;
    } = {},
  ): Promise<SocketWorker> {
    const worker = await SocketWorker.open(
      model,
      info.donor === undefined
        ? { shard: info.shard ?? 0 }
        : { donor: info.donor, shard: info.shard ?? 0, ...(info.network ? { network: info.network } : {}) },
    );
    worker.send({
      type: "hello",
      worker_id: info.worker_id ?? crypto.randomUUID(),
      pool: info.pool ?? (info.donor === undefined ? "gpu" : "browser"),
      device: "cpu",
      max_batch_size: info.max_batch_size ?? 64,
      max_concurrent_batches: info.max_concurrent_batches ?? 1,
      ...(info.max_items_in_flight === undefined ? {} : { max_items_in_flight: info.max_items_in_flight }),
    });
    await worker.next("welcome");
    return worker;
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame));
  }

  /**
   * Sends a token delta and waits until the queue holds the item's tokens through its end. Frames on this
   * in-process socket can reach the queue object out of order (a later delta first, refused as a gap, or a
   * completion before the deltas): the test pool's Durable Object wrapper awaits its module for each event
   * before calling the handler. Over wrangler dev's TCP socket 1,000 deltas sent at once arrived in order.
   */
  async sendTokens(frame: {
    lease_id: string;
    pos: number;
    offset: number;
    tokens: number[];
    text?: string;
    logprobs?: unknown[];
  }): Promise<void> {
    this.send({ type: "tokens", text: "", ...frame });
    const end = frame.offset + frame.tokens.length;
    const name = queueOfId(frame.lease_id) ?? "";
    await waitFor(() =>
      runInDurableObject(queue(name), (_instance, state) => {
        const row = state.storage.sql
          .exec<{ n: number }>(
            "SELECT gen_count AS n FROM items WHERE lease_id = ? AND lease_pos = ?",
            frame.lease_id,
            frame.pos,
          )
          .toArray()[0];
        return (row?.n ?? 0) >= end;
      }),
    );
  }

  /** The next frame of this type not yet consumed. */
  async next<T extends CoordinatorFrame["type"]>(type: T, timeoutMs = 3_000): Promise<Frame<T>> {
    return waitFor(() => {
      for (let i = this.cursor; i < this.frames.length; i++) {
        const f = this.frames[i] as CoordinatorFrame;
        if (f.type === type) {
          this.frames.splice(i, 1);
          return f as Frame<T>;
        }
      }
      return undefined;
    }, timeoutMs);
  }

  has(type: CoordinatorFrame["type"]): boolean {
    return this.frames.some((f) => f.type === type);
  }

  /** Completes a batch with outputs computed from each input. */
  complete(batch: Frame<"batch">, output: (input: any) => unknown = (x) => x): void {
    this.send({
      type: "complete",
      lease_id: batch.lease_id,
      results: batch.items.map((i) => ({ output: output(i.input) })),
      compute_ms: 1,
    });
  }

  close(): void {
    this.ws.close(1000, "test done");
  }
}

export interface SseEvent {
  event: string;
  id: string;
  data: any;
}

/** Reads a text/event-stream response event by event. */
export function sseReader(res: Response) {
  const reader = (res.body as ReadableStream<Uint8Array>).pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return {
    async next(): Promise<SseEvent | null> {
      for (;;) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields: Record<string, string> = {};
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const colon = line.indexOf(":");
            fields[line.slice(0, colon)] = line.slice(colon + 1).trimStart();
          }
          if (!fields.event) continue;
          return { event: fields.event, id: fields.id ?? "", data: JSON.parse(fields.data ?? "null") };
        }
        const { value, done } = await reader.read();
        if (done) return null;
        buffer += value;
      }
    },
  };
}

/** Every queue object of the test registry: each model's, and each shard's of a sharded one. */
function everyQueue(): string[] {
  return TEST_REGISTRY.models.flatMap((m) =>
    Array.from({ length: ("shards" in m ? m.shards : undefined) ?? 1 }, (_, k) => queueName(m.name, k)),
  );
}

/** Wipes every queue object (storage, alarm, in-memory state) so each test starts from nothing. */
export async function wipeQueues(models: readonly string[] = everyQueue()): Promise<void> {
  await abortAllDurableObjects();
  for (const model of models) {
    await runInDurableObject(queue(model), async (instance, state) => {
      // An alarm already on its way would otherwise run on the emptied storage before the abort below.
      Object.assign(instance, { alarm: async () => {} });
      await state.storage.deleteAlarm();
      await state.storage.deleteAll();
    });
  }
  await abortAllDurableObjects();
}
