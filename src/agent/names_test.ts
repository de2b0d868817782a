import { assertEquals } from "../../tests/assert.ts";
import { nodeCertificateFields } from "../../tests/certificates.ts";
import { issueCertificate, type VerifiedCertificate, verifyCertificate } from "../crypto/certificate.ts";
import { signControl } from "../crypto/control_signing.ts";
import { Identity, toHex } from "../crypto/identity.ts";
import { ControlKind, decodeControl } from "../wire/control.ts";
import { Names } from "./names.ts";
import { PeerTable } from "./peers.ts";

const REALM = new Uint8Array(16).fill(7);

/** A node with a genuine certificate, its peer table and names; `outbox` collects what it publishes. */
async function node(realmKey: Identity, tag: string, taints: string[], n: number) {
  const identity = await Identity.generate();
  const bytes = await issueCertificate(
    realmKey.key,
    nodeCertificateFields(n, {
      serial: new Uint8Array(16).fill(n),
      realm: REALM,
      tag,
      taints,
      nodeKey: identity.publicKey,
      notBefore: Date.now() - 1000,
      notAfter: Date.now() + 3_600_000,
    }),
  );
  const cert: VerifiedCertificate = await verifyCertificate(bytes, {
    realm: REALM,
    realmKey: realmKey.publicKey,
    now: Date.now(),
  });
  const outbox: { to: string | undefined; message: Uint8Array }[] = [];
  const table = new PeerTable({
    self: () => cert,
    realm: REALM,
    realmKey: realmKey.publicKey,
    clock: Date.now,
  });
  const names = new Names({
    identity,
    self: () => cert,
    peers: () => table.list().map((p) => p.cert),
    send: (to, message) => outbox.push({ to, message }),
    clock: Date.now,
  });
  /** Delivers a message as the agent does: the table verifies, then names handles DNS kinds. */
  const receive = async (message: Uint8Array) => {
    const m = await table.receive(message);
    if (m?.kind === ControlKind.DnsQuery) await names.onQuery(m);
    if (m?.kind === ControlKind.DnsAnswer) names.onAnswer(m);
  };
  return { identity, cert, table, names, outbox, receive, id: toHex(identity.nodeId) };
}

async function realm() {
  const realmKey = await Identity.generate();
  return {
    realmKey,
    a: await node(realmKey, "a", ["lab"], 2),
    b: await node(realmKey, "b", ["lab"], 3),
    x: await node(realmKey, "b", ["other"], 4), // also called "b", but a may not reach it
  };
}

/** Waits until `box` has a message, then returns and removes it. */
async function next(box: { message: Uint8Array; to: string | undefined }[]) {
  while (box.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  return box.shift()!;
}

Deno.test("names: a tag no peer carries is asked of the realm; the owner's signed answer resolves it", async () => {
  const { a, b, x } = await realm();
  const lookup = a.names.lookup("b");
  const question = await next(a.outbox);
  assertEquals(question.to, undefined, "broadcast");
  await b.receive(question.message);
  await x.receive(question.message); // incompatible taints: x never answers a
  assertEquals(x.outbox.length, 0);
  assertEquals(x.table.dropped.get("forbidden"), 1);
  const answer = await next(b.outbox);
  assertEquals(answer.to, a.id);
  await a.receive(answer.message);
  const owners = await lookup;
  assertEquals(owners.map((o) => [o.tag, [...o.ipv4]]), [["b", [10, 128, 0, 3]]]);
  // The question carried a's certificate, so b now knows a too; and a's own tag resolves to itself.
  assertEquals(b.table.list().map((p) => p.cert.tag), ["a"]);
  assertEquals((await a.names.lookup("a")).map((o) => o.ipv4[3]), [2]);
});

Deno.test("names: forged answers are not used: wrong signer, foreign realm key, forbidden owner", async () => {
  const { a, b, x } = await realm();
  const lookup = a.names.lookup("b");
  const question = decodeControl((await next(a.outbox)).message);
  const mallory = await Identity.generate();
  const answer = (from: Identity, cert: VerifiedCertificate) =>
    signControl(from, {
      kind: ControlKind.DnsAnswer,
      recipient: a.identity.nodeId,
      certRef: cert.ref,
      body: { query: question.id, certificate: cert.bytes },
    }, Date.now());
  // 1. b's genuine certificate, signed by mallory (she claims to be b).
  const forged = await answer(mallory, b.cert);
  const asB = forged.slice();
  asB.set(b.identity.nodeId, 3); // sender field: b
  await a.receive(asB);
  // 2. A certificate for mallory's key from another "realm" key.
  const fakeRealm = await realm();
  await a.receive(await answer(fakeRealm.b.identity, fakeRealm.b.cert));
  // 3. x owns a tag "b" too, genuinely, but a may not reach it.
  await a.receive(await answer(x.identity, x.cert));
  assertEquals(await lookup, []);
  assertEquals([...a.table.dropped].sort(), [["bad-signature", 2], ["forbidden", 1]]);
  assertEquals(a.table.list(), []);
});

Deno.test("names: a tag no one owns is asked at most once a second; concurrent lookups share one question", async () => {
  const { a } = await realm();
  const [one, two] = await Promise.all([a.names.lookup("nobody"), a.names.lookup("nobody")]);
  assertEquals([one, two], [[], []]);
  assertEquals(await a.names.lookup("nobody"), []);
  assertEquals(a.outbox.length, 1);
});
