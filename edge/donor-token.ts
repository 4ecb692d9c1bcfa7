// Short-lived worker tokens for browser donors: `v1.<payload>.<signature>`, the payload base64url JSON
// {donor, site, origin, models, exp}, signed with HMAC-SHA256 under DONOR_TOKEN_SECRET. Any edge
// isolate can check one without storage; a token is good only from the origin it was issued to, only
// for the browser pool, and only until it expires.
export interface DonorClaims {
  /** Random per token: the identity the coordinator quarantines by. */
  donor: string;
  site: string;
  origin: string;
  models: string[];
  /** Epoch ms. */
  exp: number;
}

const PREFIX = "v1.";
const encoder = new TextEncoder();
const keys = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    keys.set(secret, key);
  }
  return key;
}

const toBase64Url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replace(/=+$/, "");

function fromBase64Url(text: string): Uint8Array<ArrayBuffer> | undefined {
  try {
    const binary = atob(text.replaceAll("-", "+").replaceAll("_", "/"));
    return Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
  } catch {
    return undefined;
  }
}

export const looksLikeDonorToken = (token: string) => token.startsWith(PREFIX);

export async function signDonorToken(claims: DonorClaims, secret: string): Promise<string> {
  const payload = toBase64Url(encoder.encode(JSON.stringify(claims)));
  const signature = await crypto.subtle.sign("HMAC", await hmacKey(secret), encoder.encode(PREFIX + payload));
  return `${PREFIX}${payload}.${toBase64Url(new Uint8Array(signature))}`;
}

/** The claims of a genuine, unexpired token; a string saying what is wrong otherwise. */
export async function verifyDonorToken(token: string, secret: string, now: number): Promise<DonorClaims | string> {
  const [payload, signature] = token.slice(PREFIX.length).split(".");
  const sig = signature ? fromBase64Url(signature) : undefined;
  const body = payload ? fromBase64Url(payload) : undefined;
  if (!payload || !sig || !body) return "the donor token is malformed";
  const genuine = await crypto.subtle.verify("HMAC", await hmacKey(secret), sig, encoder.encode(PREFIX + payload));
  if (!genuine) return "the donor token's signature is not valid";
  let claims: DonorClaims;
  try {
    claims = JSON.parse(new TextDecoder().decode(body)) as DonorClaims;
  } catch {
    return "the donor token is malformed";
  }
  if (typeof claims.exp !== "number" || claims.exp <= now) return "the donor token has expired; ask for a new one";
  return claims;
}

export function newDonorId(): string {
  return `donor-${Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("")}`;
}
