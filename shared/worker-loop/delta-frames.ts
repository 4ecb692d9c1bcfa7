// Token deltas waiting to go on a connection's socket, packed into frames (shared/protocol/generation.ts): where
// the coordinator takes them, one `lease_deltas` frame for every lease's (a lease alone: a `deltas` frame), else
// a `deltas` frame a lease, else a `tokens` frame a delta. Each frame within its limits; every lease's deltas in
// their order, frame after frame.
import {
  type DeltasFrame,
  type LeaseDeltasFrame,
  MAX_FRAME_LEASES,
  MAX_HTTP_DELTAS,
  type TokensFrame,
} from "../protocol/generation.ts";
import type { TokenDelta } from "../runner/model-runner.ts";
import { deltaSize } from "./token-coalescer.ts";

/**
 * The text one frame of several deltas carries at most, but for a single delta (itself at most MAX_FRAME_TEXT),
 * counted in UTF-16 units (deltaSize: log probabilities count too). As JSON at its worst (every character a
 * 6-byte escape: 390 KB) with MAX_HTTP_DELTAS deltas of MAX_FRAME_TOKENS six-digit tokens (460 KB), a frame stays
 * under 900 KB: inside the 1 MiB a WebSocket message may be on Cloudflare and workerd.
 */
export const DELTAS_FRAME_TEXT = 64 * 1024;

/** What the coordinator's welcome said it takes. */
export type DeltaFraming = "tokens" | "deltas" | "lease_deltas";

export type DeltaFrame = TokensFrame | DeltasFrame | LeaseDeltasFrame;

export function deltaFrames(pending: ReadonlyMap<string, readonly TokenDelta[]>, framing: DeltaFraming): DeltaFrame[] {
  if (framing === "tokens") {
    return [...pending].flatMap(([lease_id, deltas]) =>
      deltas.map((d) => ({ type: "tokens" as const, lease_id, ...d })),
    );
  }
  const frames: DeltaFrame[] = [];
  let leases: { lease_id: string; deltas: TokenDelta[] }[] = [];
  let count = 0;
  let text = 0;
  const close = () => {
    const [only] = leases;
    if (!only) return;
    frames.push(leases.length === 1 ? { type: "deltas", ...only } : { type: "lease_deltas", leases });
    leases = [];
    count = 0;
    text = 0;
  };
  for (const [lease_id, deltas] of pending) {
    if (framing === "deltas") close();
    for (const delta of deltas) {
      const size = deltaSize(delta);
      if (count === MAX_HTTP_DELTAS || (count > 0 && text + size > DELTAS_FRAME_TEXT)) close();
      let entry = leases.at(-1);
      if (entry?.lease_id !== lease_id) {
        if (leases.length === MAX_FRAME_LEASES) close();
        entry = { lease_id, deltas: [] };
        leases.push(entry);
      }
      entry.deltas.push(delta);
      count++;
      text += size;
    }
  }
  close();
  return frames;
}
