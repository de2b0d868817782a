/**
 * The certificate a Guardian issues to a node for one session: who the node is in its realm (conflux id, tag,
 * overlay addresses, taints, portal subnets) bound to the node's fresh ML-DSA-65 public key, for a short validity,
 * signed by the realm's ML-DSA-65 key.
 *
 * ```
 * version u8 | serial 16 | conflux 16 | realm 16 | realmName str | tag str | ipv4 4 | prefix4 u8 | ipv6 16 | prefix6 u8
 * | taints [str] | portal u8 | subnets [bytes 5|17] | nodeKey 1952 | notBefore u64 ms | notAfter u64 ms
 * | signature 3309 (realm key, over CERTIFICATE_SIGNATURE_CONTEXT || everything before it)
 * ```
 * A subnet is 4 or 16 address bytes followed by one prefix-length byte.
 * @module
 */

import { ML_DSA_65_PUBLIC_KEY_BYTES, ML_DSA_65_SIGNATURE_BYTES } from "../spec.ts";
import { ByteReader, ByteWriter, WireError } from "./bytes.ts";
import { bytes, fixed, list, readRecord, type RecordOf, string, u64, u8, writeRecord } from "./schema.ts";

/** Version byte of certificates. */
export const CERTIFICATE_VERSION = 1;
/** Most taints on one node. */
export const MAX_TAINTS = 32;
/** Most portal subnets one node advertises. */
export const MAX_SUBNETS = 64;
/** Tags become DNS labels: at most 63 bytes. */
export const MAX_TAG_BYTES = 63;

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

/** Encodes everything the realm signature covers. Throws RangeError when a field breaks its limits. */
export function encodeCertificateUnsigned(fields: CertificateFields): Uint8Array {
  const w = new ByteWriter("certificate", 2400).u8(CERTIFICATE_VERSION, "version");
  writeRecord(w, FIELDS, fields as unknown as Record<string, unknown>);
  return w.finish();
}

/** Decodes a certificate (without checking its signature). Throws WireError for anything malformed. */
export function decodeCertificate(bytes: Uint8Array): Certificate {
  const r = new ByteReader(bytes, "certificate");
  const version = r.u8("version");
  if (version !== CERTIFICATE_VERSION) {
    throw new WireError("version", `certificate: version ${version}, this node reads ${CERTIFICATE_VERSION}`);
  }
  const fields = readRecord(r, FIELDS);
  const signed = bytes.subarray(0, r.position);
  const signature = r.bytes(ML_DSA_65_SIGNATURE_BYTES, "signature");
  r.end();
  if (fields.notAfter <= fields.notBefore) {
    throw new WireError("value", "certificate: notAfter is not after notBefore");
  }
  return { ...fields, signed, signature };
}
