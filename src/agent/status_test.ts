import { assertEquals } from "../../tests/assert.ts";
import { issueCertificate, verifyCertificate } from "../crypto/certificate.ts";
import { Identity } from "../crypto/identity.ts";
import { identityStatus } from "./status.ts";

const REALM = new Uint8Array(16).fill(9);

/** A verified certificate carrying `identity`, as the agent holds its own and its peers'. */
async function certificate(identity: { subject: string; email: string }) {
  const realmKey = await Identity.generate();
  const node = await Identity.generate();
  const bytes = await issueCertificate(realmKey.key, {
    serial: new Uint8Array(16).fill(1),
    conflux: new Uint8Array(16).fill(2),
    realm: REALM,
    realmName: "home",
    tag: "web",
    ipv4: Uint8Array.of(10, 128, 0, 7),
    prefix4: 16,
    ipv6: new Uint8Array(16).fill(0xfd),
    prefix6: 64,
    taints: ["dev"],
    portal: 0,
    subnets: [],
    ...identity,
    access: 0,
    identities: [],
    region: "",
    regions: [],
    nodeKey: node.publicKey,
    notBefore: Date.now() - 1000,
    notAfter: Date.now() + 3_600_000,
  });
  return await verifyCertificate(bytes, { realm: REALM, realmKey: realmKey.publicKey, now: Date.now() });
}

Deno.test("status: the identity in status and peers JSON is the certificate's, absent when there is none", async () => {
  const cases: [n: number, identity: { subject: string; email: string }, json: string][] = [
    [1, { subject: "", email: "" }, "{}"],
    [
      2,
      { subject: "248289761001", email: "alice@example.com" },
      '{"identity":{"subject":"248289761001","email":"alice@example.com"}}',
    ],
    [3, { subject: "248289761001", email: "" }, '{"identity":{"subject":"248289761001"}}'],
  ];
  for (const [n, identity, json] of cases) {
    // The agent spreads this into NodeStatus (its own certificate) and each PeerStatus (the peer's).
    assertEquals(JSON.stringify(identityStatus(await certificate(identity))), json, `case ${n}`);
  }
});
