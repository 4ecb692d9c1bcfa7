// One sequence of a text-generation batch as its tokens come: the tokens generated, the text sent so far, and
// where it ends (an end-of-text token, a stop string, max_new_tokens). The decode loop (text-generation.ts) and
// the teacher-forced check of a donor's claim (text-generation-check.ts) take tokens through the same takeToken,
// so a claim is held to the very rules that end the model's own run.

import type { FinishReason, GenerationItem, PromptLogprob, TokenLogprob } from "../protocol/generation.ts";
import { stopScope } from "./text-generation-format.ts";
import type { Decode } from "./tokenizer.ts";

export type { Decode } from "./tokenizer.ts";

export interface Sequence {
  pos: number;
  item: GenerationItem;
  promptTokens: number;
  /** The prompt's tokens (repetition_penalty reads them). */
  prompt: readonly number[];
  /** Prompt, then the resumed tokens: what the prefill reads. */
  prefix: number[];
  /** Generated tokens, the resumed ones first. */
  generated: number[];
  /** With params.logprobs: one entry a generated token (the resumed ones' from the resume). */
  logprobs?: TokenLogprob[];
  /** With params.logprobs, once an end-of-text token ended it: that token's entry. */
  endLogprob?: TokenLogprob;
  /** With params.prompt_logprobs: one entry a prompt token (text-generation.ts reads them before decoding). */
  promptLogprobs?: PromptLogprob[];
  /** The tokenizer's decode (JSON mode reads each token's text through it). */
  decode: Decode;
  /** Characters of the generated text already sent (the resumed text included). */
  sent: number;
  text: string;
  finish?: FinishReason;
}

/** A sequence about to generate after `prompt` (and the item's resumed tokens, if any). */
export function startSequence(pos: number, item: GenerationItem, prompt: number[], decode: Decode): Sequence {
  const resumed = item.resume?.tokens ?? [];
  const seq: Sequence = {
    pos,
    item,
    promptTokens: prompt.length,
    prompt,
    prefix: [...prompt, ...resumed],
    generated: [...resumed],
    ...(item.params.logprobs === undefined ? {} : { logprobs: [...(item.resume?.logprobs ?? [])] }),
    decode,
    sent: item.resume?.text.length ?? 0,
    text: item.resume?.text ?? "",
  };
  if (resumed.length >= item.params.max_new_tokens) {
    seq.finish = "length";
    seq.text = decode(resumed, { skip_special_tokens: true });
  }
  return seq;
}

/**
 * Takes a sequence's next token (and its log probabilities, when asked for), ending it at an end-of-text token, a
 * stop string or max_new_tokens; answers the text it adds to what was sent, or null for an end-of-text token
 * (neither output nor counted: what was held back ends the text).
 */
export function takeToken(
  seq: Sequence,
  token: number,
  eos: readonly number[],
  decode: Decode,
  logprob?: TokenLogprob,
): string | null {
  if (eos.includes(token)) {
    seq.finish = "stop";
    const full = decode(seq.generated, { skip_special_tokens: true });
    seq.text = settled(seq, full) ?? full;
    if (logprob && seq.logprobs) seq.endLogprob = logprob;
    return null;
  }
  seq.generated.push(token);
  if (logprob) seq.logprobs?.push(logprob);
  const full = decode(seq.generated, { skip_special_tokens: true });
  const { stop } = seq.item.params;
  // Stop strings cut text, never a call: what may still begin one waits (stopScope).
  const scope = stopScope(seq.item.params, full);
  let text = "";
  let stopped: string | undefined;
  if (scope.k === "text") ({ text, stopped } = advanceText(full.slice(0, full.length - scope.held), seq.sent, stop));
  else if (scope.k === "call") {
    // The text before the call is whole: a stop string in it ends the reply there, else all of it goes.
    stopped = scope.at > 0 ? advanceText(full.slice(0, scope.at), seq.sent, stop).stopped : undefined;
    text = advanceText(full, seq.sent, []).text;
  }
  if (stopped !== undefined) {
    seq.finish = "stop";
    seq.text = stopped;
  } else if (seq.generated.length >= seq.item.params.max_new_tokens) {
    const cut = settled(seq, full);
    seq.finish = cut === undefined ? "length" : "stop";
    seq.text = cut ?? full;
  }
  const delta = seq.finish ? seq.text.slice(seq.sent) : text;
  seq.sent += delta.length;
  return delta;
}

/**
 * Where a reply's stop strings cut it as it ends (undefined: nowhere): what still waited to be settled (undecided
 * between a call and text, or an end that may begin a call) is text, so they are looked for in it.
 */
function settled(seq: Sequence, full: string): string | undefined {
  const scope = stopScope(seq.item.params, full);
  if (scope.k === "call" || (scope.k === "text" && scope.held === 0)) return undefined;
  return advanceText(full, seq.sent, seq.item.params.stop).stopped;
}

/**
 * The text safe to send after `sent` characters, and where a stop string cut it: held back are a trailing
 * U+FFFD (a character whose bytes are not all out yet) and any tail that could still become a stop string.
 */
export function advanceText(full: string, sent: number, stops: readonly string[]): { text: string; stopped?: string } {
  const longest = Math.max(0, ...stops.map((s) => s.length));
  const from = Math.max(0, sent - longest + 1);
  let cut = -1;
  for (const stop of stops) {
    const at = full.indexOf(stop, from);
    if (at >= 0 && (cut < 0 || at < cut)) cut = at;
  }
  if (cut >= 0) return { text: full.slice(sent, Math.max(sent, cut)), stopped: full.slice(0, Math.max(sent, cut)) };
  let safe = full.length;
  while (safe > sent && full[safe - 1] === "\uFFFD") safe--;
  for (const stop of stops) {
    for (let n = Math.min(stop.length - 1, safe - sent); n > 0; n--) {
      if (full.slice(safe - n, safe) === stop.slice(0, n)) {
        safe -= n;
        break;
      }
    }
  }
  return { text: full.slice(sent, Math.max(sent, safe)) };
}
