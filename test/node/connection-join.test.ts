// The worker loop (shared/worker-loop/model-connection.ts) with continuous batching, on the bundled decoder
// (models/gpt-tiny, onnxruntime-node cpu) behind a socket the test plays the coordinator on: batches pushed
// while one generates join it and complete on their own with the tokens each gets alone, and a lease the
// coordinator cancels leaves the running batch (its run's signal aborted) with nothing more sent for it.
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ModelConfig, ModelRegistry } from "../../shared/config/model-config.ts";
import {
  type DeltasFrame,
  type GenerationOutput,
  type LeaseDeltasFrame,
  MAX_FRAME_LEASES,
  MAX_HTTP_DELTAS,
} from "../../shared/protocol/generation.ts";
import { type ItemResult, WorkerFrame } from "../../shared/protocol/worker.ts";
import { loadModel } from "../../shared/runner/load-model.ts";
import type { LoadedModel, RunOptions, TokenDelta } from "../../shared/runner/model-runner.ts";
import { DELTAS_FRAME_TEXT, deltaFrames } from "../../shared/worker-loop/delta-frames.ts";
import { ModelConnection } from "../../shared/worker-loop/model-connection.ts";
import { ShardedConnection } from "../../shared/worker-loop/sharded-connection.ts";
import type { SocketLike } from "../../shared/worker-loop/socket-like.ts";
import { nodeFetch } from "../../worker-gpu/runner/file-fetch.ts";
import { createOrtNodeFactory } from "../../worker-gpu/runner/ort-node-session.ts";

const registryUrl = new URL("../../models/registry.json", import.meta.url);
const registry = ModelRegistry.parse(JSON.parse(readFileSync(registryUrl, "utf8")));
const spec = ModelConfig.parse(registry.models.find((m) => m.name === "gpt-tiny"));

let model: LoadedModel;
beforeAll(async () => {
  model = await loadModel(spec, createOrtNodeFactory(), { registryUrl, fetch: nodeFetch, devices: ["cpu"] });
}, 60_000);
afterAll(async () => {
  await model?.dispose();
});

type Frame = { type: string; lease_id?: string; results?: ItemResult[]; tokens?: number[] };

/** The coordinator's end of the worker's socket: what the worker sent, and frames pushed to it. */
class CoordinatorEnd implements SocketLike {
  readyState = 1;
  readonly sent: Frame[] = [];
  private readonly listeners = new Map<string, ((event: never) => void)[]>();
  send(data: string): void {
    this.sent.push(JSON.parse(data));
  }
  close(): void {
    this.readyState = 3;
  }
  addEventListener(type: string, listener: (event: never) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }
  push(frame: object): void {
    for (const l of this.listeners.get("message") ?? []) l({ data: JSON.stringify(frame) } as never);
  }
  open(): void {
    for (const l of this.listeners.get("open") ?? []) (l as () => void)();
  }
  listening(type: string): boolean {
    return (this.listeners.get(type) ?? []).length > 0;
  }
}

/** A worker loop on gpt-tiny over `socket`, opened and welcomed (with `welcome`'s extra fields). */
async function connectedTo(socket: CoordinatorEnd, welcome: object, onBusy?: () => void): Promise<ModelConnection> {
  const connection = new ModelConnection({
    coordinator: "http://coordinator.test",
    token: () => undefined,
    openSocket: () => socket,
    model,
    info: { worker_id: "w", pool: "gpu", device: "cpu", max_batch_size: 16, max_concurrent_batches: 4 },
    hooks: { log: () => {} },
    ...(onBusy ? { onBusy } : {}),
  });
  connection.start();
  await vi.waitFor(() => expect(socket.listening("open")).toBe(true));
  socket.open();
  socket.push({ type: "welcome", model: "gpt-tiny", lease_ms: 60_000, worker_id: "w", ...welcome });
  return connection;
}

const batch = (lease: string, inputs: unknown[]) => ({
  type: "batch",
  lease_id: lease,
  model: "gpt-tiny",
  deadline: Date.now() + 60_000,
  renew_after_ms: 30_000,
  items: inputs.map((input, i) => ({ id: `${lease}-${i}`, input })),
});
const LONG = { prompt: "the", params: { max_new_tokens: 40 } };
const SHORT = {
  prompt: "<|user|>how was the film?<|end|><|assistant|>",
  params: { max_new_tokens: 12, temperature: 1.5, top_k: 50, seed: 3 },
};
const tokensOf = (frame: Frame | undefined) =>
  (frame?.results ?? []).map((r) => ("output" in r ? (r.output as GenerationOutput).tokens : r.error.code));

describe("the worker loop with continuous batching", () => {
  it("runs batches pushed mid-generation in the running batch, completes each alone-equal, drops a cancelled one", async () => {
    const alone = {
      a: (await model.run([LONG])).map((r) => ("output" in r ? (r.output as GenerationOutput).tokens : r)),
      b: (await model.run([SHORT])).map((r) => ("output" in r ? (r.output as GenerationOutput).tokens : r)),
    };
    const socket = new CoordinatorEnd();
    const signals: AbortSignal[] = [];
    const deltas = { a: 0, b: 0, c: 0 };
    const leases = ["a", "b", "c"] as const;
    // The model's run, watched: b and c are pushed from inside a's third token, c cancelled at its second.
    const run = (inputs: readonly unknown[], opts?: RunOptions) => {
      const lease = leases[signals.length] as (typeof leases)[number];
      if (opts?.signal) signals.push(opts.signal);
      return model.run(inputs, {
        ...opts,
        onTokens: (d) => {
          opts?.onTokens?.(d);
          deltas[lease]++;
          if (lease === "a" && deltas.a === 3) {
            socket.push(batch("b", [SHORT]));
            socket.push(batch("c", [LONG]));
          }
          if (lease === "c" && deltas.c === 2) socket.push({ type: "cancel", lease_id: "c", reason: "caller left" });
        },
      });
    };
    let opened = false;
    const connection = new ModelConnection({
      coordinator: "http://coordinator.test",
      token: () => undefined,
      openSocket: () => {
        opened = true;
        return socket;
      },
      model,
      run,
      info: { worker_id: "w", pool: "gpu", device: "cpu", max_batch_size: 16, max_concurrent_batches: 4 },
      hooks: { log: () => {} },
    });
    connection.start();
    await vi.waitFor(() => expect(opened).toBe(true));
    socket.open();
    socket.push({ type: "welcome", model: "gpt-tiny", lease_ms: 60_000, worker_id: "w" });
    socket.push(batch("a", [LONG]));
    const completions = () => socket.sent.filter((f) => f.type === "complete");
    await vi.waitFor(() => expect(completions()).toHaveLength(2), { timeout: 30_000, interval: 5 });
    expect(connection.busy).toBe(0);

    const [first, second] = completions();
    // b, pushed while a generated, finished first (it joined); each has the tokens it gets alone.
    expect(first?.lease_id).toBe("b");
    expect(tokensOf(first)).toEqual(alone.b);
    expect(second?.lease_id).toBe("a");
    expect(tokensOf(second)).toEqual(alone.a);
    // c: its run was told to stop and stopped at the next step; nothing of it went out after the cancel.
    expect(signals[2]?.aborted).toBe(true);
    expect(deltas.c).toBe(2);
    expect(socket.sent.filter((f) => f.lease_id === "c" && f.type !== "tokens")).toEqual([]);
    expect(signals[0]?.aborted).toBe(false);
    // No batch asked for its items' results ahead of its completion.
    expect(socket.sent.filter((f) => f.type === "results")).toEqual([]);
  }, 60_000);

  it("settles a batch's short reply as soon as it ends when the batch asks (item_results), its tokens first", async () => {
    const socket = new CoordinatorEnd();
    // Items held as each change was told, and whether the lease's completion had gone out by then.
    const busy: { items: number; completed: boolean }[] = [];
    const connection: ModelConnection = await connectedTo(socket, {}, () =>
      busy.push({ items: connection.busyItems, completed: socket.sent.some((f) => f.type === "complete") }),
    );
    const brief = { prompt: "the", params: { max_new_tokens: 2 } };
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const pushed = batch("a", [brief, LONG]);
    socket.push({ ...pushed, item_results: true, items: pushed.items.map((i) => ({ ...i, traceparent })) });
    await vi.waitFor(() => expect(socket.sent.some((f) => f.type === "complete")).toBe(true), {
      timeout: 30_000,
      interval: 5,
    });
    const kinds = socket.sent.map((f) => `${f.type}${"pos" in f ? (f as { pos: number }).pos : ""}`);
    const early = socket.sent.filter((f) => f.type === "results");
    expect(early).toHaveLength(1);
    const at = kinds.indexOf("results");
    // Sent while the long reply still decoded (its later tokens came after), and every token of its own before it.
    expect(kinds.slice(at + 1)).toContain("tokens1");
    expect(kinds.slice(at + 1)).not.toContain("tokens0");
    // Its row was free at once: one item held, before the completion went out.
    expect(busy).toContainEqual({ items: 1, completed: false });
    const settled = (early[0] as unknown as { results: { pos: number; result: ItemResult }[] }).results;
    expect(settled.map((r) => r.pos)).toEqual([0]);
    const first = settled[0] as { pos: number; result: ItemResult & { output: GenerationOutput } };
    const shortOutput = first.result.output;
    expect(shortOutput).toMatchObject({ finish_reason: "length", prompt_tokens: 1 });
    expect(shortOutput.tokens).toHaveLength(2);
    const streamed = socket.sent
      .slice(0, at)
      .filter((f) => f.type === "tokens" && (f as { pos?: number }).pos === 0)
      .flatMap((f) => f.tokens ?? []);
    expect(streamed).toEqual(shortOutput.tokens);
    // The completion still holds every result; the early one as it was sent, with the same span.
    const complete = socket.sent.find((f) => f.type === "complete");
    expect(complete?.results?.[0]).toEqual(first.result);
    expect(first.result.traceparent).toMatch(/^00-0af7651916cd43dd8448eb211c80319c-/);
    expect(tokensOf(complete)[1]).toHaveLength(40);
    await connection.drain(1_000);
  }, 60_000);

  it("settles the replies that end in one decode step in one `results` frame, after all their tokens", async () => {
    const socket = new CoordinatorEnd();
    const connection = await connectedTo(socket, { deltas: true });
    // Three replies held to 3 tokens end at the same step; the long one goes on, so they are settled early.
    const brief = (prompt: string) => ({ prompt, params: { max_new_tokens: 3, min_new_tokens: 3 } });
    socket.push({ ...batch("s", [brief("the"), LONG, brief("a film"), brief("the pizza")]), item_results: true });
    await vi.waitFor(() => expect(socket.sent.some((f) => f.type === "complete")).toBe(true), {
      timeout: 30_000,
      interval: 5,
    });
    const early = socket.sent.filter((f) => f.type === "results") as unknown as {
      results: { pos: number; result: ItemResult & { output: GenerationOutput } }[];
    }[];
    expect(early).toHaveLength(1);
    expect(early[0]?.results.map((r) => r.pos)).toEqual([0, 2, 3]);
    const at = socket.sent.indexOf(early[0] as unknown as Frame);
    type Delta = { pos: number; tokens: number[] };
    const before = socket.sent
      .slice(0, at)
      .filter((f) => f.type === "deltas")
      .flatMap((f) => (f as unknown as { deltas: Delta[] }).deltas);
    for (const { pos, result } of early[0]?.results ?? []) {
      expect(result.output.tokens).toHaveLength(3);
      expect(before.filter((d) => d.pos === pos).flatMap((d) => d.tokens)).toEqual(result.output.tokens);
    }
    expect(tokensOf(socket.sent.find((f) => f.type === "complete"))[1]).toHaveLength(40);
    await connection.drain(1_000);
  }, 60_000);
});

describe("the worker loop's token frames", () => {
  it("gathers deltas that leave together into `deltas` frames when the coordinator's welcome takes them", async () => {
    const socket = new CoordinatorEnd();
    const connection = await connectedTo(socket, { deltas: true });
    const prompts = [LONG, { prompt: "a film", params: { max_new_tokens: 40 } }, SHORT];
    socket.push({ ...batch("d", prompts), item_results: true });
    await vi.waitFor(() => expect(socket.sent.some((f) => f.type === "complete")).toBe(true), {
      timeout: 30_000,
      interval: 5,
    });
    type Delta = { pos: number; offset: number; tokens: number[] };
    const frames = socket.sent.filter((f) => f.type === "deltas") as unknown as { deltas: Delta[] }[];
    expect(socket.sent.filter((f) => f.type === "tokens")).toEqual([]);
    // The first tokens of the batch, from one prefill, leave in one frame; each item's tokens add up in order.
    expect(frames[0]?.deltas.map((d) => d.pos)).toEqual([0, 1, 2]);
    const complete = socket.sent.find((f) => f.type === "complete");
    prompts.forEach((_, pos) => {
      const mine = frames.flatMap((f) => f.deltas.filter((d) => d.pos === pos));
      expect(mine.map((d) => d.offset)).toEqual(
        mine.map((_d, i) => mine.slice(0, i).reduce((n, x) => n + x.tokens.length, 0)),
      );
      expect(mine.flatMap((d) => d.tokens)).toEqual(tokensOf(complete)[pos]);
    });
    // Every delta of an item before its result, and none after the completion.
    const at = (f: (typeof socket.sent)[number]) => socket.sent.indexOf(f);
    const resultsAt = new Map(
      socket.sent
        .filter((f) => f.type === "results")
        .flatMap((f) => (f as unknown as { results: { pos: number }[] }).results.map((r) => [r.pos, at(f)] as const)),
    );
    expect(resultsAt.size).toBeGreaterThan(0);
    for (const f of frames) {
      const index = socket.sent.indexOf(f as unknown as (typeof socket.sent)[number]);
      expect(index).toBeLessThan(at(complete as (typeof socket.sent)[number]));
      for (const d of f.deltas) expect(index).toBeLessThan(resultsAt.get(d.pos) ?? Number.POSITIVE_INFINITY);
    }
    await connection.drain(1_000);
  }, 60_000);
});

describe("the worker loop's frames of several leases' deltas", () => {
  it("sends the deltas of every batch that leave together in one `lease_deltas` frame when the welcome takes them", async () => {
    const socket = new CoordinatorEnd();
    const connection = await connectedTo(socket, { deltas: true, lease_deltas: true });
    const leases = ["p", "q", "r"];
    // One-item batches, as the coordinator leases a generating model's items: their runs join one decode.
    for (const lease of leases) socket.push({ ...batch(lease, [LONG]), item_results: true });
    await vi.waitFor(() => expect(socket.sent.filter((f) => f.type === "complete")).toHaveLength(3), {
      timeout: 30_000,
      interval: 5,
    });
    type Delta = { pos: number; offset: number; tokens: number[] };
    type Leased = { lease_id: string; deltas: Delta[] };
    const frames = socket.sent
      .map((f, at) => ({
        f: f as unknown as { type: string; lease_id: string; deltas: Delta[]; leases: Leased[] },
        at,
      }))
      .filter(({ f }) => f.type === "deltas" || f.type === "lease_deltas")
      .map(({ f, at }) => ({
        at,
        leases: f.type === "deltas" ? [{ lease_id: f.lease_id, deltas: f.deltas }] : f.leases,
      }));
    expect(socket.sent.filter((f) => f.type === "tokens")).toEqual([]);
    // Decoding together, the batches' windows ended together: their deltas shared frames.
    expect(frames.some((f) => f.leases.length > 1)).toBe(true);
    for (const lease of leases) {
      const complete = socket.sent.findIndex((f) => f.type === "complete" && f.lease_id === lease);
      const mine = frames.flatMap((f) => f.leases.filter((l) => l.lease_id === lease).map((l) => ({ at: f.at, l })));
      // Each lease's deltas add up to its completion's tokens, in order, and all go before its completion.
      const deltas = mine.flatMap(({ l }) => l.deltas);
      expect(deltas.map((d) => d.offset)).toEqual(
        deltas.map((_d, i) => deltas.slice(0, i).reduce((n, x) => n + x.tokens.length, 0)),
      );
      expect(deltas.flatMap((d) => d.tokens)).toEqual(tokensOf(socket.sent[complete])[0]);
      for (const { at } of mine) expect(at).toBeLessThan(complete);
    }
    // Fewer frames than a frame a lease each window would be.
    const perLease = frames.reduce((n, f) => n + f.leases.length, 0);
    expect(frames.length).toBeLessThan(perLease);
    await connection.drain(1_000);
  }, 60_000);

  it("packs them within a frame's limits, each lease's in order, one lease a frame where only `deltas` is taken", () => {
    const d = (pos: number, offset: number, text = "x"): TokenDelta => ({ pos, offset, tokens: [offset], text });
    const pending = new Map<string, TokenDelta[]>([
      ["a", [d(0, 0), d(0, 1)]],
      ["b", [d(0, 0)]],
    ]);
    expect(deltaFrames(pending, "lease_deltas")).toEqual([
      {
        type: "lease_deltas",
        leases: [
          { lease_id: "a", deltas: [d(0, 0), d(0, 1)] },
          { lease_id: "b", deltas: [d(0, 0)] },
        ],
      },
    ]);
    expect(deltaFrames(pending, "deltas")).toEqual([
      { type: "deltas", lease_id: "a", deltas: [d(0, 0), d(0, 1)] },
      { type: "deltas", lease_id: "b", deltas: [d(0, 0)] },
    ]);
    expect(deltaFrames(pending, "tokens").map((f) => f.type)).toEqual(["tokens", "tokens", "tokens"]);
    // Past MAX_FRAME_LEASES leases, MAX_HTTP_DELTAS deltas or DELTAS_FRAME_TEXT characters: another frame.
    const many = new Map(Array.from({ length: MAX_FRAME_LEASES + 1 }, (_, i) => [`l${i}`, [d(0, 0)]] as const));
    const leaseSplit = deltaFrames(many, "lease_deltas") as LeaseDeltasFrame[];
    expect(leaseSplit.map((f) => f.type)).toEqual(["lease_deltas", "deltas"]);
    expect(leaseSplit[0]?.leases).toHaveLength(MAX_FRAME_LEASES);
    const long = new Map([["a", Array.from({ length: MAX_HTTP_DELTAS + 1 }, (_, i) => d(i, 0))]]);
    expect(deltaFrames(long, "lease_deltas").map((f) => (f as DeltasFrame).deltas.length)).toEqual([
      MAX_HTTP_DELTAS,
      1,
    ]);
    const wordy = new Map([
      ["a", Array.from({ length: 4 }, (_, pos) => d(pos, 0, "y".repeat(16_000)))],
      ["b", [d(0, 0, "z".repeat(DELTAS_FRAME_TEXT - 64_000 + 1))]],
    ]);
    const textSplit = deltaFrames(wordy, "lease_deltas");
    expect(textSplit.map((f) => (f.type === "deltas" ? f.lease_id : f.type))).toEqual(["a", "b"]);
    // Every frame it packs is one the coordinator takes.
    for (const frame of [...leaseSplit, ...textSplit]) expect(WorkerFrame.safeParse(frame).success).toBe(true);
  });
});

describe("a worker whose batches join one decode, on a queue of two shards", () => {
  it("says its max_items_in_flight in its hello and holds both shards off while its items fill it", async () => {
    const sockets: CoordinatorEnd[] = [];
    let release = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const connection = new ShardedConnection({
      coordinator: "http://coordinator.test",
      token: () => undefined,
      openSocket: () => {
        const socket = new CoordinatorEnd();
        sockets.push(socket);
        return socket;
      },
      model,
      run: async (inputs, opts) => {
        await gate;
        return model.run(inputs, opts);
      },
      info: {
        worker_id: "w",
        pool: "gpu",
        device: "cpu",
        max_batch_size: 16,
        max_concurrent_batches: 4,
        max_items_in_flight: 3,
      },
      hooks: { log: () => {} },
    });
    connection.start();
    const welcome = { type: "welcome", model: "gpt-tiny", lease_ms: 60_000, worker_id: "w" };
    const shard = async (k: number) => {
      const socket = await vi.waitFor(() => sockets[k] ?? Promise.reject(new Error(`shard ${k} not opened`)));
      socket.open();
      socket.push({ ...welcome, shards: 2 });
      return socket;
    };
    const [s0, s1] = [await shard(0), await shard(1)];
    expect(s0.sent[0]).toMatchObject({ type: "hello", max_items_in_flight: 3, max_concurrent_batches: 4 });
    const drains = () => [s0, s1].map((s) => s.sent.filter((f) => f.type === "drain").length);

    s0.push(batch("a", [SHORT, SHORT]));
    expect(drains()).toEqual([0, 0]); // 2 of 3 items, 1 of 4 batches: room left
    s1.push(batch("b", [SHORT]));
    expect(drains()).toEqual([1, 1]); // 3 of 3 items: every shard holds off
    release();
    await vi.waitFor(() => expect(connection.busy).toBe(0), { timeout: 30_000, interval: 5 });
    for (const s of [s0, s1]) expect(s.sent.filter((f) => f.type === "resume")).toHaveLength(1);
    expect([s0, s1].map((s) => s.sent.filter((f) => f.type === "complete").map((f) => f.lease_id))).toEqual([
      ["a"],
      ["b"],
    ]);
    await connection.drain(1_000);
  }, 60_000);
});
