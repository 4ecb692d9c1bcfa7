// The worker's mask (shared/tasks/text-generation-format.ts) and the edge's reading of a reply
// (edge/openai-tools.ts) must agree on every reply the mask lets a model write: many runs drawn token by token
// among the tokens the mask allows, over a small vocabulary that writes tags and calls in pieces, under each kind
// of tags and mode; each reply read whole and streamed in pieces of every size. Draws come from a seeded generator,
// so a failure names a run that repeats.
import { describe, expect, it } from "vitest";
import { toolCallStream, toolFinish, toolFormat, toolMessage, withAnswer } from "../../edge/openai-tools.ts";
import { createRng } from "../../models/build/prng.ts";
import { type GenerationOutput, GenerationParams } from "../../shared/index.ts";
import { jsonMask, unfinishedReply } from "../../shared/tasks/text-generation-format.ts";
import { startSequence, takeToken } from "../../shared/tasks/text-generation-sequence.ts";
import { TEST_REGISTRY } from "../support/test-models.ts";

const tools = [
  { type: "function" as const, function: { name: "f" } },
  {
    type: "function" as const,
    function: { name: "g", parameters: { type: "object", properties: { x: { type: "integer" } }, required: ["x"] } },
  },
];

/**
 * Pieces that write tags and calls (whole, split, and each character, so no draw gets stuck where the mask leaves only
 * end-of-text), both calls, whitespace and text; the last is end-of-text.
 */
const pieces = (prefix: string, suffix: string) =>
  [
    ...new Set([
      ...prefix,
      ...suffix,
      ...'{"name":"fg","arguments":{"x":12}}',
      '"name"',
      '"arguments"',
      '"f"',
      '"g"',
      prefix,
      prefix.slice(0, 1),
      prefix.slice(1),
      suffix,
      suffix.slice(0, 2),
      suffix.slice(2),
      '{"name":"',
      "f",
      "g",
      '","arguments":',
      "{",
      "}",
      "}}",
      '"x"',
      ":",
      "1",
      "2",
      "\n",
      " ",
      "hi",
      "ok.",
    ]),
  ].filter((p) => p !== "");

/**
 * The calls a reply's text makes, read on its own (not as the edge reads it): whitespace, the prefix, an object,
 * the suffix, again; with `afterText`, text may come first (the content: all before the prefix's first place).
 * `strict`: every call whole, its suffix too; `clean`: so, but the last suffix may be cut.
 */
function callsIn(text: string, { prefix, suffix }: { prefix: string; suffix: string }, afterText: boolean) {
  let s = text;
  let count = 0;
  let content = "";
  if (afterText && !s.replace(/^[ \t\r\n]+/, "").startsWith(prefix) && s.includes(prefix)) {
    content = s.slice(0, s.indexOf(prefix));
    s = s.slice(content.length);
  }
  const broken = () => ({ count, content, clean: false, strict: false });
  for (;;) {
    s = s.replace(/^[ \t\r\n]+/, "");
    if (s === "") return { count, content, clean: count > 0, strict: count > 0 };
    if (!s.startsWith(prefix)) return broken();
    s = s.slice(prefix.length);
    let end = -1;
    for (let k = 1; k <= s.length && end < 0; k++) {
      if (s[k - 1] !== "}") continue;
      try {
        JSON.parse(s.slice(0, k));
        end = k;
      } catch {}
    }
    if (end < 0) return broken();
    count++;
    s = s.slice(end);
    if (s.startsWith(suffix)) s = s.slice(suffix.length);
    else return suffix.startsWith(s) ? { count, content, clean: true, strict: false } : broken();
  }
}

const model = TEST_REGISTRY.models.find((m) => m.name === "tool-caller");

describe("the mask and the edge agree on tool-call replies", () => {
  const cases = [
    { prefix: "<c>", suffix: "</c>" },
    { prefix: "<tool_call>\n", suffix: "\n</tool_call>" },
    { prefix: "[[", suffix: "" },
  ];
  for (const tags of cases) {
    // "auto+answer": auto beside response_format, so a reply that makes no call is an object with an integer x.
    for (const choice of ["auto", "auto+answer", "required"] as const) {
      for (const parallel of [true, false]) {
        it(`${JSON.stringify(tags)}, ${choice}, parallel ${parallel}`, () => {
          const template = { ...model?.chat_template, tool_call: tags } as never;
          const tooling = toolFormat({ name: "m", chat_template: template } as never, {
            tools,
            tool_choice: choice === "required" ? "required" : "auto",
            parallel_tool_calls: parallel,
          });
          if (!tooling) throw new Error("no format");
          const answer = { type: "object", properties: { x: { type: "integer" } }, required: ["x"] };
          // As the route gives them: the format the worker writes under, the plan the reply is read by.
          const { format, plan } = choice === "auto+answer" ? withAnswer(tooling, answer) : tooling;
          const params = { ...format, stop: [] as string[] };
          // Tokens as bytes, as a byte-level tokenizer's: the pieces, then the two bytes of "é" each alone, é's last
          // byte with the whole prefix after it, the prefix's end with é's first byte after it, a special token
          // (it writes nothing), and end-of-text.
          const bytes = [
            ...pieces(tags.prefix, tags.suffix).map((p) => [...Buffer.from(p)]),
            [0xc3],
            [0xa9],
            [0xa9, ...Buffer.from(tags.prefix)],
            [0xa9, ...Buffer.from(`${tags.prefix}x`)],
            [...Buffer.from(tags.prefix.slice(1)), 0xc3],
            [],
            [],
          ];
          const texts = bytes.map((b) => Buffer.from(b).toString("utf8"));
          const eos = [bytes.length - 1];
          const decode = (ids: readonly number[]) => Buffer.from(ids.flatMap((t) => bytes[t] ?? [])).toString("utf8");
          // Drawn first where the mask allows them: tags and a call's start, and the byte tokens (which it allows
          // only where they write no prefix wrongly).
          const byteTokens = [7, 6, 5, 4, 3, 2].map((k) => bytes.length - k);
          const leads = [tags.prefix, '{"name":"', '","arguments":', tags.suffix].map((l) => texts.indexOf(l));
          leads.push(...byteTokens);
          const draw = createRng(texts.length * 31 + choice.length + (parallel ? 10 : 20));
          let calls = 0;
          let several = 0;
          let afterTexts = 0;
          for (let run = 0; run < 150; run++) {
            const generated: number[] = [];
            const most = 4 + Math.floor(draw() * 40);
            let finish: "stop" | "length" = "length";
            while (generated.length < most) {
              const row = new Float32Array(texts.length).fill(1);
              jsonMask(params, row, 0, texts.length, eos, decode, generated, generated.length);
              const open = [...row.keys()].filter((t) => row[t] === 1);
              expect(open.length, `run ${run}: ${JSON.stringify(decode(generated))}`).toBeGreaterThan(0);
              // Half the draws take a tag or a call's start where one may come, so runs reach calls, and several.
              const ledBy = leads.filter((l) => open.includes(l));
              const led = ledBy[Math.floor(draw() * ledBy.length)];
              const t = led !== undefined && draw() < 0.5 ? led : (open[Math.floor(draw() * open.length)] as number);
              if (eos.includes(t)) {
                finish = "stop";
                break;
              }
              generated.push(t);
            }
            const text = decode(generated);
            const where = `run ${run}: ${JSON.stringify(text)} (${finish})`;
            if (finish === "stop") expect(unfinishedReply(params, text), where).toBeNull();
            const output: GenerationOutput = {
              generated_text: text,
              tokens: generated,
              finish_reason: finish,
              prompt_tokens: 1,
            };
            const message = toolMessage(plan, output, 0);
            const finished = toolFinish(plan, output);
            const made = "tool_calls" in message ? (message.tool_calls ?? []) : [];
            calls += made.length;
            if (made.length > 1) several++;
            // "auto" (tool_choice "auto" alone) lets a call follow text: the text before it is the content.
            const afterText = choice === "auto";
            if (afterText && made.length > 0 && !text.trimStart().startsWith(tags.prefix)) afterTexts++;
            // Read on its own: a call began where the prefix came (anywhere, after text; else the edge's word).
            const began = afterText ? text.includes(tags.prefix) : message.content === null;
            if (!began) {
              // Text only where the model could decide, and never one that began a call.
              expect(choice, where).not.toBe("required");
              expect(message.content, where).toBe(text);
              expect(text.trimStart().startsWith(tags.prefix), where).toBe(false);
              expect(finished, where).toBe(finish);
              if (choice === "auto+answer" && finish === "stop") {
                expect(Number.isInteger(JSON.parse(text).x), where).toBe(true);
              }
              // Beside response_format a reply that makes no call is the answer's object from its first character.
              if (choice === "auto+answer") expect(text.startsWith("{"), where).toBe(true);
            } else {
              // Read on its own, the text is calls (after text, for "auto"): all whole where the mask let it end;
              // cut by max_tokens, whole ("tool_calls") only when nothing but the last suffix was cut.
              const read = callsIn(text, tags, afterText);
              expect(message.content, where).toBe(read.content === "" ? null : read.content);
              if (finish === "stop") expect(read.strict, where).toBe(true);
              else expect(finished, where).toBe(read.clean ? "tool_calls" : "length");
              if (read.clean) expect(made.length, where).toBe(read.count);
            }
            if (began && finish === "stop") {
              // A reply the mask let end is whole calls: each of a tool offered, its arguments JSON.
              expect(finished, where).toBe("tool_calls");
              expect(made.length, where).toBeGreaterThan(0);
              if (!parallel) expect(made.length, where).toBe(1);
              for (const c of made) {
                if (c.type !== "function") throw new Error(where);
                expect(["f", "g"], where).toContain(c.function.name);
                const args = JSON.parse(c.function.arguments);
                if (c.function.name === "g") expect(Number.isInteger(args.x), where).toBe(true);
                else expect(args, where).toEqual({});
              }
            }
            // Streamed in pieces of any size, the deltas add up to the answer.
            const stream = toolCallStream(plan);
            let content = "";
            const args: string[] = [];
            const names: string[] = [];
            const take = (piece: ReturnType<typeof stream.push>) => {
              if (piece.kind === "text") content += piece.text;
              if (piece.kind !== "call") return;
              content += piece.text ?? "";
              for (const d of piece.deltas) {
                if (d.function?.name !== undefined) names[d.index] = d.function.name;
                args[d.index] = (args[d.index] ?? "") + (d.function?.arguments ?? "");
              }
            };
            for (let at = 0; at < text.length; ) {
              const size = 1 + Math.floor(draw() * 6);
              take(stream.push(0, text.slice(at, at + size)));
              at += size;
            }
            take(stream.end(0, output));
            expect(content, where).toBe(message.content ?? "");
            expect(names, where).toEqual(made.map((c) => c.type === "function" && c.function.name));
            expect(args, where).toEqual(made.map((c) => c.type === "function" && c.function.arguments));
          }
          // The draws made calls, several where parallel, after text for "auto" (the runs reach what they test).
          expect(calls).toBeGreaterThan(50);
          if (choice === "auto") expect(afterTexts).toBeGreaterThan(10);
          if (parallel) expect(several).toBeGreaterThan(10);
          else expect(several).toBe(0);
        });
      }
    }
  }

  // Stop strings with "auto", through the worker's own takeToken: its deltas begin its text, which the edge reads as
  // the whole answer did, streamed from those deltas; a stop cuts text (before a call too), never a call.
  for (const tags of cases) {
    it(`${JSON.stringify(tags)}, auto with stop strings, read from the worker's deltas`, () => {
      const template = { ...model?.chat_template, tool_call: tags } as never;
      const tooling = toolFormat({ name: "m", chat_template: template } as never, { tools, tool_choice: "auto" });
      if (!tooling) throw new Error("no format");
      // And a token of text and a prefix at once, so a stop string may come in the same token as a call's start.
      const words = [...pieces(tags.prefix, tags.suffix), `ok.${tags.prefix}`];
      const texts = [...words, ""];
      const eos = [texts.length - 1];
      const decode = (ids: readonly number[]) => ids.map((t) => texts[t] ?? "").join("");
      const leads = [tags.prefix, '{"name":"', '","arguments":', tags.suffix, "hi", `ok.${tags.prefix}`].map((l) =>
        texts.indexOf(l),
      );
      const stopsToTry = ["ok", "i<", "\n\n", tags.prefix.slice(0, 2), "}"];
      const draw = createRng(texts.length * 7 + 3);
      let cut = 0;
      let calls = 0;
      for (let run = 0; run < 200; run++) {
        const stop = [stopsToTry[run % stopsToTry.length] as string];
        const params = GenerationParams.parse({ ...tooling.format, stop, max_new_tokens: 40 });
        const seq = startSequence(0, { prompt: "p", params }, [1], decode);
        const deltas: string[] = [];
        while (!seq.finish) {
          const row = new Float32Array(texts.length).fill(1);
          jsonMask(params, row, 0, texts.length, eos, decode, seq.generated, seq.generated.length);
          const open = [...row.keys()].filter((t) => row[t] === 1);
          const ledBy = leads.filter((l) => open.includes(l));
          const led = ledBy[Math.floor(draw() * ledBy.length)];
          const t = led !== undefined && draw() < 0.6 ? led : (open[Math.floor(draw() * open.length)] as number);
          deltas.push(takeToken(seq, t, eos, decode) ?? "");
        }
        const where = `run ${run}, stop ${JSON.stringify(stop)}: ${JSON.stringify(seq.text)} (${seq.finish})`;
        // What was held back (a stop string's possible start, a prefix's) goes with the output, not as a delta.
        expect(seq.text.startsWith(deltas.join("")), where).toBe(true);
        const output: GenerationOutput = {
          generated_text: seq.text,
          tokens: seq.generated,
          finish_reason: seq.finish as "stop" | "length",
          prompt_tokens: 1,
        };
        if (seq.text !== decode(seq.generated)) cut++;
        const message = toolMessage(tooling.plan, output, 0);
        const made = "tool_calls" in message ? (message.tool_calls ?? []) : [];
        calls += made.length;
        // The text a stop string would have cut never reaches the caller: not in text, nor before a call.
        expect((message.content ?? "").includes(stop[0] as string), where).toBe(false);
        // A call the stop string did not cut is read whole where the reply ended on its own.
        if (made.length > 0 && seq.finish === "stop" && seq.text === decode(seq.generated)) {
          expect(toolFinish(tooling.plan, output), where).toBe("tool_calls");
        }
        const stream = toolCallStream(tooling.plan);
        let content = "";
        const args: string[] = [];
        const take = (piece: ReturnType<typeof stream.push>) => {
          if (piece.kind === "text") content += piece.text;
          if (piece.kind !== "call") return;
          content += piece.text ?? "";
          for (const d of piece.deltas) args[d.index] = (args[d.index] ?? "") + (d.function?.arguments ?? "");
        };
        for (const d of deltas) take(stream.push(0, d));
        take(stream.end(0, output));
        expect(content, where).toBe(message.content ?? "");
        expect(args, where).toEqual(made.map((c) => c.type === "function" && c.function.arguments));
      }
      // The runs reach what they test: stop strings that cut, and calls.
      expect(cut).toBeGreaterThan(10);
      expect(calls).toBeGreaterThan(20);
    });
  }
});
