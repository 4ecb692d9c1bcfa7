// Who may vouch for a donated (untrusted) output, as pure decisions the model queue applies: when two
// donors count as independent, when a donor is in good standing, what a new run of a held item decides
// under the strict rule, and whether the donor pool can release anything without the trusted pool.
// BOINC's quorum of independent hosts, hardened against one party holding many identities. Tested in Node.

/** A run's producer as trust sees it: the identity its credential vouched for and where it connected from. */
export interface RunSource {
  /** The donor id a donor token named; for a worker-token browser worker, its worker id. */
  identity: string;
  /** The client network it connected from (an IPv4 /24 or an IPv6 /64); null when unknown. */
  network: string | null;
  /** Agreements with trusted runs (canaries passed, trusted verifications) since it was last caught. */
  agreed: number;
}

export interface StandingRule {
  /** Agreements with trusted runs after which a donor's run may vouch for another donor's. */
  trustAfter: number;
}

/**
 * Two donors are independent when they are different identities on different known networks. One party
 * can mint identities as fast as it gets tokens, but networks cost it real addresses: on Cloudflare the
 * address is the connection's (CF-Connecting-IP), not a header a client chooses.
 */
export function independent(a: RunSource, b: RunSource): boolean {
  return a.identity !== b.identity && a.network !== null && b.network !== null && a.network !== b.network;
}

/** In good standing: enough agreements with trusted runs. Quarantine is checked where leases are given. */
export function inGoodStanding(s: RunSource, rule: StandingRule): boolean {
  return s.agreed >= rule.trustAfter;
}

/** Whether `b`'s agreement can release `a`'s output (and the other way round) without a trusted run. */
export function mayVouch(a: RunSource, b: RunSource, rule: StandingRule): boolean {
  return independent(a, b) && inGoodStanding(a, rule) && inGoodStanding(b, rule);
}

/**
 * Whether the donors ready now could release outputs among themselves: at least two in good standing on
 * different networks. Until then a donor's run of a caller's item only adds a trusted run after it, so
 * routed work goes to the trusted pool at once and donors earn standing on canaries.
 */
export function donorsCanRelease(ready: readonly RunSource[], rule: StandingRule): boolean {
  const networks = new Set<string>();
  for (const s of ready) if (s.network !== null && inGoodStanding(s, rule)) networks.add(s.network);
  return networks.size >= 2;
}

/** One earlier, not yet final run of an item. */
export interface Candidate<W> {
  worker: W;
  source: RunSource;
  output: unknown;
}

export type StrictJudgement<W> =
  /** `output` is final; `disagree` are the candidates out of line with it. */
  | { kind: "final"; output: unknown; agree: W[]; disagree: W[]; difference: string | null; trusted: boolean }
  /** Not yet: hold the run as one more candidate until a trusted run, or an independent donor, agrees. */
  | { kind: "undecided"; difference: string | null };

/**
 * What a new run of an item decides under the strict rule. A trusted run decides alone, and whoever
 * disagreed with it answered wrongly. An untrusted run is final only when it agrees with a candidate
 * whose producer may vouch for it (independent, both in good standing); donors that merely disagree
 * with each other are not judged here, since either may be the liar: the item waits for a trusted run.
 */
export function judgeStrict<W>(
  candidates: readonly Candidate<W>[],
  fresh: { output: unknown; source: RunSource | null },
  differ: (a: unknown, b: unknown) => string | null,
  rule: StandingRule,
): StrictJudgement<W> {
  const verdicts = candidates.map((c) => ({ c, difference: differ(c.output, fresh.output) }));
  const difference = verdicts.find((v) => v.difference !== null)?.difference ?? null;
  const agree = verdicts.filter((v) => v.difference === null).map((v) => v.c);
  const disagree = verdicts.filter((v) => v.difference !== null).map((v) => v.c.worker);
  if (fresh.source === null) {
    return {
      kind: "final",
      output: fresh.output,
      agree: agree.map((c) => c.worker),
      disagree,
      difference,
      trusted: true,
    };
  }
  const source = fresh.source;
  if (!agree.some((c) => mayVouch(c.source, source, rule))) return { kind: "undecided", difference };
  // Released on donors' word: nobody is proven wrong, so the ones out of line are only discarded.
  return {
    kind: "final",
    output: fresh.output,
    agree: agree.map((c) => c.worker),
    disagree: [],
    difference,
    trusted: false,
  };
}

/**
 * The network key of a client key (edge/client-address.ts): an IPv4 address's /24; for IPv6 (keyed by its
 * /64) the /48, since one subscriber is commonly given a /48 and could otherwise pose as 65,536 networks.
 */
export function networkOfKey(key: string | undefined): string | null {
  if (!key) return null;
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.\d{1,3}$/.exec(key);
  if (v4) return `${v4[1]}.${v4[2]}.${v4[3]}.0/24`;
  const v6 = /^([0-9a-f]{1,4}):([0-9a-f]{1,4}):([0-9a-f]{1,4}):[0-9a-f]{1,4}::\/64$/.exec(key);
  return v6 ? `${v6[1]}:${v6[2]}:${v6[3]}::/48` : key;
}
