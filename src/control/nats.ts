/**
 * The control channel over NATS (the `nats` client; the only importer). Connects to every URL of a cluster,
 * reconnects forever with the newest credentials, and reports its state. Also the Guardian's own connections
 * ({@link openNatsLink}): they connect in the background and can gather the replies of every server.
 * @module
 */

import {
  connect,
  type ConnectionOptions,
  createInbox,
  Events,
  jwtAuthenticator,
  type NatsConnection,
} from "nats";
import { Socket } from "node:net";
import { TLSSocket } from "node:tls";
import type { ChannelState, ControlChannel } from "./channel.ts";

/**
 * The client removes a socket's listeners before destroying it, but under Deno a read error (ECONNRESET, as when
 * nats-server closes the connection right after refusing credentials) can still be emitted afterwards; with no
 * listener left that is an uncaught error that ends the process. So a socket always keeps a listener for it: the
 * connection is being torn down anyway, and the client has already seen the refusal. (Also for the Guardian's
 * JetStream client, guardian/jetstream_log.ts.)
 */
export function keepSocketErrorsCaught(): void {
  completeEmptyTlsWrites();
  const removeAll = Socket.prototype.removeAllListeners;
  if ((removeAll as { keepsErrors?: boolean }).keepsErrors) return;
  // Arguments passed as given: with none, it removes every listener; with `undefined`, none.
  const patched = function (this: Socket, ...event: [] | [string | symbol]) {
    const result = removeAll.apply(this, event as []);
    if (event.length === 0 || event[0] === "error") this.on("error", () => {});
    return result;
  };
  Object.assign(patched, { keepsErrors: true });
  Socket.prototype.removeAllListeners = patched;
}

/**
 * Under Deno, a zero-length write to a TLS socket never calls its callback. The client closes a connection by
 * writing an empty frame and waiting for it, so over TLS a reconnect (`nc.reconnect()`, after a renewal changed
 * the node's subjects) hung and the connection went stale. Such a write has nothing to send: it completes at once.
 */
function completeEmptyTlsWrites(): void {
  type Write = (chunk: unknown, ...rest: unknown[]) => boolean;
  const proto = TLSSocket.prototype as unknown as { write: Write & { completesEmpty?: boolean } };
  if (proto.write.completesEmpty) return;
  const write = proto.write;
  const patched = function (this: TLSSocket, chunk: unknown, ...rest: unknown[]) {
    if ((chunk as { length?: number } | null)?.length !== 0) return write.call(this, chunk, ...rest);
    const callback = rest.find((r) => typeof r === "function") as (() => void) | undefined;
    if (callback) queueMicrotask(callback);
    return true;
  };
  proto.write = Object.assign(patched, { completesEmpty: true });
}

/** How to reach the Master. `credentials` is asked again on every (re)connect, so renewed ones are used. */
export interface NatsOptions {
  urls: string[];
  credentials: () => { jwt: string; seed: string };
  inboxPrefix: string;
  name: string;
  /**
   * The CA (PEM) the Master's certificate chains to, when not a public one: the realm CA pinned at registration.
   * TLS is required when any URL is `tls://` (and then never given up for plain text).
   */
  ca?: string;
  onState?: (state: ChannelState) => void;
  /** Debug logging of connection events. */
  log?: (line: string) => void;
}

/**
 * How every connection to the Master behaves: it reconnects forever, quickly, with the newest credentials, and an
 * authorization refusal does not end the retries. (Also the Guardian's JetStream client, guardian/jetstream_log.ts.)
 */
export function connectOptions(o: Omit<NatsOptions, "onState">): ConnectionOptions {
  const encoder = new TextEncoder();
  return {
    servers: o.urls,
    name: o.name,
    inboxPrefix: o.inboxPrefix,
    authenticator: jwtAuthenticator(() => o.credentials().jwt, () => encoder.encode(o.credentials().seed)),
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    reconnectJitter: 100,
    pingInterval: 3_000,
    maxPingOut: 2,
    timeout: 5_000,
    ignoreClusterUpdates: false,
    // An expired user JWT (Guardian down past the certificate's end) must not stop the retries: the
    // authenticator hands out the renewed credentials as soon as the session is renewed.
    ignoreAuthErrorAbort: true,
    ...(o.urls.some((u) => u.startsWith("tls://")) ? { tls: o.ca ? { ca: o.ca } : {} } : {}),
  };
}

/** Follows the connection's state (until it closes), logging its events. */
function watch(nc: NatsConnection, o: Pick<NatsOptions, "log">, set: (s: ChannelState) => void): void {
  (async () => {
    for await (const s of nc.status()) {
      // "pingTimer" comes with every ping (every few seconds): news, not the client's keep-alive.
      if (s.type !== "pingTimer") {
        o.log?.(`nats: ${s.type} ${typeof s.data === "string" ? s.data : JSON.stringify(s.data)}`);
      }
      if (s.type === Events.Disconnect) set("reconnecting");
      if (s.type === Events.Reconnect) set("connected");
    }
  })().catch(() => {});
  nc.closed().then(() => set("closed"));
}

/** Connects (waiting until the first connection succeeds) and returns the channel. */
export async function connectNats(o: NatsOptions): Promise<ControlChannel> {
  keepSocketErrorsCaught();
  const nc: NatsConnection = await connect(connectOptions(o));
  let state: ChannelState = "connected";
  const set = (s: ChannelState) => {
    if (state === s) return;
    state = s;
    o.onState?.(s);
  };
  watch(nc, o, set);
  const channel: ControlChannel = {
    get state() {
      return state;
    },
    publish(subject, data) {
      try {
        nc.publish(subject, data);
      } catch (error) {
        o.log?.(`nats: publish to ${subject} failed: ${(error as Error).message}`);
      }
    },
    async flush() {
      if (state !== "connected") return;
      await nc.flush().catch(() => {});
    },
    subscribe(subject, onMessage, queue) {
      const sub = nc.subscribe(subject, {
        queue,
        callback: (error, msg) => {
          if (error) o.log?.(`nats: subscription ${subject}: ${error.message}`);
          else onMessage(msg.data);
        },
      });
      return () => {
        if (!nc.isClosed()) sub.unsubscribe();
      };
    },
    async reconnect() {
      if (nc.isClosed()) return;
      await nc.reconnect().catch((error) => o.log?.(`nats: reconnect: ${(error as Error).message}`));
      await nc.flush().catch(() => {});
    },
    async close() {
      if (nc.isClosed()) return;
      // Draining waits for the server: while reconnecting (perhaps refused for good) it would wait forever.
      if (state === "connected") await nc.drain().catch(() => nc.close());
      else await nc.close();
    },
    [Symbol.asyncDispose]: () => channel.close(),
  };
  return channel;
}

/** A link's state: "connecting" until the Master was first reached, then as a {@link ChannelState}. */
export type LinkState = "connecting" | ChannelState;

/** One of the Guardian's own connections to the Master. */
export interface NatsLink extends AsyncDisposable {
  readonly state: LinkState;
  /**
   * Sends; while reconnecting, the client buffers and sends on reconnect. Throws if the Master was never reached
   * yet, or the link is closed.
   */
  publish(subject: string, data: Uint8Array): void;
  /**
   * Publishes `data` with a fresh reply subject and returns every reply that came within `maxMs`, or until none
   * came for `quietMs` after the last one. Each server of a cluster answers system requests on its own, so this
   * is how to hear them all. Throws as `publish` does.
   */
  gather(subject: string, data: Uint8Array, wait: { maxMs: number; quietMs?: number }): Promise<Uint8Array[]>;
  /**
   * Delivers every message on `subject` (wildcards allowed) with the subject it came on, from the first connection
   * on (made now if the Master was reached, else once it is) until close.
   */
  subscribe(subject: string, onMessage: (subject: string, data: Uint8Array) => void): void;
  close(): Promise<void>;
}

/**
 * Opens a link without waiting for the Master: the first connection is retried every `retryMs` (default 1 s)
 * until it succeeds or the link is closed; afterwards the client reconnects on its own, as for a node, but only
 * to the servers in `urls` (give all of a cluster's).
 */
export function openNatsLink(
  o: Omit<NatsOptions, "onState"> & { onState?: (state: LinkState) => void; retryMs?: number },
): NatsLink {
  keepSocketErrorsCaught();
  let nc: NatsConnection | undefined;
  let state: LinkState = "connecting";
  const set = (s: LinkState) => {
    if (state === s || state === "closed") return;
    state = s;
    o.onState?.(s);
  };
  const stop = new AbortController();
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      stop.signal.addEventListener("abort", done, { once: true });
      function done() {
        clearTimeout(timer);
        stop.signal.removeEventListener("abort", done);
        resolve();
      }
    });
  type Subscription = { subject: string; onMessage: (subject: string, data: Uint8Array) => void };
  const subscriptions: Subscription[] = [];
  const listen = (c: NatsConnection, s: Subscription) =>
    c.subscribe(s.subject, {
      callback: (error, msg) => {
        if (error) o.log?.(`nats: subscription ${s.subject}: ${error.message}`);
        else s.onMessage(msg.subject, msg.data);
      },
    });
  const first = (async () => {
    let failures = 0;
    while (!stop.signal.aborted) {
      try {
        // Only the given servers: a refusing cluster would otherwise keep handing out its other members, and
        // the first attempt would never end.
        const c = await connect({
          ...connectOptions(o),
          waitOnFirstConnect: false,
          ignoreClusterUpdates: true,
        });
        if (stop.signal.aborted) {
          await c.close();
          return;
        }
        nc = c;
        watch(c, o, set);
        for (const s of subscriptions) listen(c, s);
        set("connected");
        return;
      } catch (error) {
        // Logged on the first failure and every 30th after; callers see `state`.
        if (failures++ === 0 || failures % 30 === 0) {
          o.log?.(
            `nats: ${o.name} cannot reach the Master at ${o.urls.join(", ")} yet ` +
              `(${(error as Error).message}); retrying every ${o.retryMs ?? 1_000} ms`,
          );
        }
        await pause(o.retryMs ?? 1_000);
      }
    }
  })();
  const connection = (): NatsConnection => {
    if (!nc || nc.isClosed()) {
      throw new Error(
        `${o.name}: ${nc ? "the link to the Master is closed" : "the Master has not been reached yet"}`,
      );
    }
    return nc;
  };
  const link: NatsLink = {
    get state() {
      return state;
    },
    publish(subject, data) {
      connection().publish(subject, data);
    },
    subscribe(subject, onMessage) {
      const s = { subject, onMessage };
      subscriptions.push(s);
      if (nc && !nc.isClosed()) listen(nc, s);
    },
    gather(subject, data, wait) {
      const c = connection();
      return new Promise((resolve, reject) => {
        const replies: Uint8Array[] = [];
        let quiet: ReturnType<typeof setTimeout> | undefined;
        let ended = false;
        const end = (error?: unknown) => {
          if (ended) return;
          ended = true;
          clearTimeout(overall);
          clearTimeout(quiet);
          if (!c.isClosed()) sub.unsubscribe();
          if (error) reject(error);
          else resolve(replies);
        };
        const inbox = createInbox(o.inboxPrefix);
        const sub = c.subscribe(inbox, {
          callback: (error, msg) => {
            if (error) return o.log?.(`nats: replies to ${subject}: ${error.message}`);
            replies.push(msg.data);
            if (wait.quietMs !== undefined) {
              clearTimeout(quiet);
              quiet = setTimeout(() => end(), wait.quietMs);
            }
          },
        });
        const overall = setTimeout(() => end(), wait.maxMs);
        try {
          c.publish(subject, data, { reply: inbox });
        } catch (error) {
          end(error);
        }
      });
    },
    async close() {
      stop.abort();
      await first;
      const was = state;
      set("closed");
      if (!nc || nc.isClosed()) return;
      if (was === "connected") await nc.drain().catch(() => nc!.close());
      else await nc.close();
    },
    [Symbol.asyncDispose]: () => link.close(),
  };
  return link;
}

/** What one connection to the Master measured (`netcheck`). */
export interface NatsProbe {
  /** The server that answered ("host:port"). */
  server: string;
  /** From the first byte sent to the connection being ready (TCP, TLS if any, CONNECT, and the first PONG). */
  connectMs: number;
  /** The best of a few PING/PONG round trips, after connecting. */
  rttMs: number;
}

/**
 * Connects once to the first of `urls` that answers (no reconnects, at most `timeoutMs` each), measures the
 * round trip of a few PINGs, and closes. Throws with the client's reason when no server can be reached or the
 * credentials are refused.
 */
export async function probeNats(
  o: Omit<NatsOptions, "onState" | "log"> & { timeoutMs?: number; pings?: number },
): Promise<NatsProbe> {
  keepSocketErrorsCaught();
  const started = performance.now();
  const nc = await connect({
    ...connectOptions(o),
    timeout: o.timeoutMs ?? 5_000,
    reconnect: false,
    maxReconnectAttempts: 0,
    ignoreClusterUpdates: true,
    ignoreAuthErrorAbort: false,
  });
  try {
    const connectMs = performance.now() - started;
    let rttMs = Infinity;
    for (let i = 0; i < (o.pings ?? 3); i++) {
      // A flush is a PING answered by a PONG (nc.rtt() does the same, to the whole millisecond only).
      const sent = performance.now();
      await nc.flush();
      rttMs = Math.min(rttMs, performance.now() - sent);
    }
    return { server: nc.getServer(), connectMs, rttMs };
  } finally {
    await nc.close();
  }
}
