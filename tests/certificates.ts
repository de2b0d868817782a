/**
 * Certificate fields for test node `n` of a realm: conflux id, tag `n<n>` and addresses 10.128.0.<n> /
 * fd00::<n>, no portal, no identity; the caller names its key, realm, taints and validity.
 * @module
 */

import type { CertificateFields } from "../src/wire/certificate.ts";

/** The fields of node `n`'s certificate; `o` overrides any of them. */
export function nodeCertificateFields(
  n: number,
  o: Pick<CertificateFields, "realm" | "nodeKey" | "notBefore" | "notAfter"> & Partial<CertificateFields>,
): CertificateFields {
  return {
    serial: crypto.getRandomValues(new Uint8Array(16)),
    conflux: new Uint8Array(16).fill(n),
    realmName: "home",
    tag: `n${n}`,
    ipv4: Uint8Array.of(10, 128, 0, n),
    prefix4: 16,
    ipv6: Uint8Array.of(0xfd, ...new Uint8Array(14), n),
    prefix6: 64,
    taints: ["lab"],
    portal: 0,
    subnets: [],
    subject: "",
    email: "",
    access: 0,
    identities: [],
    region: "",
    regions: [],
    ...o,
  };
}
