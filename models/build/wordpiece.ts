// Builds the WordPiece vocabulary and the Hugging Face tokenizer files (tokenizer.json,
// tokenizer_config.json) the bundled models share; @huggingface/transformers loads them as a BertTokenizer.

export const SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] as const;
/** Single characters and their `##` continuations, so words outside the vocabulary split into pieces instead of [UNK]. */
const CHARACTERS = "abcdefghijklmnopqrstuvwxyz0123456789";
const PUNCTUATION = ".,!?;:'\"()-";

/** What BertPreTokenizer does to the lowercased ASCII sentences of the data set: runs of letters/digits, and each punctuation mark alone. */
export function preTokenize(text: string): string[] {
  return text.toLowerCase().match(/[a-z0-9]+|[^\sa-z0-9]/g) ?? [];
}

/** Specials, characters, `##`characters, then every word of `texts` by falling count (ties alphabetical). */
export function buildVocab(texts: readonly string[]): string[] {
  const counts = new Map<string, number>();
  for (const text of texts) for (const word of preTokenize(text)) counts.set(word, (counts.get(word) ?? 0) + 1);
  const base = [...SPECIAL_TOKENS, ...CHARACTERS, ...PUNCTUATION, ...[...CHARACTERS].map((c) => `##${c}`)];
  const seen = new Set(base);
  const words = [...counts.entries()]
    .filter(([word]) => !seen.has(word))
    .sort(([a, ca], [b, cb]) => cb - ca || (a < b ? -1 : a > b ? 1 : 0))
    .map(([word]) => word);
  return [...base, ...words];
}

function specialToken(id: number, content: string) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/** tokenizer.json in the format the `tokenizers` library writes for bert-base-uncased. */
export function tokenizerJson(vocab: readonly string[]) {
  const id = (token: string) => vocab.indexOf(token);
  const cls = { id: "[CLS]", ids: [id("[CLS]")], tokens: ["[CLS]"] };
  const sep = { id: "[SEP]", ids: [id("[SEP]")], tokens: ["[SEP]"] };
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIAL_TOKENS.map((t) => specialToken(id(t), t)),
    normalizer: {
      type: "BertNormalizer",
      clean_text: true,
      handle_chinese_chars: true,
      strip_accents: null,
      lowercase: true,
    },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: {
      type: "TemplateProcessing",
      single: [
        { SpecialToken: { id: "[CLS]", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "[SEP]", type_id: 0 } },
      ],
      pair: [
        { SpecialToken: { id: "[CLS]", type_id: 0 } },
        { Sequence: { id: "A", type_id: 0 } },
        { SpecialToken: { id: "[SEP]", type_id: 0 } },
        { Sequence: { id: "B", type_id: 1 } },
        { SpecialToken: { id: "[SEP]", type_id: 1 } },
      ],
      special_tokens: { "[CLS]": cls, "[SEP]": sep },
    },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: {
      type: "WordPiece",
      unk_token: "[UNK]",
      continuing_subword_prefix: "##",
      max_input_chars_per_word: 100,
      vocab: Object.fromEntries(vocab.map((token, i) => [token, i])),
    },
  };
}

export function tokenizerConfigJson(maxLength: number) {
  return {
    tokenizer_class: "BertTokenizer",
    do_lower_case: true,
    model_max_length: maxLength,
    padding_side: "right",
    clean_up_tokenization_spaces: true,
    cls_token: "[CLS]",
    sep_token: "[SEP]",
    pad_token: "[PAD]",
    unk_token: "[UNK]",
    mask_token: "[MASK]",
  };
}
