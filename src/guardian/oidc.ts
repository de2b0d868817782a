/**
 * Verifying an OAuth/OIDC identity token (`jose`; the only importer) against the issuer an administrator set for
 * the realm. The issuer, JWKS URL and audience come from the realm's settings, never from the client, so the
 * Guardian fetches only the JWKS URL the administrator named.
 * @module
 */

import { createRemoteJWKSet, decodeJwt, jwtVerify } from "jose";
import { checkJwksUrl } from "./rules.ts";
import type { NodeIdentity, RealmOidc } from "./store.ts";

/** One key set per JWKS URL: jose caches the keys and refetches them when an unknown key id appears. */
const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();

/** The verified identity of a token, and the values of the realm's taints claim (if it names one). */
export interface VerifiedIdentity {
  identity: NodeIdentity;
  /** Strings of the realm's `taintsClaim` (e.g. the user's groups); empty when the realm names no claim. */
  claimValues: string[];
  /** The issuer says it verified the e-mail address (`email_verified: true`). */
  emailVerified: boolean;
  /** The token's `nonce` claim, for a sign-in that sent one. */
  nonce?: string;
  /** When the token expires (ms). */
  expiresAt: number;
}

/**
 * Whether a verified identity is one of a realm's `admins`: by subject, or by an e-mail address only when the
 * issuer verified it (an unverified address is whatever the user typed).
 */
export function isAdministrator(v: VerifiedIdentity, admins: readonly string[]): boolean {
  const email = v.emailVerified ? v.identity.email?.toLowerCase() : undefined;
  return admins.some((a) => a === v.identity.subject || (email !== undefined && a.toLowerCase() === email));
}

/** The `iss` a token claims, read without checking anything (to pick which realms' settings to verify it by). */
export function claimedIssuer(token: string): string | undefined {
  try {
    const iss = decodeJwt(token).iss;
    return typeof iss === "string" ? iss : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Verifies `token` for `oidc`: signature from the issuer's JWKS, issuer, audience, an expiry (required) that has
 * not passed, and a subject. Throws an Error whose message says what did not match.
 */
export async function verifyIdentity(token: string, oidc: RealmOidc): Promise<VerifiedIdentity> {
  let keys = keySets.get(oidc.jwksUrl);
  if (!keys) {
    keys = createRemoteJWKSet(checkJwksUrl(oidc.jwksUrl), { timeoutDuration: 5_000 });
    keySets.set(oidc.jwksUrl, keys);
  }
  try {
    const { payload } = await jwtVerify(token, keys, {
      issuer: oidc.issuer,
      audience: oidc.audience,
      requiredClaims: ["exp", "sub"],
      clockTolerance: 30,
    });
    if (typeof payload.sub !== "string" || payload.sub === "") {
      throw new Error("the token has no subject (sub)");
    }
    const email = typeof payload.email === "string" && payload.email !== "" ? payload.email : undefined;
    const claim = oidc.taintsClaim === undefined ? undefined : payload[oidc.taintsClaim];
    const claimValues = typeof claim === "string"
      ? [claim]
      : Array.isArray(claim)
      ? claim.filter((v): v is string => typeof v === "string")
      : [];
    return {
      identity: { issuer: oidc.issuer, subject: payload.sub, ...(email ? { email } : {}) },
      claimValues,
      emailVerified: payload.email_verified === true,
      ...(typeof payload.nonce === "string" ? { nonce: payload.nonce } : {}),
      expiresAt: payload.exp! * 1000,
    };
  } catch (error) {
    throw new Error(`identity token refused: ${(error as Error).message}`, { cause: error });
  }
}
