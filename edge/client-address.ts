// What a per-client limit counts by: the caller's address as Cloudflare gives it (CF-Connecting-IP), with
// an IPv6 address cut to its /64, since one subscriber usually holds a whole /64 and could rotate through it.
// Used by the donor token route's rate limit, and (as a network: an IPv4 /24, an IPv6 /64) by the worker
// routes, since donors on one network do not count as independent of each other.
import { networkOfKey } from "../shared/index.ts";

/** The key of `address` ("192.0.2.1", "2001:db8:1:2::7" -> "2001:db8:1:2::/64"); undefined when it is not an address. */
export function clientKey(address: string | undefined): string | undefined {
  const text = address?.trim().toLowerCase();
  if (!text) return undefined;
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(text)) return text;
  // IPv4 written in IPv6 (::ffff:192.0.2.1) counts as the IPv4 address.
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/.exec(text);
  if (mapped) return mapped[1];
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string | undefined) => (part ? part.split(":") : []);
  const head = groupsOf(halves[0]);
  const tail = groupsOf(halves[1]);
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  if (!groups.every((g) => /^[0-9a-f]{1,4}$/.test(g))) return undefined;
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(":")}::/64`;
}

/** The client network of `address`: an IPv4 address's /24, an IPv6 address's /64; undefined when it is not one. */
export function clientNetwork(address: string | undefined): string | undefined {
  return networkOfKey(clientKey(address)) ?? undefined;
}
