// Trains the bundled decoder's byte-level BPE (GPT-2's scheme: bytes mapped to printable characters, split by
// GPT-2's pre-tokenizer pattern, the most frequent adjacent pair merged until the vocabulary is full) and writes
// it as a tokenizer.json that @huggingface/tokenizers loads. Called by models/build/decoder-model.ts.
// Deterministic: ties between equally frequent pairs go to the first in code-unit order.

/** GPT-2's pre-tokenizer pattern, as the ByteLevel pre-tokenizer applies it (use_regex: true). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's bytes_to_unicode: printable bytes stand for themselves, the rest map to 256 upwards. */
export function byteAlphabet(): string[] {
  const chars: string[] = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    chars[b] = String.fromCodePoint(printable ? b : next++);
  }
  return chars;
}

/** Merges learned from `texts` until the vocabulary (256 bytes + merges) reaches `vocabSize`. */
export function trainBpe(texts: readonly string[], vocabSize: number): { vocab: string[]; merges: [string, string][] } {
  const alphabet = byteAlphabet();
  const encoder = new TextEncoder();
  const counts = new Map<string, number>();
  for (const text of texts) {
    for (const piece of text.match(GPT2_SPLIT) ?? []) {
      const mapped = Array.from(encoder.encode(piece), (b) => alphabet[b] as string).join("\u0000");
      counts.set(mapped, (counts.get(mapped) ?? 0) + 1);
    }
  }
  const words = [...counts].map(([w, count]) => ({ symbols: w.split("\u0000"), count }));
  const vocab = [...alphabet];
  const merges: [string, string][] = [];
  while (vocab.length < vocabSize) {
    const pairs = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const key = `${symbols[i]}\u0000${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 1;
    for (const [key, count] of pairs) {
      if (count > bestCount || (count === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = count;
      }
    }
    if (best === undefined) break;
    const [a, b] = best.split("\u0000") as [string, string];
    merges.push([a, b]);
    vocab.push(a + b);
    for (const word of words) word.symbols = mergePair(word.symbols, a, b);
  }
  return { vocab, merges };
}

function mergePair(symbols: string[], a: string, b: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < symbols.length; i++) {
    if (symbols[i] === a && symbols[i + 1] === b) {
      out.push(a + b);
      i++;
    } else out.push(symbols[i] as string);
  }
  return out;
}

/** A GPT-2-style tokenizer.json: the BPE vocabulary, then the special tokens as added tokens after it. */
export function bpeTokenizerJson(vocab: readonly string[], merges: readonly [string, string][], specials: string[]) {
  const ids: Record<string, number> = Object.fromEntries(vocab.map((token, id) => [token, id]));
  specials.forEach((token, i) => {
    ids[token] = vocab.length + i;
  });
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, i) => ({
      id: vocab.length + i,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: ids,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}
