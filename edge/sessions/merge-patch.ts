// JSON Merge Patch (RFC 7396), applied by the session object to a session's state on PATCH.
// Pure: the object stores what this returns.

/**
 * A parsed JSON value. Not spelt out recursively on purpose: Durable Object RPC stub types and Hono's
 * c.json() expand a recursive JSON type until the compiler gives up.
 */
export type Json = string | number | boolean | null | object;
export type JsonObject = { [key: string]: Json };

export function isJsonObject(value: unknown): value is JsonObject {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * RFC 7396 section 2: an object patch merges member by member (null removes a member, an object recurses),
 * anything else replaces the target whole. The target is not modified.
 */
export function applyMergePatch(target: Json | undefined, patch: Json): Json {
  if (!isJsonObject(patch)) return patch;
  // A Map, then Object.fromEntries: a member named "__proto__" stays a member instead of becoming the
  // result's prototype, as plain assignment would make it.
  const members = new Map(isJsonObject(target) ? Object.entries(target) : []);
  for (const [name, value] of Object.entries(patch)) {
    if (value === null) members.delete(name);
    else members.set(name, applyMergePatch(members.get(name), value));
  }
  return Object.fromEntries(members);
}
