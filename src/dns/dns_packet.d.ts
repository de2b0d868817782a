/**
 * The part of dns-packet 5 this project uses, typed here: @types/dns-packet pulls in the newest @types/node,
 * whose node:assert types disagree with Deno's.
 */
import type { Buffer } from "node:buffer";

export interface Question {
  name: string;
  type: string;
  class?: string;
}

export interface Answer {
  type: string;
  name: string;
  ttl?: number;
  class?: string;
  data?: unknown;
  udpPayloadSize?: number;
  flags?: number;
  options?: unknown[];
}

export interface Packet {
  type?: "query" | "response";
  id?: number;
  flags?: number;
  questions?: Question[];
  answers?: Answer[];
  authorities?: Answer[];
  additionals?: Answer[];
}

/** Throws for anything that is not a well-formed message. */
export function decode(buf: Buffer, offset?: number): Packet;
export function encode(packet: Packet, buf?: Buffer, offset?: number): Buffer;
