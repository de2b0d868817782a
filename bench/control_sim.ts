/**
 * The control plane at 1000 and 10000 nodes, in one process: every node is the real Membership (peer table,
 * lookups, announcements, certificate and signature checks with the real post-quantum code) on the in-memory
 * Master, which delivers only where there is interest as NATS does. Certificates come from a realm key held
 * here, as the Guardian would issue them.
 *
 * Each node first looks up K random peers by address (as its first packets to them would), so that it has
 * peers to follow. Then, for a window of real time, the realm lives as a fleet does: every node renews its
 * certificate once per renewal period (announced to the nodes that know it), and 5% of the nodes restart per
 * minute (a leave, a new key, a join; the nodes that talked to one look it up again, as their next packet
 * would). Figures per node per second over the window: messages and bytes received and sent, and signature
 * checks (certificates and messages).
 *
 * `VEILNET_SIM_SIZES=1000,10000` picks the sizes; `VEILNET_SIM_WINDOW=30` the window in seconds.
 * @module
 */

import { issueCertificate, type VerifiedCertificate, verifyCertificate } from "../src/crypto/certificate.ts";
import { Identity, toHex } from "../src/crypto/identity.ts";
import { pq, type PqBackend } from "../src/crypto/pq.ts";
import { MemoryBus, type MemoryChannel } from "../src/control/memory.ts";
import { realmSubjects } from "../src/control/subjects.ts";
import { Membership } from "../src/agent/membership.ts";
import { RENEW_AT_FRACTION } from "../src/tuning.ts";
import type { Figure } from "./crypto.ts";
import { nodeCertificateFields } from "../tests/certificates.ts";

const DEFAULT_SIZES = [1000, 10000];
const DEFAULT_WINDOW_SECONDS = 30;
/** Peers each node talks to. */
const K = 3;
/** Certificate lifetime: the Guardian's default. */
const CERT_TTL_MS = 3_600_000;
/** Restarts per node per second: 5% of the realm a minute. */
const CHURN_PER_NODE_S = 0.05 / 60;
const REALM = new Uint8Array(16).fill(0x5e);

/** A post-quantum backend that counts signature checks. */
function counting(inner: PqBackend): PqBackend & { verifications: number } {
  const counted = {
    name: inner.name,
    verifications: 0,
    signingKey: (seed?: Uint8Array) => inner.signingKey(seed),
    verify: (key: Uint8Array, message: Uint8Array, signature: Uint8Array) => {
      counted.verifications++;
      return inner.verify(key, message, signature);
    },
    kemKeyPair: (seed?: Uint8Array) => inner.kemKeyPair(seed),
    encapsulate: (key: Uint8Array) => inner.encapsulate(key),
  };
  return counted;
}

interface SimNode {
  index: number;
  identity: Identity;
  cert: VerifiedCertificate;
  channel: MemoryChannel;
  membership: Membership;
}

/** Node `i`'s conflux id and overlay addresses. */
function place(i: number) {
  const conflux = new Uint8Array(16);
  new DataView(conflux.buffer).setUint32(12, i + 1);
  const host = i + 2;
  return {
    conflux,
    ipv4: Uint8Array.of(10, 128 + (host >> 16), (host >> 8) & 255, host & 255),
    ipv6: Uint8Array.of(
      0xfd,
      ...new Uint8Array(11),
      (host >> 24) & 255,
      (host >> 16) & 255,
      (host >> 8) & 255,
      host & 255,
    ),
  };
}

async function simulate(n: number, windowSeconds: number): Promise<Figure[]> {
  const backend = counting(await pq());
  const realmKey = await Identity.generate();
  const bus = new MemoryBus();
  const subjects = realmSubjects(toHex(REALM));
  const traffic = { sent: { messages: 0, bytes: 0 }, received: { messages: 0, bytes: 0 } };

  const certify = async (i: number, identity: Identity): Promise<VerifiedCertificate> => {
    const now = Date.now();
    const bytes = await issueCertificate(
      realmKey.key,
      nodeCertificateFields(i, {
        ...place(i),
        prefix4: 9,
        realm: REALM,
        nodeKey: identity.publicKey,
        notBefore: now,
        notAfter: now + CERT_TTL_MS,
      }),
    );
    return await verifyCertificate(bytes, { realm: REALM, realmKey: realmKey.publicKey, now });
  };
  /** Starts node `i` (again, after a restart: a new key, the same conflux and addresses). */
  const start = async (i: number): Promise<SimNode> => {
    const identity = await Identity.generate();
    const node = { index: i, identity, cert: await certify(i, identity), channel: bus.connect() } as SimNode;
    node.membership = new Membership({
      identity,
      self: () => node.cert,
      realm: REALM,
      realmKey: realmKey.publicKey,
      subjects,
      channel: () => node.channel,
      clock: Date.now,
      backend,
      log: () => {},
      onMessage: () => {},
    });
    await node.membership.join();
    return node;
  };
  const stop = async (node: SimNode) => {
    await node.membership.close();
    for (const way of ["sent", "received"] as const) {
      traffic[way].messages += node.channel[way].messages;
      traffic[way].bytes += node.channel[way].bytes;
    }
    await node.channel.close();
  };

  const setupStart = performance.now();
  const nodes: SimNode[] = [];
  for (let i = 0; i < n; i += 200) {
    nodes.push(...await Promise.all(Array.from({ length: Math.min(200, n - i) }, (_, j) => start(i + j))));
  }
  const setupSeconds = (performance.now() - setupStart) / 1000;

  // Each node looks up K random peers by address, 200 lookups at a time.
  const lookups: number[] = [];
  const pairs = nodes.flatMap((node) =>
    Array.from(
      { length: K },
      () => [node, nodes[(node.index + 1 + Math.floor(Math.random() * (n - 1))) % n]!],
    )
  );
  for (let i = 0; i < pairs.length; i += 200) {
    await Promise.all(
      pairs.slice(i, i + 200).map(async ([from, to]) => {
        const t = performance.now();
        await from!.membership.resolve(to!.cert.ipv4);
        if (from!.membership.peers.get(toHex(to!.identity.nodeId))) lookups.push(performance.now() - t);
      }),
    );
  }
  lookups.sort((a, b) => a - b);
  const known = nodes.reduce((sum, node) => sum + node.membership.peers.list().length, 0) / n;

  // The window: renewals and restarts at a fleet's rates, on a 100 ms tick.
  const counters = () => {
    const sum = { sent: { ...traffic.sent }, received: { ...traffic.received } };
    for (const node of nodes) {
      for (const way of ["sent", "received"] as const) {
        sum[way].messages += node.channel[way].messages;
        sum[way].bytes += node.channel[way].bytes;
      }
    }
    return { ...sum, verifications: backend.verifications };
  };
  const renewPerTick = n / (CERT_TTL_MS * RENEW_AT_FRACTION / 1000) / 10;
  const churnPerTick = n * CHURN_PER_NODE_S / 10;
  const pick = (rate: number) => Math.floor(rate) + (Math.random() < rate % 1 ? 1 : 0);
  let renewals = 0;
  let restarts = 0;
  let relookups = 0;
  const before = counters();
  const began = performance.now();
  const work: Promise<unknown>[] = [];
  while (performance.now() - began < windowSeconds * 1000) {
    for (let r = pick(renewPerTick); r > 0; r--) {
      const node = nodes[Math.floor(Math.random() * n)]!;
      renewals++;
      work.push(
        certify(node.index, node.identity).then((cert) => {
          node.cert = cert;
          return node.membership.announce();
        }),
      );
    }
    for (let r = pick(churnPerTick); r > 0; r--) {
      const i = Math.floor(Math.random() * n);
      const old = nodes[i]!;
      const id = toHex(old.identity.nodeId);
      const talkers = nodes.filter((other) => other.membership.peers.get(id));
      restarts++;
      work.push((async () => {
        await stop(old);
        const fresh = await start(i);
        nodes[i] = fresh;
        relookups += talkers.length;
        await Promise.all(talkers.map((t) => t.membership.resolve(fresh.cert.ipv4)));
      })());
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await Promise.all(work);
  const seconds = (performance.now() - began) / 1000;
  const after = counters();
  const perNode = (a: number, b: number) => (a - b) / n / seconds;
  const label = `control sim ${n} nodes:`;
  const pct = (q: number) => lookups[Math.min(lookups.length - 1, Math.floor(q * lookups.length))] ?? NaN;
  const figures: Figure[] = [
    {
      name: `${label} lookup`,
      value: pct(0.5),
      unit: "ms",
      note: `median; p95 ${pct(0.95).toFixed(1)} ms; ${lookups.length}/${pairs.length} answered, 200 at a ` +
        `time in one process; ${known.toFixed(1)} peers known per node; set up in ${
          setupSeconds.toFixed(0)
        } s`,
    },
    {
      name: `${label} received per node`,
      value: perNode(after.received.bytes, before.received.bytes),
      unit: "B/s",
      note: `${perNode(after.received.messages, before.received.messages).toFixed(4)} msg/s over ` +
        `${seconds.toFixed(0)} s: ${renewals} renewals, ${restarts} restarts, ${relookups} lookups again`,
    },
    {
      name: `${label} sent per node`,
      value: perNode(after.sent.bytes, before.sent.bytes),
      unit: "B/s",
      note:
        `${perNode(after.sent.messages, before.sent.messages).toFixed(4)} msg/s; payload only (NATS adds ` +
        "~100 bytes of framing a message)",
    },
    {
      name: `${label} signature checks per node`,
      value: perNode(after.verifications, before.verifications),
      unit: "/s",
      note: `certificates and messages; announcing to everyone every 5 s would cost ${
        ((n - 1) / 5 * 2).toFixed(0)
      }/s`,
    },
  ];
  await Promise.all(nodes.map(stop));
  return figures;
}

/** The sizes from `VEILNET_SIM_SIZES` (comma-separated), else 1000 and 10000. */
function sizesFromEnv(): number[] {
  const raw = Deno.env.get("VEILNET_SIM_SIZES");
  if (!raw) return DEFAULT_SIZES;
  const sizes = raw.split(",").map((s) => Number(s.trim()));
  if (sizes.some((s) => !Number.isInteger(s) || s < 2 || s > 60_000)) {
    throw new RangeError(
      `VEILNET_SIM_SIZES must be whole numbers from 2 to 60000, like "1000"; got "${raw}"`,
    );
  }
  return sizes;
}

/** Simulated realms of each size, one after another. */
export async function controlSimBench(): Promise<Figure[]> {
  const windowSeconds = Number(Deno.env.get("VEILNET_SIM_WINDOW") ?? DEFAULT_WINDOW_SECONDS);
  if (!(windowSeconds > 0)) {
    throw new RangeError(`VEILNET_SIM_WINDOW must be a number of seconds above 0; got ${windowSeconds}`);
  }
  const figures: Figure[] = [];
  for (const n of sizesFromEnv()) figures.push(...await simulate(n, windowSeconds));
  return figures;
}
