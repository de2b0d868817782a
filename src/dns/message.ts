/**
 * One DNS query in, one response out: the zone `veilnet` answered from name resolution, everything else forwarded
 * (or refused). The wire format is dns-packet's; this module only decides. No I/O.
 *
 * Hostile input: under 12 bytes (no header to answer) or a message with the response bit set (never answer a
 * response: that is how reflection loops start) is dropped; anything else that does not decode as exactly one
 * question within MAX_DNS_MESSAGE_BYTES gets FORMERR, built from the header alone. dns-packet refuses compression
 * pointers that do not point backwards, so a pointer loop cannot make it spin.
 * @module
 */

// @ts-types="./dns_packet.d.ts"
import * as dnsPacket from "dns-packet";
import { Buffer } from "node:buffer";
import type { Owner } from "../agent/membership.ts";
import { formatAddress } from "../tun/ip.ts";
import { DNS_TTL_S } from "../tuning.ts";
import { isTag } from "../wire/certificate.ts";

/** The zone this server is authoritative for. */
export const ZONE = "veilnet";
/** Largest query accepted (a real one is well under 512 bytes). */
export const MAX_DNS_MESSAGE_BYTES = 4096;
/** Largest UDP response given to an EDNS client (the 2020 DNS flag day value). */
const EDNS_UDP_BYTES = 1232;

/** Response codes (RFC 1035 4.1.1). */
export enum Rcode {
  NoError = 0,
  FormErr = 1,
  ServFail = 2,
  NxDomain = 3,
  NotImp = 4,
  Refused = 5,
}

const QR = 0x8000;
const AA = 0x0400;
const TC = 0x0200;
const RD = 0x0100;
const RA = 0x0080;

/** What answering needs. */
export interface Resolver {
  /** Owners of a tag that this node may reach; none for an unknown or forbidden tag. */
  lookup(tag: string): Promise<Owner[]>;
  /** Forwards a query outside the zone; undefined when the upstreams failed. Absent: such queries are refused. */
  forward?: (query: Uint8Array, transport: "udp" | "tcp") => Promise<Uint8Array | undefined>;
}

/** Why a response was what it was (a metrics dimension). */
export type Outcome = "answered" | "nxdomain" | "forwarded" | "refused" | "servfail" | "formerr" | "dropped";

/** Answers DNS queries; several owners of one tag are given in turn first (simple load balancing). */
export class Responder {
  readonly #resolver: Resolver;
  #turn = 0;
  /** Responses by outcome. */
  readonly counts = new Map<Outcome, number>();

  constructor(resolver: Resolver) {
    this.#resolver = resolver;
  }

  #count(outcome: Outcome): void {
    this.counts.set(outcome, (this.counts.get(outcome) ?? 0) + 1);
  }

  /** The response to `query`, or undefined to send nothing. Never throws for bad input. */
  async respond(query: Uint8Array, transport: "udp" | "tcp"): Promise<Uint8Array | undefined> {
    const flags = query.length < 12 ? QR : (query[2]! << 8) | query[3]!;
    if ((flags & QR) !== 0) {
      this.#count("dropped");
      return undefined;
    }
    const opcode = (flags >> 11) & 0xf;
    let packet: dnsPacket.Packet;
    try {
      if (query.length > MAX_DNS_MESSAGE_BYTES) throw new RangeError("oversize");
      packet = dnsPacket.decode(Buffer.from(query.buffer, query.byteOffset, query.length));
    } catch {
      this.#count("formerr");
      return headerOnly(query, Rcode.FormErr);
    }
    if (opcode !== 0) {
      this.#count("refused");
      return headerOnly(query, Rcode.NotImp);
    }
    const question = packet.questions?.length === 1 ? packet.questions[0]! : undefined;
    if (!question) {
      this.#count("formerr");
      return headerOnly(query, Rcode.FormErr);
    }
    const forward = this.#resolver.forward;
    const base = { packet, question, forwarding: forward !== undefined, transport };
    const name = question.name.toLowerCase().replace(/\.$/, "");
    if (name !== ZONE && !name.endsWith(`.${ZONE}`)) {
      if (!forward) return this.#reply(base, Rcode.Refused, [], "refused");
      const answer = await forward(query, transport);
      if (!answer) return this.#reply(base, Rcode.ServFail, [], "servfail");
      this.#count("forwarded");
      return answer;
    }
    if (question.class !== "IN") return this.#reply(base, Rcode.Refused, [], "refused");
    if (name === ZONE) return this.#reply(base, Rcode.NoError, [], "answered");
    const tag = name.slice(0, -ZONE.length - 1);
    const owners = isTag(tag) ? await this.#resolver.lookup(tag) : [];
    if (owners.length === 0) return this.#reply(base, Rcode.NxDomain, [], "nxdomain");
    const turn = this.#turn++ % owners.length;
    const ordered = [...owners.slice(turn), ...owners.slice(0, turn)];
    const answers: dnsPacket.Answer[] = [];
    const qtype = question.type;
    for (const o of ordered) {
      const record = { name: question.name, ttl: DNS_TTL_S, class: "IN" as const };
      if (qtype === "A" || qtype === "ANY") {
        answers.push({ ...record, type: "A", data: formatAddress(o.ipv4) });
      }
      if (qtype === "AAAA" || qtype === "ANY") {
        answers.push({ ...record, type: "AAAA", data: formatAddress(o.ipv6) });
      }
    }
    return this.#reply(base, Rcode.NoError, answers, "answered");
  }

  #reply(
    o: {
      packet: dnsPacket.Packet;
      question: dnsPacket.Question;
      forwarding: boolean;
      transport: "udp" | "tcp";
    },
    rcode: Rcode,
    answers: dnsPacket.Answer[],
    outcome: Outcome,
  ): Uint8Array {
    this.#count(outcome);
    const opt = o.packet.additionals?.find((a) => a.type === "OPT");
    const limit = o.transport === "tcp"
      ? 65_535
      : opt
      ? Math.max(512, Math.min(opt.udpPayloadSize ?? 512, EDNS_UDP_BYTES))
      : 512;
    const flags = AA | ((o.packet.flags ?? 0) & RD) | (o.forwarding ? RA : 0) | rcode;
    const encode = (answers: dnsPacket.Answer[], extra: number) =>
      dnsPacket.encode({
        type: "response",
        id: o.packet.id ?? 0,
        flags: flags | extra,
        questions: [o.question],
        answers,
        additionals: opt
          ? [{ type: "OPT", name: ".", udpPayloadSize: EDNS_UDP_BYTES, flags: 0, options: [] }]
          : [],
      });
    const full = encode(answers, 0);
    return new Uint8Array(full.length > limit ? encode([], TC) : full);
  }
}

/** A response with the query's id, opcode and RD bit, the given code, and no sections. */
export function headerOnly(query: Uint8Array, rcode: Rcode): Uint8Array {
  const out = new Uint8Array(12);
  out[0] = query[0]!;
  out[1] = query[1]!;
  out[2] = 0x80 | (query[2]! & 0x79); // QR, opcode, RD
  out[3] = rcode;
  return out;
}

/**
 * Whether `answer` is a response to `query`: the same id, the response bit, and the same one question (name
 * compared without regard to ASCII case, type and class exactly). A forwarder takes nothing else as the answer
 * to a query it sent; an upstream response with no question section (some FORMERRs) is not taken either.
 */
export function isAnswerTo(answer: Uint8Array, query: Uint8Array): boolean {
  if (answer.length < 12 || query.length < 12) return false;
  if (answer[0] !== query[0] || answer[1] !== query[1] || (answer[2]! & 0x80) === 0) return false;
  const a = questionKey(answer);
  return a !== undefined && a === questionKey(query);
}

/**
 * The one question of a message as a string to compare (its wire name lowercased, then type and class), or
 * undefined when there is not exactly one or it does not parse. The first name of a message has nothing before
 * it to point to, so a compression pointer there is refused.
 */
function questionKey(m: Uint8Array): string | undefined {
  if (((m[4]! << 8) | m[5]!) !== 1) return undefined;
  let at = 12;
  const name: number[] = [];
  for (;;) {
    const length = m[at];
    if (length === undefined || length > 63 || at + 1 + length > m.length) return undefined;
    name.push(length);
    for (const byte of m.subarray(at + 1, at + 1 + length)) {
      name.push(byte >= 0x41 && byte <= 0x5a ? byte | 0x20 : byte);
    }
    at += 1 + length;
    if (length === 0) break;
  }
  if (at + 4 > m.length) return undefined;
  return String.fromCharCode(...name, ...m.subarray(at, at + 4));
}
