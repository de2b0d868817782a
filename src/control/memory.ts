/**
 * An in-memory Master for unit tests: channels connected to one bus see each other's messages, delivered
 * asynchronously as NATS would. Subjects match exactly, or with a trailing ">" wildcard.
 * @module
 */

import type { ChannelState, ControlChannel } from "./channel.ts";

/** A shared bus; `connect()` makes a channel on it. */
export class MemoryBus {
  readonly #subs = new Set<{ subject: string; deliver: (data: Uint8Array) => void }>();

  connect(): ControlChannel {
    const subs = this.#subs;
    const mine = new Set<{ subject: string; deliver: (data: Uint8Array) => void }>();
    let state: ChannelState = "connected";
    const channel: ControlChannel = {
      get state() {
        return state;
      },
      publish(subject, data) {
        if (state === "closed") return;
        const copy = data.slice();
        for (const s of subs) {
          const match = s.subject === subject ||
            (s.subject.endsWith(">") && subject.startsWith(s.subject.slice(0, -1)));
          if (match) queueMicrotask(() => s.deliver(copy));
        }
      },
      flush() {
        return new Promise((resolve) => queueMicrotask(resolve));
      },
      subscribe(subject, onMessage) {
        const sub = { subject, deliver: (d: Uint8Array) => state !== "closed" && onMessage(d) };
        mine.add(sub);
        subs.add(sub);
      },
      close() {
        state = "closed";
        for (const s of mine) subs.delete(s);
        return Promise.resolve();
      },
      [Symbol.asyncDispose]: () => channel.close(),
    };
    return channel;
  }
}
