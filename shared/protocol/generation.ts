// Text generation on the wire (issue 14): what a text-generation item holds, what its output is, and the
// token deltas a worker streams while it generates. The edge validates items with these schemas before
// queueing, workers parse them in the text-generation task, and the queue object parses every delta frame.

import { z } from "zod";
import { CallPrefix, Tag } from "./chat-template.ts";
import { compileJsonSchema, SchemaProblem } from "./json-schema.ts";
import { ParsedJson } from "./validate.ts";

/** The most entries a logit_bias may hold (OpenAI's limit). */
export const MAX_LOGIT_BIAS = 300;

/**
 * OpenAI's logit_bias: token ids (as JSON keys) to a bias from -100 to 100 added to that token's logit before
 * the penalties and sampling (-100 in effect bans a token, 100 all but forces it). The worker refuses an id past
 * the model's vocabulary, which only it knows.
 */
export const LogitBias = z
  .record(
    z.string().regex(/^(0|[1-9][0-9]{0,8})$/),
    z.number().min(-100, "a bias must be -100 to 100").max(100, "a bias must be -100 to 100"),
    {
      error: (issue) =>
        issue.code === "invalid_key"
          ? `keys must be token ids (whole numbers from 0, at most 9 digits, written in decimal); "${String(issue.input)}" is not one`
          : undefined,
    },
  )
  .refine((b) => Object.keys(b).length <= MAX_LOGIT_BIAS, `must hold at most ${MAX_LOGIT_BIAS} token ids`);
export type LogitBias = z.infer<typeof LogitBias>;

/**
 * transformers' repetition penalty (see GenerationParams). Bounded both ways: it scales logits by up to itself or
 * its inverse, and a donor's claim is checked with the logit tolerance scaled as much, so a value near 0 would
 * both overflow the logits and leave the check no teeth.
 */
const REPETITION_RANGE = "repetition_penalty must be 0.1 to 10 (1 changes nothing; above 1 discourages repeats)";
export const RepetitionPenalty = z.number().min(0.1, REPETITION_RANGE).max(10, REPETITION_RANGE);

/** OpenAI's presence_penalty and frequency_penalty (see GenerationParams). */
const PENALTY_RANGE = "must be -2 to 2 (0 changes nothing; above 0 discourages repeats)";
export const Penalty = z.number().min(-2, PENALTY_RANGE).max(2, PENALTY_RANGE);

/** The most top tokens a generated token's log probabilities may list (OpenAI's top_logprobs limit). */
export const MAX_TOP_LOGPROBS = 20;

/**
 * The most log-probability entries (a token's own and its top ones) one item may ask for: max_new_tokens ×
 * (logprobs + 1). At about 55 bytes an entry this keeps an answer with them under the queue's 1 MB an output (and
 * its stored row under a Durable Object's 2 MB), so a call that could not be answered is refused before it runs.
 */
export const MAX_LOGPROB_ENTRIES = 12_000;

/** A token's text in log probabilities: decode([id]) (a byte-level token ending mid-character reads U+FFFD). */
const TokenText = z.string().max(256);
/** A log probability: at most 0 (zod's numbers are finite). */
const Logprob = z.number().max(0);
/**
 * A token's own bytes, given where its text cannot carry them: a byte-level token that ends mid-character (its
 * text reads U+FFFD). OpenAI's `bytes` of the token.
 */
const TokenBytes = z.array(z.int().min(0).max(255)).max(256).optional();

/**
 * A generated token's log probability and the most likely tokens at its place, under the model's own distribution
 * (the raw logits' log-softmax: before temperature, penalties, bias and masks, as vLLM's default). Aligned with the
 * output's tokens: the i-th entry is the i-th token's.
 */
export const TokenLogprob = z.strictObject({
  token: TokenText,
  bytes: TokenBytes,
  logprob: Logprob,
  top: z
    .array(z.strictObject({ id: z.int().min(0), token: TokenText, bytes: TokenBytes, logprob: Logprob }))
    .max(MAX_TOP_LOGPROBS),
});
export type TokenLogprob = z.infer<typeof TokenLogprob>;

/**
 * A prompt token's log probability given the tokens before it (vLLM's prompt_logprobs; OpenAI's echo): as a
 * generated token's, but the first token's is null (nothing comes before it) and lists no top tokens.
 */
export const PromptLogprob = TokenLogprob.extend({ logprob: Logprob.nullable() });
export type PromptLogprob = z.infer<typeof PromptLogprob>;

/** Sampling and stopping: greedy when temperature is 0 (the default); seeded sampling is reproducible. */
export const GenerationParams = z
  .strictObject({
    /** Tokens to generate at most (finish_reason "length" when reached). */
    max_new_tokens: z.int().min(0).max(4096).default(64),
    /**
     * Tokens to generate before an end-of-text token may end the text (transformers' min_new_tokens, vLLM's
     * min_tokens): until then it is never picked. A stop string still ends it. Left out when not asked for
     * (no default filled in), so an item without it still reads to a worker or donor script that predates it.
     */
    min_new_tokens: z.int().min(0).max(4096).optional(),
    /** 0: greedy (argmax). Above 0: softmax(logits / temperature) sampling. */
    temperature: z.number().min(0).max(10).default(0),
    /** Sample only among the k most likely tokens; 0: no limit. */
    top_k: z.int().min(0).max(1_000_000).default(0),
    /** Sample only among the smallest set of tokens whose probabilities sum to at least top_p. */
    top_p: z.number().gt(0).max(1).default(1),
    /** Seeds the sampler (a counter-based PRNG keyed by seed and token position), so a resumed run is the same. */
    seed: z
      .int()
      .min(0)
      .max(2 ** 32 - 1)
      .default(0),
    /** Generation ends (finish_reason "stop") at the first of these strings; the string itself is not output. */
    stop: z.array(z.string().min(1).max(64)).max(8).default([]),
    /**
     * OpenAI's (and vLLM's) penalties, over the tokens generated so far: each token's logit is lowered by
     * presence_penalty once it has appeared and by frequency_penalty for each time it has (negative values
     * favour repeats). Like min_new_tokens, left out unless asked for, so older workers still read the item.
     */
    presence_penalty: Penalty.optional(),
    frequency_penalty: Penalty.optional(),
    /**
     * transformers' repetition penalty, over the prompt and the tokens generated so far: a positive logit is
     * divided by it, a negative one multiplied (above 1 discourages repeats; 0.1 to 10). Left out unless asked for.
     */
    repetition_penalty: RepetitionPenalty.optional(),
    /** Added to the named tokens' logits first (LogitBias). Left out unless asked for. */
    logit_bias: LogitBias.optional(),
    /**
     * "json_object": the reply is one JSON object ("json_schema": one that `schema` accepts), written as
     * json_spacing says: every token that could not continue it is masked out, and its closing brace ends the reply
     * (text-generation-format.ts).
     * A reply cut by max_new_tokens ends unclosed (finish_reason "length"); min_new_tokens and stop strings are
     * refused with it. Left out unless asked for.
     */
    format: z.enum(["json_object", "json_schema"]).optional(),
    /**
     * With format "json_schema": the JSON Schema the reply's object must satisfy (json-schema.ts says which keywords
     * are served). Properties are written in the schema's order, required ones always, others only as the model
     * picks; nothing outside the schema. Left out unless asked for.
     */
    schema: z.record(z.string(), ParsedJson).optional(),
    /**
     * With a JSON format, how its object is written outside strings: "compact", no whitespace (the default), or
     * "spaced", one space allowed after each `:` and `,` (`{"a": 1, "b": [1, 2]}`, as Python's json.dumps writes
     * and so most models learnt JSON; the model picks whether to write it), json_markers.text_schema's object
     * likewise, and an enum or const object or array the schema fixes. Nothing else: a run of whitespace under a
     * mask is where models loop. Left out unless asked for.
     */
    json_spacing: z.enum(["compact", "spaced"]).optional(),
    /**
     * With a JSON format: the object is written between `prefix` and `suffix` (a model's tool-call tags, as its chat
     * template's tool_call says), and the reply ends after the suffix. `optional`: the reply may be free text
     * instead, one that does not begin with the prefix (OpenAI's tool_choice "auto", llama.cpp's lazy grammars);
     * only a reply that begins with it is held to the object. `parallel`: after the suffix another object may follow
     * between the markers (whitespace before its prefix), or the reply ends (OpenAI's parallel_tool_calls). Left out
     * unless asked for.
     */
    json_markers: z
      .strictObject({
        prefix: CallPrefix,
        suffix: Tag,
        optional: z.boolean(),
        parallel: z.boolean().optional(),
        /**
         * With optional: a reply that does not begin with the prefix is one JSON object this schema accepts (written
         * as `schema`'s is), not free text (OpenAI's response_format beside tools).
         */
        text_schema: z.record(z.string(), ParsedJson).optional(),
        /**
         * With optional (and no text_schema): a call may also begin after text, the moment its prefix is whole
         * anywhere in it (the model's reasoning or a sentence first, as Qwen3's and Hermes' replies do; vLLM's
         * tool parsers read them so). The text before it is the reply's content.
         */
        after_text: z.boolean().optional(),
      })
      .optional(),
    /**
     * Return each generated token's log probability, and this many most likely tokens at each place (0 to
     * MAX_TOP_LOGPROBS): the output's `logprobs`, and each token delta's. Left out unless asked for.
     */
    logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).optional(),
    /**
     * Return each prompt token's log probability given those before it, and this many most likely tokens at each
     * place (0 to MAX_TOP_LOGPROBS): the output's `prompt_logprobs`. Left out unless asked for.
     */
    prompt_logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).optional(),
  })
  .refine((p) => p.max_new_tokens > 0 || p.prompt_logprobs !== undefined, {
    message: "max_new_tokens must be at least 1 (0 only with prompt_logprobs: a prompt scored, nothing generated)",
    path: ["max_new_tokens"],
  })
  .refine((p) => (p.min_new_tokens ?? 0) <= p.max_new_tokens, {
    message: "min_new_tokens must be at most max_new_tokens",
    path: ["min_new_tokens"],
  })
  .refine((p) => p.format === undefined || (p.min_new_tokens ?? 0) === 0, {
    message: "min_new_tokens cannot be used with a JSON format: the object's closing brace ends the reply",
    path: ["min_new_tokens"],
  })
  .refine((p) => !p.json_markers?.after_text || (p.json_markers.optional && p.json_markers.text_schema === undefined), {
    message:
      "json_markers.after_text comes with optional and without text_schema: it lets a call follow text, which only a reply that may be text has",
    path: ["json_markers", "after_text"],
  })
  .refine((p) => p.json_markers?.text_schema === undefined || p.json_markers.optional, {
    message: "json_markers.text_schema comes with optional: it is what a reply that makes no call is",
    path: ["json_markers", "text_schema"],
  })
  .refine(
    (p) =>
      p.format === undefined ||
      p.stop.length === 0 ||
      (p.json_markers?.optional === true && p.json_markers.text_schema === undefined),
    {
      message:
        "stop cannot be used with a JSON format (but with optional json_markers, where it cuts text only): a stop string would cut the object and read as its end",
      path: ["stop"],
    },
  )
  .refine((p) => p.json_spacing === undefined || p.format !== undefined, {
    message: 'json_spacing comes with a format ("json_object" or "json_schema"): it says how its object is written',
    path: ["json_spacing"],
  })
  .refine((p) => p.json_markers === undefined || p.format !== undefined, {
    message: 'json_markers come with a format ("json_object" or "json_schema"): they mark where its object is written',
    path: ["json_markers"],
  })
  .refine((p) => (p.format === "json_schema") === (p.schema !== undefined), {
    message: 'schema comes with format "json_schema", and format "json_schema" with a schema',
    path: ["schema"],
  })
  .superRefine((p, ctx) => {
    const schemas = [
      { schema: p.schema, path: ["schema"] },
      { schema: p.json_markers?.text_schema, path: ["json_markers", "text_schema"] },
    ];
    for (const { schema, path } of schemas) {
      if (schema === undefined) continue;
      try {
        compileJsonSchema(schema);
      } catch (e) {
        if (!(e instanceof SchemaProblem)) throw e;
        ctx.addIssue({ code: "custom", message: e.message, path });
      }
    }
  });
export type GenerationParams = z.infer<typeof GenerationParams>;

export const FinishReason = z.enum(["stop", "length"]);
export type FinishReason = z.infer<typeof FinishReason>;

/** A finished item's output: the whole generated text and token ids (resumed prefix included). */
export const GenerationOutput = z.strictObject({
  generated_text: z.string(),
  tokens: z.array(z.int().min(0)).max(4096),
  finish_reason: FinishReason,
  prompt_tokens: z.int().min(0),
  /** With params.logprobs: one entry a token of `tokens`, in order. */
  logprobs: z.array(TokenLogprob).max(4096).optional(),
  /**
   * With params.logprobs, when an end-of-text token ended the reply: that token's entry (the token itself is not
   * in `tokens`). A scoring client counts on an entry a place, the end's included (lm-eval reads all but the last).
   */
  end_logprob: TokenLogprob.optional(),
  /** With params.prompt_logprobs: one entry a prompt token (prompt_tokens of them), the first's logprob null. */
  prompt_logprobs: z.array(PromptLogprob).max(MAX_LOGPROB_ENTRIES).optional(),
});
export type GenerationOutput = z.infer<typeof GenerationOutput>;

/**
 * What is wrong with an output's log probabilities beyond their schema, or null: they must be one entry a token,
 * each listing as many top tokens (a stream and an answer read them by the token's place).
 */
export function logprobsMisaligned(output: GenerationOutput): string | null {
  if (output.end_logprob && !output.logprobs) return "end_logprob comes only with logprobs";
  return (
    misaligned("logprobs", output.logprobs, output.tokens.length, false) ??
    misaligned("prompt_logprobs", output.prompt_logprobs, output.prompt_tokens, true)
  );
}

/**
 * `entries` (when given) must be `count`, each listing as many top tokens; a prompt's first entry has no figures
 * (nothing comes before it), and only it.
 */
function misaligned(
  name: string,
  entries: readonly { logprob: number | null; top: readonly unknown[] }[] | undefined,
  count: number,
  prompt: boolean,
): string | null {
  if (entries === undefined) return null;
  if (entries.length !== count) {
    return `${name} holds ${entries.length} entries for ${count} tokens; it must hold one a token`;
  }
  const from = prompt ? 1 : 0;
  if (prompt && entries[0] && (entries[0].logprob !== null || entries[0].top.length > 0)) {
    return `${name}'s first entry has a logprob or top tokens; nothing comes before the first token`;
  }
  if (entries.slice(from).some((e) => e.logprob === null)) return `${name} has a null logprob past its first entry`;
  const top = entries[from]?.top.length ?? 0;
  const at = entries.findIndex((e, i) => i >= from && e.top.length !== top);
  return at < 0 ? null : `${name} entry ${at} lists ${entries[at]?.top.length} top tokens, entry ${from} ${top}`;
}

/**
 * A donor's output for the item, set by the queue (never by a caller) on the run that verifies it: the worker
 * checks it with one teacher-forced pass instead of generating (shared/tasks/text-generation-check.ts) and
 * answers a GenerationVerdict. `tolerance` is the logit slack of that check (the model's verification.tolerance.abs).
 */
export const GenerationClaim = GenerationOutput.extend({ tolerance: z.number().min(0).max(10) });
export type GenerationClaim = z.infer<typeof GenerationClaim>;

/**
 * One text-generation item as a worker receives it: the prompt as text (a chat's messages are rendered with the
 * model's chat template at the edge), its parameters, and, when the item is redelivered mid-generation, the
 * tokens already accepted: the worker continues after them and never sends them again. With `verify`, the
 * worker checks that claim rather than generating.
 */
export const GenerationItem = z.strictObject({
  prompt: z.string().min(1).max(100_000),
  params: GenerationParams.prefault({}),
  resume: z
    .strictObject({
      tokens: z.array(z.int().min(0)).max(4096),
      text: z.string(),
      /** With params.logprobs: the accepted tokens' entries, which the output starts with. */
      logprobs: z.array(TokenLogprob).max(4096).optional(),
    })
    .optional(),
  verify: GenerationClaim.optional(),
});
export type GenerationItem = z.infer<typeof GenerationItem>;

/**
 * What a verifying run answers for an item with `verify`: `agreed` when every claimed token is one the model
 * allows at its place (and the claim ends, and reads, as the model's run would), else the first place that is
 * not: an index into the claim's tokens, or their count when the end is wrong (end-of-text not allowed there,
 * finish_reason, generated_text or prompt_tokens not the model's). `checked`: the token places the pass read.
 */
export const GenerationVerdict = z
  .strictObject({
    verdict: z.enum(["agreed", "mismatch"]),
    checked: z.int().min(0),
    first_mismatch: z.int().min(0).nullable(),
    reason: z.string().max(500).nullable(),
  })
  .refine((v) => (v.verdict === "agreed") === (v.first_mismatch === null), {
    message: "first_mismatch is null exactly when the verdict is agreed",
  });
export type GenerationVerdict = z.infer<typeof GenerationVerdict>;

/**
 * Worker → coordinator, while an item of a leased batch generates: the next tokens of the item at batch
 * position `pos`. `offset` is how many tokens of the item were generated before these (the resumed prefix
 * included), so the queue keeps each token once whatever is sent twice, and rejects a gap.
 */
/** The most tokens, and characters of text, one `tokens` frame may carry. */
export const MAX_FRAME_TOKENS = 256;
export const MAX_FRAME_TEXT = 16_384;

export const TokensFrame = z.strictObject({
  type: z.literal("tokens"),
  lease_id: z.string().min(1),
  pos: z.int().min(0),
  offset: z.int().min(0),
  tokens: z.array(z.int().min(0)).min(1).max(MAX_FRAME_TOKENS),
  /** The text these tokens add (a token that ends mid-character adds its bytes with the next delta). */
  text: z.string().max(MAX_FRAME_TEXT),
  /** With the item's params.logprobs: one entry a token of `tokens` (the queue refuses a delta without them). */
  logprobs: z.array(TokenLogprob).max(MAX_FRAME_TOKENS).optional(),
});
export type TokensFrame = z.infer<typeof TokensFrame>;

/** The most deltas one `POST /v1/leases/{id}/tokens`, or one `deltas` frame, carries. */
export const MAX_HTTP_DELTAS = 256;

/**
 * Several token deltas of one lease's items at once, each with the `tokens` frame's fields less the lease,
 * kept in order as if sent frame by frame: an HTTP worker's `POST /v1/leases/{id}/tokens`, and a socket's
 * `deltas` frame (DeltasFrame).
 */
export const TokensBody = z.strictObject({
  deltas: z
    .array(TokensFrame.omit({ type: true, lease_id: true }))
    .min(1)
    .max(MAX_HTTP_DELTAS),
});
export type TokensBody = z.infer<typeof TokensBody>;

/**
 * Worker → coordinator: the deltas a worker's coalescing window gathered over a lease's items, in one frame
 * rather than one `tokens` frame each (each frame costs the queue object a dispatch, a lease lookup and a
 * transaction). Sent only to a coordinator whose welcome says `deltas: true`.
 */
export const DeltasFrame = TokensBody.extend({ type: z.literal("deltas"), lease_id: z.string().min(1) });
export type DeltasFrame = z.infer<typeof DeltasFrame>;

/** The most leases one `lease_deltas` frame names. */
export const MAX_FRAME_LEASES = 64;

/**
 * Worker → coordinator: the deltas of several leases' items in one frame, each lease's kept as its `deltas`
 * frame's would be (a refused lease's are answered with an `error` frame naming it; the others are kept).
 * A worker decoding several leases together (continuous batching: calls that arrive while others decode come
 * as leases of their own) sends its window's deltas of every lease as one frame rather than a frame a lease:
 * on Cloudflare each WebSocket message is a billed request to the queue object, and here a dispatch and a
 * transaction. At most MAX_HTTP_DELTAS deltas in all. Sent only to a
 * coordinator whose welcome says `lease_deltas: true`.
 */
export const LeaseDeltasFrame = z
  .strictObject({
    type: z.literal("lease_deltas"),
    leases: z
      .array(TokensBody.extend({ lease_id: z.string().min(1) }))
      .min(1)
      .max(MAX_FRAME_LEASES),
  })
  .refine((f) => f.leases.reduce((n, l) => n + l.deltas.length, 0) <= MAX_HTTP_DELTAS, {
    message: `a lease_deltas frame carries at most ${MAX_HTTP_DELTAS} deltas in all`,
  })
  .refine((f) => new Set(f.leases.map((l) => l.lease_id)).size === f.leases.length, {
    message: "a lease_deltas frame names each lease once",
  });
export type LeaseDeltasFrame = z.infer<typeof LeaseDeltasFrame>;
