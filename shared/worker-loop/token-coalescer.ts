// Token deltas of a batch, coalesced per item before they go on the socket (within TokensFrame's limits): an item's first delta goes at once
// (time to first token), later ones wait at most `windowMs` and leave as one frame. The batches of one
// connection share one window (FlushWindow), so their deltas leave together, as one frame (model-connection.ts). At a few ms per decode
// step a frame per token meant a frame, a stored write and an SSE event per token at the coordinator, which
// cost more than the step (docs/performance.md, "Text generation"); vLLM's `stream_interval` does the same.
// Deltas held here when the worker dies were never accepted, so the next worker generates them again.
import { MAX_FRAME_TEXT, MAX_FRAME_TOKENS } from "../protocol/generation.ts";
import type { TokenDelta } from "../runner/model-runner.ts";

/** How long a delta may wait for the next ones: small beside a reader's eye, ~10 decode steps of gpt-tiny. */
export const TOKEN_WINDOW_MS = 20;

/** A window coalescers share: one timer, and every coalescer armed within it flushes when it ends, together. */
export class FlushWindow {
  private readonly armed = new Set<() => void>();
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly ms = TOKEN_WINDOW_MS) {}

  arm(flush: () => void): void {
    this.armed.add(flush);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      const due = [...this.armed];
      this.armed.clear();
      for (const f of due) f();
    }, this.ms);
  }

  disarm(flush: () => void): void {
    this.armed.delete(flush);
    if (this.armed.size > 0 || this.timer === undefined) return;
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * A delta's size against a frame's text budget, in UTF-16 units: its text, and its log probabilities' texts with
 * room for their numbers and keys (a token's entry lists up to 20 others, so a few tokens' entries can outweigh
 * pages of text).
 */
export function deltaSize(delta: Pick<TokenDelta, "text" | "logprobs">): number {
  let size = delta.text.length;
  for (const e of delta.logprobs ?? []) {
    size += e.token.length + 40;
    for (const t of e.top) size += t.token.length + 48;
  }
  return size;
}

export class TokenCoalescer {
  private readonly held = new Map<number, TokenDelta>();
  private readonly sentFirst = new Set<number>();
  private readonly flushHeld = () => {
    for (const pos of [...this.held.keys()]) this.emitHeld(pos);
  };

  constructor(
    private readonly emit: (delta: TokenDelta) => void,
    private readonly window = new FlushWindow(),
  ) {}

  add(delta: TokenDelta): void {
    if (!this.sentFirst.has(delta.pos)) {
      this.sentFirst.add(delta.pos);
      this.emit(delta);
      return;
    }
    const held = this.held.get(delta.pos);
    if (
      held &&
      held.offset + held.tokens.length === delta.offset &&
      held.tokens.length + delta.tokens.length <= MAX_FRAME_TOKENS &&
      deltaSize(held) + deltaSize(delta) <= MAX_FRAME_TEXT
    ) {
      held.tokens.push(...delta.tokens);
      held.text += delta.text;
      if (delta.logprobs) held.logprobs?.push(...delta.logprobs);
      return;
    }
    if (held) this.emitHeld(delta.pos);
    this.held.set(delta.pos, {
      ...delta,
      tokens: [...delta.tokens],
      ...(delta.logprobs ? { logprobs: [...delta.logprobs] } : {}),
    });
    this.window.arm(this.flushHeld);
  }

  /** Sends everything held (before the batch's completion, so no delta comes after it). */
  flush(): void {
    this.window.disarm(this.flushHeld);
    this.flushHeld();
  }

  /** Sends what is held of one item (before that item's own result). */
  flushItem(pos: number): void {
    this.emitHeld(pos);
  }

  private emitHeld(pos: number): void {
    const delta = this.held.get(pos);
    this.held.delete(pos);
    if (delta) this.emit(delta);
  }
}
