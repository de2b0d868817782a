/**
 * Membership over the in-memory Master, which delivers only where there is interest (as NATS does): lookups by
 * tag, address and node id reach their owner alone; announcements reach the nodes that know the sender.
 */

import { assert, assertEquals } from "../../tests/assert.ts";
import { nodeCertificateFields } from "../../tests/certificates.ts";
import { issueCertificate, type VerifiedCertificate, verifyCertificate } from "../crypto/certificate.ts";
import { signControl, signRevocation } from "../crypto/control_signing.ts";
import { Identity, toHex } from "../crypto/identity.ts";
import { MemoryBus, type MemoryChannel } from "../control/memory.ts";
import { realmSubjects } from "../control/subjects.ts";
import { subnetToBytes } from "../portal/subnets.ts";
import { parseCidr } from "../tun/ip.ts";
import { type AnyControlMessage, BROADCAST, ControlKind, decodeControl } from "../wire/control.ts";
import { Membership } from "./membership.ts";

const REALM = new Uint8Array(16).fill(7);
const subjects = realmSubjects(toHex(REALM));

async function realm() {
  const realmKey = await Identity.generate();
  const bus = new MemoryBus();
  const certify = async (
    identity: Identity,
    n: number,
    o: { tag?: string; taints?: string[]; subnets?: string[] },
  ) =>
    await verifyCertificate(
      await issueCertificate(
        realmKey.key,
        nodeCertificateFields(n, {
          realm: REALM,
          nodeKey: identity.publicKey,
          notBefore: Date.now() - 1000,
          notAfter: Date.now() + 3_600_000,
          ...(o.tag ? { tag: o.tag } : {}),
          ...(o.taints ? { taints: o.taints } : {}),
          ...(o.subnets ? { portal: 1, subnets: o.subnets.map((s) => subnetToBytes(parseCidr(s))) } : {}),
        }),
      ),
      { realm: REALM, realmKey: realmKey.publicKey, now: Date.now() },
    );
  /** A joined node; `messages` collects what membership hands on. */
  const node = async (n: number, o: { tag?: string; taints?: string[]; subnets?: string[] } = {}) => {
    const identity = await Identity.generate();
    let cert = await certify(identity, n, o);
    const channel: MemoryChannel = bus.connect();
    const messages: AnyControlMessage[] = [];
    const membership = new Membership({
      identity,
      self: () => cert,
      realm: REALM,
      realmKey: realmKey.publicKey,
      subjects,
      channel: () => channel,
      clock: Date.now,
      log: () => {},
      onMessage: (m) => void messages.push(m),
    });
    await membership.join();
    return {
      identity,
      get cert() {
        return cert;
      },
      set cert(c: VerifiedCertificate) {
        cert = c;
      },
      channel,
      membership,
      messages,
      id: toHex(identity.nodeId),
      tags: () => membership.peers.list().map((p) => p.cert.tag).sort(),
    };
  };
  return { realmKey, bus, node, certify };
}

async function until(what: string, check: () => boolean, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

Deno.test("membership: joining tells nobody; a tag lookup reaches only its owner, and both know each other after", async () => {
  const r = await realm();
  const [a, b, c] = [await r.node(1), await r.node(2), await r.node(3)];
  await new Promise((resolve) => setTimeout(resolve, 10));
  assertEquals([a.channel.received.messages, b.channel.received.messages, c.channel.received.messages], [
    0,
    0,
    0,
  ]);
  const owners = await a.membership.lookup("n2");
  assertEquals(owners.map((o) => [o.tag, o.ipv4[3]]), [["n2", 2]]);
  assertEquals(a.tags(), ["n2"]);
  assertEquals(b.tags(), ["n1"], "the lookup carried a's certificate");
  assertEquals(c.channel.received.messages, 0, "c heard nothing");
  assertEquals((await a.membership.lookup("n1")).map((o) => o.ipv4[3]), [1], "itself, without asking");
});

Deno.test("membership: an address lookup finds its overlay owner, or the portal whose subnet covers it", async () => {
  const r = await realm();
  // The portals join first: a, joining later, did not hear their announcements (to everyone, at their join).
  const portal = await r.node(3, { subnets: ["192.168.64.0/20"] });
  const other = await r.node(4, { subnets: ["192.168.80.0/24"] });
  const a = await r.node(1);
  const b = await r.node(2);
  const heardByOther = other.channel.received.messages; // its own announcement, echoed
  await a.membership.resolve(b.cert.ipv4);
  assertEquals(a.tags(), ["n2"]);
  await a.membership.resolve(Uint8Array.of(192, 168, 70, 9));
  assertEquals(a.tags(), ["n2", "n3"]);
  assertEquals(other.channel.received.messages, heardByOther, "the portal of another subnet heard nothing");
  assertEquals(portal.tags(), ["n1", "n4"], "n4 joined after it: it heard n4's announcement");
});

Deno.test("membership: announcements reach the nodes that know the sender; a leave and a renewal follow", async () => {
  const r = await realm();
  const [a, b, c] = [await r.node(1), await r.node(2), await r.node(3)];
  await a.membership.lookup("n2");
  const heardByC = c.channel.received.messages;
  // b renews: a (which knows it) takes the new certificate; c hears nothing.
  b.cert = await r.certify(b.identity, 2, {});
  await b.membership.announce();
  await until(
    "a to take b's new certificate",
    () => toHex(a.membership.peers.get(b.id)!.cert.ref) === toHex(b.cert.ref),
  );
  await b.membership.close();
  await until("b to leave a's table", () => a.tags().length === 0);
  assertEquals(c.channel.received.messages, heardByC);
});

Deno.test("membership: a stranger's message waits for one node lookup, then goes through", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  // b knows a (say, from a lookup long ago that a has forgotten); a does not know b.
  const message = await signControl(b.identity, {
    kind: ControlKind.RouteQuery,
    recipient: BROADCAST,
    certRef: b.cert.ref,
    body: { destination: new Uint8Array(16) },
  }, Date.now());
  const [sent, received] = [a.channel.sent.messages, b.channel.received.messages];
  b.channel.publish(subjects.node(a.id), message);
  await until("the message through", () => a.messages.length === 1);
  assertEquals(a.messages[0]!.kind, ControlKind.RouteQuery);
  assertEquals(a.tags(), ["n2"]);
  // Exactly one round trip: a's Lookup of b, b's Found.
  assertEquals([a.channel.sent.messages - sent, b.channel.received.messages - received], [1, 1]);
});

Deno.test("membership: forged answers are not used (wrong signer, foreign realm, forbidden owner)", async () => {
  const r = await realm();
  const a = await r.node(1);
  const b = await r.node(2);
  const x = await r.node(9, { tag: "n2", taints: ["other"] }); // also called n2, but a may not reach it
  const spy = r.bus.connect();
  const questions: Uint8Array[] = [];
  spy.subscribe(subjects.whoTag("n2"), (m) => questions.push(m));
  const lookup = a.membership.lookup("n2");
  await until("the question", () => questions.length === 1);
  const question = decodeControl(questions[0]!);
  const found = (from: Identity, cert: VerifiedCertificate) =>
    signControl(from, {
      kind: ControlKind.Found,
      recipient: a.identity.nodeId,
      certRef: cert.ref,
      body: { query: question.id, certificate: cert.bytes },
    }, Date.now());
  const mallory = await Identity.generate();
  const forged = (await found(mallory, b.cert)).slice();
  forged.set(b.identity.nodeId, 3); // sender field: b
  spy.publish(subjects.node(a.id), forged);
  const fake = await realm();
  const fakeB = await fake.node(2);
  spy.publish(subjects.node(a.id), await found(fakeB.identity, fakeB.cert));
  const owners = await lookup; // b's genuine answer comes too; x's is refused
  assertEquals(owners.map((o) => o.ipv4[3]), [2]);
  await until(
    "the forged answers checked",
    () => (a.membership.peers.dropped.get("bad-signature") ?? 0) === 2,
  );
  assertEquals(x.tags(), [], "x refused a (taints) and did not answer");
  assertEquals(x.membership.peers.dropped.get("forbidden"), 1);
  assertEquals([...a.membership.peers.dropped], [["bad-signature", 2]]);
});

Deno.test("membership: a key no one owns is looked up at most once a second; concurrent lookups share one", async () => {
  const r = await realm();
  const a = await r.node(1);
  const sent = a.channel.sent.messages; // its announcement at join
  const [one, two] = await Promise.all([a.membership.lookup("nobody"), a.membership.lookup("nobody")]);
  assertEquals([one, two], [[], []]);
  assertEquals(await a.membership.lookup("nobody"), []);
  assertEquals(a.channel.sent.messages - sent, 1);
});

Deno.test("membership: a revoked node no longer resolves, and its answers are refused", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  assertEquals((await a.membership.lookup("n2")).length, 1);
  r.bus.connect().publish(
    subjects.broadcast,
    await signRevocation(r.realmKey.key, { conflux: b.cert.conflux, before: b.cert.notBefore }, Date.now()),
  );
  await until("the revocation", () => a.tags().length === 0);
  await new Promise((resolve) => setTimeout(resolve, 1_000)); // the lookup interval
  assertEquals(await a.membership.lookup("n2"), []);
  assert((a.membership.peers.dropped.get("revoked") ?? 0) >= 1);
});
