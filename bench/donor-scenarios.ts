// The scenarios of bench:donors (bench/donors.ts): who joins the swarm beside its trusted gpu worker, each
// donor process from its own loopback /24, and the inputs every scenario's callers send.
import type { DonorMode } from "../test/support/donor-answers.ts";
import { REVIEW_TEXTS } from "../test/support/reference-models.ts";

/** Who joins beside the gpu worker: donor processes, each from its own /24, and perhaps the demo tab. */
export interface Scenario {
  name: string;
  donors: [DonorMode, string][];
  tab?: boolean;
  /** Run by --quick too. */
  quick?: boolean;
}

export const SCENARIOS: Scenario[] = [
  { name: "no donors (baseline)", donors: [], quick: true },
  { name: "one honest donor", donors: [["honest", "127.0.11.1"]], quick: true },
  {
    name: "two honest donors",
    donors: [
      ["honest", "127.0.12.1"],
      ["honest", "127.0.13.1"],
    ],
  },
  {
    name: "three honest donors",
    donors: [
      ["honest", "127.0.14.1"],
      ["honest", "127.0.15.1"],
      ["honest", "127.0.16.1"],
    ],
    quick: true,
  },
  { name: "one hoarder (HTTP leases)", donors: [["hoard-http", "127.0.17.1"]], quick: true },
  { name: "one hoarder (WebSocket)", donors: [["hoard-ws", "127.0.18.1"]] },
  // On two /24s: the colluders look independent by network, the hardest case for the rule.
  {
    name: "two colluders",
    donors: [
      ["collude", "127.0.19.1"],
      ["collude", "127.0.20.1"],
    ],
    quick: true,
  },
  { name: "a liar", donors: [["lie", "127.0.21.1"]], quick: true },
  { name: "a Chromium tab (demo page)", donors: [], tab: true },
];

/** Calls take these in rotation: 64 distinct inputs, so an answer cannot be a cached one for another input. */
export const SENTENCES = Array.from({ length: 64 }, (_, i) => `${REVIEW_TEXTS[i % REVIEW_TEXTS.length]} (${i})`);
