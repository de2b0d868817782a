/**
 * One Agent, driven for real over the in-memory Master (MemoryBus) with an in-memory TUN, logging in to a small
 * stand-in Guardian on loopback that signs with a realm key the test holds. The other nodes of the realm are the
 * test itself: identities with certificates from that key, whose signed messages it publishes on the bus.
 */

import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import { nodeCertificateFields } from "../../tests/certificates.ts";
import { issueCertificate, type VerifiedCertificate, verifyCertificate } from "../crypto/certificate.ts";
import { signControl, signRevocation } from "../crypto/control_signing.ts";
import { fromHex, Identity, toHex } from "../crypto/identity.ts";
import { MemoryBus } from "../control/memory.ts";
import { realmSubjects } from "../control/subjects.ts";
import { type LoginResponse } from "../guardian/guardian.ts";
import { fromBase64 } from "../guardian/rules.ts";
import { MemoryTun } from "../tun/memory_tun.ts";
import { BROADCAST, ControlKind, decodeControl } from "../wire/control.ts";
import { udpPacket } from "../../tests/packets.ts";
import { Agent } from "./agent.ts";

const REALM_ID = "5e".repeat(16);
const HOUR = 3_600_000;
const subjects = realmSubjects(REALM_ID);
const base64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));
const uuid = (h: string) =>
  `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;

/** The realm: its key, a stand-in Guardian for the agent's conflux (n = 1), and certificates for other nodes. */
async function realm() {
  const realmKey = await Identity.generate();
  const certify = async (identity: Identity | Uint8Array, n: number, notBefore = Date.now() - 1_000) => {
    const nodeKey = identity instanceof Identity ? identity.publicKey : identity;
    const bytes = await issueCertificate(
      realmKey.key,
      nodeCertificateFields(n, { realm: fromHex(REALM_ID), nodeKey, notBefore, notAfter: notBefore + HOUR }),
    );
    return await verifyCertificate(bytes, {
      realm: fromHex(REALM_ID),
      realmKey: realmKey.publicKey,
      now: Date.now(),
    });
  };
  const guardian = {
    logins: 0,
    /** Set to answer logins with this status (403: revoked, 401: removed). */
    refuse: undefined as number | undefined,
    revocations: [] as LoginResponse["revocations"],
    /** Set to answer logins with another realm key than the one that signs. */
    publicKey: undefined as string | undefined,
    /** The Guardian dates a new certificate after the node's latest revocation. */
    notBefore: () => Math.max(Date.now(), ...guardian.revocations.map((r) => r.before + 1)),
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    guardian.logins++;
    const body = await req.json();
    if (guardian.refuse) {
      return Response.json({ error: "this node was revoked by the administrator" }, {
        status: guardian.refuse,
      });
    }
    const cert = await certify(fromBase64(body.public_key)!, 1, guardian.notBefore());
    const answer: LoginResponse = {
      conflux_id: uuid("01".repeat(16)),
      certificate: base64(cert.bytes),
      realm: { id: REALM_ID, name: "home", public_key: guardian.publicKey ?? base64(realmKey.publicKey) },
      nats: { jwt: "jwt", seed: "seed", inboxPrefix: "_INBOX", urls: ["nats://127.0.0.1:1"] },
      ice_servers: [],
      expires_at: cert.notAfter,
      revocations: guardian.revocations,
      portals: [],
    };
    return Response.json(answer);
  });
  const bus = new MemoryBus();
  /** The rest of the realm: publishes as other nodes, and hears what the agent announces and asks. */
  const outside = bus.connect();
  const heard: Uint8Array[] = [];
  outside.subscribe(subjects.peer("01".repeat(16)), (m) => heard.push(m));
  const asked: Uint8Array[] = [];
  outside.subscribe(`${subjects.prefix}.via.>`, (m) => asked.push(m));
  const logs: string[] = [];
  let stopped: Error | undefined;
  const tun = new MemoryTun();
  let agentId = "";
  const start = async (more: Partial<Parameters<typeof Agent.start>[0]> = {}) => {
    const agent = await Agent.start({
      guardian: `http://127.0.0.1:${server.addr.port}`,
      token: "vcfx.0101.secret",
      connect: () => Promise.resolve(bus.connect()),
      openTun: () => Promise.resolve(tun),
      log: (line) => logs.push(line),
      onStop: (reason) => stopped = reason,
      ...more,
    });
    agentId = toHex(agent.certificate.nodeId);
    return agent;
  };
  const node = async (n: number) => {
    const identity = await Identity.generate();
    return { identity, n, cert: await certify(identity, n) };
  };
  type Node = Awaited<ReturnType<typeof node>>;
  /** A node makes itself known to the agent (as it does when it looks the agent up). */
  const announce = async (from: Node, cert: VerifiedCertificate = from.cert) =>
    outside.publish(
      subjects.node(agentId),
      await signControl(from.identity, {
        kind: ControlKind.Announce,
        recipient: BROADCAST,
        certRef: cert.ref,
        body: { certificate: cert.bytes, leaving: 0 },
      }, Date.now()),
    );
  const revoke = async (n: number, before: number) =>
    outside.publish(
      subjects.broadcast,
      await signRevocation(realmKey.key, { conflux: new Uint8Array(16).fill(n), before }, Date.now()),
    );
  return {
    realmKey,
    certify,
    guardian,
    start,
    node,
    announce,
    revoke,
    outside,
    heard,
    asked,
    tun,
    logs,
    stopped: () => stopped,
    async [Symbol.asyncDispose]() {
      await outside.close();
      await server.shutdown();
    },
  };
}

/** Polls `check` every few ms until it holds, or fails after `ms` naming `what`. */
async function until(what: string, check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

Deno.test("agent: a Revoke drops the peer, its routes and the relay it was, at once; its certificate is refused after", async () => {
  await using r = await realm();
  await using agent = await r.start();
  const [relay, dest] = [await r.node(2), await r.node(3)];
  await r.announce(relay);
  await r.announce(dest);
  await until("both peers", () => agent.status().peers === 2);
  // Traffic to dest makes the agent ask the nodes tethered to it for a relay; the relay answers that it does.
  r.tun.host.send(
    udpPacket(agent.certificate.ipv4, dest.cert.ipv4, { sport: 1, dport: 2 }, new Uint8Array(8)),
  );
  await until(
    "the question for relays",
    () => r.asked.some((m) => decodeControl(m).kind === ControlKind.RouteQuery),
  );
  r.outside.publish(
    subjects.node(toHex(agent.certificate.nodeId)),
    await signControl(relay.identity, {
      kind: ControlKind.RouteAnswer,
      recipient: agent.certificate.nodeId,
      certRef: relay.cert.ref,
      body: { destination: dest.identity.nodeId, rttMs: 3 },
    }, Date.now()),
  );
  await until("the relay candidate", () => agent.status().relays === 1);
  assertEquals(agent.status().routes, 2);

  await r.revoke(2, relay.cert.notBefore);
  await until("the revocation", () => agent.status().revocations === 1);
  // Observed at the first moment the revocation is known: the peer, its route and its relay role are gone with it.
  const s = agent.status();
  assertEquals([s.peers, s.routes, s.relays], [1, 1, 0]);
  assertEquals(agent.peerStatus().map((p) => p.tag), ["n3"]);
  assert(r.logs.includes("peer left: n2 (10.128.0.2)"), r.logs.join("\n"));

  // Its old certificate, announced again, is refused; a certificate issued after the revocation is accepted.
  await r.announce(relay);
  await until("the refusal", () => agent.status().dropped.revoked === 1);
  assertEquals(agent.status().peers, 1);
  const renewed = await r.certify(relay.identity, 2, relay.cert.notBefore + 1);
  await r.announce(relay, renewed);
  await until("the renewed peer", () => agent.status().peers === 2);

  // Revoking dest too ends what waited for it (the stream handshake, the tether being formed): the agent closes
  // at once, where it would otherwise wait out the handshake (10 s).
  await r.revoke(3, dest.cert.notBefore);
  await until("dest to go", () => agent.status().peers === 1);
  const closing = Date.now();
  await agent.close();
  assert(Date.now() - closing < 5_000, `closed in ${Date.now() - closing} ms`);
});

Deno.test("agent: the login answer's revocations apply before any peer is accepted", async () => {
  await using r = await realm();
  const [revoked, other] = [await r.node(2), await r.node(3)];
  r.guardian.revocations = [{
    conflux_id: uuid(toHex(revoked.cert.conflux)),
    before: revoked.cert.notBefore,
  }];
  await using agent = await r.start();
  assertEquals(agent.status().revocations, 1);
  await r.announce(revoked);
  await r.announce(other);
  await until("the other peer", () => agent.status().peers === 1);
  await until("the refusal", () => agent.status().dropped.revoked === 1);
  assertEquals(agent.peerStatus().map((p) => p.tag), ["n3"]);
  assert(!r.logs.some((l) => l.startsWith("peer joined: n2")), r.logs.join("\n"));
});

Deno.test("agent: a Revoke of its own certificate makes it log in again at once and announce the new one", async () => {
  await using r = await realm();
  await using agent = await r.start();
  const old = agent.certificate;
  await until("its first announcement", () => r.heard.length > 0);
  r.guardian.revocations = [{ conflux_id: uuid("01".repeat(16)), before: old.notBefore }];
  await r.revoke(1, old.notBefore);
  await until("a new certificate", () => agent.certificate.notBefore > old.notBefore);
  assertEquals(r.guardian.logins, 2);
  const fresh = agent.certificate;
  await until(
    "the new certificate announced",
    () =>
      r.heard.some((m) => {
        const d = decodeControl(m);
        return d.kind === ControlKind.Announce && toHex(d.body.certificate) === toHex(fresh.bytes);
      }),
  );
  assertEquals(r.stopped(), undefined);
  // A revocation of an older time (sent again, say) voids nothing it holds now: no further login.
  await r.revoke(1, old.notBefore - 10);
  await r.revoke(9, Date.now()); // a marker: once it is known, the one before it has been handled too
  await until("both revocations", () => agent.status().revocations === 2);
  await new Promise((resolve) => setTimeout(resolve, 20));
  assertEquals(r.guardian.logins, 2);
});

for (const status of [403, 401]) {
  Deno.test(`agent: refused (${status}) after its own revocation, it says it was revoked or removed and stops`, async () => {
    await using r = await realm();
    const agent = await r.start();
    r.guardian.refuse = status;
    await r.revoke(1, agent.certificate.notBefore);
    await until("the agent to stop", () => r.stopped() !== undefined);
    const reason = r.stopped()!;
    assert(reason.message.includes("the Guardian revoked or removed this node"), reason.message);
    assert(reason.message.includes(`(${status})`), reason.message);
    assert(r.logs.includes(reason.message), r.logs.join("\n"));
    assertEquals(agent.status().connected.master, false, "it left the Master");
    assertEquals(r.guardian.logins, 2, "a refusal is final: no retry");
    await agent.close(); // idempotent after stopping on its own
  });
}

Deno.test("agent: a login answer with another realm key than the one pinned at registration is refused for good", async () => {
  await using r = await realm();
  const pinned = base64(r.realmKey.publicKey);
  // The pinned key: it starts. Another key: it refuses at once, without retrying.
  await using ok = await r.start({ realmKey: pinned });
  assertEquals(ok.certificate.tag, "n1");
  const impostor = base64((await Identity.generate()).publicKey);
  const logins = r.guardian.logins;
  let refused: Error | undefined;
  try {
    await (await r.start({ realmKey: impostor, openTun: undefined })).close(); // (only if the check failed)
  } catch (error) {
    refused = error as Error;
  }
  assert(refused?.message.includes("another key for realm home"), String(refused));
  assertEquals(r.guardian.logins, logins + 1, "no retry");
  // A running node whose next login answers with another key stops, and says why.
  r.guardian.publicKey = impostor;
  await assertRejects(() => ok.renew(), Error, "another key for realm home");
  await until("the node to stop", () => r.stopped() !== undefined);
  assert(r.stopped()!.message.includes("another key"), r.stopped()!.message);
  assertEquals(ok.status().connected.master, false, "it left the Master");
});

Deno.test("agent: a packet to a multicast or link-local address looks nothing up; one to an unknown node does", async () => {
  await using r = await realm();
  const lookups: string[] = [];
  r.outside.subscribe(`${subjects.prefix}.who.>`, (m) => lookups.push(ControlKind[decodeControl(m).kind]));
  await using agent = await r.start();
  for (const to of [[224, 0, 0, 251], [239, 255, 255, 250], [169, 254, 1, 1], [255, 255, 255, 255]]) {
    r.tun.host.send(
      udpPacket(agent.certificate.ipv4, Uint8Array.from(to), { sport: 5353, dport: 5353 }, new Uint8Array(8)),
    );
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  assertEquals(lookups, []);
  r.tun.host.send(
    udpPacket(
      agent.certificate.ipv4,
      Uint8Array.of(10, 128, 0, 9),
      { sport: 1, dport: 2 },
      new Uint8Array(8),
    ),
  );
  await until("the lookup", () => lookups.length === 1);
  assertEquals(lookups, ["Lookup"]);
});
