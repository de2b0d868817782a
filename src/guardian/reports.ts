/**
 * Nodes' reports to the Guardians (control kind Report, on each realm's `report` subject): what a node sees, for
 * the administrator. A report is believed only as the signed word of the node it names: it must carry a
 * certificate of its realm, verify under that certificate's key, and come from a node with a valid session that is
 * not revoked. Its text is parsed strictly (ids, paths, numbers and sizes checked); anything else is refused.
 * Reports are kept in memory, the newest per node: they say what is now, and are sent again every REPORT_MS.
 * @module
 */

import { verifyCertificate } from "../crypto/certificate.ts";
import { ControlVerifier } from "../crypto/control_signing.ts";
import { formatUuid, fromHex, toHex } from "../crypto/identity.ts";
import { NODE_ID_BYTES } from "../spec.ts";
import { MAX_REPORT_PEERS } from "../tuning.ts";
import { ControlKind, decodeControl } from "../wire/control.ts";
import type { NatBehaviour } from "../netcheck/report.ts";

/** One peer as a node reported it. */
export interface ReportedPeer {
  /** The peer's conflux id. */
  id: string;
  path: "direct" | "relay" | "backup";
  /** The relay's tag, when the path is a relay. */
  via?: string;
  link?: "tcp" | "webrtc";
  rttMs?: number;
  txBytes: number;
  rxBytes: number;
  /**
   * Bits a second both ways since the node's previous report, worked out by the Guardian (absent on a node's
   * first report, or when the counters went back: the peer's traffic started over).
   */
  bitsPerSecond?: number;
}

/** A node's newest report, as the Guardian keeps it. */
export interface NodeReport {
  /** When it was received (ms). */
  at: number;
  version: string;
  /** How the NAT in front of the node maps it, as the Guardian's STUN server saw it (the node's own word). */
  nat?: NatBehaviour;
  /** The public address and port that STUN saw, "address:port" (the node's own word). */
  publicAddress?: string;
  peers: ReportedPeer[];
}

/** Report signature checks per second at most, and in a burst (about 2 ms each). */
const REPORT_CHECKS_PER_S = 100;
const REPORT_CHECKS_BURST = 200;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const PATHS = new Set(["direct", "relay", "backup"]);
const LINKS = new Set(["tcp", "webrtc"]);
const NATS = new Set<string>(["none", "endpoint-independent", "endpoint-dependent", "unknown"]);
/** "a.b.c.d:port" or "[v6]:port". */
const ENDPOINT = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:.]{2,45}\]):\d{1,5}$/i;

/** A report's text, checked field by field; throws a RangeError naming what is wrong. */
export function parseReport(text: string): Omit<NodeReport, "at"> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new RangeError("a report is not JSON");
  }
  const r = value as { version?: unknown; nat?: unknown; publicAddress?: unknown; peers?: unknown };
  if (typeof r !== "object" || r === null) throw new RangeError("a report is not an object");
  if (typeof r.version !== "string" || !/^[0-9A-Za-z.+-]{1,32}$/.test(r.version)) {
    throw new RangeError("a report's version is not a version");
  }
  if (r.nat !== undefined && (typeof r.nat !== "string" || !NATS.has(r.nat))) {
    throw new RangeError("a reported NAT kind is not one");
  }
  if (
    r.publicAddress !== undefined && (typeof r.publicAddress !== "string" || !ENDPOINT.test(r.publicAddress))
  ) {
    throw new RangeError("a reported public address is not address:port");
  }
  if (!Array.isArray(r.peers) || r.peers.length > MAX_REPORT_PEERS) {
    throw new RangeError(`a report's peers are not a list of at most ${MAX_REPORT_PEERS}`);
  }
  const count = (n: unknown) => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;
  const peers = r.peers.map((p: Record<string, unknown>): ReportedPeer => {
    if (typeof p !== "object" || p === null) throw new RangeError("a reported peer is not an object");
    if (typeof p.id !== "string" || !UUID.test(p.id)) throw new RangeError("a reported peer's id is not one");
    if (typeof p.path !== "string" || !PATHS.has(p.path)) throw new RangeError("a reported path is not one");
    if (p.via !== undefined && (typeof p.via !== "string" || !/^[a-z0-9-]{1,63}$/.test(p.via))) {
      throw new RangeError("a reported relay is not a tag");
    }
    if (p.link !== undefined && (typeof p.link !== "string" || !LINKS.has(p.link))) {
      throw new RangeError("a reported link is not one");
    }
    if (
      p.rttMs !== undefined && (typeof p.rttMs !== "number" || !(p.rttMs >= 0 && p.rttMs < 3_600_000))
    ) throw new RangeError("a reported round-trip time is not one");
    if (!count(p.txBytes) || !count(p.rxBytes)) throw new RangeError("reported bytes are not counts");
    return {
      id: p.id,
      path: p.path as ReportedPeer["path"],
      ...(p.via !== undefined ? { via: p.via as string } : {}),
      ...(p.link !== undefined ? { link: p.link as ReportedPeer["link"] } : {}),
      ...(p.rttMs !== undefined ? { rttMs: p.rttMs as number } : {}),
      txBytes: p.txBytes as number,
      rxBytes: p.rxBytes as number,
    };
  });
  return {
    version: r.version,
    ...(r.nat !== undefined ? { nat: r.nat as NatBehaviour } : {}),
    ...(r.publicAddress !== undefined ? { publicAddress: r.publicAddress as string } : {}),
    peers,
  };
}

/** What checking a report needs from the Guardian. */
export interface ReportsOptions {
  /** The realm's public key (undefined for a realm this Guardian does not know). */
  realmKey: (realmId: string) => Promise<Uint8Array | undefined>;
  /** Whether the node `confluxId` holds a valid, unrevoked session for `nodeId` now. */
  inSession: (confluxId: string, nodeId: string) => boolean;
  clock: () => number;
  log?: (line: string) => void;
}

/** The newest report of each node. */
export class Reports {
  readonly #o: ReportsOptions;
  readonly #latest = new Map<string, NodeReport>();
  /** Verifies the message signature (dates, replays) under the key the carried certificate vouches for. */
  readonly #verifier: ControlVerifier;
  /** Reports refused, by reason (each reason logged the first time). */
  readonly refused = new Map<string, number>();
  #tokens = REPORT_CHECKS_BURST;
  #at = 0;

  constructor(o: ReportsOptions) {
    this.#o = o;
    this.#verifier = new ControlVerifier({
      self: new Uint8Array(NODE_ID_BYTES),
      keys: () => undefined,
      clock: o.clock,
    });
  }

  /**
   * Signature checks left now: a flood on the report subject (any member may publish there) costs the Guardian at
   * most REPORT_CHECKS_PER_S of them; what is beyond is dropped unchecked.
   */
  #left(): boolean {
    const now = this.#o.clock();
    this.#tokens = Math.min(
      REPORT_CHECKS_BURST,
      this.#tokens + (now - this.#at) / 1000 * REPORT_CHECKS_PER_S,
    );
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens--;
    return true;
  }

  /** A report from realm `realmId`'s report subject: kept if it holds, else counted and dropped. */
  async receive(realmId: string, bytes: Uint8Array): Promise<void> {
    try {
      if (!this.#left()) {
        throw Object.assign(new Error("over the Guardian's budget of report checks"), {
          reason: "budget",
        });
      }
      const report = await this.#check(realmId, bytes);
      const at = this.#o.clock();
      const previous = this.#latest.get(report.conflux);
      const before = new Map(previous?.peers.map((p) => [p.id, p.txBytes + p.rxBytes]));
      const peers = report.peers.map((p) => {
        const was = before.get(p.id);
        const seconds = previous ? (at - previous.at) / 1000 : 0;
        const now = p.txBytes + p.rxBytes;
        return was !== undefined && now >= was && seconds > 0
          ? { ...p, bitsPerSecond: Math.round((now - was) * 8 / seconds) }
          : p;
      });
      const { conflux, ...rest } = report;
      this.#latest.set(conflux, { ...rest, at, peers });
    } catch (error) {
      // Counted by kind (a message may hold details of the sender's choosing, which must not grow the map).
      const e = error as Error & { reason?: string };
      const reason = e.reason ?? e.name;
      this.refused.set(reason, (this.refused.get(reason) ?? 0) + 1);
      if (this.refused.get(reason) === 1) {
        this.#o.log?.(`guardian: a node report refused (${reason}): ${e.message}`);
      }
    }
  }

  async #check(realmId: string, bytes: Uint8Array) {
    const m = decodeControl(bytes);
    const refuse = (reason: string, message: string) => Object.assign(new Error(message), { reason });
    if (m.kind !== ControlKind.Report) throw refuse("kind", `a ${ControlKind[m.kind]} on the report subject`);
    const realmKey = await this.#o.realmKey(realmId);
    if (!realmKey) throw refuse("realm", "a report for a realm this Guardian does not know");
    const cert = await verifyCertificate(m.body.certificate, {
      realm: fromHex(realmId),
      realmKey,
      now: this.#o.clock(),
    });
    await this.#verifier.verify(bytes, cert.nodeKey);
    const conflux = formatUuid(cert.conflux);
    if (!this.#o.inSession(conflux, toHex(cert.nodeId))) {
      throw refuse("session", "a report from a node without a valid session (revoked, removed or expired)");
    }
    try {
      return { conflux, ...parseReport(m.body.report) };
    } catch (error) {
      throw refuse("text", (error as Error).message);
    }
  }

  /** The newest report of a node, if one came. */
  get(confluxId: string): NodeReport | undefined {
    return this.#latest.get(confluxId);
  }

  /** Forgets a node's report (it was removed). */
  forget(confluxId: string): void {
    this.#latest.delete(confluxId);
  }
}
