/**
 * The control channel over NATS (the `nats` client; the only importer). Connects to every URL of a cluster,
 * reconnects forever with the newest credentials, and reports its state.
 * @module
 */

import { connect, Events, jwtAuthenticator, type NatsConnection } from "nats";
import type { ChannelState, ControlChannel } from "./channel.ts";

/** How to reach the Master. `credentials` is asked again on every (re)connect, so renewed ones are used. */
export interface NatsOptions {
  urls: string[];
  credentials: () => { jwt: string; seed: string };
  inboxPrefix: string;
  name: string;
  onState?: (state: ChannelState) => void;
  /** Debug logging of connection events. */
  log?: (line: string) => void;
}

/** Connects (waiting until the first connection succeeds) and returns the channel. */
export async function connectNats(o: NatsOptions): Promise<ControlChannel> {
  const encoder = new TextEncoder();
  const nc: NatsConnection = await connect({
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
  });
  let state: ChannelState = "connected";
  const set = (s: ChannelState) => {
    if (state === s) return;
    state = s;
    o.onState?.(s);
  };
  (async () => {
    for await (const s of nc.status()) {
      o.log?.(`nats: ${s.type} ${typeof s.data === "string" ? s.data : JSON.stringify(s.data)}`);
      if (s.type === Events.Disconnect) set("reconnecting");
      if (s.type === Events.Reconnect) set("connected");
    }
  })().catch(() => {});
  nc.closed().then(() => set("closed"));
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
    subscribe(subject, onMessage) {
      nc.subscribe(subject, {
        callback: (error, msg) => {
          if (error) o.log?.(`nats: subscription ${subject}: ${error.message}`);
          else onMessage(msg.data);
        },
      });
    },
    async close() {
      if (nc.isClosed()) return;
      await nc.drain().catch(() => nc.close());
    },
    [Symbol.asyncDispose]: () => channel.close(),
  };
  return channel;
}
