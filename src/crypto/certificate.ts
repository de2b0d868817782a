/**
 * Issuing and verifying node certificates (format in wire/certificate.ts). The Guardian signs with a realm key;
 * every node verifies a peer's certificate against the realm public key it received at login, before it
 * trusts the node key inside for anything.
 * @module
 */

import { Refused } from "../errors.ts";
import { CERTIFICATE_MAX_SKEW_MS, CERTIFICATE_SIGNATURE_CONTEXT } from "../spec.ts";
import { WireError } from "../wire/bytes.ts";
import {
  type Certificate,
  type CertificateFields,
  decodeCertificate,
  encodeCertificateUnsigned,
} from "../wire/certificate.ts";
import { withSignature } from "../wire/control.ts";
import { bytesEqual, domainSeparated, nodeIdOf, sha256 } from "./identity.ts";
import { pq, type PqBackend, type SigningKey } from "./pq.ts";

const context = new TextEncoder().encode(CERTIFICATE_SIGNATURE_CONTEXT);

const signingInput = (signed: Uint8Array) => domainSeparated(context, signed);

/**
 * Signs a certificate with a realm key. Throws RangeError, before signing, when a field breaks its limits: check a
 * registration's identity with `identityProblem` (wire/certificate.ts) when it arrives, not at each login.
 */
export async function issueCertificate(realmKey: SigningKey, fields: CertificateFields): Promise<Uint8Array> {
  const unsigned = encodeCertificateUnsigned(fields);
  return withSignature(unsigned, await realmKey.sign(signingInput(unsigned)));
}

/** How a certificate is referred to in control messages: the first 16 bytes of its SHA-256. */
export async function certificateRef(certificate: Uint8Array): Promise<Uint8Array> {
  return (await sha256(certificate)).subarray(0, 16);
}

/**
 * A certificate that verified, with the node id of its key and its reference. Its `subject` and `email` (empty
 * when the realm asks for no identity) are who registered the node, as the realm vouches.
 */
export interface VerifiedCertificate extends Certificate {
  nodeId: Uint8Array;
  ref: Uint8Array;
  /** The encoded certificate (a copy: safe to keep). */
  bytes: Uint8Array;
}

/** Why a certificate was refused. */
export type CertificateRejectReason =
  | "malformed"
  | "wrong-realm"
  | "bad-signature"
  | "not-yet-valid"
  | "expired";

/** A certificate refused by verifyCertificate. */
export class CertificateRejected extends Refused<CertificateRejectReason> {
  override name = "CertificateRejected";
}

/**
 * Verifies a certificate: well-formed, of `realm`, signed by `realmKey`, valid at `now` (allowing
 * CERTIFICATE_MAX_SKEW_MS for a Guardian clock slightly ahead). Throws CertificateRejected.
 */
export async function verifyCertificate(
  bytes: Uint8Array,
  options: { realm: Uint8Array; realmKey: Uint8Array; now: number; backend?: PqBackend },
): Promise<VerifiedCertificate> {
  let cert: Certificate;
  try {
    cert = decodeCertificate(bytes);
  } catch (cause) {
    if (cause instanceof WireError) throw new CertificateRejected("malformed", cause.message, { cause });
    throw cause;
  }
  if (!bytesEqual(cert.realm, options.realm)) {
    throw new CertificateRejected("wrong-realm", "certificate is for another realm");
  }
  const backend = options.backend ?? await pq();
  if (!await backend.verify(options.realmKey, signingInput(cert.signed), cert.signature)) {
    throw new CertificateRejected("bad-signature", "certificate is not signed by the realm key");
  }
  if (options.now + CERTIFICATE_MAX_SKEW_MS < cert.notBefore) {
    throw new CertificateRejected(
      "not-yet-valid",
      `certificate is valid from ${new Date(cert.notBefore).toISOString()}`,
    );
  }
  if (options.now >= cert.notAfter) {
    throw new CertificateRejected(
      "expired",
      `certificate expired at ${new Date(cert.notAfter).toISOString()}`,
    );
  }
  const copy = bytes.slice();
  return {
    ...decodeCertificate(copy),
    nodeId: await nodeIdOf(cert.nodeKey),
    ref: await certificateRef(copy),
    bytes: copy,
  };
}
