// The automaton behind JSON mode and structured outputs (shared/tasks/json-grammar.ts, over the schemas of
// shared/protocol/json-schema.ts) and its mask on a row of logits (shared/tasks/text-generation-format.ts): which
// texts start one JSON object a schema accepts (compact, or spaced as json.dumps writes it), and which tokens may
// come, tool calls' markers included.
import { describe, expect, it } from "vitest";
import { GenerationParams } from "../../shared/protocol/generation.ts";
import { compileJsonSchema, spacedSchema } from "../../shared/protocol/json-schema.ts";
import {
  JSON_OBJECT,
  jsonDone,
  jsonFeed,
  jsonStart,
  jsonStateKey,
  MAX_JSON_DEPTH,
} from "../../shared/tasks/json-grammar.ts";
import { jsonMask, stopScope, unfinishedReply } from "../../shared/tasks/text-generation-format.ts";
import { startSequence, takeToken } from "../../shared/tasks/text-generation-sequence.ts";

const reader = (schema: unknown, spaced = false) => {
  const compiled = spaced ? spacedSchema(compileJsonSchema(schema)) : compileJsonSchema(schema);
  return (text: string) => {
    const s = jsonFeed(jsonStart(compiled), text);
    if (s === null) return "no";
    return jsonDone(s) ? "done" : "prefix";
  };
};
const read = reader({ type: "object" });
/** "compiled", or why the schema is refused. */
const problem = (schema: unknown) => {
  try {
    compileJsonSchema(schema);
    return "compiled";
  } catch (e) {
    return (e as Error).message;
  }
};

describe("the JSON automaton, JSON mode's object", () => {
  it("takes the starts of one compact JSON object, and knows when it closes", () => {
    for (const text of [
      "{",
      '{"a',
      '{"a":',
      '{"a":tru',
      '{"a":-0.',
      '{"a":1e+',
      '{"a":[1,',
      '{"a":"\\u00',
      '{"a":1,"b"',
    ]) {
      expect(read(text), text).toBe("prefix");
    }
    const whole = [
      "{}",
      '{"a":0}',
      '{"a":-0.5e+3,"b":[true,false,null,"x\\u00e9\\n\\"q\\""],"c":{},"d":[]}',
      '{"a":[[[]]],"b":{"c":{"d":12.75E-2}}}',
    ];
    for (const text of whole) {
      expect(read(text), text).toBe("done");
      expect(typeof JSON.parse(text)).toBe("object");
    }
  });

  it("refuses what is not such a start: whitespace, another top-level value, bad numbers, escapes and literals", () => {
    const bad = [
      " {",
      '{ "a":1}',
      "[1]",
      '"a"',
      "1",
      '{"a":01}',
      '{"a":1.}',
      '{"a":1e}',
      '{"a":-}',
      '{"a":+1}',
      '{"a":truex',
      '{"a":[1,]}',
      '{"a":"\u0001"}',
      '{"a":"\\x"}',
      '{"a":"\\u12g4"}',
      "{,}",
      '{"a"}',
      '{"a":1]',
      '{"a":1}x',
      '{"a":1}}',
    ];
    for (const text of bad) expect(read(text), text).toBe("no");
  });

  it(`nests ${MAX_JSON_DEPTH} deep and no deeper`, () => {
    const open = (n: number) => `{${'"a":{'.repeat(n - 1)}`;
    expect(read(open(MAX_JSON_DEPTH))).toBe("prefix");
    expect(read(`${open(MAX_JSON_DEPTH)}"b":[`)).toBe("no");
    expect(read(`${open(MAX_JSON_DEPTH)}"b":1${"}".repeat(MAX_JSON_DEPTH)}`)).toBe("done");
  });
});

describe('the JSON automaton, spaced (json_spacing "spaced")', () => {
  const spaced = reader({ type: "object" }, true);
  const schema = {
    type: "object",
    properties: {
      name: { type: "string" },
      tags: { type: "array", items: { enum: ["a", "bb"] } },
      n: { type: "integer" },
      more: { type: "object", additionalProperties: { type: "number" } },
    },
    required: ["name", "n"],
  };
  const spacedSchemaReader = reader(schema, true);

  it("takes one space after each colon and comma, as json.dumps writes, or none", () => {
    for (const text of [
      '{"a": 1, "b": [1, 2, {"c": null}], "d": "x, y: z"}',
      '{"a":1,"b":[1,2]}',
      '{"a": -0.5e+3,"b":{"c": {}}, "d": []}',
    ]) {
      expect(spaced(text), text).toBe("done");
      expect(JSON.parse(text)).toBeTypeOf("object");
    }
    expect(spacedSchemaReader('{"name": "x", "tags": ["a", "bb"], "n": 3, "more": {"k": 1.5, "j": 2}}')).toBe("done");
    expect(spacedSchemaReader('{"name":"x", "n": 3}')).toBe("done");
    // The same text is refused compact: spacing is asked for, never assumed.
    expect(read('{"a": 1}')).toBe("no");
    expect(reader(schema)('{"name": "x", "n": 3}')).toBe("no");
  });

  it("takes no other whitespace: two spaces, a newline or tab, or a space anywhere else", () => {
    for (const text of [
      '{"a":  1}',
      '{"a":\n1}',
      '{"a":\t1}',
      '{"a": 1,  "b": 2}',
      '{ "a": 1}',
      '{"a" : 1}',
      '{"a": 1 }',
      '{"a": 1 , "b": 2}',
      '{"a": [ 1]}',
      '{"a": [1 ]}',
      " {",
      '{"a": 1} ',
    ]) {
      expect(spaced(text), JSON.stringify(text)).toBe("no");
    }
    expect(spacedSchemaReader('{"name": "x", "n": 3 }')).toBe("no");
    expect(spacedSchemaReader('{"name": "x",  "n": 3}')).toBe("no");
  });

  it("spaces an object or array the schema fixes (enum, const) as any other, never inside its strings", () => {
    const fixed = reader(
      {
        type: "object",
        properties: { a: { const: { x: 1, "y:,": [1, { z: "a, b: c" }] } }, b: { enum: [[1, 2], "s, t"] } },
        required: ["a", "b"],
      },
      true,
    );
    expect(fixed('{"a": {"x": 1, "y:,": [1, {"z": "a, b: c"}]}, "b": [1, 2]}')).toBe("done");
    expect(fixed('{"a":{"x":1,"y:,":[1,{"z":"a, b: c"}]},"b":"s, t"}')).toBe("done");
    expect(fixed('{"a": {"x":  1')).toBe("no");
    expect(fixed('{"a": {"x": 1, "y:, ')).toBe("no"); // inside a key's string: as written
    expect(fixed('{"a": {"x": 1, "y:,": [1, {"z": "a,  b')).toBe("no");
    expect(fixed('{"a": {"x": 1, "y:,": [1, {"z": "a, b: c"}]}, "b": "s,  t"')).toBe("no");
  });

  it("keys its states apart from the compact schema's, so the mask's kept sets never mix", () => {
    const compact = compileJsonSchema(schema);
    expect(spacedSchema(compact)).toBe(spacedSchema(compact));
    expect(spacedSchema(compact).id).not.toBe(compact.id);
    const keyAfter = (s: typeof compact) => jsonStateKey(jsonFeed(jsonStart(s), '{"name":') as never, 4);
    expect(keyAfter(spacedSchema(compact))).not.toBe(keyAfter(compact));
  });

  it("masks to one space where one may come, and the protocol takes json_spacing with a format only", () => {
    const texts = ["{", "}", '"a"', ":", "1", "", ",", " ", '"b"'];
    const decode = (ids: readonly number[]) => ids.map((t) => texts[t] ?? "").join("");
    const open = (generated: number[], spacing?: "spaced") => {
      const row = new Float32Array(texts.length).fill(1);
      const p = { format: "json_object" as const, ...(spacing ? { json_spacing: spacing } : {}) };
      jsonMask(p, row, 0, texts.length, [5], decode, generated, generated.length);
      return [...row.keys()].filter((t) => row[t] === 1);
    };
    expect(open([0, 2, 3], "spaced")).toEqual([0, 2, 4, 7, 8]); // a value, or one space
    expect(open([0, 2, 3, 7], "spaced")).toEqual([0, 2, 4, 8]); // then the value, no second space
    expect(open([0, 2, 3, 4, 6], "spaced")).toEqual([2, 7, 8]); // after a comma: a key, or one space
    expect(open([0, 2, 3])).toEqual([0, 2, 4, 8]); // compact: no space
    const parsed = GenerationParams.safeParse({ json_spacing: "spaced" });
    expect(parsed.error?.issues[0]?.message).toMatch(/json_spacing comes with a format/);
    expect(GenerationParams.safeParse({ format: "json_object", json_spacing: "spaced" }).success).toBe(true);
    expect(GenerationParams.safeParse({ format: "json_object", json_spacing: "pretty" }).success).toBe(false);
  });
});

describe("jsonMask", () => {
  // A vocabulary of single characters and a few longer tokens; 5 is end-of-text, 6 a token with no text.
  const texts = ["{", "}", '"a"', ":", "1", "", "", " ", '{"b":2}'];
  const decode = (ids: readonly number[]) => ids.map((t) => texts[t] ?? "").join("");
  const eos = [5];
  const open = (generated: number[]) => {
    const row = new Float32Array(texts.length).fill(1);
    jsonMask({ format: "json_object" }, row, 0, texts.length, eos, decode, generated, generated.length);
    return [...row.keys()].filter((t) => row[t] === 1);
  };

  it("leaves only the tokens that continue the object, never end-of-text mid-object", () => {
    expect(open([])).toEqual([0, 8]); // "{" or a whole object
    expect(open([0])).toEqual([1, 2]); // "}" or a key
    expect(open([0, 2])).toEqual([3]);
    expect(open([0, 2, 3])).toEqual([0, 2, 4, 8]); // a value: an object, a string or a number
  });

  it("reads a token's text as it follows another (a SentencePiece piece decoded alone loses its space)", () => {
    const pieces = ["{", '"a"', ":", "1", "\u25812", "}", "<eos>"];
    // Metaspace's rule: \u2581 is a space, and the text's first space is dropped.
    const sp = (ids: readonly number[], o?: { skip_special_tokens?: boolean }) =>
      ids
        .filter((t) => !(o?.skip_special_tokens && t === 6))
        .map((t) => pieces[t] ?? "")
        .join("")
        .replaceAll("\u2581", " ")
        .replace(/^ /, "");
    expect(sp([4])).toBe("2"); // alone it would read as a digit that continues 1
    const row = new Float32Array(pieces.length).fill(1);
    jsonMask({ format: "json_object" }, row, 0, pieces.length, [6], sp, [0, 1, 2, 3], 4);
    expect([...row.keys()].filter((t) => row[t] === 1)).toEqual([3, 5]); // "1" or "}", never " 2"
  });

  it("reads a reply's first token as it reads decoded alone (a SentencePiece piece there loses its space)", () => {
    const pieces = ["{", "\u2581{", '"a"', ":", "1", "}", "<eos>", "\u2581", "\u2581<c>", "\u2581x"];
    const eosId = 6;
    const sp = (ids: readonly number[], o?: { skip_special_tokens?: boolean }) =>
      ids
        .filter((t) => !(o?.skip_special_tokens && t === eosId))
        .map((t) => pieces[t] ?? "")
        .join("")
        .replaceAll("\u2581", " ")
        .replace(/^ /, "");
    const openIn = (p: object, generated: number[]) => {
      const row = new Float32Array(pieces.length).fill(1);
      jsonMask(p, row, 0, pieces.length, [eosId], sp, generated, generated.length);
      return [...row.keys()].filter((t) => row[t] === 1);
    };
    const json = { format: "json_object" as const };
    // "▁{" begins the reply "{"; a lone "▁" writes nothing there, so it cannot begin an object.
    expect(openIn(json, [])).toEqual([0, 1]);
    expect(openIn(json, [1])).toEqual([2, 5]); // "{": a key or "}"
    expect(openIn(json, [1, 2, 3])).toEqual([0, 2, 4]); // later, "▁{" reads " {": no space in compact JSON
    // A call the model must make: "▁<c>" begins the reply "<c>" (as the edge reads the reply).
    const required = { ...json, json_markers: { prefix: "<c>", suffix: "", optional: false } };
    expect(openIn(required, [])).toEqual([8]);
    expect(openIn(required, [8])).toEqual([0]); // then the object, "{" (a later "▁{" would read " {")
  });

  it("leaves only end-of-text once the object closes, or after a prefix that is not one", () => {
    expect(open([0, 1])).toEqual([5]);
    expect(open([8])).toEqual([5]);
    expect(open([7])).toEqual([5]);
  });
});

describe("jsonMask with markers (a tool call between a template's tags)", () => {
  const texts = ["<", "c>", "{", "}", "</c>", "hi", "", "<c>{}"];
  const decode = (ids: readonly number[]) => ids.map((t) => texts[t] ?? "").join("");
  const eos = [6];
  const open = (optional: boolean, generated: number[]) => {
    const row = new Float32Array(texts.length).fill(1);
    const p = { format: "json_object" as const, json_markers: { prefix: "<c>", suffix: "</c>", optional } };
    jsonMask(p, row, 0, texts.length, eos, decode, generated, generated.length);
    return [...row.keys()].filter((t) => row[t] === 1);
  };

  it("required: the prefix, the object, the suffix, then only end-of-text", () => {
    expect(open(false, [])).toEqual([0, 7]); // "<", or a token that writes the prefix and a whole object
    expect(open(false, [0])).toEqual([1]);
    expect(open(false, [0, 1])).toEqual([2]);
    expect(open(false, [0, 1, 2])).toEqual([3]);
    expect(open(false, [0, 1, 2, 3])).toEqual([0, 4]); // the suffix, whole or begun
    expect(open(false, [0, 1, 2, 3, 4])).toEqual([6]);
    expect(open(false, [7])).toEqual([0, 4]);
    expect(open(false, [5])).toEqual([6]); // no such reply: only end-of-text
  });

  it("optional: free text unmasked unless it begins with the prefix, and end-of-text before the prefix is settled", () => {
    expect(open(true, [])).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(open(true, [5])).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(open(true, [0, 0])).toEqual([0, 1, 2, 3, 4, 5, 6, 7]); // "<<" is text
    expect(open(true, [0])).toEqual([0, 1, 2, 3, 4, 5, 6, 7]); // "<" may still begin the prefix, or be text that ends
    expect(open(true, [0, 1])).toEqual([2]); // the prefix written: a call, held to the object
  });

  it("settles the prefix on the reply's decoded text: special tokens add none, whitespace may come first where optional", () => {
    // 8: a special token (no text), 9 and 10: the two bytes of "é" (each alone no text), 11: a space.
    const all = [...texts, "", "", "", " "];
    const special = 8;
    const decode = (ids: readonly number[], o?: { skip_special_tokens?: boolean }) => {
      const bytes = ids.flatMap((t) =>
        t === 9
          ? [0xc3]
          : t === 10
            ? [0xa9]
            : t === special && !o?.skip_special_tokens
              ? [...Buffer.from("<|x|>")]
              : [...Buffer.from(all[t] ?? "")],
      );
      return Buffer.from(bytes).toString("utf8");
    };
    const openIn = (optional: boolean, generated: number[]) => {
      const row = new Float32Array(all.length).fill(1);
      const p = { format: "json_object" as const, json_markers: { prefix: "<c>", suffix: "</c>", optional } };
      jsonMask(p, row, 0, all.length, eos, decode, generated, generated.length);
      return [...row.keys()].filter((t) => row[t] === 1);
    };
    const ALL = [...all.keys()];
    expect(openIn(true, [special, 0, 1, 2])).toEqual([3]); // a special token first changes nothing: "<c>{" is a call
    expect(openIn(true, [special, 0, 1])).toEqual([2]); // the special token wrote nothing: "<c>" is the prefix
    expect(openIn(true, [11, 0, 1])).toEqual([2]); // " <c>": whitespace first, then the call
    expect(openIn(true, [9, 0, 1])).toEqual(ALL); // half a character, then "<c>": its bytes are text, not the prefix
    expect(openIn(true, [9, 10, 0, 1])).toEqual(ALL); // "é<c>" is text
    expect(openIn(false, [])).toEqual([0, 7]); // required: no whitespace, no token of no text
  });

  it("after_text: a call may follow text, read as its decoded text has it, and no token writes the prefix into anything else", () => {
    // 8: a special token; 9 and 10: the two bytes of "é"; 11: a space; 12: "c>x"; 13: é's last byte, then "<";
    // 14: é's last byte, then "<c>x" (a token of no whole text that still writes the prefix); 15: "c>" and a byte.
    const all = [...texts, "", "", "", " ", "c>x", "", "", ""];
    const special = 8;
    const decode = (ids: readonly number[], o?: { skip_special_tokens?: boolean }) => {
      const bytes = ids.flatMap((t) => {
        if (t === 9) return [0xc3];
        if (t === 10) return [0xa9];
        if (t === 13) return [0xa9, ...Buffer.from("<")];
        if (t === 14) return [0xa9, ...Buffer.from("<c>x")];
        if (t === 15) return [...Buffer.from("c>"), 0xc3];
        if (t === special) return o?.skip_special_tokens ? [] : [...Buffer.from("<|x|>")];
        return [...Buffer.from(all[t] ?? "")];
      });
      return Buffer.from(bytes).toString("utf8");
    };
    const markers = { prefix: "<c>", suffix: "</c>", optional: true, after_text: true };
    const openIn = (generated: number[], m: object = markers) => {
      const row = new Float32Array(all.length).fill(1);
      const p = { format: "json_object" as const, json_markers: m as typeof markers };
      jsonMask(p, row, 0, all.length, eos, decode, generated, generated.length);
      return [...row.keys()].filter((t) => row[t] === 1);
    };
    const ALL = [...all.keys()];
    const but = (...out: number[]) => ALL.filter((t) => !out.includes(t));
    // "hi": text; any token goes on, end-of-text too, but none that writes the prefix and then what no call begins
    // with, whether its text is whole ("<c>x" after "<", 12) or not (14).
    expect(openIn([5])).toEqual(but(14));
    expect(openIn([5, 0])).toEqual(but(12, 14, 15)); // "hi<": the prefix may be beginning
    expect(openIn([5, 0, 1])).toEqual([2]); // "hi<c>": a call, held to the object
    expect(openIn([5, 7])).toEqual([0, 4]); // "hi<c>{}": its suffix
    expect(openIn([5, 7, 4])).toEqual([6]); // one call (not parallel), then the end
    expect(openIn([5, 0, 5])).toEqual(but(14)); // "hi<hi": the "<" began no call
    // As the decoded text has it: bytes of a character break a prefix begun ("<" then é), a special token does not,
    // and a token that ends a character and writes "<" may begin one.
    expect(openIn([5, 0, 9, 10, 1])).toEqual(but(14));
    expect(openIn([5, 0, special, 1])).toEqual([2]);
    expect(openIn([5, 9, 13])).toEqual(but(12, 14, 15));
    expect(openIn([5, 9, 13, 1])).toEqual([2]);
    // Text ends as text wherever; a call cut before its suffix is unfinished.
    expect(unfinishedReply({ format: "json_object", json_markers: markers }, "hi<c")).toBeNull();
    expect(unfinishedReply({ format: "json_object", json_markers: markers }, "hi<c>{}</c>")).toBeNull();
    expect(unfinishedReply({ format: "json_object", json_markers: markers }, "hi<c>{}")).toMatch(/suffix/);
    // Without after_text the same text is text throughout: "hi<c>" begins no call, nothing is masked.
    expect(openIn([5, 0, 1], { ...markers, after_text: false })).toEqual(ALL);
    // At the start (the lead) too: a token that completes the prefix and carries a byte of a character after it
    // cannot come; one with them before it is text.
    expect(openIn([0], { ...markers, after_text: false })).toEqual(but(12, 15));
    // The sets kept for a reply's start tell after_text apart, whichever was asked for first (a call may follow
    // text there or not decides whether token 14, text then the prefix "<c" and ">x", may come). A prefix of its
    // own, so no set kept above answers.
    const ask = (after: boolean) => openIn([], { ...markers, prefix: "<c", after_text: after });
    expect(ask(false)).toEqual(but(7));
    expect(ask(true)).toEqual(but(7, 14));
    expect(ask(false)).toEqual(but(7));
  });

  it("after_text: stop strings cut the text before a call, never the call nor a prefix that may begin one", () => {
    const pieces = ["hi", "<", "c>", "{", "}", "</c>", "x", "h<c>{"];
    const decode = (ids: readonly number[]) => ids.map((t) => pieces[t] ?? "").join("");
    const ended = (ids: number[], stop: string[], most = 16) => {
      const json_markers = { prefix: "<c>", suffix: "</c>", optional: true, after_text: true };
      const params = GenerationParams.parse({ max_new_tokens: most, stop, format: "json_object", json_markers });
      const seq = startSequence(0, { prompt: "p", params }, [1], decode);
      const sent: string[] = [];
      for (const t of ids) {
        sent.push(takeToken(seq, t, [99], decode) ?? "");
        if (seq.finish) break;
      }
      return { text: seq.text, sent, finish: seq.finish };
    };
    // "<" may begin the prefix: held back, then sent with the call it began; the stop "<" never cuts it.
    expect(ended([0, 1, 2, 3, 4, 5, 99], ["<"])).toEqual({
      text: "hi<c>{}</c>",
      sent: ["hi", "", "<c>", "{", "}", "</c>", ""],
      finish: "stop",
    });
    // The "<" turns out text: then the stop string in it cuts there, as it would without tools.
    expect(ended([0, 1, 6], ["<"])).toEqual({ text: "hi", sent: ["hi", "", ""], finish: "stop" });
    expect(ended([0, 1, 99], ["<"])).toEqual({ text: "hi", sent: ["hi", "", ""], finish: "stop" });
    expect(ended([0, 1], ["<"], 2)).toEqual({ text: "hi", sent: ["hi", ""], finish: "stop" });
    // A stop string in the text before a call ends the reply there, though one token brought both.
    expect(ended([6, 7], ["xh"])).toEqual({ text: "", sent: ["", ""], finish: "stop" });
    expect(ended([6, 7, 4, 5, 99], ["xy"])).toEqual({
      text: "xh<c>{}</c>",
      sent: ["", "xh<c>{", "}", "</c>", ""],
      finish: "stop",
    });
    // Inside a call, none.
    expect(ended([0, 1, 2, 3, 4, 5], ["}"], 6)).toMatchObject({ text: "hi<c>{}</c>", finish: "length" });
    // Protocol: only where the reply may be text.
    const refused = (m: object) =>
      GenerationParams.safeParse({ format: "json_object", json_markers: { prefix: "<c>", suffix: "", ...m } }).error
        ?.issues[0]?.message;
    expect(refused({ optional: false, after_text: true })).toMatch(/after_text comes with optional/);
    expect(refused({ optional: true, after_text: true, text_schema: { type: "object" } })).toMatch(/after_text/);
    expect(refused({ optional: true, after_text: true })).toBeUndefined();
  });

  it("parallel: after a call's suffix, another call's prefix (whitespace first) or end-of-text, never text", () => {
    const all = [...texts, "\n"];
    const decode = (ids: readonly number[]) => ids.map((t) => all[t] ?? "").join("");
    const openIn = (optional: boolean, generated: number[]) => {
      const row = new Float32Array(all.length).fill(1);
      const markers = { prefix: "<c>", suffix: "</c>", optional, parallel: true };
      jsonMask(
        { format: "json_object", json_markers: markers },
        row,
        0,
        all.length,
        eos,
        decode,
        generated,
        generated.length,
      );
      return [...row.keys()].filter((t) => row[t] === 1);
    };
    for (const optional of [true, false]) {
      expect(openIn(optional, [7, 4])).toEqual([0, 6, 7, 8]); // "<", a whole call, end-of-text, or a newline
      expect(openIn(optional, [7, 4, 8, 0])).toEqual([1]); // halfway into the next prefix: no end-of-text
      expect(openIn(optional, [7, 4, 8])).toEqual([0, 6, 7, 8]);
      expect(openIn(optional, [7, 4, 8, 0, 1])).toEqual([2]); // the next call's object
      expect(openIn(optional, [7, 4, 5])).toEqual([6]); // text after a call is no such reply
      // 64 whitespace characters at most between calls: then the next prefix or the end.
      expect(openIn(optional, [7, 4, ...Array(64).fill(8)])).toEqual([0, 6, 7]);
    }
    // Before the first call, past 64 the reply is text: nothing masked.
    expect(openIn(true, Array(65).fill(8))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(openIn(true, Array(64).fill(8))).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    const p = {
      format: "json_object" as const,
      json_markers: { prefix: "<c>", suffix: "</c>", optional: false, parallel: true },
    };
    expect(unfinishedReply(p, "<c>{}</c>\n<c>{}</c>")).toBeNull();
    expect(unfinishedReply(p, "<c>{}</c><c>{")).toMatch(/no token of this model/);
    expect(unfinishedReply(p, "<c>{}</c>\n<")).toMatch(/cannot write the call's prefix/);
    expect(
      unfinishedReply({ ...p, json_markers: { ...p.json_markers, parallel: false } }, "<c>{}</c><c>{}</c>"),
    ).toMatch(/no token of this model/);
  });

  it("with a text schema, a reply that makes no call is that schema's object (response_format beside tools)", () => {
    const p = {
      format: "json_object" as const,
      json_markers: { prefix: "<c>", suffix: "</c>", optional: true, text_schema: { type: "object" } },
    };
    const openIn = (generated: number[]) => {
      const row = new Float32Array(texts.length).fill(1);
      jsonMask(p, row, 0, texts.length, eos, decode, generated, generated.length);
      return [...row.keys()].filter((t) => row[t] === 1);
    };
    expect(openIn([])).toEqual([0, 2, 7]); // the prefix's start, the answer's "{", or a whole call; never text, nor an end
    expect(openIn([2])).toEqual([3]);
    expect(openIn([2, 3])).toEqual([6]); // the answer closed: only end-of-text, no suffix
    expect(openIn([0, 1])).toEqual([2]); // a call as before
    expect(unfinishedReply(p, "{}")).toBeNull();
    expect(unfinishedReply(p, "<c>{}</c>")).toBeNull();
    expect(unfinishedReply(p, "hi")).toMatch(/no token of this model/);
    expect(stopScope({ ...p, stop: ["x"] }, "{")).toEqual({ k: "call", at: 0 });
  });

  it("cuts a reply that turns out text at its first stop string, however its tokens split", () => {
    const pieces = ["\n", "Hello", " world\nmore", "\nHello", "<to", "x", "<tox"];
    const decode = (ids: readonly number[]) => ids.map((t) => pieces[t] ?? "").join("");
    const ended = (ids: number[], stop: string[], markers = true, most = 8) => {
      const params = GenerationParams.parse({
        max_new_tokens: most,
        stop,
        ...(markers
          ? { format: "json_object", json_markers: { prefix: "<tool_call>", suffix: "</tool_call>", optional: true } }
          : {}),
      });
      const seq = startSequence(0, { prompt: "p", params }, [1], decode);
      let sent = "";
      for (const t of ids) {
        sent += takeToken(seq, t, [99], decode) ?? "";
        if (seq.finish) break;
      }
      return { text: seq.text, sent, finish: seq.finish };
    };
    // As without tools: a stop string at the start cuts there, whether one token or two carried it.
    expect(ended([0, 1, 2], ["\n"])).toEqual({ text: "", sent: "", finish: "stop" });
    expect(ended([3, 2], ["\n"])).toEqual({ text: "", sent: "", finish: "stop" });
    expect(ended([0, 1, 2], ["\n"], false)).toEqual({ text: "", sent: "", finish: "stop" });
    expect(ended([4, 5], ["<to"])).toEqual({ text: "", sent: "", finish: "stop" });
    expect(ended([6], ["<to"])).toEqual({ text: "", sent: "", finish: "stop" });
    // Text with no stop string in it is sent once it is known to be text.
    expect(ended([1, 2], ["\n"]).sent).toBe("Hello world");
    // A reply that ends still undecided is text: its stop strings cut it, at end-of-text (99) or max_new_tokens.
    expect(ended([0, 99], ["\n"])).toEqual({ text: "", sent: "", finish: "stop" });
    expect(ended([0, 0], ["\n"], true, 2)).toEqual({ text: "", sent: "", finish: "stop" });
    expect(ended([4, 99], ["<to"])).toEqual({ text: "", sent: "", finish: "stop" });
    // Whitespace is held 64 characters at most: past them the reply is text, and goes out.
    expect(ended(Array(64).fill(0), ["STOP"], true, 100).sent).toBe("");
    expect(ended(Array(65).fill(0), ["STOP"], true, 100).sent).toBe("\n".repeat(65));
  });

  it("searches for stop strings in text only: never in a call, nor while a reply may still begin one", () => {
    const markers = (optional: boolean) => ({ prefix: "<c>", suffix: "</c>", optional });
    const p = (optional: boolean) => ({ format: "json_object" as const, json_markers: markers(optional), stop: ["x"] });
    expect(stopScope(p(true), "")).toEqual({ k: "undecided" });
    expect(stopScope(p(true), "\n<c")).toEqual({ k: "undecided" });
    expect(stopScope(p(true), "<c>{")).toEqual({ k: "call", at: 0 });
    expect(stopScope(p(true), "hi")).toEqual({ k: "text", held: 0 });
    expect(stopScope(p(true), "hi <c>{")).toEqual({ k: "text", held: 0 }); // no call after text unless asked
    expect(stopScope(p(false), "hi")).toEqual({ k: "call", at: 0 });
    expect(stopScope({ stop: ["x"] }, "<c>")).toEqual({ k: "text", held: 0 });
    expect(stopScope({ ...p(true), stop: [] }, "\n<c")).toEqual({ k: "text", held: 0 }); // no stops: nothing waits
    // A call after text: the end that may begin one waits; once it began, stops look before it only.
    const after = { ...p(true), json_markers: { ...markers(true), after_text: true } };
    expect(stopScope(after, "hi <")).toEqual({ k: "text", held: 1 });
    expect(stopScope(after, "hi <c")).toEqual({ k: "text", held: 2 });
    expect(stopScope(after, "hi <d")).toEqual({ k: "text", held: 0 });
    expect(stopScope(after, "hi <c>{")).toEqual({ k: "call", at: 3 });
  });

  it("reads a whole reply the same way: the suffix must end a call, text needs none", () => {
    const p = (optional: boolean) => ({
      format: "json_object" as const,
      json_markers: { prefix: "<c>", suffix: "</c>", optional },
    });
    expect(unfinishedReply(p(false), "<c>{}</c>")).toBeNull();
    expect(unfinishedReply(p(false), "<c>{}")).toMatch(/no token of this model/);
    expect(unfinishedReply(p(false), "hello")).toMatch(/no token of this model/);
    expect(unfinishedReply(p(true), "hello")).toBeNull();
    expect(unfinishedReply(p(true), "<c")).toBeNull();
    expect(unfinishedReply(p(true), "<c>{")).toMatch(/no token of this model/);
    expect(unfinishedReply(p(true), "<c>{}</c>x")).toMatch(/no token of this model/);
    expect(unfinishedReply(p(true), "\n<c>{}</c>")).toBeNull();
    expect(unfinishedReply(p(false), "<c>{}</")).toMatch(/cannot write the call's suffix "<\/c>"/);
    expect(unfinishedReply(p(false), "<")).toMatch(/cannot write the call's prefix "<c>"/);
  });
});

describe("the JSON automaton over a schema", () => {
  const person = reader({
    type: "object",
    properties: {
      name: { type: "string", minLength: 1, maxLength: 3 },
      age: { type: "integer" },
      mood: { enum: ["happy", "sad", 3] },
      tags: { type: "array", items: { type: "string" }, minItems: 1, maxItems: 2 },
      note: { type: ["string", "null"] },
    },
    required: ["name", "mood"],
    additionalProperties: false,
  });

  it("takes the required properties in order, an optional one or not, and each value as its schema says", () => {
    for (const text of [
      '{"name":"Al","mood":"sad"}',
      '{"name":"Al","age":-41,"mood":3}',
      '{"name":"\\u00e9","mood":"happy","tags":["a"],"note":null}',
      '{"name":"😀","mood":"sad","note":"x"}',
      '{"name":"abc","mood":"sad","tags":["",""]}',
    ]) {
      expect(person(text), text).toBe("done");
    }
    for (const text of ['{"name":"A', '{"name":"Al","mood":"ha', '{"name":"Al","age":4', '{"name":"Al","mood":3,']) {
      expect(person(text), text).toBe("prefix");
    }
  });

  it("refuses what the schema does not hold: order, missing, unknown or wrong values, lengths and counts", () => {
    for (const text of [
      '{"mood":"sad"', // name is required first
      '{"name":"Al"}', // mood is required
      '{"name":"Al","mood":"sad","x"', // no other keys
      '{"name":"Al","mood":"glad"', // not in the enum
      '{"name":"Al","age":4.5', // an integer
      '{"name":"Al","age":"4"', // not a string
      '{"name":""', // minLength 1
      '{"name":"abcd"', // maxLength 3
      '{"name":"Al","mood":"sad","tags":[]', // minItems 1
      '{"name":"Al","mood":"sad","tags":["a","b",', // maxItems 2
      '{"name":"Al","mood":"sad","note":true', // string or null
      '{"name":"Al","mood":"sad","age":1', // age comes before mood
      '{"name":"Al","mood":"sad"}}',
    ]) {
      expect(person(text), text).toBe("no");
    }
  });

  it("follows $ref to $defs, a tree included, nullable, const and free-form parts", () => {
    const tree = reader({
      $defs: {
        node: {
          type: "object",
          properties: { v: { const: "x" }, kids: { type: "array", items: { $ref: "#/$defs/node" } } },
          required: ["v"],
        },
      },
      $ref: "#/$defs/node",
    });
    expect(tree('{"v":"x","kids":[{"v":"x"},{"v":"x","kids":[]}]}')).toBe("done");
    expect(tree('{"v":"x","kids":[{"v":"y"')).toBe("no");
    const loose = reader({
      type: "object",
      properties: { n: { type: "number", nullable: true }, meta: { type: "object" }, any: {} },
      required: ["n", "meta", "any"],
    });
    expect(loose('{"n":null,"meta":{"a":[1,{"b":null}]},"any":"s"}')).toBe("done");
    expect(loose('{"n":-1.5e3,"meta":{},"any":[true]}')).toBe("done");
    const counts = reader({ type: "object", additionalProperties: { type: "integer" } });
    expect(counts('{"a":1,"b":22}')).toBe("done");
    expect(counts('{"a":"1"')).toBe("no");
    expect(reader({ type: "object", properties: {}, additionalProperties: false })("{}")).toBe("done");
    expect(reader({ type: "object", properties: {}, additionalProperties: false })('{"')).toBe("no");
  });

  it("refuses a schema it cannot hold a reply to, naming the place and what to send", () => {
    expect(problem({ type: "object", properties: { a: { type: "string", pattern: "^x" } } })).toMatch(
      /^\$\.properties\.a\.pattern is not served: structured outputs take type, /,
    );
    expect(problem({ type: "string" })).toMatch(/root must be an object/);
    expect(problem({ type: "object", properties: { a: {} }, required: ["b"] })).toMatch(/\$\.required must list names/);
    expect(problem({ type: "object", properties: { a: { $ref: "#/$defs/b" } } })).toMatch(
      /#\/\$defs\/b is not in the schema/,
    );
    expect(problem({ type: "object", properties: { a: { $ref: "http://x/y" } } })).toMatch(
      /must name a schema of this one's \$defs/,
    );
    expect(problem({ type: "object", properties: { a: { type: "date" } } })).toMatch(
      /\$\.properties\.a\.type must be one or more of/,
    );
    expect(problem({ type: "object", properties: { a: { enum: [] } } })).toMatch(/enum must list 1 to 64 values/);
    expect(problem({ type: "object", properties: { a: { type: "string", minLength: 3, maxLength: 2 } } })).toMatch(
      /minLength is over maxLength/,
    );
    expect(problem({ $defs: { a: { $ref: "#/$defs/a" } }, $ref: "#/$defs/a" })).toMatch(/refers back to itself/);
    expect(
      problem({
        $defs: { a: { anyOf: [{ $ref: "#/$defs/a" }, { type: "null" }] } },
        type: "object",
        properties: { x: { $ref: "#/$defs/a" } },
      }),
    ).toMatch(/refers back to itself/);
    const wide = Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`p${i}`, { type: "null" }]));
    expect(problem({ type: "object", properties: wide })).toMatch(/over 2000 nodes|over 32768 characters/);
  });

  it("masks a row to the tokens the schema lets come next", () => {
    const texts = ["{", "}", '"mood":', '"', "happy", "sad", ":", "x", ""];
    const decode = (ids: readonly number[]) => ids.map((t) => texts[t] ?? "").join("");
    const schema = { type: "object", properties: { mood: { enum: ["happy", "sad"] } }, required: ["mood"] };
    const open = (generated: number[]) => {
      const row = new Float32Array(texts.length).fill(1);
      jsonMask({ format: "json_schema", schema }, row, 0, texts.length, [8], decode, generated, generated.length);
      return [...row.keys()].filter((t) => row[t] === 1);
    };
    expect(open([])).toEqual([0]);
    expect(open([0])).toEqual([2, 3]); // the key whole, or its opening quote; "}" is not allowed (mood is required)
    expect(open([0, 2])).toEqual([3]);
    expect(open([0, 2, 3])).toEqual([4, 5]);
    expect(open([0, 2, 3, 5])).toEqual([3]);
    expect(open([0, 2, 3, 5, 3])).toEqual([1]);
    expect(open([0, 2, 3, 5, 3, 1])).toEqual([8]);
  });
});

describe("what a schema means, held exactly", () => {
  const within = (p: unknown, required = true) =>
    reader({ type: "object", properties: { p }, ...(required ? { required: ["p"] } : {}) });

  it("refuses keywords an enum, a const or an anyOf would override; a type narrows an enum", () => {
    expect(problem({ type: "object", properties: { p: { type: "string", enum: ["abcd"], maxLength: 2 } } })).toMatch(
      /\$\.properties\.p: enum cannot stand beside maxLength/,
    );
    expect(problem({ type: "object", properties: { p: { type: "string", anyOf: [{ type: "number" }] } } })).toMatch(
      /anyOf cannot stand beside type.*put them in each of its schemas/,
    );
    expect(problem({ type: "object", properties: { p: { const: "a", enum: ["b"] } } })).toMatch(/give one of/);
    expect(problem({ type: "object", properties: { p: { type: "integer", const: "no" } } })).toMatch(
      /no value of its const/,
    );
    const typed = within({ type: "string", enum: ["a", 1] });
    expect(typed('{"p":"a"}')).toBe("done");
    expect(typed('{"p":1')).toBe("no");
    expect(within({ type: "integer", enum: [1.5, 2] })('{"p":1')).toBe("no");
  });

  it("reads a schema without a type as of the type its keywords constrain", () => {
    const object = within({ properties: { a: { type: "string" } }, required: ["a"] });
    expect(object('{"p":{}')).toBe("no");
    expect(object('{"p":{"a":"x"}}')).toBe("done");
    expect(within({ items: { type: "string" } })('{"p":[1')).toBe("no");
    expect(within({ minLength: 3 })('{"p":"ab"')).toBe("no");
    expect(problem({ type: "object", properties: { p: { minLength: 1, items: {} } } })).toMatch(
      /keywords of array and string without a type/,
    );
  });

  it("counts a string's characters as code points, an escaped surrogate pair as one, and writes no lone half", () => {
    expect(within({ type: "string", maxLength: 1 })('{"p":"😀"}')).toBe("done");
    expect(within({ type: "string", minLength: 2 })('{"p":"😀"')).toBe("no");
    expect(within({ type: "string", maxLength: 1 })('{"p":"\\u00e9"}')).toBe("done");
    expect(within({ type: "string", maxLength: 1 })('{"p":"\\ud83d\\uDE00"}')).toBe("done");
    expect(within({ type: "string", minLength: 2 })('{"p":"\\ud83d\\ude00"')).toBe("no");
    expect(within({ type: "string" })('{"p":"\\ud83d"')).toBe("no"); // a high half alone
    expect(within({ type: "string" })('{"p":"\\ude00')).toBe("no"); // a low half alone
    expect(within({ type: "string" })('{"p":"\\uD7FF"}')).toBe("done");
    expect(within({ type: "string" })('{"p":"a\udc00')).toBe("no"); // a lone low surrogate
  });

  it("looks names up as the schema's own: required, $defs, and JSON pointers' escapes", () => {
    expect(problem({ type: "object", properties: { a: {} }, required: ["toString"] })).toMatch(
      /required must list names/,
    );
    expect(problem({ type: "object", properties: { a: { $ref: "#/$defs/__proto__" } }, $defs: {} })).toMatch(
      /is not in the schema/,
    );
    const spaced = reader({
      type: "object",
      properties: { a: { $ref: "#/$defs/a%20b" } },
      required: ["a"],
      $defs: { "a b": { type: "null" } },
    });
    expect(spaced('{"a":null}')).toBe("done");
    expect(problem({ type: "object", properties: { a: { const: Number.POSITIVE_INFINITY } } })).toMatch(
      /not a JSON number/,
    );
  });

  it("refuses a schema whose shortest reply nests too deep, or that has no finite reply", () => {
    let deep: Record<string, unknown> = { type: "object" };
    for (let i = 0; i < MAX_JSON_DEPTH; i++) deep = { type: "object", properties: { a: deep }, required: ["a"] };
    expect(problem(deep)).toMatch(`nests ${MAX_JSON_DEPTH + 1} deep; at most ${MAX_JSON_DEPTH}`);
    expect(problem({ type: "object", properties: { a: deep } })).toBe("compiled"); // optional: {} is a reply
    const endless = { $defs: { n: { type: "array", minItems: 1, items: { $ref: "#/$defs/n" } } } };
    expect(problem({ type: "object", properties: { a: { $ref: "#/$defs/n" } }, required: ["a"], ...endless })).toMatch(
      /no finite reply/,
    );
  });

  it("starts a value each distinct way once, however its choices nest ($refs to one target, true × 64)", () => {
    const defs: Record<string, unknown> = { a12: { type: "object" } };
    for (let i = 11; i >= 0; i--) {
      defs[`b${i + 1}`] = { $ref: `#/$defs/a${i + 1}` };
      defs[`a${i}`] = { anyOf: [{ $ref: `#/$defs/b${i + 1}` }, { $ref: `#/$defs/b${i + 1}` }] };
    }
    const doubling = compileJsonSchema({ $ref: "#/$defs/a0", $defs: defs });
    expect(doubling.root.kind === "choice" && doubling.root.starts).toHaveLength(1);
    const trues = compileJsonSchema({ type: "object", properties: { x: { anyOf: Array(64).fill(true) } } });
    const x = trues.root.kind === "object" ? trues.root.props[0]?.node : undefined;
    expect(x?.kind === "choice" && x.starts).toHaveLength(5); // an object, an array, a string, a number, a literal
    const wide = Array.from({ length: 65 }, (_, i) => ({
      type: "object",
      properties: { [`k${i}`]: { type: "null" } },
    }));
    expect(
      problem({ type: "object", properties: { x: { anyOf: [...wide.slice(0, 32), { anyOf: wide.slice(32) }] } } }),
    ).toMatch(/a value may start 65 ways at one place/);
  });

  it("writes any of many optional keys, and enum values that begin one another", () => {
    const props = Object.fromEntries(Array.from({ length: 70 }, (_, i) => [`p${i}`, { type: "integer" }]));
    const many = reader({ type: "object", properties: props });
    expect(many('{"p69":1}')).toBe("done");
    expect(many('{"p5":1,"p69":2}')).toBe("done");
    expect(many('{"p69":1,"p5":2')).toBe("no"); // the schema's order
    const prefixes = within({ enum: [1, 12, "a", "ab"] });
    for (const text of ['{"p":1}', '{"p":12}', '{"p":"a"}', '{"p":"ab"}']) expect(prefixes(text), text).toBe("done");
    expect(prefixes('{"p":123')).toBe("no");
  });

  it("keys a state by its counters only as near their bounds as a token reaches", () => {
    const long = compileJsonSchema({ type: "object", properties: { s: { type: "string", maxLength: 1_000_000 } } });
    const fed = (schema: typeof long, text: string) =>
      jsonFeed(jsonStart(schema), text) as NonNullable<ReturnType<typeof jsonFeed>>;
    const key = (text: string) => jsonStateKey(fed(long, text), 8);
    expect(key(`{"s":"${"a".repeat(5)}`)).toBe(key(`{"s":"${"a".repeat(500)}`));
    expect(key(`{"s":"${"a".repeat(5)}`)).not.toBe(jsonStateKey(fed(long, `{"s":"${"a".repeat(5)}`), 1e7));
    const items = (n: number) => jsonStateKey(fed(JSON_OBJECT, `{"a":[${Array(n).fill(1).join(",")}`), 8);
    expect(items(3)).toBe(items(300));
  });

  it("says why a reply that ended at end-of-text is no object its format accepts", () => {
    const schema = { type: "object", properties: { café: { type: "string" } }, required: ["café"] };
    expect(unfinishedReply({ format: "json_schema", schema }, '{"caf')).toMatch(
      /no token of this model can go on.*"\{\\"caf"/,
    );
    expect(unfinishedReply({ format: "json_schema", schema }, '{"café":"x"}')).toBeNull();
    expect(unfinishedReply({ format: "json_object" }, "{")).toMatch(/JSON format/);
    expect(unfinishedReply({}, "{")).toBeNull();
  });
});
