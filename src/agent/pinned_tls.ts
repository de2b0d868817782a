/**
 * Learns a TLS server's certificate without trusting anyone yet: a TLS handshake with verification off, then the
 * certificate in the presented chain whose SHA-256 is the pinned fingerprint (the realm CA's, from a registration
 * token) is returned as PEM, for `Deno.createHttpClient({ caCerts: [pem] })`. Nothing but the handshake is ever
 * sent, so no secret leaves the node before the pin has matched.
 *
 * node:tls is used because `Deno.connectTls` neither shows the peer certificate nor skips verification.
 * @module
 */

import * as tls from "node:tls";
import { certificateFingerprint, derToPem } from "../guardian/tls_cert.ts";

/** How long the TCP connect plus TLS handshake may take before the attempt is abandoned. */
export const PINNED_TLS_TIMEOUT_MS = 5_000;

/** The server presented no certificate with the pinned fingerprint: another server than the one the pin names. */
export class PinMismatch extends Error {
  override name = "PinMismatch";
}

/** Options of `pinnedCertificate`. */
export interface PinnedTlsOptions {
  /** Give up after this many milliseconds (connect and handshake together). */
  timeoutMs?: number;
  /** Abandons the attempt early. */
  signal?: AbortSignal;
}

/**
 * Connects to `url`'s host and port (443 when none), reads the certificate chain the server presents, and returns
 * as PEM the certificate (leaf or issuer) whose SHA-256 over its DER equals `fingerprintHex` (64 hex digits;
 * case and colons are ignored). Throws RangeError for a malformed fingerprint or URL, and Error when no presented
 * certificate matches (naming those seen), the connection fails, or the timeout passes. Only the TLS handshake is
 * sent; the socket is closed before this returns.
 */
export async function pinnedCertificate(
  url: string | URL,
  fingerprintHex: string,
  options: PinnedTlsOptions = {},
): Promise<string> {
  const expected = fingerprintHex.toLowerCase().replaceAll(":", "");
  if (!/^[0-9a-f]{64}$/.test(expected)) {
    throw new RangeError(
      `expected a SHA-256 fingerprint as 64 hex digits, got "${fingerprintHex}" (${expected.length} after cleanup)`,
    );
  }
  const target = new URL(url);
  if (target.protocol !== "https:") {
    throw new RangeError(`expected an https:// URL to pin, got "${target.href}"`);
  }
  const chain = await presentedChain(target, options);
  const seen: string[] = [];
  for (const der of chain) {
    const fingerprint = await certificateFingerprint(der);
    if (fingerprint === expected) return derToPem("CERTIFICATE", der);
    seen.push(fingerprint);
  }
  throw new PinMismatch(
    `${target.host} presented no certificate with SHA-256 ${expected}; it presented ${
      seen.join(", ") || "none"
    } (leaf first). The token may belong to another Guardian or realm: ask for a fresh token`,
  );
}

/** The DER of each certificate the server sent, leaf first, from one handshake with verification off. */
function presentedChain(target: URL, options: PinnedTlsOptions): Promise<Uint8Array[]> {
  const host = target.hostname.replace(/^\[(.*)\]$/, "$1");
  const port = Number(target.port || 443);
  const timeoutMs = options.timeoutMs ?? PINNED_TLS_TIMEOUT_MS;
  const { signal } = options;
  signal?.throwIfAborted();
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      rejectUnauthorized: false,
      // SNI only for names: RFC 6066 forbids IP literals there, and node:tls throws on one.
      ...(isIpLiteral(host) ? {} : { servername: host }),
    });
    let done = false;
    const finish = (error: Error | undefined, chain?: Uint8Array[]) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.off("secureConnect", onSecureConnect);
      socket.off("error", onError);
      socket.on("error", () => {}); // late errors of a socket being torn down are of no interest
      socket.destroy();
      if (error) reject(error);
      else resolve(chain!);
    };
    const onSecureConnect = () => {
      try {
        finish(undefined, chainOf(socket.getPeerCertificate(true)));
      } catch (error) {
        finish(error as Error);
      }
    };
    const onError = (error: Error) =>
      finish(new Error(`TLS handshake with ${target.host} failed: ${error.message}`, { cause: error }));
    const onAbort = () =>
      finish(new Error(`TLS handshake with ${target.host} aborted`, { cause: signal!.reason }));
    const timer = setTimeout(
      () => finish(new Error(`TLS handshake with ${target.host} did not finish within ${timeoutMs} ms`)),
      timeoutMs,
    );
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("secureConnect", onSecureConnect);
    socket.once("error", onError);
  });
}

/** Walks `issuerCertificate` links; a self-signed root links to itself, so each certificate is taken once. */
function chainOf(leaf: tls.DetailedPeerCertificate | undefined): Uint8Array[] {
  const out: Uint8Array[] = [];
  const seen = new Set<tls.DetailedPeerCertificate>();
  for (let c = leaf; c?.raw && !seen.has(c); c = c.issuerCertificate) {
    seen.add(c);
    out.push(new Uint8Array(c.raw));
  }
  if (out.length === 0) throw new Error("the server completed the handshake without a certificate");
  return out;
}

function isIpLiteral(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(":");
}
