/**
 * The node's DNS server: UDP and TCP on one address (the overlay address, port 53, by default), answering
 * `<tag>.veilnet` and forwarding other names to the host's own resolvers.
 *
 * It is never an open resolver for the underlay: queries are taken only from loopback and overlay addresses
 * (`allowed`); anything else is ignored. A forwarded query that comes back to us (a resolver configured to ask
 * us) is not forwarded again. One bad packet costs one FORMERR at most; it never stops the server.
 * @module
 */

import dgram from "node:dgram";
import type { Buffer } from "node:buffer";
import {
  DNS_FORWARD_TIMEOUT_MS,
  DNS_TCP_IDLE_MS,
  MAX_DNS_FORWARDS,
  MAX_DNS_TCP_CONNECTIONS,
} from "../tuning.ts";
import { MAX_DNS_MESSAGE_BYTES, type Resolver, Responder } from "./message.ts";

/** A resolver to forward to. */
export interface Upstream {
  hostname: string;
  port: number;
}

/** How the server runs. */
export interface DnsServerOptions {
  hostname: string;
  port: number;
  lookup: Resolver["lookup"];
  /** Where names outside the zone go; empty: they are refused. */
  upstreams: Upstream[];
  /** Whether a client address may query at all. */
  allowed: (address: string) => boolean;
  log: (line: string) => void;
}

/** A running DNS server. */
export class DnsServer implements AsyncDisposable {
  readonly responder: Responder;
  readonly #udp: dgram.Socket;
  readonly #tcp: Deno.TcpListener;
  readonly #o: DnsServerOptions;
  readonly #forwarding = new Set<string>();
  readonly #connections = new Set<Deno.TcpConn>();
  #closed = false;
  #tcpLoop: Promise<void> = Promise.resolve();
  /** Queries from addresses that may not query. */
  ignored = 0;

  private constructor(o: DnsServerOptions, udp: dgram.Socket, tcp: Deno.TcpListener) {
    this.#o = o;
    this.#udp = udp;
    this.#tcp = tcp;
    this.responder = new Responder({
      lookup: o.lookup,
      forward: o.upstreams.length > 0 ? (q, transport) => this.#forward(q, transport) : undefined,
    });
  }

  /** Binds UDP and TCP; throws with the address in the message when either cannot be bound. */
  static async listen(o: DnsServerOptions): Promise<DnsServer> {
    const where = o.hostname.includes(":") ? `[${o.hostname}]:${o.port}` : `${o.hostname}:${o.port}`;
    const udp = dgram.createSocket({ type: o.hostname.includes(":") ? "udp6" : "udp4" });
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once("error", reject);
        udp.bind(o.port, o.hostname, () => {
          udp.off("error", reject);
          resolve();
        });
      });
    } catch (error) {
      udp.close();
      throw new Error(`DNS: cannot listen on ${where} (UDP): ${(error as Error).message}`);
    }
    let tcp: Deno.TcpListener;
    try {
      tcp = Deno.listen({ hostname: o.hostname, port: udp.address().port, transport: "tcp" });
    } catch (error) {
      udp.close();
      throw new Error(`DNS: cannot listen on ${where} (TCP): ${(error as Error).message}`);
    }
    const server = new DnsServer(o, udp, tcp);
    udp.on("error", (e) => o.log(`DNS: UDP: ${e.message}`));
    udp.on("message", (msg: Buffer, rinfo: dgram.RemoteInfo) => server.#onUdp(msg, rinfo));
    server.#tcpLoop = server.#acceptTcp();
    return server;
  }

  /** The port actually bound (useful with port 0). */
  get port(): number {
    return this.#tcp.addr.port;
  }

  #onUdp(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (!this.#o.allowed(rinfo.address)) {
      this.ignored++;
      return;
    }
    const query = new Uint8Array(msg.buffer, msg.byteOffset, msg.length);
    void this.responder.respond(query, "udp").then((response) => {
      if (response && !this.#closed) this.#udp.send(response, rinfo.port, rinfo.address);
    }).catch((e) => this.#o.log(`DNS: ${e}`));
  }

  async #acceptTcp(): Promise<void> {
    for (;;) {
      let conn: Deno.TcpConn;
      try {
        conn = await this.#tcp.accept();
      } catch {
        return; // closed
      }
      const remote = conn.remoteAddr.hostname;
      if (!this.#o.allowed(remote) || this.#connections.size >= MAX_DNS_TCP_CONNECTIONS) {
        if (!this.#o.allowed(remote)) this.ignored++;
        conn.close();
        continue;
      }
      this.#connections.add(conn);
      void this.#serveTcp(conn).catch(() => {}).finally(() => {
        this.#connections.delete(conn);
        try {
          conn.close();
        } catch { /* already closed */ }
      });
    }
  }

  /** Length-prefixed queries, answered in order, until the client closes, goes quiet, or sends garbage. */
  async #serveTcp(conn: Deno.TcpConn): Promise<void> {
    for (;;) {
      const header = await readExactly(conn, 2, DNS_TCP_IDLE_MS);
      if (!header) return;
      const length = (header[0]! << 8) | header[1]!;
      if (length > MAX_DNS_MESSAGE_BYTES) return; // no sensible query is this long; do not read it
      const query = await readExactly(conn, length, DNS_TCP_IDLE_MS);
      if (!query) return;
      const response = await this.responder.respond(query, "tcp");
      if (!response) continue;
      await writeAll(conn, framed(response));
    }
  }

  /** Sends the query to each upstream in turn (over the client's transport) until one answers it. */
  async #forward(query: Uint8Array, transport: "udp" | "tcp"): Promise<Uint8Array | undefined> {
    const key = String.fromCharCode(...query);
    if (this.#forwarding.has(key) || this.#forwarding.size >= MAX_DNS_FORWARDS) return undefined;
    this.#forwarding.add(key);
    try {
      for (const upstream of this.#o.upstreams) {
        const ask = transport === "udp" ? askUdp : askTcp;
        // A truncated UDP answer is passed on as it is: the client retries over TCP, and so do we.
        const answer = await ask(upstream, query).catch(() => undefined);
        if (answer) return answer;
      }
      return undefined;
    } finally {
      this.#forwarding.delete(key);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#tcp.close();
    for (const c of this.#connections) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    await this.#tcpLoop;
    await new Promise<void>((resolve) => this.#udp.close(() => resolve()));
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** One query to one upstream over UDP; resolves with its answer (same id, response bit) or undefined on timeout. */
function askUdp(upstream: Upstream, query: Uint8Array): Promise<Uint8Array | undefined> {
  const socket = dgram.createSocket({ type: upstream.hostname.includes(":") ? "udp6" : "udp4" });
  return new Promise<Uint8Array | undefined>((resolve) => {
    const done = (answer: Uint8Array | undefined) => {
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    const timer = setTimeout(() => done(undefined), DNS_FORWARD_TIMEOUT_MS);
    socket.on("error", () => done(undefined));
    socket.on("message", (msg: Buffer) => {
      if (msg.length >= 12 && msg[0] === query[0] && msg[1] === query[1] && (msg[2]! & 0x80) !== 0) {
        done(new Uint8Array(msg));
      }
    });
    socket.send(query, upstream.port, upstream.hostname);
  });
}

/** One query to one upstream over TCP. */
async function askTcp(upstream: Upstream, query: Uint8Array): Promise<Uint8Array | undefined> {
  const conn = await Deno.connect({ hostname: upstream.hostname, port: upstream.port });
  try {
    await writeAll(conn, framed(query));
    const header = await readExactly(conn, 2, DNS_FORWARD_TIMEOUT_MS);
    return header && await readExactly(conn, (header[0]! << 8) | header[1]!, DNS_FORWARD_TIMEOUT_MS);
  } finally {
    conn.close();
  }
}

/** A DNS message with its TCP length prefix. */
function framed(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + message.length);
  out[0] = message.length >> 8;
  out[1] = message.length & 0xff;
  out.set(message, 2);
  return out;
}

async function readExactly(conn: Deno.Conn, n: number, idleMs: number): Promise<Uint8Array | undefined> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), idleMs));
    const got = await Promise.race([conn.read(out.subarray(at)).catch(() => null), timeout]);
    clearTimeout(timer);
    if (got === null) return undefined;
    at += got;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
}
