/**
 * The certificate a Guardian issues to a node for one session: who the node is in its realm (conflux id, tag,
 * overlay addresses, taints, portal subnets, the identity of the user who registered it) bound to the node's fresh
 * ML-DSA-65 public key, for a short validity, signed by the realm's ML-DSA-65 key.
 *
 * ```
 * version u8 (3) | serial 16 | conflux 16 | realm 16 | realmName str ≤64 | tag str ≤63 | ipv4 4 | prefix4 u8
 * | ipv6 16 | prefix6 u8 | taints [str ≤64] ≤32 | portal u8 | subnets [bytes 5|17] ≤64
 * | subject str ≤255 | email str ≤254 | access u8 | identities [32] ≤16
 * | region str ≤32 | regions [str ≤32] ≤16 | nodeKey 1952 | notBefore u64 ms | notAfter u64 ms
 * | signature 3309 (realm key, over CERTIFICATE_SIGNATURE_CONTEXT || everything before it)
 * ```
 * `str` is a u16 byte length then UTF-8; `[x]` a u16 count then the items. A subnet is 4 or 16 address bytes
 * followed by one prefix-length byte. `subject` and `email` are the OIDC `sub` and `email` claims the Guardian
 * verified at registration; both are empty when the realm asks for no identity, and an email never comes without a
 * subject. `access` is the realm's access model (0: taints, 1: teams); `identities` are the node's identity tags
 * (issue 21): for each identity it holds (its owner, its teams), HMAC-SHA-256 keyed by that identity's secret
 * over the node's key (crypto/identity_tags.ts), which only holders of the same identity can recognise.
 * `region` is where the administrator placed the node (empty: nowhere said), and `regions` where this node's
 * traffic may travel through a third party, a relay or the Master (empty: anywhere); both are region names
 * (isRegion) the administrator granted (issue 22). Versions 1 to 3 are no longer read: every login brings a fresh
 * certificate.
 * @module
 */

import { ML_DSA_65_PUBLIC_KEY_BYTES, ML_DSA_65_SIGNATURE_BYTES } from "../spec.ts";
import { ByteReader, ByteWriter, WireError } from "./bytes.ts";
import { bytes, fixed, list, readRecord, type RecordOf, string, u64, u8, writeRecord } from "./schema.ts";

/**
 * Version byte of certificates: 2 added `subject` and `email`, 3 `access` and `identities`, 4 `region` and
 * `regions`. Only 4 is read.
 */
export const CERTIFICATE_VERSION = 4;
/** A region name is at most this many bytes. */
export const MAX_REGION_BYTES = 32;
/** Most regions a node's traffic may be allowed through. */
export const MAX_REGIONS = 16;
/** Most identities (an owner and teams) one node holds. */
export const MAX_IDENTITIES = 16;
/** The realm's access model as a certificate says it. */
export const ACCESS_TAINTS = 0;
export const ACCESS_TEAMS = 1;
/** Most taints on one node. */
export const MAX_TAINTS = 32;
/** Most portal subnets one node advertises. */
export const MAX_SUBNETS = 64;
/** Tags become DNS labels: at most 63 bytes. */
export const MAX_TAG_BYTES = 63;
/** An OIDC subject (`sub`) is at most 255 ASCII characters (OpenID Connect Core 1.0, section 2). */
export const MAX_SUBJECT_BYTES = 255;
/** An email address is at most 254 bytes (RFC 5321 path limit, less the angle brackets). */
export const MAX_EMAIL_BYTES = 254;

/** True for a valid region name: like a tag (a-z, 0-9, inner hyphens), at most MAX_REGION_BYTES: "eu-west". */
export function isRegion(s: string): boolean {
  return s.length <= MAX_REGION_BYTES && isTag(s);
}

/** True for a valid tag: one DNS label of a-z, 0-9 and inner hyphens (the name is `<tag>.veilnet`). */
export function isTag(s: string): boolean {
  return s.length <= MAX_TAG_BYTES && /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(s);
}

const FIELDS = {
  serial: fixed(16),
  conflux: fixed(16),
  realm: fixed(16),
  realmName: string(64),
  tag: string(MAX_TAG_BYTES),
  ipv4: fixed(4),
  prefix4: u8(0, 32),
  ipv6: fixed(16),
  prefix6: u8(0, 128),
  taints: list(string(64), MAX_TAINTS),
  portal: u8(0, 1),
  subnets: list(bytes(17, [5, 17]), MAX_SUBNETS),
  subject: string(MAX_SUBJECT_BYTES),
  email: string(MAX_EMAIL_BYTES),
  access: u8(0, 1),
  identities: list(fixed(32), MAX_IDENTITIES),
  region: string(MAX_REGION_BYTES),
  regions: list(string(MAX_REGION_BYTES), MAX_REGIONS),
  nodeKey: fixed(ML_DSA_65_PUBLIC_KEY_BYTES),
  notBefore: u64,
  notAfter: u64,
} as const;

/** What a certificate says. */
export type CertificateFields = RecordOf<typeof FIELDS>;

/** A decoded certificate: its fields, the bytes the signature covers, and the signature. */
export interface Certificate extends CertificateFields {
  signed: Uint8Array;
  signature: Uint8Array;
}

const utf8 = new TextEncoder();
// Control characters (C0, DEL, C1): `status` and `peers` print the identity to a terminal.
const CONTROL = /\p{Cc}/u;

/**
 * Why `subject` and `email` cannot go in a certificate, or undefined when they can: each within its byte limit,
 * free of control characters, and an email only with a subject. The Guardian checks a verified identity with this
 * at registration, so that a login never fails on it later.
 */
export function identityProblem(identity: { subject: string; email: string }): string | undefined {
  const { subject, email } = identity;
  const subjectBytes = utf8.encode(subject).length;
  const emailBytes = utf8.encode(email).length;
  if (subjectBytes > MAX_SUBJECT_BYTES) {
    return `subject is ${subjectBytes} bytes, the limit is ${MAX_SUBJECT_BYTES}`;
  }
  if (emailBytes > MAX_EMAIL_BYTES) return `email is ${emailBytes} bytes, the limit is ${MAX_EMAIL_BYTES}`;
  if (CONTROL.test(subject)) return "subject contains a control character";
  if (CONTROL.test(email)) return "email contains a control character";
  if (email !== "" && subject === "") {
    return "an email needs a subject (both are empty when the realm asks for no identity)";
  }
  return undefined;
}

/** Why a certificate's `region` or `regions` is not valid, or undefined. */
function regionProblem(fields: { region: string; regions: string[] }): string | undefined {
  if (fields.region !== "" && !isRegion(fields.region)) return `bad region "${fields.region}"`;
  const bad = fields.regions.find((r) => !isRegion(r));
  return bad === undefined ? undefined : `bad region "${bad}" in regions`;
}

/**
 * Encodes everything the realm signature covers. Throws RangeError when a field breaks its limits (see also
 * identityProblem).
 */
export function encodeCertificateUnsigned(fields: CertificateFields): Uint8Array {
  const problem = identityProblem(fields) ?? regionProblem(fields);
  if (problem) throw new RangeError(`certificate: ${problem}`);
  const w = new ByteWriter("certificate", 2400).u8(CERTIFICATE_VERSION, "version");
  writeRecord(w, FIELDS, fields as unknown as Record<string, unknown>);
  return w.finish();
}

/** Decodes a certificate (without checking its signature). Throws WireError for anything malformed. */
export function decodeCertificate(bytes: Uint8Array): Certificate {
  const r = new ByteReader(bytes, "certificate");
  const version = r.u8("version");
  if (version !== CERTIFICATE_VERSION) throw new WireError("version", versionMessage(version));
  const fields = readRecord(r, FIELDS);
  const signed = bytes.subarray(0, r.position);
  const signature = r.bytes(ML_DSA_65_SIGNATURE_BYTES, "signature");
  r.end();
  if (fields.notAfter <= fields.notBefore) {
    throw new WireError("value", "certificate: notAfter is not after notBefore");
  }
  const problem = identityProblem(fields) ?? regionProblem(fields);
  if (problem) throw new WireError("value", `certificate: ${problem}`);
  return { ...fields, signed, signature };
}

/** What to tell the operator about a certificate of another version: which side to upgrade. */
function versionMessage(version: number): string {
  return version < CERTIFICATE_VERSION
    ? `certificate: version ${version} is no longer read, this node reads only version ${CERTIFICATE_VERSION} ` +
      `(upgrade the Guardian that issued it)`
    : `certificate: version ${version} is newer than this node reads (version ${CERTIFICATE_VERSION}): ` +
      `upgrade this node`;
}
