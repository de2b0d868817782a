/**
 * The Guardian's own connections to the Master: a system-account user that pushes the realms account JWT with
 * its revocations (every nats-server then disconnects the revoked node users at once and refuses them after) and
 * asks which node users are connected, and a realms-account user that publishes on realm subjects.
 * @module
 */

import { type LinkState, type NatsLink, openNatsLink } from "../control/nats.ts";
import {
  accountKeys,
  guardianCredentials,
  type NatsKeys,
  realmsAccountJwt,
  type Revocation,
  userOfJwt,
} from "./nats_auth.ts";

/** How long a revocation push waits for the servers' answers; each server answers on its own. */
const UPDATE_MAX_MS = 2_000;
/** The servers of one cluster answer within milliseconds of each other: after this much quiet, all have. */
const UPDATE_QUIET_MS = 250;
/** How long a connections request gathers the servers' answers. */
const CONNZ_WAIT_MS = 500;
/** Connections per page of a server's answer (each carries its user's JWT, ~1 KiB). */
const CONNZ_PAGE = 1_024;
/** nats-server's connection state "all" (open and recently closed) in a CONNZ request. */
const CONNZ_STATE_ALL = 2;

/** One node user as the Master sees it. */
export interface NodeConnection {
  /** The user JWT's name: `node-<nodeId>`. */
  name: string;
  /** The user's public nkey. */
  user: string;
  /** Whether any server has a connection of this user now. */
  connected: boolean;
  /**
   * When it was last seen (ms): the server's time now if connected, else when its last connection closed. Servers
   * remember only their last 10000 closed connections, so a long-gone user drops out of the list.
   */
  lastSeen: number;
}

interface ConnInfo {
  authorized_user?: string;
  name_tag?: string;
  jwt?: string;
  stop?: string;
}

interface ServerAnswer<T> {
  server?: { name?: string };
  data?: T;
  error?: { code?: number; description?: string };
}

/** The Guardian's connections to the Master. Connecting never waits for it: it may be down at start. */
export class MasterLink implements AsyncDisposable {
  readonly #system: NatsLink;
  readonly #realms: NatsLink;
  readonly #keys: NatsKeys;
  readonly #account: string;
  readonly #log: (line: string) => void;
  /** Pushes run one at a time, so their issue times (which the resolvers order by) follow their order. */
  #queue: Promise<unknown> = Promise.resolve();
  #lastIssuedAt = 0;
  /** The newest list asked for, pushed again whenever the system link (re)connects: servers may be new. */
  #latest: Revocation[] | undefined;
  #closed = false;

  private constructor(
    o: { urls: string[]; ca?: string; keys: NatsKeys; log: (line: string) => void },
    credentials: Awaited<ReturnType<typeof guardianCredentials>>,
  ) {
    this.#keys = o.keys;
    this.#account = accountKeys(o.keys).account;
    this.#log = o.log;
    const systemOnState = (state: LinkState) => {
      if (state === "connected" && this.#latest && !this.#closed) {
        this.#enqueue(() => this.#push(this.#latest!)).catch((error) =>
          o.log(`guardian: pushing the revocations again after reconnecting failed: ${error.message}`)
        );
      }
    };
    this.#system = openNatsLink({
      urls: o.urls,
      ca: o.ca,
      name: "guardian-system",
      inboxPrefix: credentials.system.inboxPrefix,
      credentials: () => credentials.system,
      log: o.log,
      onState: systemOnState,
    });
    this.#realms = openNatsLink({
      urls: o.urls,
      ca: o.ca,
      name: "guardian",
      inboxPrefix: credentials.realms.inboxPrefix,
      credentials: () => credentials.realms,
      log: o.log,
    });
  }

  /** Starts connecting both users to the Master at `urls` (retrying in the background while it is unreachable). */
  static async connect(
    o: { urls: string[]; ca?: string; keys: NatsKeys; log: (line: string) => void },
  ): Promise<MasterLink> {
    if (o.urls.length === 0) {
      throw new TypeError("MasterLink needs at least one Master URL (nats://host:port)");
    }
    return new MasterLink(o, await guardianCredentials(o.keys));
  }

  /** Hands every node report (any realm's `report` subject) to `onReport`, with the realm's id. */
  listenToReports(onReport: (realmId: string, data: Uint8Array) => void): void {
    this.#realms.subscribe("veilnet.*.report", (subject, data) => onReport(subject.split(".")[1]!, data));
  }

  /** Whether the system user reaches the Master (revocations and connection lists need it). */
  get state(): LinkState {
    return this.#system.state;
  }

  /**
   * Makes the Master revoke exactly `entries` (the full current list: each revokes the user's JWTs issued at or
   * before `at`). Resolves once the servers answered that they hold it; rejects if the Master is unreachable,
   * none answered, or one refused. Connected users it revokes are disconnected by each server as it applies it.
   */
  revoke(entries: Revocation[]): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("MasterLink is closed: no revocation can be pushed"));
    this.#latest = [...entries];
    const list = this.#latest;
    return this.#enqueue(() => this.#push(list));
  }

  #enqueue<T>(job: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(job, job);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #push(entries: Revocation[]): Promise<void> {
    this.#reachable("the revocation list was not pushed");
    // Strictly later than the previous push: resolvers keep the JWT issued last, and whole seconds count.
    const issuedAt = Math.max(Date.now(), this.#lastIssuedAt + 1_000);
    this.#lastIssuedAt = issuedAt;
    const token = await realmsAccountJwt(this.#keys, { revocations: entries, issuedAt });
    const answers = await this.#system.gather(
      `$SYS.REQ.ACCOUNT.${this.#account}.CLAIMS.UPDATE`,
      new TextEncoder().encode(token),
      { maxMs: UPDATE_MAX_MS, quietMs: UPDATE_QUIET_MS },
    );
    if (answers.length === 0) {
      throw new Error(
        `no nats-server answered the revocation update within ${UPDATE_MAX_MS} ms: expected "jwt updated" from ` +
          "each server; check that the Master runs a configuration from `guardian nats-config` (full resolver), " +
          "then retry",
      );
    }
    const refusals: string[] = [];
    for (const raw of answers) {
      const answer = parse<ServerAnswer<{ code?: number }>>(raw);
      if (answer?.data?.code !== 200) {
        refusals.push(
          `${answer?.server?.name ?? "a server"}: ${
            answer?.error?.description ?? new TextDecoder().decode(raw)
          }`,
        );
      }
    }
    if (refusals.length > 0) {
      throw new Error(
        `the Master refused the revocation update (expected "jwt updated" from each server, got ` +
          `${
            refusals.join("; ")
          }); check that its configuration comes from this Guardian's \`guardian nats-config\``,
      );
    }
    this.#log(`guardian: ${answers.length} Master server(s) hold ${entries.length} NATS revocation(s)`);
  }

  /** Publishes as the Guardian's realms user (allowed under `veilnet.>`). Throws if the Master was never reached. */
  publish(subject: string, bytes: Uint8Array): void {
    this.#realms.publish(subject, bytes);
  }

  /** The node users the Master's servers know of: connected now, or closed recently. */
  async connections(): Promise<NodeConnection[]> {
    this.#reachable("the connections cannot be listed");
    const users = new Map<string, NodeConnection>();
    for (let offset = 0;; offset += CONNZ_PAGE) {
      const request = { state: CONNZ_STATE_ALL, auth: true, offset, limit: CONNZ_PAGE };
      const answers = await this.#system.gather(
        `$SYS.REQ.ACCOUNT.${this.#account}.CONNZ`,
        new TextEncoder().encode(JSON.stringify(request)),
        { maxMs: CONNZ_WAIT_MS },
      );
      let more = false;
      for (const raw of answers) {
        const answer = parse<ServerAnswer<{ now: string; total: number; connections: ConnInfo[] }>>(raw);
        if (!answer?.data) {
          this.#log(
            `guardian: a Master server refused the connections request: ${new TextDecoder().decode(raw)}`,
          );
          continue;
        }
        more ||= answer.data.total > offset + CONNZ_PAGE;
        const now = Date.parse(answer.data.now);
        for (const c of answer.data.connections ?? []) {
          // Closed connections keep the JWT and its name, not the user.
          const named = c.jwt ? userOfJwt(c.jwt) : undefined;
          const user = c.authorized_user ?? named?.user;
          const name = c.name_tag ?? named?.name;
          if (!user || !name?.startsWith("node-")) continue;
          const open = c.stop === undefined;
          const seen = open ? now : Date.parse(c.stop!);
          const entry = users.get(user) ?? { name, user, connected: false, lastSeen: 0 };
          entry.connected ||= open;
          entry.lastSeen = Math.max(entry.lastSeen, seen);
          users.set(user, entry);
        }
      }
      if (!more) break;
    }
    return [...users.values()];
  }

  #reachable(consequence: string): void {
    const state = this.#system.state;
    if (state === "connected") return;
    if (state === "closed") throw new Error(`MasterLink is closed: ${consequence}`);
    throw new Error(
      `the Master is unreachable (${state}): ${consequence}; retry once it is back` +
        (state === "connecting"
          ? " (a Master never reached may also be refusing the Guardian's system user: a configuration from " +
            "before the system account does; write it again with `guardian nats-config`)"
          : ""),
    );
  }

  /** Closes both connections; idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#queue;
    await Promise.all([this.#system.close(), this.#realms.close()]);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function parse<T>(raw: Uint8Array): T | undefined {
  try {
    return JSON.parse(new TextDecoder().decode(raw)) as T;
  } catch {
    return undefined;
  }
}
