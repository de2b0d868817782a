import { assert, assertEquals, assertThrows } from "../../tests/assert.ts";
import { nodeCertificateFields } from "../../tests/certificates.ts";
import { issueCertificate } from "../crypto/certificate.ts";
import { signControl } from "../crypto/control_signing.ts";
import { Identity, toHex } from "../crypto/identity.ts";
import { BROADCAST, ControlKind } from "../wire/control.ts";
import { parseReport, Reports } from "./reports.ts";

const NOW = 1_800_000_000_000;
const REALM = new Uint8Array(16).fill(0x0e);
const REALM_ID = toHex(REALM);
const CONFLUX = "07070707-0707-0707-0707-070707070707";
const PEER = {
  id: "08080808-0808-0808-0808-080808080808",
  path: "direct",
  link: "tcp",
  txBytes: 5,
  rxBytes: 7,
};
const TEXT = JSON.stringify({ version: "0.1.0", peers: [PEER] });

/** A realm key, node 7's identity and certificate, and a signed report from it. */
async function world() {
  const realmKey = await Identity.generate();
  const node = await Identity.generate();
  const cert = await issueCertificate(
    realmKey.key,
    nodeCertificateFields(7, {
      realm: REALM,
      nodeKey: node.publicKey,
      notBefore: NOW - 1000,
      notAfter: NOW + 60_000,
    }),
  );
  const report = (text = TEXT, signer = node) =>
    signControl(signer, {
      kind: ControlKind.Report,
      recipient: BROADCAST,
      certRef: new Uint8Array(16),
      body: { certificate: cert, report: text },
    }, NOW);
  const sessions = new Set([`${CONFLUX} ${node.id}`]);
  const clock = { now: NOW };
  const reports = new Reports({
    realmKey: (id) => Promise.resolve(id === REALM_ID ? realmKey.publicKey : undefined),
    inSession: (conflux, nodeId) => sessions.has(`${conflux} ${nodeId}`),
    clock: () => clock.now,
  });
  return { realmKey, node, report, reports, sessions, clock };
}

Deno.test("reports: a node's signed report is kept under its conflux id", async () => {
  const { report, reports } = await world();
  await reports.receive(REALM_ID, await report());
  assertEquals(reports.get(CONFLUX), { at: NOW, version: "0.1.0", peers: [PEER] });
});

Deno.test("reports: another key signing with the node's certificate, a foreign realm, no session: refused", async () => {
  const { report, reports, sessions } = await world();
  const mallory = await Identity.generate();
  await reports.receive(REALM_ID, await report(TEXT, mallory)); // the certificate is not hers
  await reports.receive(toHex(new Uint8Array(16).fill(1)), await report()); // a realm the Guardian does not know
  assertEquals(reports.get(CONFLUX), undefined);
  sessions.clear(); // revoked or removed
  await reports.receive(REALM_ID, await report());
  assertEquals(reports.get(CONFLUX), undefined);
  assertEquals(reports.refused.get("unknown-sender"), 1); // her signature, under the key the certificate names
  assertEquals(reports.refused.get("realm"), 1);
  assertEquals(reports.refused.get("session"), 1);
});

Deno.test("reports: a replayed report and a forged text are refused; a flood is dropped unchecked", async () => {
  const { report, reports } = await world();
  const once = await report();
  await reports.receive(REALM_ID, once);
  await reports.receive(REALM_ID, once);
  assertEquals(reports.refused.get("replayed"), 1);
  await reports.receive(
    REALM_ID,
    await report(JSON.stringify({ version: "1", peers: [{ ...PEER, path: "x" }] })),
  );
  assertEquals(reports.refused.get("text"), 1);
  for (let i = 0; i < 250; i++) await reports.receive(REALM_ID, new Uint8Array(10));
  assert((reports.refused.get("budget") ?? 0) >= 50, JSON.stringify([...reports.refused]));
});

Deno.test("reports: the Guardian works out each peer's bits a second from the node's previous report", async () => {
  const { report, reports, clock } = await world();
  await reports.receive(REALM_ID, await report());
  assertEquals(
    reports.get(CONFLUX)!.peers[0]!.bitsPerSecond,
    undefined,
    "the first report has nothing to compare",
  );
  clock.now += 2_000; // 1000 more bytes both ways in 2 s: 4000 bit/s (the message is dated NOW, within the skew)
  await reports.receive(
    REALM_ID,
    await report(JSON.stringify({ version: "0.1.0", peers: [{ ...PEER, txBytes: 1005 }] })),
  );
  assertEquals(reports.get(CONFLUX)!.peers[0]!.bitsPerSecond, 4000);
});

Deno.test("reports: parseReport checks every field", () => {
  assertEquals(parseReport(TEXT).peers.length, 1);
  const bad = (peers: unknown, version: unknown = "0.1.0") => () =>
    parseReport(JSON.stringify({ version, peers }));
  assertThrows(() => parseReport("{"), RangeError);
  assertThrows(bad([], "<script>"), RangeError);
  assertThrows(bad([{ ...PEER, id: "not-an-id" }]), RangeError);
  assertThrows(bad([{ ...PEER, via: "Not A Tag" }]), RangeError);
  assertThrows(bad([{ ...PEER, link: "carrier-pigeon" }]), RangeError);
  assertThrows(bad([{ ...PEER, txBytes: -1 }]), RangeError);
  assertThrows(bad([{ ...PEER, rttMs: "1" }]), RangeError);
  assertThrows(bad(Array.from({ length: 65 }, () => PEER)), RangeError);
  const nat = (fields: Record<string, unknown>) =>
    parseReport(JSON.stringify({ version: "0.1.0", peers: [], ...fields }));
  assertEquals(nat({ nat: "endpoint-dependent", publicAddress: "198.51.100.7:40123" }), {
    version: "0.1.0",
    nat: "endpoint-dependent",
    publicAddress: "198.51.100.7:40123",
    peers: [],
  });
  assertEquals(nat({ publicAddress: "[2001:db8::1]:3478" }).publicAddress, "[2001:db8::1]:3478");
  assertThrows(() => nat({ nat: "friendly" }), RangeError);
  assertThrows(() => nat({ publicAddress: "<b>198.51.100.7</b>:1" }), RangeError);
  assertThrows(() => nat({ publicAddress: "example.com:80" }), RangeError);
});
