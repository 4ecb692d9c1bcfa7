// JSON mode's automaton (shared/tasks/json-prefix.ts) and its mask on a row of logits
// (shared/tasks/text-generation-format.ts): which texts start one compact JSON object, and which tokens may come.
import { describe, expect, it } from "vitest";
import { jsonDone, jsonFeed, jsonStart, MAX_JSON_DEPTH } from "../../shared/tasks/json-prefix.ts";
import { jsonMask } from "../../shared/tasks/text-generation-format.ts";

const read = (text: string) => {
  const s = jsonStart();
  if (!jsonFeed(s, text)) return "no";
  return jsonDone(s) ? "done" : "prefix";
};

describe("the JSON prefix automaton", () => {
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

describe("jsonMask", () => {
  // A vocabulary of single characters and a few longer tokens; 5 is end-of-text, 6 a token with no text.
  const texts = ["{", "}", '"a"', ":", "1", "", "", " ", '{"b":2}'];
  const decode = (ids: readonly number[]) => ids.map((t) => texts[t] ?? "").join("");
  const eos = [5];
  const open = (generated: number[]) => {
    const row = new Float32Array(texts.length).fill(1);
    jsonMask(row, 0, texts.length, eos, decode, generated, generated.length);
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
    jsonMask(row, 0, pieces.length, [6], sp, [0, 1, 2, 3], 4);
    expect([...row.keys()].filter((t) => row[t] === 1)).toEqual([3, 5]); // "1" or "}", never " 2"
  });

  it("leaves only end-of-text once the object closes, or after a prefix that is not one", () => {
    expect(open([0, 1])).toEqual([5]);
    expect(open([8])).toEqual([5]);
    expect(open([7])).toEqual([5]);
  });
});
