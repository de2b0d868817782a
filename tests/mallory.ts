/**
 * The hostile member's toolkit: what a modified node binary could do with a real registration, built from the
 * project's own modules. It logs in with its conflux token and a key of its own (`guardianClient.login`),
 * joins the Master with the NATS credentials it got (`connectNats`), signs what it sends with its certified
 * key (`signControl`), reads what it hears (`decodeControl`, `decodeCertificate`: no verification, an
 * attacker takes what it can), forms real WebRTC tethers (`Tethers`) and sends data envelopes of its own
 * making.
 *
 * It runs as a process (inside the attacker's network namespace), driven by one JSON command a line on stdin
 * (`{ "id": 1, "op": "join", ... }`), answering one JSON line each on stdout; `Mallory` in hostile_test.ts is
 * the test's side. (A process of its own also keeps libdatachannel out of the test runner's workers.) Every
 * answer reports what the attacker saw (HTTP status, error text, timings); the test asserts the refusals at
 * the victims.
 * @module
 */

import { type VerifiedCertificate, verifyCertificate } from "../src/crypto/certificate.ts";
import { signControl } from "../src/crypto/control_signing.ts";
import { fromHex, Identity, toHex } from "../src/crypto/identity.ts";
import { signLogin } from "../src/crypto/login_proof.ts";
import type { ControlChannel } from "../src/control/channel.ts";
import { connectNats } from "../src/control/nats.ts";
import { type RealmSubjects, realmSubjects } from "../src/control/subjects.ts";
import { guardianClient, guardianRequest, trustGuardianCa } from "../src/agent/guardian_client.ts";
import { type LoginResponse } from "../src/guardian/guardian.ts";
import { fromBase64 } from "../src/guardian/rules.ts";
import { DEFAULT_DATA_TTL } from "../src/spec.ts";
import { Tethers } from "../src/tether/tethers.ts";
import { shutdownWebRtc } from "../src/tether/webrtc.ts";
import { decodeCertificate } from "../src/wire/certificate.ts";
import { BROADCAST, ControlKind, decodeControl, LookupKind } from "../src/wire/control.ts";
import { DATA_HEADER_BYTES, DataType, writeDataHeader } from "../src/wire/envelope.ts";

const base64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));
const hexNonce = () => toHex(crypto.getRandomValues(new Uint8Array(16)));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * What the attacker learned about another member (unverified: it only listens): from the answer to its lookup,
 * or an announcement it overheard on the `peer.*` subjects (any member may listen to all of them).
 */
interface Heard {
  nodeId: string;
  publicKey: Uint8Array;
  at: number;
}

/** A route query overheard on the `via.*` subjects: byte for byte, and when (this host's clock, ms). */
interface Overheard {
  bytes: Uint8Array;
  at: number;
}

/** An HTTP outcome as the attacker saw it. */
interface Outcome {
  status: number;
  error?: string;
}

/** Runs a Guardian call and reports its status (200/201 when it worked) or the refusal. */
async function outcome(call: () => Promise<unknown>, okStatus = 200): Promise<Outcome> {
  try {
    await call();
    return { status: okStatus };
  } catch (error) {
    return { status: (error as { status?: number }).status ?? 0, error: (error as Error).message };
  }
}

/** One hostile member's session and what it has heard. */
class Member {
  readonly heard = new Map<string, Heard>();
  /** `<asker hex>/<destination hex>` → the last RouteQuery heard. */
  readonly queries = new Map<string, Overheard>();
  #tethers: Tethers | undefined;
  readonly #received: Uint8Array[] = [];

  private constructor(
    readonly guardian: string,
    readonly token: string,
    readonly identity: Identity,
    readonly login: LoginResponse,
    readonly cert: VerifiedCertificate,
    readonly subjects: RealmSubjects,
    readonly channel: ControlChannel,
    /** The control channel's states, timestamped, and its event log. */
    readonly states: { state: string; at: number }[],
    readonly natsLog: string[],
  ) {}

  /**
   * Logs in for real with a fresh key, joins the Master, listens to everything its credentials let it (every
   * announcement, every route query), and announces itself.
   */
  static async join(guardian: string, token: string, ca: string): Promise<Member> {
    trustGuardianCa(ca);
    const identity = await Identity.generate();
    const login = await guardianClient.login(guardian, token, identity);
    const cert = await verifyCertificate(fromBase64(login.certificate)!, {
      realm: fromHex(login.realm.id),
      realmKey: fromBase64(login.realm.public_key)!,
      now: Date.now(),
    });
    const states: { state: string; at: number }[] = [{ state: "connected", at: Date.now() }];
    const natsLog: string[] = [];
    const channel = await connectNats({
      urls: login.nats.urls,
      ca,
      credentials: () => login.nats,
      inboxPrefix: login.nats.inboxPrefix,
      name: `mallory-${identity.id.slice(0, 8)}`,
      onState: (state) => states.push({ state, at: Date.now() }),
      log: (line) => natsLog.push(`${new Date().toISOString()} ${line}`),
    });
    const subjects = realmSubjects(login.realm.id);
    const m = new Member(guardian, token, identity, login, cert, subjects, channel, states, natsLog);
    channel.subscribe(`${m.subjects.prefix}.peer.*`, (data) => m.#onCertificate(data));
    channel.subscribe(`${m.subjects.prefix}.via.*`, (data) => m.#onQuery(data));
    channel.subscribe(m.subjects.node(identity.id), (data) => void m.#onDirect(data));
    await m.announce();
    return m;
  }

  /** Takes note of the certificate an announcement or an answer carries. */
  #onCertificate(data: Uint8Array): void {
    try {
      const m = decodeControl(data);
      if (m.kind !== ControlKind.Announce && m.kind !== ControlKind.Found) return;
      if (toHex(m.sender) === this.identity.id) return;
      const cert = decodeCertificate(m.body.certificate);
      this.heard.set(cert.tag, { nodeId: toHex(m.sender), publicKey: cert.nodeKey.slice(), at: Date.now() });
    } catch { /* not worth anything to the attacker */ }
  }

  #onQuery(data: Uint8Array): void {
    try {
      const m = decodeControl(data);
      if (m.kind === ControlKind.RouteQuery) {
        this.queries.set(`${toHex(m.sender)}/${toHex(m.body.destination)}`, {
          bytes: data.slice(),
          at: Date.now(),
        });
      }
    } catch { /* ignored */ }
  }

  async #onDirect(data: Uint8Array): Promise<void> {
    try {
      const m = decodeControl(data);
      if (m.kind === ControlKind.TetherSignal) await this.#tethers?.onSignal(toHex(m.sender), m.body);
      else this.#onCertificate(data);
    } catch { /* ignored */ }
  }

  /** Looks a tag up as a node would (with its own certificate); true once the owner answered. */
  async lookup(tag: string): Promise<boolean> {
    const message = await signControl(this.identity, {
      kind: ControlKind.Lookup,
      recipient: BROADCAST,
      certRef: this.cert.ref,
      body: { certificate: this.cert.bytes, what: LookupKind.Tag, key: new TextEncoder().encode(tag) },
    }, Date.now());
    this.channel.publish(this.subjects.whoTag(tag), message);
    const deadline = Date.now() + 2_000;
    while (!this.heard.has(tag) && Date.now() < deadline) await sleep(20);
    return this.heard.has(tag);
  }

  /** A member by the tag in its announcements. */
  member(tag: string): Heard {
    const h = this.heard.get(tag);
    if (!h) {
      throw new Error(`mallory has not learned ${tag} (learned: ${[...this.heard.keys()]})`);
    }
    return h;
  }

  /** A freshly signed Announce carrying this member's certificate (the one it logged in with). */
  announcement(): Promise<Uint8Array> {
    return signControl(this.identity, {
      kind: ControlKind.Announce,
      recipient: BROADCAST,
      certRef: this.cert.ref,
      body: { certificate: this.cert.bytes, leaving: 0 },
    }, Date.now());
  }

  async announce(): Promise<void> {
    this.channel.publish(this.subjects.peer(toHex(this.cert.conflux)), await this.announcement());
  }

  /** A signed RouteAnswer to `to`: "I reach `destination`". */
  async routeAnswer(to: string, destination: Uint8Array, rttMs: number): Promise<void> {
    const message = await signControl(this.identity, {
      kind: ControlKind.RouteAnswer,
      recipient: fromHex(to),
      certRef: this.cert.ref,
      body: { destination, rttMs },
    }, Date.now());
    this.channel.publish(this.subjects.node(to), message);
  }

  /** The tether to `peer`, formed like any node's: signed offers over the Master, then WebRTC. */
  tethers(): Tethers {
    return this.#tethers ??= new Tethers({
      self: this.identity.id,
      signal: async (peer, signal) => {
        const message = await signControl(this.identity, {
          kind: ControlKind.TetherSignal,
          recipient: fromHex(peer),
          certRef: this.cert.ref,
          body: signal,
        }, Date.now());
        this.channel.publish(this.subjects.node(peer), message);
      },
      iceServers: () => this.login.ice_servers,
      onMessage: (_peer, data) => this.#received.push(data.slice()),
    });
  }

  /** Data messages that came over tethers. */
  get received(): number {
    return this.#received.length;
  }

  async close(): Promise<void> {
    this.#tethers?.close();
    await Promise.race([this.channel.close().catch(() => {}), sleep(2_000)]);
  }
}

/** A login whose body names `publicKey`, signed by `signer` (or not signed at all). */
async function loginWithKey(
  guardian: string,
  token: string,
  publicKey: Uint8Array,
  signer: Identity | undefined,
): Promise<Outcome> {
  const body = new TextEncoder().encode(JSON.stringify({
    public_key: base64(publicKey),
    timestamp: Date.now(),
    nonce: hexNonce(),
  }));
  const headers: Record<string, string> = signer
    ? { "veilnet-signature": base64(await signLogin(signer, token.split(".")[1] ?? "", body)) }
    : {};
  return await outcome(() =>
    guardianRequest(guardian, "POST", "/conflux/session/login", token, body, headers)
  );
}

/** The commands, by name. Each returns what the attacker saw. */
type Args = Record<string, unknown>;
let member: Member | undefined;
const me = () => {
  if (!member) throw new Error("log in first");
  return member;
};

const commands: Record<string, (a: Args) => Promise<unknown>> = {
  /** Logs in with the conflux token and a fresh key, joins the Master, announces. */
  async join(a) {
    member = await Member.join(a.guardian as string, a.token as string, a.ca as string);
    return { nodeId: member.identity.id, tag: member.cert.tag };
  },

  /** Looks a tag up; whether its owner answered. */
  async lookup(a) {
    return { found: await me().lookup(a.tag as string) };
  },

  /** Whom it has learned (from answers and overheard announcements). */
  heard() {
    return Promise.resolve({
      tags: Object.fromEntries([...me().heard].map(([tag, h]) => [tag, h.nodeId])),
    });
  },

  /** `count` registrations at once with one registration token, straight to the Guardian's HTTP API. */
  async register(a) {
    const count = a.count as number;
    const results = await Promise.all(
      Array.from({ length: count }, (_, i) =>
        outcome(
          () =>
            guardianClient.register(a.guardian as string, a.token as string, {
              tag: `${a.tagPrefix}-${i}`,
              taints: a.taints,
            }),
          201,
        )),
    );
    return { results };
  },

  /**
   * Logs in with another member's public key (taken from its certificate): signed with mallory's own key, and
   * not signed at all; then with its own key, which must still work.
   */
  async loginWithOthersKey(a) {
    const m = me();
    const key = m.member(a.tag as string).publicKey;
    return {
      signedByMallory: await loginWithKey(m.guardian, m.token, key, m.identity),
      unsigned: await loginWithKey(m.guardian, m.token, key, undefined),
      own: await outcome(() => guardianClient.login(m.guardian, m.token, m.identity)),
    };
  },

  /** Logs in with its own key, asking for a change (a tag, portal subnets) as `run` would. */
  async login(a) {
    const m = me();
    return await outcome(() =>
      guardianClient.login(m.guardian, m.token, m.identity, a.change as Record<string, never>)
    );
  },

  /**
   * Republishes a route query it overheard (`asker` about `destination`, node ids) byte for byte to node `to`,
   * `times` times, once one was heard (waiting up to `waitMs`).
   */
  async replay(a) {
    const m = me();
    const key = `${a.asker}/${a.destination}`;
    const deadline = Date.now() + (a.waitMs as number);
    while (!m.queries.has(key)) {
      if (Date.now() > deadline) throw new Error(`no route query of ${key} overheard`);
      await sleep(50);
    }
    const q = m.queries.get(key)!;
    for (let i = 0; i < (a.times as number); i++) m.channel.publish(m.subjects.node(a.to as string), q.bytes);
    return { ageMs: Date.now() - q.at, bytes: q.bytes.length };
  },

  /**
   * A forged RouteAnswer to `to` (a tag it learned) claiming to reach `destination` (a node id): once right after
   * `to` asked about it (waiting up to `waitMs` for a question at most `freshMs` old), and once for a
   * destination nobody asked about.
   */
  async forgeRouteAnswers(a) {
    const m = me();
    const to = m.member(a.to as string).nodeId;
    const dest = a.destination as string;
    const deadline = Date.now() + (a.waitMs as number);
    const asked = () => m.queries.get(`${to}/${dest}`)?.at ?? -Infinity;
    while (Date.now() - asked() > (a.freshMs as number)) {
      if (Date.now() > deadline) throw new Error(`${a.to} did not ask the realm about ${a.destination}`);
      await sleep(50);
    }
    const queryAgeMs = Date.now() - asked();
    await m.routeAnswer(to, fromHex(dest), 1);
    const nobody = crypto.getRandomValues(new Uint8Array(16));
    await m.routeAnswer(to, nobody, 1);
    return { queryAgeMs };
  },

  /**
   * Forms a real tether to `via` (a tag it learned) and sends it `count` data envelopes for `destination` (a
   * node id; sealed with no key anyone holds: the attacker has no stream to it, it only wants the relay to
   * carry them).
   */
  async relay(a) {
    const m = me();
    const via = m.member(a.via as string).nodeId;
    const dest = fromHex(a.destination as string);
    const tethers = m.tethers();
    const started = Date.now();
    const open = await tethers.ensure(via);
    if (!open) return { tether: false };
    const formedMs = Date.now() - started;
    const stream = crypto.getRandomValues(new Uint8Array(8));
    let sent = 0;
    for (let counter = 0; counter < (a.count as number); counter++) {
      const message = new Uint8Array(DATA_HEADER_BYTES + 120);
      crypto.getRandomValues(message.subarray(DATA_HEADER_BYTES));
      writeDataHeader(message, {
        type: DataType.Packets,
        destination: dest,
        stream,
        counter,
        ttl: DEFAULT_DATA_TTL,
      });
      if (tethers.send(via, message)) sent++;
      await sleep(20);
    }
    return { tether: true, formedMs, sent, tethers: tethers.count };
  },

  /**
   * Floods nodes `to` (node ids) for `seconds` at full speed, round after round: an overheard route query of
   * `asker` replayed; random bytes; a message header claiming a 4 GiB body; a route answer in the asker's name
   * (naming its certificate, so the victim must check the signature) signed by mallory; and a route answer
   * nobody asked for, signed by mallory.
   */
  async flood(a) {
    const m = me();
    const to = a.to as string[];
    const replay = [...m.queries.entries()].find(([key]) => key.startsWith(`${a.asker}/`))?.[1].bytes;
    const forge = async (kind: "forged" | "unasked") => {
      const message = (await signControl(m.identity, {
        kind: ControlKind.RouteAnswer,
        recipient: BROADCAST,
        certRef: m.cert.ref,
        body: { destination: crypto.getRandomValues(new Uint8Array(16)), rttMs: 1 },
      }, Date.now())).slice();
      if (kind === "forged" && replay) {
        message.set(replay.subarray(3, 19), 3); // the asker's id...
        message.set(replay.subarray(35, 51), 35); // ...and its certificate's reference
      }
      return message;
    };
    const oversize = (await forge("unasked")).slice(0, 79);
    new DataView(oversize.buffer).setUint32(75, 0xffffffff);
    const started = Date.now();
    let sent = 0;
    let round = 0;
    while (Date.now() - started < (a.seconds as number) * 1000) {
      const batch = [
        ...(replay ? [replay] : []),
        crypto.getRandomValues(new Uint8Array(200 + (round % 50) * 100)),
        oversize,
        await forge("forged"),
        await forge("unasked"),
      ];
      for (const id of to) for (const message of batch) m.channel.publish(m.subjects.node(id), message);
      sent += batch.length * to.length;
      if (++round % 10 === 0) await m.channel.flush();
    }
    await m.channel.flush();
    return { sent, seconds: (Date.now() - started) / 1000, replayed: replay !== undefined };
  },

  /** The control channel's states (timestamped) and event log, and what it received over tethers. */
  nats() {
    const m = me();
    return Promise.resolve({
      state: m.channel.state,
      states: m.states,
      log: m.natsLog.slice(-20),
      tetherMessages: m.received,
    });
  },

  /** A brand-new connection to the Master with the credentials of its (last) login. */
  async reconnect(a) {
    const m = me();
    const attempt = connectNats({
      urls: m.login.nats.urls,
      credentials: () => m.login.nats,
      inboxPrefix: m.login.nats.inboxPrefix,
      name: "mallory-again",
    });
    const timeout = sleep(a.waitMs as number).then(() => "timeout" as const);
    const result = await Promise.race([attempt.then((c) => ({ c }), (e: Error) => ({ e })), timeout]);
    if (result === "timeout") return { connected: false, error: "no answer in time" };
    if ("c" in result) {
      await result.c.close();
      return { connected: true };
    }
    return { connected: false, error: result.e.message };
  },

  /** A freshly signed announcement with its (pre-revocation) certificate, for an accomplice to deliver. */
  async announcement() {
    return { bytes: base64(await me().announcement()) };
  },

  /** Publishes raw bytes to node `to` (an accomplice delivering for a revoked member). */
  publish(a) {
    const m = me();
    m.channel.publish(m.subjects.node(a.to as string), fromBase64(a.bytes as string)!);
    return Promise.resolve({});
  },
};

/** Serves commands from stdin until "close" or the end of stdin. */
async function serve(): Promise<void> {
  const out = (value: unknown) =>
    Deno.stdout.writeSync(new TextEncoder().encode(`${JSON.stringify(value)}\n`));
  let buffered = "";
  const done = new AbortController();
  for await (const chunk of Deno.stdin.readable.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      const { id, op, ...args } = JSON.parse(line) as { id: number; op: string } & Args;
      if (op === "close") {
        await member?.close();
        out({ id, ok: true });
        done.abort();
        break;
      }
      // Commands run concurrently: the test may ask for state while an attack is under way.
      const command = commands[op];
      void (async () => {
        try {
          if (!command) throw new Error(`unknown command ${op}`);
          out({ id, ok: true, ...(await command(args) as object) });
        } catch (error) {
          out({ id, ok: false, error: (error as Error).stack ?? String(error) });
        }
      })();
    }
    if (done.signal.aborted) break;
  }
  await member?.close();
  shutdownWebRtc();
  Deno.exit(0);
}

if (import.meta.main) await serve();
