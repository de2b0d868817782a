/**
 * The Guardian's TLS, for its API and its Master: by default a realm CA made at first start (kept in the store,
 * so Guardians sharing a state share it) signs a server certificate for every name and address of this host, and
 * registration tokens carry the CA's SHA-256 (the "pin"), so a node verifies the Guardian with no CA of its own
 * and no trust on first use. An operator's certificate (`--tls-cert/--tls-key`) replaces it: nodes then verify
 * it as any HTTPS client does, and tokens carry no pin.
 * @module
 */

import { fromHex, toHex } from "../crypto/identity.ts";
import { base64url, fromBase64 } from "./rules.ts";
import type { Store } from "./store.ts";
import {
  certificateFingerprint,
  createRealmCa,
  issueServerCertificate,
  loadRealmCa,
  pemToDer,
  type RealmCa,
} from "./tls_cert.ts";

/** Store meta keys: the realm CA (certificate and key, PEM), and the pin tokens carry (absent: none). */
const CA_META = "tls_ca";
const PIN_META = "tls_pin";

/** A server leaf lives a year and is made again at every start. */
const LEAF_DAYS = 365;

/** How the Guardian speaks: its own realm CA (default), an operator's certificate, or plain text (opt-out). */
export type TlsMode =
  | { kind: "realm"; names: string[] }
  | { kind: "operator"; certFile: string; keyFile: string }
  | { kind: "off" };

/** What `Deno.serve` and nats-server need, and what nodes are told. */
export interface ServerTls {
  /** The server certificate followed by its issuer (the realm CA), PEM: clients receive the chain. */
  certPem: string;
  keyPem: string;
  /** The realm CA, PEM; undefined with an operator's certificate. */
  caPem?: string;
  /** The CA's SHA-256, base64url: what tokens carry. Undefined with an operator's certificate. */
  pin?: string;
}

/** SHA-256 of a certificate's DER, as a token carries it (base64url, 43 characters). */
export async function pinOf(certPem: string): Promise<string> {
  return base64url(fromHex(await certificateFingerprint(pemToDer("CERTIFICATE", certPem))));
}

/** The pin in hex (what pinnedCertificate takes), or undefined for something that is not a pin. */
export function pinToHex(pin: string): string | undefined {
  if (!/^[A-Za-z0-9_-]{43}$/.test(pin)) return undefined;
  const bytes = fromBase64(pin.replaceAll("-", "+").replaceAll("_", "/") + "=");
  return bytes?.length === 32 ? toHex(bytes) : undefined;
}

/** A realm CA as kept and exported: certificate and private key, PEM. */
export interface SavedCa {
  cert: string;
  key: string;
}

/**
 * The realm CA of a data directory's store (beside its NATS keys, and exported with them, so the Guardians of a
 * shared state and the servers of their Master share it), made and kept on first use.
 */
export async function realmCa(store: Store): Promise<RealmCa> {
  const saved = savedCa(store);
  if (saved !== undefined) return await loadRealmCa(saved.cert, saved.key);
  const ca = await createRealmCa({ commonName: `veilnet realm CA ${crypto.randomUUID().slice(0, 8)}` });
  saveCa(store, { cert: ca.certPem, key: ca.keyPem });
  return ca;
}

/** The realm CA a store holds, if any (secret: its key signs the Guardian's certificates). */
export function savedCa(store: Store): SavedCa | undefined {
  const saved = store.getMeta(CA_META);
  return saved === undefined ? undefined : JSON.parse(saved);
}

/** Keeps `ca` as the store's realm CA. */
export function saveCa(store: Store, ca: SavedCa): void {
  store.setMeta(CA_META, JSON.stringify({ cert: ca.cert, key: ca.key }));
}

/** The pin registration tokens carry now (set by the serving Guardian), or undefined for none. */
export function tokenPin(store: Store): string | undefined {
  return store.getMeta(PIN_META) || undefined;
}

/**
 * The names a certificate of this host holds when nobody names them: loopback, the host name, and every address
 * of its interfaces (a node may reach the Guardian by any of them), plus `extra`.
 */
export function hostNames(extra: string[] = []): { dnsNames: string[]; ips: string[] } {
  const dnsNames = new Set(["localhost"]);
  const ips = new Set(["127.0.0.1", "::1"]);
  try {
    const host = Deno.hostname().toLowerCase();
    if (/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(host)) dnsNames.add(host);
  } catch { /* no host name permission: loopback and addresses suffice */ }
  try {
    for (const i of Deno.networkInterfaces()) ips.add(i.address.replace(/%.*$/, ""));
  } catch { /* as above */ }
  for (const name of extra) {
    if (/^[0-9.]+$/.test(name) || name.includes(":")) ips.add(name.replace(/^\[(.*)\]$/, "$1"));
    else dnsNames.add(name.toLowerCase());
  }
  return { dnsNames: [...dnsNames], ips: [...ips] };
}

/** A server certificate from the realm CA for `names` (see {@link hostNames}). */
export async function realmServerTls(store: Store, names: string[]): Promise<ServerTls> {
  const ca = await realmCa(store);
  const now = Date.now();
  const leaf = await issueServerCertificate(ca, {
    ...hostNames(names),
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + LEAF_DAYS * 86_400_000),
  });
  return {
    certPem: leaf.certPem + ca.certPem,
    keyPem: leaf.keyPem,
    caPem: ca.certPem,
    pin: await pinOf(ca.certPem),
  };
}

/** Records the pin tokens made from now on carry (none: an operator's certificate, or plain text). */
export async function recordPin(store: Store, pin: string | undefined): Promise<void> {
  if (tokenPin(store) !== pin) await store.transaction(() => store.setMeta(PIN_META, pin ?? ""));
}

/** The serving Guardian's TLS for `mode` (the realm CA from `store`); undefined for plain text. */
export async function serverTls(store: Store, mode: TlsMode): Promise<ServerTls | undefined> {
  let tls: ServerTls | undefined;
  if (mode.kind === "realm") tls = await realmServerTls(store, mode.names);
  else if (mode.kind === "operator") {
    const read = (flag: string, path: string) => {
      try {
        return Deno.readTextFileSync(path);
      } catch (error) {
        throw new Error(`${flag} ${path}: ${(error as Error).message}`, { cause: error });
      }
    };
    tls = { certPem: read("--tls-cert", mode.certFile), keyPem: read("--tls-key", mode.keyFile) };
  }
  return tls;
}
