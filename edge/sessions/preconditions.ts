// Conditional requests on a session (RFC 9110 section 13): the entity tags of If-Match and If-None-Match,
// parsed once by the route and evaluated by the session object in the same step as the write it guards.

/** "*" or the listed tags; a weak tag (W/"...") never satisfies If-Match, which compares strongly. */
export type EntityTags = "*" | { tag: string; weak: boolean }[];

export interface Preconditions {
  ifMatch?: EntityTags;
  ifNoneMatch?: EntityTags;
}

/** The session's current tag: the state's revision, and a generation that a re-created session does not share. */
export function entityTag(generation: string, revision: number): string {
  return `"${revision}-${generation}"`;
}

/**
 * Parses a header's list of entity tags. Lenient about a tag sent without its quotes (a common client
 * mistake), so that it is compared rather than refused; undefined when the header is absent or empty.
 */
export function parseEntityTags(header: string | undefined): EntityTags | undefined {
  const text = header?.trim();
  if (!text) return undefined;
  if (text === "*") return "*";
  const tags = text
    .split(",")
    .map((part) => part.trim())
    .filter((part) => part.length > 0)
    .map((part) => {
      const weak = /^W\//i.test(part);
      const opaque = weak ? part.slice(2) : part;
      return { tag: opaque.startsWith('"') ? opaque : `"${opaque}"`, weak };
    });
  return tags.length > 0 ? tags : undefined;
}

export type PreconditionFailure = "if_match" | "if_none_match";

/** Checks the preconditions against the current tag (null: no session); answers the one that fails, if any. */
export function failedPrecondition(current: string | null, conditions: Preconditions): PreconditionFailure | null {
  const { ifMatch, ifNoneMatch } = conditions;
  if (ifMatch !== undefined) {
    const holds = current !== null && (ifMatch === "*" || ifMatch.some((t) => !t.weak && t.tag === current));
    if (!holds) return "if_match";
  }
  if (ifNoneMatch !== undefined) {
    // Weak comparison: W/"x" and "x" name the same thing here.
    const matches = current !== null && (ifNoneMatch === "*" || ifNoneMatch.some((t) => t.tag === current));
    if (matches) return "if_none_match";
  }
  return null;
}
