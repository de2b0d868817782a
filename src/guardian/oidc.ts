/**
 * Verifying an OAuth/OIDC identity token against its issuer's JWKS (`jose`; the only importer). The Guardian
 * checks the token at registration and does not keep it.
 * @module
 */

import { createRemoteJWKSet, jwtVerify } from "jose";

/** What a registration may carry to prove an identity. */
export interface OidcProof {
  jwt: string;
  jwksUrl: string;
  issuer: string;
  audience: string;
}

/**
 * Verifies `proof.jwt` (signature from the JWKS, issuer, audience, expiry) and returns its subject. Throws an Error
 * whose message says what did not match.
 */
export async function verifyOidc(proof: OidcProof): Promise<string> {
  let url: URL;
  try {
    url = new URL(proof.jwksUrl);
  } catch {
    throw new Error(`jwks_url "${proof.jwksUrl}" is not a URL`);
  }
  const keys = createRemoteJWKSet(url, { timeoutDuration: 5_000 });
  try {
    const { payload } = await jwtVerify(proof.jwt, keys, { issuer: proof.issuer, audience: proof.audience });
    if (typeof payload.sub !== "string" || payload.sub === "") {
      throw new Error("the token has no subject (sub)");
    }
    return payload.sub;
  } catch (error) {
    throw new Error(`identity token refused: ${(error as Error).message}`, { cause: error });
  }
}
