// Short-lived worker tokens for browser donors, as standard JWTs (jose): HS256 under DONOR_TOKEN_SECRET,
// `sub` the donor id, plus the site key, the page origin and the models it may run. Any edge isolate can
// check one without storage (auth.ts); a token is good only from the origin it was issued to, only for the
// browser pool, and only until it expires. routes/donors.ts issues them.
import { decodeProtectedHeader, errors, jwtVerify, SignJWT } from "jose";
import { z } from "zod";

export interface DonorClaims {
  /** Random per token: the identity the coordinator quarantines by (the JWT's `sub`). */
  donor: string;
  site: string;
  origin: string;
  models: string[];
  /** Epoch ms, a whole second (the JWT's `exp` is in seconds). */
  exp: number;
}

const ALGORITHM = "HS256";
const ISSUER = "edgeswarm";
const AUDIENCE = "edgeswarm-donor";
// Explicit typing (RFC 8725 §3.11): what tells a donor token from a worker token, which is any string.
const TYPE = "edgeswarm-donor+jwt";
/** Seconds of clock skew forgiven between the isolate that signed and the one that checks. */
const CLOCK_TOLERANCE_S = 5;

/**
 * The claims jose does not check. No `nbf`: a token is good from the moment it is issued, so `iat` not in
 * the future is the same check, made below.
 */
const DonorClaimsSet = z.object({
  sub: z.string().min(1),
  iat: z.number().int(),
  exp: z.number().int(),
  site: z.string().min(1),
  origin: z.string().min(1),
  models: z.array(z.string().min(1)),
});

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

/** Whether a bearer token is meant as a donor token: a JWT typed as ours. A worker token is an opaque string. */
export function looksLikeDonorToken(token: string): boolean {
  try {
    return decodeProtectedHeader(token).typ === TYPE;
  } catch {
    return false;
  }
}

export async function signDonorToken(claims: DonorClaims, secret: string, now = Date.now()): Promise<string> {
  return (
    new SignJWT({ site: claims.site, origin: claims.origin, models: claims.models })
      .setProtectedHeader({ alg: ALGORITHM, typ: TYPE })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(claims.donor)
      .setIssuedAt(Math.floor(now / 1000))
      // Rounded down: a token never outlives the expiry its holder was told.
      .setExpirationTime(Math.floor(claims.exp / 1000))
      .sign(await hmacKey(secret))
  );
}

/** The claims of a genuine, unexpired token; a sentence saying what is wrong otherwise (the 401's message). */
export async function verifyDonorToken(token: string, secret: string, now: number): Promise<DonorClaims | string> {
  let payload: unknown;
  try {
    ({ payload } = await jwtVerify(token, await hmacKey(secret), {
      algorithms: [ALGORITHM],
      issuer: ISSUER,
      audience: AUDIENCE,
      typ: TYPE,
      requiredClaims: ["sub", "iat", "exp"],
      clockTolerance: CLOCK_TOLERANCE_S,
      currentDate: new Date(now),
    }));
  } catch (error) {
    return rejection(error, token);
  }
  const claims = DonorClaimsSet.safeParse(payload);
  if (!claims.success) {
    const issue = claims.error.issues[0];
    return `the donor token's claims are not valid (${issue?.path.join(".")}: ${issue?.message}); ask for a new one`;
  }
  const { sub, iat, exp, site, origin, models } = claims.data;
  if (iat > now / 1000 + CLOCK_TOLERANCE_S) return "the donor token was issued in the future; ask for a new one";
  return { donor: sub, site, origin, models, exp: exp * 1000 };
}

function rejection(error: unknown, token: string): string {
  if (error instanceof errors.JWTExpired) return "the donor token has expired; ask for a new one";
  if (error instanceof errors.JOSEAlgNotAllowed) {
    return `the donor token must be signed with ${ALGORITHM}; "${decodeProtectedHeader(token).alg}" is not accepted`;
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) {
    return "the donor token's signature is not valid: it was not issued by this edge, or it was altered";
  }
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "aud") return `the token is not a donor token (its audience is not "${AUDIENCE}")`;
    if (error.claim === "iss") return `the donor token was not issued by this edge (its issuer is not "${ISSUER}")`;
    return `the donor token's "${error.claim}" claim is not valid (${error.message}); ask for a new one`;
  }
  if (error instanceof errors.JOSEError) return `the donor token is malformed (${error.message})`;
  throw error;
}

export function newDonorId(): string {
  return `donor-${Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("")}`;
}
