/**
 * An in-memory Master for unit tests and simulations: channels connected to one bus see each other's messages,
 * delivered asynchronously as NATS would, and only where there is interest. Subjects match exactly, or with a
 * trailing ">" wildcard (one or more further tokens); a queue group gets each message once, at one member chosen at
 * random. Each channel counts what it sent and received.
 * @module
 */

import type { ChannelState, ControlChannel } from "./channel.ts";

interface Sub {
  deliver: (data: Uint8Array) => void;
  queue?: string;
}

/** Messages and bytes, one way. */
export interface Traffic {
  messages: number;
  bytes: number;
}

/** A channel on the bus, with its counters. */
export interface MemoryChannel extends ControlChannel {
  readonly sent: Traffic;
  readonly received: Traffic;
}

/** A shared bus; `connect()` makes a channel on it. */
export class MemoryBus {
  /** Subscriptions by exact subject, and by the prefix before a trailing ".>". */
  readonly #exact = new Map<string, Set<Sub>>();
  readonly #prefixes = new Map<string, Set<Sub>>();

  #matching(subject: string): Sub[] {
    const found = [...this.#exact.get(subject) ?? []];
    for (let dot = subject.indexOf("."); dot > 0; dot = subject.indexOf(".", dot + 1)) {
      found.push(...this.#prefixes.get(subject.slice(0, dot)) ?? []);
    }
    const groups = new Map<string, Sub[]>();
    for (const sub of found) {
      if (sub.queue !== undefined) groups.set(sub.queue, [...groups.get(sub.queue) ?? [], sub]);
    }
    if (groups.size === 0) return found;
    const picked = [...groups.values()].map((members) =>
      members[Math.floor(Math.random() * members.length)]!
    );
    return [...found.filter((sub) => sub.queue === undefined), ...picked];
  }

  #add(subject: string, sub: Sub): () => void {
    const wildcard = subject.endsWith(".>");
    const index = wildcard ? this.#prefixes : this.#exact;
    const key = wildcard ? subject.slice(0, -2) : subject;
    let set = index.get(key);
    if (!set) index.set(key, set = new Set());
    set.add(sub);
    return () => {
      set.delete(sub);
      if (set.size === 0 && index.get(key) === set) index.delete(key);
    };
  }

  connect(): MemoryChannel {
    const mine = new Set<() => void>();
    let state: ChannelState = "connected";
    const sent = { messages: 0, bytes: 0 };
    const received = { messages: 0, bytes: 0 };
    const channel: MemoryChannel = {
      sent,
      received,
      get state() {
        return state;
      },
      publish: (subject, data) => {
        if (state === "closed") return;
        sent.messages++;
        sent.bytes += data.length;
        const copy = data.slice();
        for (const s of this.#matching(subject)) queueMicrotask(() => s.deliver(copy));
      },
      flush() {
        return new Promise((resolve) => queueMicrotask(resolve));
      },
      subscribe: (subject, onMessage, queue) => {
        const remove = this.#add(subject, {
          queue,
          deliver: (d) => {
            if (state === "closed") return;
            received.messages++;
            received.bytes += d.length;
            onMessage(d);
          },
        });
        const off = () => {
          remove();
          mine.delete(off);
        };
        mine.add(off);
        return off;
      },
      reconnect: () => Promise.resolve(),
      close() {
        state = "closed";
        for (const off of mine) off();
        return Promise.resolve();
      },
      [Symbol.asyncDispose]: () => channel.close(),
    };
    return channel;
  }
}
