/**
 * Delivers revocations: what the store records as revoked (by this Guardian's API or by an admin command on
 * the same data directory) goes to the realm's nodes as a Revoke signed by the realm key, and, for revoked or
 * removed nodes, to the Master as the list of NATS sessions to refuse. The store is read a few times a second,
 * so a revocation reaches the realm well within 2 s whoever wrote it; at start every revocation still in force is
 * sent again, for nodes that were away.
 * @module
 */

import { fromHex } from "../crypto/identity.ts";
import { signRevocation } from "../crypto/control_signing.ts";
import { pq, type SigningKey } from "../crypto/pq.ts";
import { realmSubjects } from "../control/subjects.ts";
import type { MasterLink } from "./master_link.ts";
import { type Presence } from "./guardian.ts";
import { fromBase64 } from "./rules.ts";
import type { Store } from "./store.ts";

/** How often the store is read for new revocations. */
const POLL_MS = 250;

/** What the notices need of the Master: MasterLink, or a double in tests. */
export type MasterOutlet = Pick<MasterLink, "revoke" | "publish" | "connections">;

/** Sends recorded revocations until closed. */
export class RevocationNotices implements Disposable {
  readonly #store: Store;
  readonly #master: MasterOutlet;
  readonly #log: (line: string) => void;
  readonly #clock: () => number;
  readonly #keys = new Map<string, Promise<SigningKey>>();
  readonly #timer: ReturnType<typeof setInterval>;
  #seq = 0;
  /** Whether the Master's list must be pushed (again): set by a new cut, cleared once the Master took it. */
  #masterDirty = true;
  #busy = false;

  constructor(o: { store: Store; master: MasterOutlet; log: (line: string) => void; clock?: () => number }) {
    this.#store = o.store;
    this.#master = o.master;
    this.#log = o.log;
    this.#clock = o.clock ?? Date.now;
    this.#timer = setInterval(() => void this.tick(), POLL_MS);
  }

  /** Sends what is new (at the first call: everything still in force). Never throws; failures are retried. */
  async tick(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const now = this.#clock();
      for (const r of this.#store.revocationsSince(this.#seq)) {
        this.#seq = r.seq;
        if (r.until <= now) continue;
        if (r.cutMaster) this.#masterDirty = true;
        try {
          const realm = this.#store.realmById(r.realmId);
          if (!realm) continue;
          const message = await signRevocation(await this.#realmKey(realm.id, realm.keySeed), {
            conflux: fromHex(r.confluxId.replaceAll("-", "")),
            before: r.before,
          }, now);
          this.#master.publish(realmSubjects(realm.id).broadcast, message);
        } catch (error) {
          this.#log(
            `guardian: could not announce the revocation of ${r.confluxId}: ${(error as Error).message}`,
          );
        }
      }
      // The Master's list goes after the nodes' notices, so a revoked node still hears why it is cut off.
      if (this.#masterDirty) {
        const sessions = this.#store.revokedSessions(now);
        try {
          // Each user key signs one session: revoking up to its expiry covers its JWT whatever second it was issued.
          await this.#master.revoke(sessions.map((s) => ({ user: s.natsUser, at: s.expiresAt })));
          this.#masterDirty = false;
        } catch (error) {
          this.#log(
            `guardian: the Master did not take the revocations yet (${(error as Error).message}); retrying`,
          );
        }
      }
    } finally {
      this.#busy = false;
    }
  }

  #realmKey(id: string, seed: string): Promise<SigningKey> {
    let key = this.#keys.get(id);
    if (!key) this.#keys.set(id, key = pq().then((b) => b.signingKey(fromBase64(seed)!)));
    return key;
  }

  [Symbol.dispose](): void {
    clearInterval(this.#timer);
  }
}

/** Presence from the Master's connection lists: node users are named `node-<node id>`. */
export function masterPresence(master: MasterOutlet): Presence {
  return async () => {
    const out = new Map<string, { connected: boolean; lastSeen: number }>();
    for (const c of await master.connections()) {
      if (!c.name.startsWith("node-")) continue;
      const id = c.name.slice(5);
      const known = out.get(id);
      out.set(id, {
        connected: c.connected || known?.connected === true,
        lastSeen: Math.max(c.lastSeen, known?.lastSeen ?? 0),
      });
    }
    return out;
  };
}
