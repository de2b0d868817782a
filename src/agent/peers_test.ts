import { assert, assertEquals, assertThrows } from "../../tests/assert.ts";
import { nodeCertificateFields } from "../../tests/certificates.ts";
import { issueCertificate, type VerifiedCertificate, verifyCertificate } from "../crypto/certificate.ts";
import { signControl, signRevocation } from "../crypto/control_signing.ts";
import { bytesEqual, domainSeparated, Identity, toHex } from "../crypto/identity.ts";
import { pq, type PqBackend } from "../crypto/pq.ts";
import { CONTROL_SIGNATURE_CONTEXT, MAX_CERTIFICATE_TTL_MS } from "../spec.ts";
import { PEER_IDLE_MS } from "../tuning.ts";
import {
  BROADCAST,
  ControlKind,
  encodeControlUnsigned,
  GUARDIAN_SENDER,
  LookupKind,
  NO_CERT_REF,
  withSignature,
} from "../wire/control.ts";
import { type Peer, PeerTable, type PeerTableOptions } from "./peers.ts";
import { confluxIdBytes, Revocations } from "./revocations.ts";

const REALM = new Uint8Array(16).fill(7);
const HOUR = 3_600_000;

/** A realm on a fake clock: its key, and nodes with genuine certificates. */
async function realm() {
  const clock = { now: 1_800_000_000_000 };
  const realmKey = await Identity.generate();
  /** A certificate for `identity` as conflux `n`, issued at `notBefore`. */
  const certify = async (identity: Identity, n: number, notBefore = clock.now - 1_000, taints = ["lab"]) =>
    await verifyCertificate(
      await issueCertificate(
        realmKey.key,
        nodeCertificateFields(n, {
          realm: REALM,
          taints,
          nodeKey: identity.publicKey,
          notBefore,
          notAfter: notBefore + HOUR,
        }),
      ),
      { realm: REALM, realmKey: realmKey.publicKey, now: clock.now },
    );
  const node = async (n: number) => {
    const identity = await Identity.generate();
    return { identity, n, cert: await certify(identity, n), id: toHex(identity.nodeId) };
  };
  /** A's peer table, with every event it reports. */
  const table = (self: VerifiedCertificate, backend?: PqBackend, more: Partial<PeerTableOptions> = {}) => {
    const events: [string, string][] = [];
    const t = new PeerTable({
      self: () => self,
      realm: REALM,
      realmKey: realmKey.publicKey,
      clock: () => clock.now,
      backend,
      ...more,
      onChange: (event: string, peer: Peer) => events.push([event, peer.cert.tag]),
    });
    return Object.assign(t, { events });
  };
  const revoke = (n: number, before: number, at = clock.now) =>
    signRevocation(realmKey.key, { conflux: new Uint8Array(16).fill(n), before }, at);
  return { clock, realmKey, certify, node, table, revoke };
}

type Node = Awaited<ReturnType<Awaited<ReturnType<typeof realm>>["node"]>>;

/** Each kind that carries its sender's certificate, from `from` with `cert`. */
function carrying(from: Node, cert: VerifiedCertificate, now: number): Promise<Uint8Array>[] {
  const base = { certRef: cert.ref };
  return [
    signControl(from.identity, {
      ...base,
      kind: ControlKind.Announce,
      recipient: BROADCAST,
      body: { certificate: cert.bytes, leaving: 0 },
    }, now),
    signControl(from.identity, {
      ...base,
      kind: ControlKind.TaintUpdate,
      recipient: BROADCAST,
      body: { certificate: cert.bytes },
    }, now),
    signControl(from.identity, {
      ...base,
      kind: ControlKind.Lookup,
      recipient: BROADCAST,
      body: { certificate: cert.bytes, what: LookupKind.Tag, key: new TextEncoder().encode("n1") },
    }, now),
    signControl(from.identity, {
      ...base,
      kind: ControlKind.Found,
      recipient: BROADCAST,
      body: { query: new Uint8Array(16), certificate: cert.bytes },
    }, now),
  ];
}

const announce = (from: Node, cert: VerifiedCertificate, now: number) => carrying(from, cert, now)[0]!;

Deno.test("peer table: a realm-signed Revoke drops the peer before receive returns, with a 'left' event", async () => {
  const r = await realm();
  const [a, b, c] = [await r.node(1), await r.node(2), await r.node(3)];
  const t = r.table(a.cert);
  await t.receive(await announce(b, b.cert, r.clock.now));
  await t.receive(await announce(c, c.cert, r.clock.now));
  assertEquals(t.list().map((p) => p.cert.tag), ["n2", "n3"]);
  const m = await t.receive(await r.revoke(2, b.cert.notBefore));
  assertEquals(m?.kind, ControlKind.Revoke, "the agent sees it too (to check its own certificate)");
  assertEquals(t.list().map((p) => p.cert.tag), ["n3"]);
  assertEquals(t.events, [["joined", "n2"], ["joined", "n3"], ["left", "n2"]]);
  assertEquals(t.revocations, 1);
  assert(t.voids(b.cert));
  assert(!t.voids(c.cert));
});

Deno.test("peer table: a revoked certificate is refused afterwards on every kind that carries one", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  const t = r.table(a.cert);
  await t.receive(await announce(b, b.cert, r.clock.now));
  await t.receive(await r.revoke(2, b.cert.notBefore));
  for (const message of carrying(b, b.cert, r.clock.now)) {
    assertEquals(await t.receive(await message), undefined);
  }
  assertEquals(t.dropped.get("revoked"), 4);
  assertEquals(t.list(), []);
  // Messages naming the certificate by reference find no key: the cache forgot it (not merely "not a peer").
  const query = await signControl(b.identity, {
    kind: ControlKind.RouteQuery,
    recipient: BROADCAST,
    certRef: b.cert.ref,
    body: { destination: new Uint8Array(16).fill(9) },
  }, r.clock.now);
  assertEquals(await t.receive(query), undefined);
  assertEquals(t.dropped.get("unknown-sender"), 1);
  assertEquals(t.dropped.get("forbidden"), undefined);
});

/**
 * The runtime's backend, except that checks of signatures by `key` (a node's messages, not the realm's
 * certificates) are counted and wait until `release()`; `reached` resolves at the first one.
 */
async function gated(key: Uint8Array) {
  const real = await pq();
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  let reach!: () => void;
  const reached = new Promise<void>((resolve) => reach = resolve);
  const stats = { checks: 0 };
  const backend: PqBackend = {
    ...real,
    async verify(publicKey, message, signature) {
      if (bytesEqual(publicKey, key)) {
        stats.checks++;
        reach();
        await gate;
      }
      return await real.verify(publicKey, message, signature);
    },
  };
  return { backend, release, reached, stats };
}

Deno.test("peer table: a revocation that lands while a message is being checked still holds", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  // While b's certificate is checked (before the message's signature).
  const early = r.table(a.cert);
  const first = early.receive(await announce(b, b.cert, r.clock.now));
  early.revoke(b.cert.conflux, b.cert.notBefore); // as a login answer's list would
  assertEquals(await first, undefined);
  assertEquals([early.list(), early.dropped.get("revoked")], [[], 1]);
  // While the message's own signature is checked: its certificate passed, and is void by the time it would count.
  const g = await gated(b.identity.publicKey);
  const late = r.table(a.cert, g.backend);
  const second = late.receive(await announce(b, b.cert, r.clock.now));
  await g.reached;
  late.revoke(b.cert.conflux, b.cert.notBefore);
  g.release();
  assertEquals(await second, undefined);
  assertEquals([late.list(), late.dropped.get("revoked"), late.events], [[], 1, []]);
});

Deno.test("peer table: a revoked certificate costs no check of the message's signature", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  const g = await gated(b.identity.publicKey);
  g.release();
  const t = r.table(a.cert, g.backend);
  t.revoke(b.cert.conflux, b.cert.notBefore);
  for (const message of carrying(b, b.cert, r.clock.now)) await t.receive(await message);
  assertEquals([t.dropped.get("revoked"), g.stats.checks], [4, 0]);
});

Deno.test("peer table: a certificate issued after the revocation is accepted (same key or a new one)", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  const t = r.table(a.cert);
  await t.receive(await announce(b, b.cert, r.clock.now));
  const before = r.clock.now;
  await t.receive(await r.revoke(2, before));
  // Issued at `before` exactly: still void (notBefore <= before).
  assertEquals(
    await t.receive(await announce(b, await r.certify(b.identity, 2, before), r.clock.now)),
    undefined,
  );
  assertEquals(t.dropped.get("revoked"), 1);
  r.clock.now += 10;
  // The same node logged in again after, say, a taint change: a fresh certificate for the same key.
  const renewed = await r.certify(b.identity, 2, before + 1);
  assertEquals((await t.receive(await announce(b, renewed, r.clock.now)))?.kind, ControlKind.Announce);
  assertEquals(t.list().map((p) => p.cert.notBefore), [before + 1]);
  // A revocation of an earlier time than the certificate in use changes nothing.
  await t.receive(await r.revoke(2, before - 5));
  assertEquals(t.list().length, 1);
  // The node restarted (a new key), then logged in: its new self replaces the old.
  const restarted = { ...b, identity: await Identity.generate() };
  const fresh = await r.certify(restarted.identity, 2, before + 2);
  assertEquals((await t.receive(await announce(restarted, fresh, r.clock.now)))?.kind, ControlKind.Announce);
  assertEquals(t.list().map((p) => p.cert.nodeId), [restarted.identity.nodeId]);
});

Deno.test("peer table: a Revoke not from the Guardian's key is refused, counted, and drops no one", async () => {
  const r = await realm();
  const [a, b, c] = [await r.node(1), await r.node(2), await r.node(3)];
  const t = r.table(a.cert);
  await t.receive(await announce(b, b.cert, r.clock.now));
  await t.receive(await announce(c, c.cert, r.clock.now));
  // b, a member of the realm, tries to have c dropped: in its own name, and as the all-zero sender.
  const body = { conflux: c.cert.conflux, before: r.clock.now };
  const forged = async (sender: Uint8Array, certRef: Uint8Array) => {
    const unsigned = encodeControlUnsigned({
      kind: ControlKind.Revoke,
      sender,
      recipient: BROADCAST,
      certRef,
      timestamp: r.clock.now,
      id: crypto.getRandomValues(new Uint8Array(16)),
      body,
    });
    const context = new TextEncoder().encode(CONTROL_SIGNATURE_CONTEXT);
    return withSignature(unsigned, await b.identity.sign(domainSeparated(context, unsigned)));
  };
  assertEquals(await t.receive(await forged(b.identity.nodeId, NO_CERT_REF)), undefined);
  assertEquals(await t.receive(await forged(GUARDIAN_SENDER, NO_CERT_REF)), undefined);
  // A genuine Revoke, replayed.
  const genuine = await r.revoke(9, r.clock.now);
  await t.receive(genuine);
  assertEquals(await t.receive(genuine), undefined);
  assertEquals(Object.fromEntries(t.dropped), { "bad-sender": 1, "bad-signature": 1, replayed: 1 });
  assertEquals(t.list().map((p) => p.cert.tag), ["n2", "n3"]);
  assertEquals(t.revocations, 1);
});

Deno.test("peer table: revocations are kept until no certificate they void can be valid, then forgotten", async () => {
  const r = await realm();
  const a = await r.node(1);
  const t = r.table(a.cert);
  const before = r.clock.now;
  t.revoke(new Uint8Array(16).fill(2), before);
  t.revoke(new Uint8Array(16).fill(3), before + HOUR);
  r.clock.now = before + MAX_CERTIFICATE_TTL_MS - 1;
  t.expire();
  assertEquals(t.revocations, 2);
  r.clock.now = before + MAX_CERTIFICATE_TTL_MS;
  t.expire();
  assertEquals(t.revocations, 1);
  // A revocation already that old is not even recorded.
  t.revoke(new Uint8Array(16).fill(4), r.clock.now - MAX_CERTIFICATE_TTL_MS);
  assertEquals(t.revocations, 1);
});

Deno.test("revocations: the latest time wins, the list stays within its capacity, and ids parse as UUIDs", () => {
  const list = new Revocations(3);
  const id = (n: number) => new Uint8Array(16).fill(n);
  const cert = (n: number, notBefore: number) => ({ conflux: id(n), notBefore });
  assert(list.add(id(1), 100, 0));
  assert(!list.add(id(1), 50, 0), "an earlier time adds nothing");
  assert(list.voids(cert(1, 100)) && !list.voids(cert(1, 101)));
  assert(list.add(id(1), 200, 0));
  assert(list.voids(cert(1, 150)));
  list.add(id(2), 300, 0);
  list.add(id(3), 400, 0);
  list.add(id(4), 500, 0); // full: the one that would expire first (1, at 200) gives way
  assertEquals(list.size, 3);
  assert(!list.voids(cert(1, 150)) && list.voids(cert(4, 500)));
  assertEquals(
    toHex(confluxIdBytes("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")),
    "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
  );
  assertThrows(() => confluxIdBytes("not-a-uuid"), RangeError, "not a conflux id");
  assertThrows(() => list.add(new Uint8Array(15), 1, 0), RangeError, "16 bytes");
});

Deno.test("peer table: a message from a stranger is held, its sender asked once, and released when it is known", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  const asked: string[] = [];
  const released: Uint8Array[] = [];
  const t = r.table(a.cert, undefined, {
    ask: (sender) => asked.push(toHex(sender)),
    release: (bytes) => released.push(bytes),
  });
  const query = (n: number) =>
    signControl(b.identity, {
      kind: ControlKind.RouteQuery,
      recipient: BROADCAST,
      certRef: b.cert.ref,
      body: { destination: new Uint8Array(16).fill(n) },
    }, r.clock.now);
  assertEquals(await t.receive(await query(1)), undefined);
  assertEquals(await t.receive(await query(2)), undefined);
  assertEquals(asked, [b.id], "asked once for two messages");
  assertEquals(t.list(), []);
  // b's answer (it carries its certificate) makes it known and hands both messages back, to be checked again.
  await t.receive(await carrying(b, b.cert, r.clock.now)[3]!);
  await Promise.resolve();
  assertEquals(released.length, 2);
  for (const bytes of released) assertEquals((await t.receive(bytes))?.kind, ControlKind.RouteQuery);
  // A stranger that never answers: its messages are dropped after a while, and counted.
  const c = await r.node(3);
  await t.receive(
    await signControl(c.identity, {
      kind: ControlKind.RouteQuery,
      recipient: BROADCAST,
      certRef: c.cert.ref,
      body: { destination: new Uint8Array(16) },
    }, r.clock.now),
  );
  r.clock.now += 5_001;
  t.expire();
  assertEquals(t.dropped.get("unknown-sender"), 1);
});

Deno.test("peer table: a silent peer stays; an idle one leaves after PEER_IDLE_MS unless traffic holds it", async () => {
  const r = await realm();
  const [a, b, c] = [await r.node(1), await r.node(2), await r.node(3)];
  const busy = new Set<string>();
  const t = r.table(a.cert, undefined, { busy: (id) => busy.has(id) });
  await t.receive(await announce(b, b.cert, r.clock.now));
  await t.receive(await announce(c, c.cert, r.clock.now));
  busy.add(c.id);
  r.clock.now += 60_000; // nothing heard for a minute: nobody announces on a timer any more
  t.expire();
  assertEquals(t.list().length, 2);
  r.clock.now += PEER_IDLE_MS;
  t.expire();
  assertEquals(t.list().map((p) => p.cert.tag), ["n3"], "c carries traffic");
  assertEquals(t.events.at(-1), ["left", "n2"]);
});

/** A backend that counts every signature check (certificates and messages). */
async function counting() {
  const real = await pq();
  const stats = { checks: 0 };
  const backend: PqBackend = {
    ...real,
    verify(publicKey, message, signature) {
      stats.checks++;
      return real.verify(publicKey, message, signature);
    },
  };
  return { backend, stats };
}

Deno.test("peer table: a replay and a copy of a known certificate cost no signature check", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  const c = await counting();
  const t = r.table(a.cert, c.backend);
  const first = await announce(b, b.cert, r.clock.now);
  await t.receive(first);
  assertEquals(c.stats.checks, 2, "the certificate and the message");
  for (let i = 0; i < 5; i++) await t.receive(first);
  assertEquals([c.stats.checks, t.dropped.get("replayed")], [2, 5], "replays: no check at all");
  await t.receive(await announce(b, b.cert, r.clock.now)); // a new message with the same certificate
  assertEquals(c.stats.checks, 3, "only the new message's signature");
});

Deno.test("peer table: a certificate in a message whose signature fails never vouches for its key", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  const mallory = await Identity.generate();
  const asked: string[] = [];
  const t = r.table(a.cert, undefined, { ask: (sender) => asked.push(toHex(sender)) });
  // b's genuine certificate, in a message mallory signed as b.
  const forged = (await signControl(mallory, {
    kind: ControlKind.Announce,
    recipient: BROADCAST,
    certRef: b.cert.ref,
    body: { certificate: b.cert.bytes, leaving: 0 },
  }, r.clock.now)).slice();
  forged.set(b.identity.nodeId, 3);
  await t.receive(forged);
  assertEquals(t.dropped.get("bad-signature"), 1);
  // A genuine message of b naming that certificate by reference: b is still unknown here, so it waits for b.
  const query = await signControl(b.identity, {
    kind: ControlKind.RouteQuery,
    recipient: BROADCAST,
    certRef: b.cert.ref,
    body: { destination: new Uint8Array(16) },
  }, r.clock.now);
  assertEquals(await t.receive(query), undefined);
  assertEquals(asked, [b.id]);
});

Deno.test("peer table: a sender's messages beyond its budget are dropped unchecked; forgeries do not spend it", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  const mallory = await Identity.generate();
  const t = r.table(a.cert);
  await t.receive(await announce(b, b.cert, r.clock.now));
  const query = (from: Identity) =>
    signControl(from, {
      kind: ControlKind.RouteQuery,
      recipient: BROADCAST,
      certRef: b.cert.ref,
      body: { destination: new Uint8Array(16) },
    }, r.clock.now);
  // Mallory floods in b's name: each fails its signature check and leaves b's budget whole.
  for (let i = 0; i < 30; i++) {
    const forged = (await query(mallory)).slice();
    forged.set(b.identity.nodeId, 3);
    await t.receive(forged);
  }
  assertEquals([t.dropped.get("bad-signature"), t.dropped.get("rate-limited")], [30, undefined]);
  // b's own burst: 20 pass (the burst of its kind), the rest are dropped before any check.
  let passed = 0;
  for (let i = 0; i < 30; i++) if (await t.receive(await query(b.identity))) passed++;
  assertEquals([passed, t.dropped.get("rate-limited")], [20, 10]);
  r.clock.now += 1_000; // ten more a second
  for (let i = 0; i < 12; i++) if (await t.receive(await query(b.identity))) passed++;
  assertEquals(passed, 30);
});

Deno.test("peer table: an older session of a node never replaces a newer one (no flapping)", async () => {
  const r = await realm();
  const [a, b] = [await r.node(1), await r.node(2)];
  const again = await Identity.generate();
  const newer = await r.certify(again, 2, b.cert.notBefore + 1_000);
  const t = r.table(a.cert);
  await t.receive(await announce(b, b.cert, r.clock.now));
  await t.receive(await announce({ ...b, identity: again }, newer, r.clock.now));
  for (let i = 0; i < 5; i++) {
    await t.receive(await announce(b, b.cert, r.clock.now));
    await t.receive(await announce({ ...b, identity: again }, newer, r.clock.now));
  }
  assertEquals(t.events, [["joined", "n2"], ["left", "n2"], ["joined", "n2"]]);
  assertEquals(t.dropped.get("superseded"), 5);
  assertEquals(t.list().map((p) => toHex(p.cert.nodeId)), [toHex(again.nodeId)]);
});

Deno.test("peer table: a peer in use whose certificate is about to end is asked for its current one", async () => {
  const r = await realm();
  const [a, b, c] = [await r.node(1), await r.node(2), await r.node(3)];
  const asked: string[] = [];
  const t = r.table(a.cert, undefined, {
    busy: (id) => id === b.id,
    ask: (sender) => asked.push(toHex(sender)),
  });
  await t.receive(await announce(b, b.cert, r.clock.now));
  await t.receive(await announce(c, c.cert, r.clock.now));
  t.expire();
  assertEquals(asked, []);
  r.clock.now = b.cert.notAfter - 30_000;
  t.expire();
  assertEquals(asked, [b.id], "b (in use) is asked; c (idle) is not");
});
