import { assertEquals, assertRejects } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import { CERTIFICATE_SIGNATURE_CONTEXT } from "../spec.ts";
import { WireError } from "../wire/bytes.ts";
import { type CertificateFields, decodeCertificate } from "../wire/certificate.ts";
import { withSignature } from "../wire/control.ts";
import { certificateRef, CertificateRejected, issueCertificate, verifyCertificate } from "./certificate.ts";
import { domainSeparated, Identity } from "./identity.ts";

const NOW = 1_800_000_000_000;
const REALM = new Uint8Array(16).fill(0x0e);
const CONTEXT = new TextEncoder().encode(CERTIFICATE_SIGNATURE_CONTEXT);

async function sample(overrides: Partial<CertificateFields> = {}) {
  const realmKey = await Identity.generate();
  const node = await Identity.generate();
  const fields: CertificateFields = {
    serial: new Uint8Array(16).fill(1),
    conflux: new Uint8Array(16).fill(2),
    realm: REALM,
    realmName: "home",
    tag: "web",
    ipv4: Uint8Array.of(10, 128, 0, 7),
    prefix4: 16,
    ipv6: new Uint8Array(16).fill(0xfd),
    prefix6: 64,
    taints: ["dev", "stage"],
    portal: 0,
    subnets: [Uint8Array.of(10, 50, 0, 0, 24)],
    subject: "",
    email: "",
    access: 0,
    identities: [],
    region: "",
    regions: [],
    nodeKey: node.publicKey,
    notBefore: NOW - 1000,
    notAfter: NOW + 3_600_000,
    ...overrides,
  };
  return { realmKey, node, fields, bytes: await issueCertificate(realmKey.key, fields) };
}

Deno.test("certificate: a certificate issued by the realm key verifies, with the node id of its key", async () => {
  const { realmKey, node, fields, bytes } = await sample();
  const cert = await verifyCertificate(bytes, { realm: REALM, realmKey: realmKey.publicKey, now: NOW });
  assertEquals(cert.nodeId, node.nodeId);
  assertEquals(cert.ref, await certificateRef(bytes));
  assertEquals([cert.tag, cert.taints, cert.subnets, cert.ipv4], [
    fields.tag,
    fields.taints,
    fields.subnets,
    fields.ipv4,
  ]);
});

Deno.test("certificate: the identity the realm signed comes back verified; none when the realm asks for none", async () => {
  const cases: [n: number, identity: { subject: string; email: string }][] = [
    [1, { subject: "", email: "" }],
    [2, { subject: "248289761001", email: "alice@example.com" }],
    [3, { subject: "248289761001", email: "" }],
  ];
  for (const [n, identity] of cases) {
    const { realmKey, bytes } = await sample(identity);
    const cert = await verifyCertificate(bytes, { realm: REALM, realmKey: realmKey.publicKey, now: NOW });
    assertEquals({ subject: cert.subject, email: cert.email }, identity, `case ${n}`);
  }
});

Deno.test("certificate: a 256-byte subject is refused at issue, before anything is signed", async () => {
  const error = await assertRejects(() => sample({ subject: "s".repeat(256) }), RangeError);
  assertEquals(error.message, "certificate: subject is 256 bytes, the limit is 255");
});

Deno.test("certificate: a version 3 certificate, even genuinely signed, is refused as malformed naming both versions", async () => {
  const { realmKey, bytes } = await sample();
  // Version 3 had no region and regions (an empty string and an empty list here, just before the node key).
  const unsigned = decodeCertificate(bytes).signed;
  const at = unsigned.length - 16 - 1952 - 4;
  const v3 = Uint8Array.of(3, ...unsigned.subarray(1, at), ...unsigned.subarray(at + 4));
  const signed = withSignature(v3, await realmKey.key.sign(domainSeparated(CONTEXT, v3)));
  const error = await assertRejects(
    () => verifyCertificate(signed, { realm: REALM, realmKey: realmKey.publicKey, now: NOW }),
    CertificateRejected,
  );
  assertEquals(error.reason, "malformed");
  assertEquals(
    error.message,
    "certificate: version 3 is no longer read, this node reads only version 4 (upgrade the Guardian that issued it)",
  );
});

Deno.test("certificate: each way a certificate can be wrong is refused with its reason", async () => {
  const { realmKey, bytes } = await sample();
  const other = await Identity.generate();
  const tampered = bytes.slice();
  tampered[60] ^= 1; // inside the tag or addresses
  const cases: [
    n: number,
    input: Uint8Array,
    options: Partial<Parameters<typeof verifyCertificate>[1]>,
    reason: string,
  ][] = [
    [1, tampered, {}, "bad-signature"],
    [2, bytes, { realmKey: other.publicKey }, "bad-signature"],
    [3, bytes, { realm: new Uint8Array(16) }, "wrong-realm"],
    [4, bytes, { now: NOW + 3_600_000 }, "expired"],
    [5, bytes, { now: NOW - 1000 - 60_001 }, "not-yet-valid"],
    [6, bytes.subarray(0, 100), {}, "malformed"],
    [7, new Uint8Array(0), {}, "malformed"],
  ];
  for (const [n, input, options, reason] of cases) {
    const error = await assertRejects(
      () => verifyCertificate(input, { realm: REALM, realmKey: realmKey.publicKey, now: NOW, ...options }),
      CertificateRejected,
    );
    assertEquals(error.reason, reason, `case ${n}: ${error.message}`);
  }
});

Deno.test("certificate: decoding is total over 3000 hostile inputs", async () => {
  const { bytes } = await sample();
  for (const { what, bytes: input } of mutants(bytes, 3000, { seed: 21 })) {
    try {
      decodeCertificate(input);
    } catch (error) {
      if (!(error instanceof WireError)) throw new Error(`${what}: ${error}`);
    }
  }
});
