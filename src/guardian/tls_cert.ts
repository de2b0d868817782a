/**
 * X.509 certificates for the Guardian's TLS, made with WebCrypto and a small DER encoder: a realm CA (ECDSA P-256,
 * self-signed, `CA:TRUE, pathlen:0`) and server leaves it signs (`CA:FALSE`, serverAuth + clientAuth, DNS and IP
 * subject alternative names). Clients pin the CA by the SHA-256 of its DER, so a leaf can be re-issued (new names,
 * renewal) without changing any pin.
 *
 * ```
 * Certificate    ::= SEQUENCE { tbsCertificate, signatureAlgorithm (ecdsa-with-SHA256), signature BIT STRING }
 * TBSCertificate ::= SEQUENCE { [0] version v3, serial INTEGER (16 random bytes), signature AlgorithmIdentifier,
 *                               issuer Name, validity SEQUENCE { notBefore, notAfter }, subject Name,
 *                               subjectPublicKeyInfo (from WebCrypto "spki"), [3] extensions }
 * ```
 * Only what RFC 5280 and webpki/rustls, Go and OpenSSL need is written. Names hold one CN (UTF8String); times are
 * UTCTime before 2050 and GeneralizedTime from 2050 (RFC 5280 4.1.2.5). The CA carries a subjectKeyIdentifier and
 * each leaf the matching authorityKeyIdentifier (SHA-1 of the public key, RFC 5280 4.2.1.2 method 1).
 * @module
 */

import { concat } from "../wire/bytes.ts";
import { parseAddress } from "../tun/ip.ts";

// --- Object identifiers (protocol constants) -------------------------------------------------------------------

const OID = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

/** KeyUsage bits as a DER BIT STRING body: unused-bit count, then the bits (bit 0 is the top bit). */
const KEY_USAGE_CA = Uint8Array.of(1, 0x86); // keyCertSign (5), cRLSign (6), digitalSignature (0)
const KEY_USAGE_LEAF = Uint8Array.of(7, 0x80); // digitalSignature (0)

const EC_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;

// --- Tuning defaults --------------------------------------------------------------------------------------------

/**
 * Common name of a realm CA when none is given. Prefer a name per realm ("veilnet realm CA <realm>"): rustls
 * finds a trust anchor by subject name, so CAs sharing a name fail with BadSignature instead of UnknownIssuer.
 */
export const DEFAULT_CA_NAME = "veilnet realm CA";
/** A realm CA lives 20 years: renewing it would change every pin handed out. */
export const DEFAULT_CA_YEARS = 20;
/** notBefore is set this far back to tolerate clock skew between Guardian and nodes. */
export const CLOCK_SKEW_MS = 3_600_000;
/** ub-common-name (RFC 5280 appendix A). */
const MAX_COMMON_NAME = 64;

// --- Public types -----------------------------------------------------------------------------------------------

/** A certificate with its private key, both as PEM, ready for `Deno.serve({ cert, key })` or nats-server. */
export interface TlsCertificate {
  /** `-----BEGIN CERTIFICATE-----` PEM of `der`. */
  certPem: string;
  /** `-----BEGIN PRIVATE KEY-----` (PKCS#8) PEM of the certificate's ECDSA P-256 private key. */
  keyPem: string;
  /** The certificate's DER. */
  der: Uint8Array<ArrayBuffer>;
  /** SHA-256 of `der`, lowercase hex (64 characters): what a token pins. */
  fingerprint: string;
}

/** A realm CA able to sign leaves: its certificate, key PEM, and the parts a leaf copies from it. */
export interface RealmCa extends TlsCertificate {
  /** The CA's subject Name, DER, copied byte for byte into each leaf's issuer. */
  readonly subjectDer: Uint8Array<ArrayBuffer>;
  /** The CA's subjectKeyIdentifier, repeated in each leaf's authorityKeyIdentifier. */
  readonly keyId: Uint8Array<ArrayBuffer>;
  /** Signs leaves; never exported again once loaded. */
  readonly privateKey: CryptoKey;
}

/** A validity period. Both ends are inclusive instants; notAfter must come after notBefore. */
export interface Validity {
  notBefore: Date;
  notAfter: Date;
}

/** What a server leaf names and how long it lives. */
export interface LeafOptions extends Validity {
  /** DNS names (e.g. "localhost", "guardian.example.org"); lowercase letters, digits, hyphens, dots. */
  dnsNames?: readonly string[];
  /** IPv4 or IPv6 addresses in text form, without brackets ("127.0.0.1", "::1"). */
  ips?: readonly string[];
  /** Subject CN; defaults to the first DNS name, else the first IP. Clients check the SANs, not this. */
  commonName?: string;
}

// --- Making certificates ----------------------------------------------------------------------------------------

/**
 * Makes a new realm CA: a fresh ECDSA P-256 key and a self-signed certificate with `CA:TRUE, pathlen:0` and
 * keyCertSign. Without `validity`, it runs from `now` less CLOCK_SKEW_MS to `now` plus DEFAULT_CA_YEARS.
 * Throws RangeError for a bad name or dates.
 */
export async function createRealmCa(
  options: { commonName?: string; validity?: Validity; now?: Date } = {},
): Promise<RealmCa> {
  const commonName = checkCommonName(options.commonName ?? DEFAULT_CA_NAME);
  const now = options.now ?? new Date();
  const validity = options.validity ?? {
    notBefore: new Date(now.getTime() - CLOCK_SKEW_MS),
    notAfter: new Date(
      Date.UTC(now.getUTCFullYear() + DEFAULT_CA_YEARS, now.getUTCMonth(), now.getUTCDate()),
    ),
  };
  checkValidity(validity);
  const keys = await crypto.subtle.generateKey(EC_P256, true, ["sign", "verify"]);
  const subjectDer = name(commonName);
  const keyId = await keyIdentifier(keys.publicKey);
  const extensions = [
    extension(OID.basicConstraints, true, seq(bool(true), uint(Uint8Array.of(0)))),
    extension(OID.keyUsage, true, tlv(0x03, KEY_USAGE_CA)),
    extension(OID.subjectKeyIdentifier, false, octets(keyId)),
  ];
  const der = await signCertificate({
    issuer: subjectDer,
    subject: subjectDer,
    validity,
    publicKey: keys.publicKey,
    extensions,
    signer: keys.privateKey,
  });
  const keyPem = derToPem(
    "PRIVATE KEY",
    new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
  );
  return { ...(await described(der, keyPem)), subjectDer, keyId, privateKey: keys.privateKey };
}

/**
 * Loads a saved realm CA (its certificate PEM and PKCS#8 key PEM) to issue more leaves. Throws RangeError when
 * either PEM is malformed, the key is not ECDSA P-256, or the key does not belong to the certificate.
 */
export async function loadRealmCa(certPem: string, keyPem: string): Promise<RealmCa> {
  const der = pemToDer("CERTIFICATE", certPem);
  const { subject, spki } = readCertificateParts(der);
  let privateKey: CryptoKey;
  let privateJwk: JsonWebKey;
  try {
    const pkcs8 = pemToDer("PRIVATE KEY", keyPem);
    // Imported extractable once, only to compare its public point with the certificate's; then re-imported.
    privateJwk = await crypto.subtle.exportKey(
      "jwk",
      await crypto.subtle.importKey("pkcs8", pkcs8, EC_P256, true, ["sign"]),
    );
    privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, EC_P256, false, ["sign"]);
  } catch (error) {
    throw new RangeError(`realm CA key: expected a PKCS#8 ECDSA P-256 PEM (${(error as Error).message})`, {
      cause: error,
    });
  }
  let publicKey: CryptoKey;
  try {
    publicKey = await crypto.subtle.importKey("spki", spki, EC_P256, true, ["verify"]);
  } catch (error) {
    throw new RangeError("realm CA certificate: its public key is not ECDSA P-256", { cause: error });
  }
  const publicJwk = await crypto.subtle.exportKey("jwk", publicKey);
  if (publicJwk.x !== privateJwk.x || publicJwk.y !== privateJwk.y) {
    throw new RangeError(
      "realm CA: the key does not belong to the certificate (their public points differ); load the pair saved together",
    );
  }
  return {
    ...(await described(der, normalizePem(keyPem))),
    subjectDer: subject,
    keyId: await keyIdentifier(publicKey),
    privateKey,
  };
}

/**
 * Issues a server leaf signed by `ca`: a fresh ECDSA P-256 key, `CA:FALSE`, digitalSignature, serverAuth and
 * clientAuth (clientAuth for NATS cluster routes), and the given DNS and IP SANs. Serve it as
 * `cert: leaf.certPem + ca.certPem` so clients receive the chain. Throws RangeError when there is no SAN, a name
 * or address is malformed, or the validity is bad.
 */
export async function issueServerCertificate(ca: RealmCa, options: LeafOptions): Promise<TlsCertificate> {
  const dnsNames = (options.dnsNames ?? []).map(checkDnsName);
  const ips = (options.ips ?? []).map(ipBytes);
  if (dnsNames.length + ips.length === 0) {
    throw new RangeError("a server certificate needs at least one DNS name or IP address (none were given)");
  }
  checkValidity(options);
  const commonName = checkCommonName(options.commonName ?? dnsNames[0] ?? options.ips![0]!);
  const keys = await crypto.subtle.generateKey(EC_P256, true, ["sign", "verify"]);
  const sans = [
    ...dnsNames.map((d) => tlv(0x82, new TextEncoder().encode(d))), // [2] dNSName (IA5String)
    ...ips.map((ip) => tlv(0x87, ip)), // [7] iPAddress (4 or 16 bytes)
  ];
  const extensions = [
    // cA FALSE: webpki refuses a CA certificate as the end entity.
    extension(OID.basicConstraints, true, seq()),
    extension(OID.keyUsage, true, tlv(0x03, KEY_USAGE_LEAF)),
    extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth))),
    extension(OID.subjectAltName, false, seq(...sans)),
    extension(OID.authorityKeyIdentifier, false, seq(tlv(0x80, ca.keyId))), // [0] keyIdentifier
  ];
  const der = await signCertificate({
    issuer: ca.subjectDer,
    subject: name(commonName),
    validity: options,
    publicKey: keys.publicKey,
    extensions,
    signer: ca.privateKey,
  });
  const keyPem = derToPem(
    "PRIVATE KEY",
    new Uint8Array(await crypto.subtle.exportKey("pkcs8", keys.privateKey)),
  );
  return await described(der, keyPem);
}

/** SHA-256 of a certificate's DER, lowercase hex: the fingerprint tokens carry. */
export async function certificateFingerprint(der: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", Uint8Array.from(der));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// --- PEM --------------------------------------------------------------------------------------------------------

/** DER as PEM with `label` ("CERTIFICATE", "PRIVATE KEY"), base64 in 64-character lines, ending in a newline. */
export function derToPem(label: string, der: Uint8Array): string {
  let binary = "";
  for (const b of der) binary += String.fromCharCode(b);
  const lines = btoa(binary).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** The DER inside the first PEM block labelled `label`; RangeError if there is none or it is not base64. */
export function pemToDer(label: string, pem: string): Uint8Array<ArrayBuffer> {
  const match = new RegExp(`-----BEGIN ${label}-----([^-]*)-----END ${label}-----`).exec(pem);
  if (!match) throw new RangeError(`expected a PEM block "-----BEGIN ${label}-----", found none`);
  try {
    return Uint8Array.from(atob(match[1]!.replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  } catch (error) {
    throw new RangeError(`the PEM ${label} block is not valid base64`, { cause: error });
  }
}

function normalizePem(keyPem: string): string {
  return derToPem("PRIVATE KEY", pemToDer("PRIVATE KEY", keyPem));
}

// --- Input checks -----------------------------------------------------------------------------------------------

function checkCommonName(cn: string): string {
  if (cn.length === 0 || cn.length > MAX_COMMON_NAME) {
    throw new RangeError(`a common name must be 1 to ${MAX_COMMON_NAME} characters, got ${cn.length}`);
  }
  return cn;
}

/** A DNS SAN: labels of letters, digits and inner hyphens (a leading "*." wildcard allowed), at most 253 bytes. */
function checkDnsName(dns: string): string {
  const label = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
  const lower = dns.toLowerCase();
  const labels = lower.split(".");
  if (labels[0] === "*" && labels.length > 2) labels.shift();
  if (lower.length > 253 || !labels.every((l) => label.test(l)) || /^[0-9.]+$/.test(lower)) {
    throw new RangeError(
      `bad DNS name "${dns}": expected letters, digits, hyphens and dots (e.g. guardian.example.org); ` +
        `put IP addresses in ips`,
    );
  }
  return lower;
}

/** An IP SAN's bytes: 4 for IPv4, 16 for IPv6 (RFC 5280 4.2.1.6). */
function ipBytes(ip: string): Uint8Array {
  const bytes = parseAddress(ip);
  if (!bytes) {
    throw new RangeError(`bad IP address "${ip}": expected IPv4 (127.0.0.1) or IPv6 without brackets (::1)`);
  }
  return bytes;
}

function checkValidity({ notBefore, notAfter }: Validity): void {
  for (const [what, d] of [["notBefore", notBefore], ["notAfter", notAfter]] as const) {
    if (!(d instanceof Date) || Number.isNaN(d.getTime())) {
      throw new RangeError(`${what} must be a valid Date, got ${String(d)}`);
    }
    const year = d.getUTCFullYear();
    if (year < 1950 || year > 9999) {
      throw new RangeError(`${what} must fall in the years 1950 to 9999 (RFC 5280), got ${d.toISOString()}`);
    }
  }
  if (notAfter.getTime() <= notBefore.getTime()) {
    throw new RangeError(
      `notAfter (${notAfter.toISOString()}) must come after notBefore (${notBefore.toISOString()})`,
    );
  }
}

// --- Certificate assembly ---------------------------------------------------------------------------------------

async function signCertificate(parts: {
  issuer: Uint8Array;
  subject: Uint8Array;
  validity: Validity;
  publicKey: CryptoKey;
  extensions: Uint8Array[];
  signer: CryptoKey;
}): Promise<Uint8Array<ArrayBuffer>> {
  const serial = crypto.getRandomValues(new Uint8Array(16));
  // Top bit clear (a positive INTEGER), next bit set (no leading zero to trim): always 16 bytes (RFC 5280: ≤ 20).
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  const algorithm = seq(oid(OID.ecdsaWithSha256)); // parameters absent (RFC 5758 3.2)
  const tbs = seq(
    tlv(0xa0, uint(Uint8Array.of(2))), // [0] version v3
    uint(serial),
    algorithm,
    parts.issuer,
    seq(time(parts.validity.notBefore), time(parts.validity.notAfter)),
    parts.subject,
    new Uint8Array(await crypto.subtle.exportKey("spki", parts.publicKey)),
    tlv(0xa3, seq(...parts.extensions)), // [3] extensions
  );
  const signature = new Uint8Array(await crypto.subtle.sign(ECDSA_SHA256, parts.signer, tbs));
  return seq(tbs, algorithm, bitString(ecdsaSignatureDer(signature)));
}

async function described(der: Uint8Array<ArrayBuffer>, keyPem: string): Promise<TlsCertificate> {
  return {
    certPem: derToPem("CERTIFICATE", der),
    keyPem,
    der,
    fingerprint: await certificateFingerprint(der),
  };
}

/** A Name holding one RDN: CN as UTF8String. */
function name(commonName: string): Uint8Array<ArrayBuffer> {
  return seq(set(seq(oid(OID.commonName), tlv(0x0c, new TextEncoder().encode(commonName)))));
}

/** SHA-1 of the subjectPublicKey bits (the uncompressed EC point), RFC 5280 4.2.1.2 method 1. */
async function keyIdentifier(publicKey: CryptoKey): Promise<Uint8Array<ArrayBuffer>> {
  const point = await crypto.subtle.exportKey("raw", publicKey);
  return new Uint8Array(await crypto.subtle.digest("SHA-1", point));
}

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array<ArrayBuffer> {
  return seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));
}

/** WebCrypto gives an ECDSA signature as r || s (IEEE P1363); X.509 wants SEQUENCE { INTEGER r, INTEGER s }. */
function ecdsaSignatureDer(p1363: Uint8Array): Uint8Array<ArrayBuffer> {
  const half = p1363.length / 2;
  return seq(uint(p1363.subarray(0, half)), uint(p1363.subarray(half)));
}

/** UTCTime (YYMMDDHHMMSSZ) before 2050, GeneralizedTime (YYYYMMDDHHMMSSZ) from 2050 (RFC 5280 4.1.2.5). */
function time(d: Date): Uint8Array<ArrayBuffer> {
  const two = (n: number) => String(n).padStart(2, "0");
  const year = d.getUTCFullYear();
  const rest = two(d.getUTCMonth() + 1) + two(d.getUTCDate()) + two(d.getUTCHours()) +
    two(d.getUTCMinutes()) +
    two(d.getUTCSeconds()) + "Z";
  return year < 2050
    ? tlv(0x17, new TextEncoder().encode(two(year % 100) + rest))
    : tlv(0x18, new TextEncoder().encode(String(year).padStart(4, "0") + rest));
}

// --- DER encoding (just the types used above) -------------------------------------------------------------------

/** A definite length: short form below 128, else 0x80 | count followed by the big-endian length bytes. */
function length(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

/** One tag-length-value with `parts` concatenated as the value. */
function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const body = concat(...parts);
  return concat(Uint8Array.of(tag), length(body.length), body);
}

const seq = (...parts: Uint8Array[]) => tlv(0x30, ...parts);
const set = (...parts: Uint8Array[]) => tlv(0x31, ...parts);
const octets = (value: Uint8Array) => tlv(0x04, value);
const bitString = (value: Uint8Array) => tlv(0x03, Uint8Array.of(0), value); // 0 unused bits
const bool = (value: boolean) => tlv(0x01, Uint8Array.of(value ? 0xff : 0));

/** A non-negative INTEGER from big-endian bytes: leading zeros trimmed, a 0 prepended if the top bit is set. */
function uint(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const trimmed = bytes.subarray(i);
  return tlv(0x02, trimmed[0]! & 0x80 ? concat(Uint8Array.of(0), trimmed) : trimmed);
}

/** An OBJECT IDENTIFIER from dotted text: first two arcs as 40a + b, then base-128 arcs with continuation bits. */
function oid(dotted: string): Uint8Array<ArrayBuffer> {
  const [a, b, ...rest] = dotted.split(".").map(Number);
  const out = [a! * 40 + b!];
  for (let n of rest) {
    const arc = [n & 0x7f];
    while ((n = Math.floor(n / 128)) > 0) arc.unshift(0x80 | (n & 0x7f));
    out.push(...arc);
  }
  return tlv(0x06, Uint8Array.from(out));
}

// --- DER reading (only to load a saved CA) ----------------------------------------------------------------------

/** One element of DER: its tag, and where its whole encoding and its value sit in the input. */
interface Element {
  tag: number;
  start: number;
  valueStart: number;
  end: number;
}

function readElement(der: Uint8Array, at: number): Element {
  const bad = (why: string) => new RangeError(`realm CA certificate: malformed DER at offset ${at} (${why})`);
  if (at + 2 > der.length) throw bad("truncated header");
  const tag = der[at]!;
  let len = der[at + 1]!;
  let valueStart = at + 2;
  if (len & 0x80) {
    const count = len & 0x7f;
    if (count === 0 || count > 4 || valueStart + count > der.length) throw bad("bad length");
    len = 0;
    for (let i = 0; i < count; i++) len = len * 256 + der[valueStart + i]!;
    valueStart += count;
  }
  if (valueStart + len > der.length) throw bad("value runs past the end");
  return { tag, start: at, valueStart, end: valueStart + len };
}

/** The elements directly inside a constructed element. */
function children(der: Uint8Array, parent: Element): Element[] {
  const out: Element[] = [];
  for (let at = parent.valueStart; at < parent.end;) {
    const e = readElement(der, at);
    out.push(e);
    at = e.end;
  }
  return out;
}

/** The subject Name and SubjectPublicKeyInfo of a certificate, as DER (copies). */
function readCertificateParts(
  der: Uint8Array,
): { subject: Uint8Array<ArrayBuffer>; spki: Uint8Array<ArrayBuffer> } {
  const certificate = readElement(der, 0);
  const tbs = children(der, certificate)[0];
  if (certificate.tag !== 0x30 || certificate.end !== der.length || tbs?.tag !== 0x30) {
    throw new RangeError(
      "realm CA certificate: not an X.509 certificate (expected SEQUENCE { SEQUENCE ... })",
    );
  }
  const fields = children(der, tbs);
  // version [0] is explicit and optional; after it come serial, signature, issuer, validity, subject, spki.
  const first = fields[0]?.tag === 0xa0 ? 1 : 0;
  const subject = fields[first + 4];
  const spki = fields[first + 5];
  if (subject?.tag !== 0x30 || spki?.tag !== 0x30) {
    throw new RangeError("realm CA certificate: no subject and public key where X.509 puts them");
  }
  return { subject: der.slice(subject.start, subject.end), spki: der.slice(spki.start, spki.end) };
}
