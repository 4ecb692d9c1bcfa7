// Reads the labelled sentences the bundled models are trained on (models/data/sentiment.tsv) and splits
// them into training and held-out sets. Used by scripts/build-models.ts and the model tests.

export const LABELS = ["NEGATIVE", "POSITIVE"] as const;
export type Label = (typeof LABELS)[number];

export interface Example {
  text: string;
  /** Index into LABELS. */
  label: number;
  /** What the sentence is about (food, film, travel, ...); "general" for sentences about nothing in particular. */
  topic: string;
}

export interface Split<T extends Example = Example> {
  train: T[];
  heldOut: T[];
  /** Topics the embedder learns, in first-seen order; "general" is left out (it has no subject). */
  topics: string[];
}

/** Every fifth example is held out: the file interleaves labels and topics, so the split covers them all. */
export const HOLD_OUT_EVERY = 5;

export function parseDataset(tsv: string): Example[] {
  const lines = tsv.split("\n").filter((line) => line.trim() !== "");
  const header = lines.shift();
  if (header !== "label\ttopic\ttext")
    throw new Error(`dataset header must be "label<TAB>topic<TAB>text", got ${header}`);
  return lines.map((line, i) => {
    const [label, topic, text, extra] = line.split("\t");
    const index = LABELS.indexOf(label as Label);
    if (index < 0 || !topic || !text || extra !== undefined) {
      throw new Error(`dataset line ${i + 2} is not "label<TAB>topic<TAB>text" with a known label: ${line}`);
    }
    return { text, label: index, topic };
  });
}

export function splitDataset<T extends Example>(examples: readonly T[]): Split<T> {
  const train = examples.filter((_, i) => i % HOLD_OUT_EVERY !== HOLD_OUT_EVERY - 1);
  const heldOut = examples.filter((_, i) => i % HOLD_OUT_EVERY === HOLD_OUT_EVERY - 1);
  const topics = [...new Set(examples.map((e) => e.topic))].filter((t) => t !== "general");
  return { train, heldOut, topics };
}
