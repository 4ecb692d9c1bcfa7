// Continuous batching (vLLM-style) for the text-generation task: one decode loop per loaded model, which the
// sequences of every run() join at the next step boundary instead of waiting for the running batch to end.
// Newcomers are prefilled on their own (left-padded among themselves), take their first token from that
// prefill, and their KV cache rows are merged into the running cache (the shorter past left-padded with zero
// columns that attention_mask masks out; position_ids go on per sequence). A finished or cancelled sequence
// drops its rows, and columns no row still reads are trimmed. Each generate() resolves when its own
// sequences are done. Created by text-generation.ts, once per model, so every runner has it.

import type { TokenLogprob } from "../protocol/generation.ts";
import type { InferenceSession, TypedTensor } from "../runner/model-runner.ts";
import { type DecoderShape, decoderStep, emptyCache, leftPadded } from "./text-generation-decoder.ts";
import { rowLogprobs, tokenLogprob } from "./text-generation-logprobs.ts";
import { pickToken, shapeRow } from "./text-generation-sampler.ts";
import type { Sequence } from "./text-generation-sequence.ts";

/** What generate() ends with: every sequence finished, or the caller's signal took them out. */
export type GenerateOutcome = "done" | "cancelled";

/** The sequences of one generate() call. */
interface Group {
  accept: (seq: Sequence, token: number, logprob?: TokenLogprob) => void;
  signal: AbortSignal | undefined;
  /** Its sequences still waiting or decoding. */
  left: number;
  settle: (outcome: GenerateOutcome) => void;
  fail: (error: unknown) => void;
  settled: boolean;
}

interface Row {
  seq: Sequence;
  group: Group;
  /** Real tokens in this row's cache (the rest of its columns are left padding, masked out). */
  length: number;
}

/** What the engine is doing, for tests and status: counters since it was made, and its rows now. */
export interface EngineState {
  /** Decoder runs: prefills and decode steps. */
  runs: number;
  /** Sequences that joined a batch that was already decoding. */
  joined: number;
  /** Rows decoding now, and sequences waiting for a free row. */
  rows: number;
  waiting: number;
}

export class DecodeEngine {
  private rows: Row[] = [];
  /** The cache of `rows`, in order: present.* tensors, [rows, heads, columns, head_dim]. */
  private past: Record<string, TypedTensor>;
  private waiting: Row[] = [];
  private loop: Promise<void> | undefined;
  private counters = { runs: 0, joined: 0 };

  /** `maxRows`: the most sequences decoded at once; newcomers beyond it wait for rows to free. */
  constructor(
    private readonly session: InferenceSession,
    private readonly shape: DecoderShape,
    private readonly maxRows: number,
  ) {
    this.past = emptyCache(shape, 0);
  }

  get state(): EngineState {
    return { ...this.counters, rows: this.rows.length, waiting: this.waiting.length };
  }

  /**
   * Decodes `sequences` (those not already finished) in the running batch; `accept` is told each sequence's
   * next token, with its log probabilities when its params.logprobs asks. Resolves once all of them have
   * finished, or with "cancelled" once `signal` has taken them out (at the next step boundary); rejects if a
   * decoder run they were part of failed.
   */
  generate(sequences: readonly Sequence[], accept: Group["accept"], signal?: AbortSignal): Promise<GenerateOutcome> {
    const active = sequences.filter((s) => !s.finish);
    if (signal?.aborted) return Promise.resolve("cancelled");
    if (active.length === 0) return Promise.resolve("done");
    return new Promise<GenerateOutcome>((resolve, reject) => {
      const group: Group = {
        accept,
        signal,
        left: active.length,
        settled: false,
        settle: (outcome) => {
          group.settled = true;
          resolve(outcome);
        },
        fail: (error) => {
          group.settled = true;
          reject(error);
        },
      };
      for (const seq of active) this.waiting.push({ seq, group, length: seq.prefix.length });
      this.loop ??= this.run().finally(() => {
        this.loop = undefined;
      });
    });
  }

  /** Step boundaries until no sequence is left: take out the cancelled, let newcomers in, decode one step. */
  private async run(): Promise<void> {
    while (this.rows.length > 0 || this.waiting.length > 0) {
      await yieldToEvents();
      this.dropSettled();
      const newcomers = this.waiting.splice(0, Math.max(0, this.maxRows - this.rows.length));
      try {
        if (newcomers.length > 0) await this.admit(newcomers);
        else if (this.rows.length > 0) await this.step();
      } catch (error) {
        // The run's rows (newcomers included) fail with it; sequences still waiting get a fresh batch.
        for (const row of [...this.rows, ...newcomers]) if (!row.group.settled) row.group.fail(error);
        this.rows = [];
        this.past = emptyCache(this.shape, 0);
      }
    }
  }

  /** Prefills the newcomers, merges their cache into the running one, and takes each one's first token. */
  private async admit(newcomers: Row[]): Promise<void> {
    const batch = leftPadded(
      newcomers.map((r) => r.seq.prefix),
      this.shape.pad,
    );
    const { out, logits, vocab, columns } = await this.decode(
      { ids: batch.ids, mask: batch.mask, positions: batch.positions, rows: newcomers.length },
      emptyCache(this.shape, newcomers.length),
    );
    const before = this.rows.length;
    if (before === 0) this.past = out;
    else {
      this.counters.joined += newcomers.length;
      this.past = packRows(
        [
          ...this.rows.map((_, i) => ({ from: this.past, row: i })),
          ...newcomers.map((_, i) => ({ from: out, row: i })),
        ],
        Math.max(batch.width, this.width()),
        this.shape.layers,
      );
    }
    this.rows = [...this.rows, ...newcomers];
    this.take(logits, vocab, columns, before);
  }

  /** One token for every row: each row's last token at its own next position, after the cache. */
  private async step(): Promise<void> {
    const width = this.width() + 1;
    const { out, logits, vocab, columns } = await this.decode(
      {
        ids: this.rows.map((r) => r.seq.generated[r.seq.generated.length - 1] as number),
        mask: this.rows.map((r) => maskOf(r.length + 1, width)),
        positions: this.rows.map((r) => r.length),
        rows: this.rows.length,
      },
      this.past,
    );
    this.past = out;
    for (const row of this.rows) row.length++;
    this.take(logits, vocab, columns, 0);
  }

  /** Picks the next token of rows `from`.. from the last column of their logits; finished rows leave. */
  private take(logits: TypedTensor, vocab: number, columns: number, from: number): void {
    const data = logits.data as Float32Array;
    for (let i = from; i < this.rows.length; i++) {
      const { seq, group } = this.rows[i] as Row;
      const at = ((i - from) * columns + columns - 1) * vocab;
      try {
        if (group.settled) continue;
        const { params } = seq.item;
        const n = seq.generated.length;
        // Log probabilities are the model's own: read before the row is shaped (text-generation-logprobs.ts).
        const raw = params.logprobs === undefined ? undefined : rowLogprobs(data, at, at + vocab, params.logprobs);
        shapeRow(data, at, vocab, this.shape.eos, params, seq.prompt, seq.generated, n, seq.decode);
        const token = pickToken(data, at, at + vocab, params, n);
        group.accept(seq, token, raw && tokenLogprob(raw, token, seq.decode));
      } catch (error) {
        // A run whose token listener throws fails alone; the others in the batch decode on.
        group.fail(error);
      }
    }
    this.keep((row) => !row.seq.finish && !row.group.settled);
  }

  /**
   * Sequences whose caller gave up leave the batch and the queue (their group resolves "cancelled"), and so
   * do the rest of a group that failed.
   */
  private dropSettled(): void {
    for (const { group } of [...this.rows, ...this.waiting]) {
      if (group.signal?.aborted && !group.settled) group.settle("cancelled");
    }
    this.waiting = this.waiting.filter((r) => !r.group.settled);
    this.keep((row) => !row.group.settled);
  }

  /** Keeps the rows `wanted` says, dropping the others' cache rows and the columns no kept row reads. */
  private keep(wanted: (row: Row) => boolean): void {
    const kept: number[] = [];
    this.rows.forEach((row, i) => {
      if (wanted(row)) kept.push(i);
      else if (!row.group.settled && row.seq.finish && --row.group.left === 0) row.group.settle("done");
    });
    if (kept.length === this.rows.length) return;
    const before = this.rows;
    this.rows = kept.map((i) => before[i] as Row);
    const width = Math.max(0, ...this.rows.map((r) => r.length));
    this.past = packRows(
      kept.map((row) => ({ from: this.past, row })),
      width,
      this.shape.layers,
    );
  }

  /** Columns in the running cache. */
  private width(): number {
    return this.rows.length === 0 ? 0 : ((this.past["present.0.key"]?.dims[2] as number | undefined) ?? 0);
  }

  private decode(step: Parameters<typeof decoderStep>[2], past: Record<string, TypedTensor>) {
    this.counters.runs++;
    return decoderStep(this.session, this.shape, step, past);
  }
}

/**
 * Lets the event loop run what came meanwhile (a new run, a cancel): onnxruntime-web's wasm runs settle as
 * microtasks, so without this a message would wait for the whole decode. setImmediate in Node, a
 * MessageChannel round trip elsewhere (a zero timeout would be clamped to 4 ms after a few steps in a browser).
 */
function yieldToEvents(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (fn: () => void) => unknown }).setImmediate;
  if (immediate) return new Promise((resolve) => immediate(resolve));
  // Browser ports (Node has setImmediate, and ports of another shape in its types).
  type Port = { onmessage: (() => void) | null; postMessage(m: null): void; close(): void };
  const { port1, port2 } = new MessageChannel() as unknown as { port1: Port; port2: Port };
  return new Promise((resolve) => {
    port1.onmessage = () => {
      port1.close();
      resolve();
    };
    port2.postMessage(null);
  });
}

/** A row's attention mask: `length` real tokens, right-aligned in `width` columns after masked padding. */
function maskOf(length: number, width: number): number[] {
  return Array.from({ length: width }, (_, i) => (i < width - length ? 0 : 1));
}

/**
 * A cache of the rows named, in order, each row's last `width` columns of its source kept and right-aligned:
 * a source shorter than `width` is left-padded with zero columns (masked out), a longer one loses its
 * leftmost (padding) columns. Each tensor is [batch, heads, columns, head_dim], row-major.
 */
export function packRows(
  rows: readonly { from: Record<string, TypedTensor>; row: number }[],
  width: number,
  layers: number,
): Record<string, TypedTensor> {
  const past: Record<string, TypedTensor> = {};
  for (let layer = 0; layer < layers; layer++) {
    for (const kv of ["key", "value"]) {
      const name = `present.${layer}.${kv}`;
      const [, heads = 0, , headDim = 0] = rows[0]?.from[name]?.dims ?? [];
      const data = new Float32Array(rows.length * heads * width * headDim);
      for (const [i, { from, row }] of rows.entries()) {
        const t = from[name] as TypedTensor;
        const src = t.data as Float32Array;
        const columns = t.dims[2] as number;
        const copied = Math.min(columns, width);
        for (let h = 0; h < heads; h++) {
          const start = ((row * heads + h) * columns + columns - copied) * headDim;
          const to = ((i * heads + h) * width + width - copied) * headDim;
          data.set(src.subarray(start, start + copied * headDim), to);
        }
      }
      past[name] = { type: "float32", dims: [rows.length, heads, width, headDim], data };
    }
  }
  return past;
}
