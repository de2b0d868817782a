/**
 * The node's DNS server: UDP and TCP on one address (the overlay address, port 53, by default), answering
 * `<tag>.veilnet` and forwarding other names to the host's own resolvers.
 *
 * It is never an open resolver for the underlay: queries are taken only from loopback and overlay addresses
 * (`allowed`); anything else is ignored. A forwarded query that comes back to us (a resolver configured to ask
 * us) is not forwarded again. One bad packet costs one FORMERR at most; it never stops the server.
 *
 * Forwarding trusts nothing but the server asked: each query goes upstream under a fresh random id from a fresh
 * socket (a fresh ephemeral port), and over UDP only a datagram from the address and port asked, carrying that id
 * and the same question, is taken as the answer; anything else is dropped and counted (`rejectedAnswers`). Each
 * upstream has DNS_FORWARD_TIMEOUT_MS for the whole exchange, TCP connect included, and its socket is closed
 * whatever happens.
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
import { parseAddress } from "../tun/ip.ts";
import { isAnswerTo, MAX_DNS_MESSAGE_BYTES, type Resolver, Responder } from "./message.ts";

/** A resolver to forward to. */
export interface Upstream {
  /** An IP address (answers over UDP are taken only from it). */
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
  /** How long one upstream has to answer, TCP connect included (ms); DNS_FORWARD_TIMEOUT_MS when absent. */
  forwardTimeoutMs?: number;
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
  /**
   * Datagrams to a forwarding socket not taken as the answer: from another address or port than the upstream
   * asked, or with another id or question (a forged answer, or a stray one).
   */
  rejectedAnswers = 0;

  private constructor(o: DnsServerOptions, udp: dgram.Socket, tcp: Deno.TcpListener) {
    this.#o = o;
    this.#udp = udp;
    this.#tcp = tcp;
    this.responder = new Responder({
      lookup: o.lookup,
      forward: o.upstreams.length > 0 ? (q, transport) => this.#forward(q, transport) : undefined,
    });
  }

  /**
   * Binds UDP and TCP; throws with the address in the message when either cannot be bound. With port 0, the
   * port the kernel gave UDP may be taken for TCP: then it tries other ports (a few times).
   */
  static async listen(o: DnsServerOptions): Promise<DnsServer> {
    for (let attempt = 1;; attempt++) {
      try {
        return await DnsServer.#listen(o);
      } catch (error) {
        const taken = (error as Error).cause instanceof Deno.errors.AddrInUse;
        if (o.port !== 0 || !taken || attempt >= 5) throw error;
      }
    }
  }

  static async #listen(o: DnsServerOptions): Promise<DnsServer> {
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
      throw new Error(`DNS: cannot listen on ${where} (TCP): ${(error as Error).message}`, { cause: error });
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

  /**
   * Sends the query to each upstream in turn (over the client's transport) until one answers it, and gives the
   * answer back under the client's id.
   *
   * Upstream, the query carries an id of ours, not the client's (which may be predictable). `#forwarding` holds
   * the queries as sent: one that comes back to us (a resolver that forwards to us) is recognised by its bytes and
   * not forwarded again.
   */
  async #forward(query: Uint8Array, transport: "udp" | "tcp"): Promise<Uint8Array | undefined> {
    if (this.#forwarding.has(keyOf(query)) || this.#forwarding.size >= MAX_DNS_FORWARDS) return undefined;
    let sent: Uint8Array;
    let key: string;
    do {
      sent = withId(query, crypto.getRandomValues(new Uint8Array(2)));
      key = keyOf(sent);
    } while (this.#forwarding.has(key));
    this.#forwarding.add(key);
    const timeoutMs = this.#o.forwardTimeoutMs ?? DNS_FORWARD_TIMEOUT_MS;
    try {
      for (const upstream of this.#o.upstreams) {
        // A truncated UDP answer is passed on as it is: the client retries over TCP, and so do we.
        const answer = transport === "udp"
          ? await askUdp(upstream, sent, { timeoutMs, rejected: () => this.rejectedAnswers++ })
          : await askTcp(upstream, sent, timeoutMs).catch(() => undefined);
        if (answer) return withId(answer, query);
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

/**
 * One query to one upstream over UDP, from a socket of its own (the kernel picks a random ephemeral port); resolves
 * with the answer, or undefined on timeout or error. Only a datagram from the upstream's address and port that
 * answers this query's id and question is the answer; `rejected` is called for each other one.
 */
function askUdp(
  upstream: Upstream,
  query: Uint8Array,
  o: { timeoutMs: number; rejected: () => void },
): Promise<Uint8Array | undefined> {
  const socket = dgram.createSocket({ type: upstream.hostname.includes(":") ? "udp6" : "udp4" });
  return new Promise<Uint8Array | undefined>((resolve) => {
    let finished = false;
    const done = (answer: Uint8Array | undefined) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    const timer = setTimeout(() => done(undefined), o.timeoutMs);
    socket.on("error", () => done(undefined));
    socket.on("message", (msg: Buffer, from: dgram.RemoteInfo) => {
      const answer = new Uint8Array(msg.buffer, msg.byteOffset, msg.length);
      if (
        from.port === upstream.port && sameAddress(from.address, upstream.hostname) &&
        isAnswerTo(answer, query)
      ) {
        done(answer.slice());
      } else if (!finished) {
        o.rejected();
      }
    });
    socket.send(query, upstream.port, upstream.hostname);
  });
}

/**
 * One query to one upstream over TCP. One deadline covers the exchange: an upstream that never completes the
 * connect (SYNs dropped: a firewall, a full backlog) and one that accepts and never answers both cost `timeoutMs`
 * at most. The connection is closed on every path; closing it is also what ends a read pending at the deadline.
 */
async function askTcp(
  upstream: Upstream,
  query: Uint8Array,
  timeoutMs: number,
): Promise<Uint8Array | undefined> {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(), timeoutMs);
  let conn: Deno.TcpConn | undefined;
  const close = () => {
    try {
      conn?.close();
    } catch { /* already closed */ }
    conn = undefined;
  };
  deadline.signal.addEventListener("abort", close);
  try {
    const c = await Deno.connect({
      hostname: upstream.hostname,
      port: upstream.port,
      signal: deadline.signal,
    });
    conn = c;
    if (deadline.signal.aborted) return undefined; // connected just as the deadline passed
    await writeAll(c, framed(query));
    const header = await readExactly(c, 2);
    const answer = header && await readExactly(c, (header[0]! << 8) | header[1]!);
    return answer && isAnswerTo(answer, query) ? answer : undefined;
  } finally {
    clearTimeout(timer);
    deadline.signal.removeEventListener("abort", close);
    close();
  }
}

/** A message as a string, to remember queries in flight by. */
function keyOf(message: Uint8Array): string {
  return String.fromCharCode(...message);
}

/** A copy of `message` with the id of `from` (its first two bytes). */
function withId(message: Uint8Array, from: Uint8Array): Uint8Array {
  const out = message.slice();
  out.set(from.subarray(0, 2));
  return out;
}

/** Whether two IP addresses are the same, whatever their spelling (`::1` and `0:0::1`). */
function sameAddress(a: string, b: string): boolean {
  const x = parseAddress(a);
  const y = parseAddress(b);
  if (!x || !y) return a === b;
  return x.length === y.length && x.every((byte, i) => byte === y[i]);
}

/** A DNS message with its TCP length prefix. */
function framed(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + message.length);
  out[0] = message.length >> 8;
  out[1] = message.length & 0xff;
  out.set(message, 2);
  return out;
}

/**
 * Reads exactly `n` bytes; undefined when the peer closes, the connection is closed under the read, or (with
 * `idleMs`) no byte comes for that long.
 */
async function readExactly(conn: Deno.Conn, n: number, idleMs?: number): Promise<Uint8Array | undefined> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const read = conn.read(out.subarray(at)).catch(() => null);
    const got = idleMs === undefined ? await read : await Promise.race([
      read,
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), idleMs)),
    ]);
    clearTimeout(timer);
    if (got === null) return undefined;
    at += got;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length;) at += await conn.write(data.subarray(at));
}
