/**
 * NATS decentralised JWT auth for the Master: one operator, a system account, one account for all realms, an
 * account of the Guardians' own (the only one with JetStream: their shared state, replication.ts), and a user JWT
 * per node session whose permissions confine it to its realm's subjects and its own inbox. nats-server checks
 * these offline. Accounts live in its `full` resolver (a directory of JWTs, gossiped within a cluster), so
 * the Guardian can push a re-signed realms account holding revocations, which makes every server disconnect the
 * revoked users at once and refuse them afterwards.
 * @module
 */

import * as jwt from "@nats-io/jwt";
import * as nkeys from "@nats-io/nkeys";
import { Codec } from "@nats-io/nkeys/lib/codec.js";
import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey, type KeyObject, sign as signEd25519 } from "node:crypto";
import { realmSubjects } from "../control/subjects.ts";
import { MAX_CONTROL_MESSAGE_BYTES, MAX_DATA_MESSAGE_BYTES } from "../spec.ts";

/** The operator and account keys, kept by the Guardian (as nkey seeds). */
export interface NatsKeys {
  operatorSeed: string;
  accountSeed: string;
  /** The system account's; keys saved before revocation existed lack it (see {@link withSystemKey}). */
  systemSeed?: string;
  /**
   * The Guardians' account (JetStream on, no node in it); keys saved before replicated state existed lack it
   * (see {@link completeKeys}).
   */
  guardianSeed?: string;
}

const text = new TextDecoder();
const bytes = (s: string) => new TextEncoder().encode(s);
const seedOf = (kp: nkeys.KeyPair) => text.decode(kp.getSeed());

/** Makes a fresh operator, system account and realms account. */
export function newNatsKeys(): NatsKeys {
  return {
    operatorSeed: seedOf(nkeys.createOperator()),
    accountSeed: seedOf(nkeys.createAccount()),
    systemSeed: seedOf(nkeys.createAccount()),
    guardianSeed: seedOf(nkeys.createAccount()),
  };
}

/** `keys` with a system account, made now if they have none (the caller saves the result). */
export function withSystemKey(keys: NatsKeys): NatsKeys {
  return keys.systemSeed ? keys : { ...keys, systemSeed: seedOf(nkeys.createAccount()) };
}

/** `keys` with every account (system, Guardians'), those missing made now (the caller saves the result). */
export function completeKeys(keys: NatsKeys): NatsKeys {
  const withSystem = withSystemKey(keys);
  return withSystem.guardianSeed
    ? withSystem
    : { ...withSystem, guardianSeed: seedOf(nkeys.createAccount()) };
}

/** Whether `value` is a set of NATS keys as the Guardian keeps them (seeds of the right kinds). */
export function isNatsKeys(value: unknown): value is NatsKeys {
  const v = value as Record<string, unknown> | null;
  const seed = (s: unknown, prefix: string) => {
    try {
      return typeof s === "string" && s.startsWith(prefix) && nkeys.fromSeed(bytes(s)).getPublicKey() !== "";
    } catch {
      return false;
    }
  };
  return typeof v === "object" && v !== null && seed(v.operatorSeed, "SO") && seed(v.accountSeed, "SA") &&
    (v.systemSeed === undefined || seed(v.systemSeed, "SA")) &&
    (v.guardianSeed === undefined || seed(v.guardianSeed, "SA"));
}

/** What a user needs to connect: its JWT and nkey seed. */
export interface NatsCredentials {
  jwt: string;
  seed: string;
  /** The inbox prefix the user must use (its permissions allow no other). */
  inboxPrefix: string;
  /** The user's public nkey: what a revocation names. */
  user: string;
}

/** Revokes the JWTs of `user` (a public nkey) issued at or before `at` (ms). */
export interface Revocation {
  user: string;
  at: number;
}

/** The realms account's name in its JWT. */
const ACCOUNT_NAME = "realms";
/** The Guardians' account's name in its JWT. */
const GUARDIAN_ACCOUNT_NAME = "guardians";

/**
 * Issue time (s) of the account JWTs in the server configuration. Older than any JWT the Guardian pushes, so a
 * restarted server keeps the pushed one (with its revocations) that its resolver directory holds: nats-server
 * stores a preloaded account only if it is not older than the stored one.
 */
const PRELOAD_ISSUED_AT = 1_704_067_200; // 2024-01-01

// Explicit limits: an account JWT with empty limits makes nats-server refuse every connection.
const LIMITS = {
  conn: -1,
  subs: -1,
  data: -1,
  payload: -1,
  imports: -1,
  exports: -1,
  wildcards: true,
  leaf: -1,
};

/** The Guardians' account alone may use JetStream (unlimited, within what each server's `jetstream` allows). */
const JETSTREAM_LIMITS = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };

/** DER header of a PKCS #8 Ed25519 private key; the 32-byte seed follows. */
const PKCS8_ED25519 = Uint8Array.of(
  0x30,
  0x2e,
  0x02,
  0x01,
  0x00,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x70,
  0x04,
  0x22,
  0x04,
  0x20,
);

/**
 * An nkey pair that derives its key once and signs with the runtime's Ed25519. nkeys' own pair re-derives the key
 * from its seed in pure JavaScript (3-10 ms) at every getPublicKey, getPrivateKey and sign, and a node login did
 * five of them (~80 ms of event loop). Same keys and, Ed25519 being deterministic, the same signatures.
 */
class NativePair implements nkeys.KeyPair {
  readonly #inner: nkeys.KeyPair;
  readonly #key: KeyObject;
  readonly #raw: { seed: Uint8Array; public: Uint8Array };
  readonly #public: string;
  #private: Uint8Array | undefined;

  constructor(seed: Uint8Array) {
    this.#inner = nkeys.fromSeed(seed);
    const { prefix, buf } = Codec.decodeSeed(seed);
    const der = new Uint8Array(PKCS8_ED25519.length + 32);
    der.set(PKCS8_ED25519);
    der.set(buf, PKCS8_ED25519.length);
    this.#key = createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" });
    // An SPKI Ed25519 key is a 12-byte header and the 32-byte public key.
    const spki = new Uint8Array(createPublicKey(this.#key).export({ format: "der", type: "spki" }));
    this.#raw = { seed: buf, public: spki.subarray(12) };
    this.#public = text.decode(Codec.encode(prefix, this.#raw.public));
  }

  getPublicKey(): string {
    return this.#public;
  }
  getPrivateKey(): Uint8Array {
    // nkeys' private key is the NaCl secret key (seed || public key); the JWT library asks for it to check a signer.
    this.#private ??= Codec.encode(
      nkeys.Prefix.Private,
      new Uint8Array([...this.#raw.seed, ...this.#raw.public]),
    );
    return this.#private;
  }
  getSeed(): Uint8Array {
    return this.#inner.getSeed();
  }
  sign(input: Uint8Array): Uint8Array {
    return new Uint8Array(signEd25519(null, input, this.#key));
  }
  verify(input: Uint8Array, sig: Uint8Array): boolean {
    return this.#inner.verify(input, sig);
  }
  clear(): void {
    this.#inner.clear();
  }
  seal(input: Uint8Array, recipient: string, nonce?: Uint8Array): Uint8Array {
    return this.#inner.seal(input, recipient, nonce);
  }
  open(message: Uint8Array, sender: string): Uint8Array | null {
    return this.#inner.open(message, sender);
  }
}

/** Key pairs by seed (the Guardian's few account and operator keys); other seeds are other entries. */
const pairs = new Map<string, NativePair>();
const MAX_PAIRS = 32;

function keyPair(seed: string): nkeys.KeyPair {
  let pair = pairs.get(seed);
  if (!pair) {
    if (pairs.size >= MAX_PAIRS) pairs.clear();
    pair = new NativePair(bytes(seed));
    pairs.set(seed, pair);
  }
  return pair;
}

/** A fresh user key pair (as nkeys.createUser makes, without its per-use derivations). */
function newUser(): nkeys.KeyPair {
  return new NativePair(Codec.encodeSeed(nkeys.Prefix.User, crypto.getRandomValues(new Uint8Array(32))));
}

function systemPair(keys: NatsKeys): nkeys.KeyPair {
  if (!keys.systemSeed) {
    throw new TypeError("the NATS keys have no system account: load them through withSystemKey() first");
  }
  return keyPair(keys.systemSeed);
}

function guardianPair(keys: NatsKeys): nkeys.KeyPair {
  if (!keys.guardianSeed) {
    throw new TypeError("the NATS keys have no Guardians' account: load them through completeKeys() first");
  }
  return keyPair(keys.guardianSeed);
}

/** The public keys of the realms and system accounts. */
export function accountKeys(keys: NatsKeys): { account: string; system: string } {
  return { account: keyPair(keys.accountSeed).getPublicKey(), system: systemPair(keys).getPublicKey() };
}

const base64url = (b: Uint8Array | string) => jwt.Base64UrlCodec.encode(b);

function isUserKey(key: string): boolean {
  try {
    return key.startsWith("U") && nkeys.fromPublic(key).getPublicKey() === key;
  } catch {
    return false;
  }
}

/**
 * Signs an account JWT with a chosen issue time: the JWT library stamps "now", but the resolver orders account
 * JWTs by issue time (see PRELOAD_ISSUED_AT, and {@link realmsAccountJwt}).
 */
async function accountJwtAt(
  name: string,
  account: nkeys.KeyPair,
  nats: Partial<jwt.Account>,
  operator: nkeys.KeyPair,
  issuedAt: number,
): Promise<string> {
  const claims: Record<string, unknown> = {
    aud: "NATS",
    name,
    sub: account.getPublicKey(),
    iss: operator.getPublicKey(),
    iat: issuedAt,
    nats: { ...nats, type: "account", version: 2 },
  };
  // The server only needs the id to differ between different contents; a hash of them does that.
  claims.jti = base64url(
    new Uint8Array(await crypto.subtle.digest("SHA-256", bytes(JSON.stringify(claims)))),
  );
  const signed = `${base64url(JSON.stringify({ typ: "JWT", alg: "ed25519-nkey" }))}.${
    base64url(JSON.stringify(claims))
  }`;
  return `${signed}.${base64url(operator.sign(bytes(signed)))}`;
}

/**
 * The realms account JWT revoking `revocations`, issued at `issuedAt` (ms, whole seconds count). Within a cluster
 * the resolvers keep the JWT issued last, so each push must be issued later than the one before.
 */
export async function realmsAccountJwt(
  keys: NatsKeys,
  options: { revocations: Revocation[]; issuedAt: number },
): Promise<string> {
  const revocations: Record<string, number> = {};
  for (const r of options.revocations) {
    if (!isUserKey(r.user)) {
      throw new TypeError(`a revocation names a user's public nkey (U...), got "${r.user}"`);
    }
    // nats-server revokes the user's JWTs with iat <= this; a JWT's iat is its issue time rounded down.
    revocations[r.user] = Math.max(revocations[r.user] ?? 0, Math.floor(r.at / 1000));
  }
  return await accountJwtAt(
    ACCOUNT_NAME,
    keyPair(keys.accountSeed),
    { limits: LIMITS, ...(options.revocations.length > 0 ? { revocations } : {}) } as Partial<jwt.Account>,
    keyPair(keys.operatorSeed),
    Math.floor(options.issuedAt / 1000),
  );
}

/**
 * The operator and account JWTs a nats-server needs (accounts as issued for the preload); the Guardians' account
 * when the keys have one.
 */
export async function serverJwts(
  keys: NatsKeys,
): Promise<{
  operator: string;
  account: string;
  accountKey: string;
  system: string;
  systemKey: string;
  guardian?: { jwt: string; key: string };
}> {
  const operator = keyPair(keys.operatorSeed);
  const system = systemPair(keys);
  const operatorJwt = await jwt.encodeOperator("veilnet", operator, {
    system_account: system.getPublicKey(),
  });
  const account = await accountJwtAt(
    ACCOUNT_NAME,
    keyPair(keys.accountSeed),
    { limits: LIMITS } as Partial<jwt.Account>,
    operator,
    PRELOAD_ISSUED_AT,
  );
  const systemJwt = await accountJwtAt(
    "SYS",
    system,
    { limits: LIMITS } as Partial<jwt.Account>,
    operator,
    PRELOAD_ISSUED_AT,
  );
  const guardian = keys.guardianSeed
    ? {
      jwt: await accountJwtAt(
        GUARDIAN_ACCOUNT_NAME,
        guardianPair(keys),
        { limits: { ...LIMITS, ...JETSTREAM_LIMITS } } as Partial<jwt.Account>,
        operator,
        PRELOAD_ISSUED_AT,
      ),
      key: guardianPair(keys).getPublicKey(),
    }
    : undefined;
  return {
    operator: operatorJwt,
    account,
    accountKey: keyPair(keys.accountSeed).getPublicKey(),
    system: systemJwt,
    systemKey: system.getPublicKey(),
    ...(guardian ? { guardian } : {}),
  };
}

/**
 * Most subscriptions one node session may hold: its own subjects, one per peer it knows (their announcements) and
 * one per open tether (route queries), with room for a relay that knows thousands.
 */
export const NODE_SUBSCRIPTIONS = 20_000;
/** Largest message a node may publish: a control message or a sealed data message, whichever is larger. */
export const NODE_PAYLOAD_BYTES = Math.max(MAX_CONTROL_MESSAGE_BYTES, MAX_DATA_MESSAGE_BYTES);

/** What a node session may hear and say besides its own subjects: its names on the realm. */
export interface NodeSubjects {
  /** The conflux id (32 hex digits): the node announces on `peer.<conflux>` and nowhere else. */
  conflux: string;
  tag: string;
  /** Its overlay addresses (4 and 16 bytes): it hears the lookups of these. */
  addresses: Uint8Array[];
  /** The portal subnets it routes (granted and offered): it hears lookups inside them, and may announce to all. */
  subnets: { address: Uint8Array; prefix: number }[];
}

/**
 * A user JWT for one node session, valid until `expiresAt` (ms). It may hear only what is for it (its own node and
 * data subjects, lookups of its own tag, addresses and subnets, the realm's broadcasts and portals, and the
 * announcements and route queries it asks for), and may say only what a node says: to other nodes, lookups,
 * route queries, and announcements as itself. The realm-wide broadcast is the Guardian's alone; `portals` a
 * portal's.
 */
export async function nodeCredentials(
  keys: NatsKeys,
  session: { realmId: string; nodeId: string; expiresAt: number },
  node: NodeSubjects,
): Promise<NatsCredentials> {
  const account = keyPair(keys.accountSeed);
  const user = newUser();
  const s = realmSubjects(session.realmId);
  const inboxPrefix = `_INBOX_${session.nodeId}`;
  const token = await jwt.encodeUser(`node-${session.nodeId}`, user, account, {
    pub: {
      allow: [
        `${s.prefix}.node.*`,
        `${s.prefix}.data.*`,
        `${s.prefix}.who.>`,
        `${s.prefix}.via.*`,
        s.relays,
        s.report,
        s.peer(node.conflux),
        ...(node.subnets.length > 0 ? [s.portals] : []),
      ],
    },
    sub: {
      allow: [
        s.broadcast,
        s.portals,
        `${s.prefix}.peer.*`,
        `${s.prefix}.via.*`,
        s.relays,
        s.node(session.nodeId),
        s.data(session.nodeId),
        s.whoTag(node.tag),
        ...node.addresses.map((a) => s.whoAddress(a)),
        ...node.subnets.map((n) => s.whoAddress(n.address, n.prefix)),
        `${inboxPrefix}.>`,
      ],
    },
    // A member cannot grow the Master's memory without bound: subscriptions and message size are capped.
    subs: NODE_SUBSCRIPTIONS,
    payload: NODE_PAYLOAD_BYTES,
    data: -1,
  }, { exp: Math.floor(session.expiresAt / 1000) });
  return { jwt: token, seed: seedOf(user), inboxPrefix, user: user.getPublicKey() };
}

/**
 * The Guardian's own users, made fresh (new nkeys) on every call and held in memory only: `system` (system
 * account: pushes account JWTs, asks for connections) and `realms` (realms account, publishes and subscribes
 * under `veilnet.>`). They carry no expiry, as their connections outlive any fixed term.
 */
export async function guardianCredentials(
  keys: NatsKeys,
): Promise<{ system: NatsCredentials; realms: NatsCredentials }> {
  const systemUser = nkeys.createUser();
  const realmsUser = nkeys.createUser();
  const realmsInbox = "_INBOX_guardian";
  return {
    system: {
      jwt: await jwt.encodeUser("guardian-system", systemUser, systemPair(keys)),
      seed: seedOf(systemUser),
      inboxPrefix: "_INBOX",
      user: systemUser.getPublicKey(),
    },
    realms: {
      jwt: await jwt.encodeUser("guardian", realmsUser, keyPair(keys.accountSeed), {
        pub: { allow: ["veilnet.>"] },
        sub: { allow: ["veilnet.>", `${realmsInbox}.>`] },
      }),
      seed: seedOf(realmsUser),
      inboxPrefix: realmsInbox,
      user: realmsUser.getPublicKey(),
    },
  };
}

/**
 * A Guardian's user in the Guardians' account, for its shared state (JetStream), made fresh on every call and held
 * in memory only. No node is in that account, so no node can reach the state, whatever its permissions say.
 */
export async function guardianStateCredentials(keys: NatsKeys): Promise<NatsCredentials> {
  const user = nkeys.createUser();
  const inboxPrefix = "_INBOX_guardian_state";
  return {
    jwt: await jwt.encodeUser("guardian-state", user, guardianPair(keys)),
    seed: seedOf(user),
    inboxPrefix,
    user: user.getPublicKey(),
  };
}

/** Who a user JWT names: its public nkey and its name. Reads without verifying (the server has). */
export function userOfJwt(token: string): { user: string; name: string } | undefined {
  try {
    const claims = JSON.parse(
      text.decode(jwt.Base64UrlCodec.decode(token.split(".")[1]!, true) as Uint8Array),
    );
    return typeof claims.sub === "string" && typeof claims.name === "string"
      ? { user: claims.sub, name: claims.name }
      : undefined;
  } catch {
    return undefined;
  }
}

/** nats-server configuration for the Master (one server, or one member of a cluster). */
export async function natsServerConfig(
  keys: NatsKeys,
  options: {
    host?: string;
    port: number;
    cluster?: { name: string; listen: string; routes: string[] };
    /** This server's own directory for account JWTs (its `full` resolver). */
    resolverDir: string;
    /** Its name in the cluster (JetStream needs one per server). */
    serverName?: string;
    /** Its own JetStream directory: JetStream is on (for the Guardians' account only) when given. */
    jetstreamDir?: string;
    /** Its certificate and key (PEM files): clients must then speak TLS. Plain text when undefined. */
    tls?: { certFile: string; keyFile: string };
  },
): Promise<string> {
  const { operator, account, accountKey, system, systemKey, guardian } = await serverJwts(keys);
  if (options.jetstreamDir !== undefined && !guardian) {
    throw new TypeError(
      "JetStream for the Guardians' state needs their account: load the keys via completeKeys()",
    );
  }
  const preload = [`${accountKey}: ${account}`, `${systemKey}: ${system}`];
  if (guardian) preload.push(`${guardian.key}: ${guardian.jwt}`);
  const lines = [
    "# nats-server configuration written by `veilnet-conflux guardian nats-config`.",
    ...(options.serverName ? [`server_name: ${JSON.stringify(options.serverName)}`] : []),
    `host: ${JSON.stringify(options.host ?? "0.0.0.0")}`,
    `port: ${options.port}`,
    `operator: ${operator}`,
    `system_account: ${systemKey}`,
    // `full`: accounts kept on disk and gossiped in the cluster, updated by the Guardian's pushes (never deleted).
    "resolver: {",
    "  type: full",
    `  dir: ${JSON.stringify(options.resolverDir)}`,
    "  allow_delete: false",
    '  interval: "2m"',
    "}",
    `resolver_preload: {\n  ${preload.join("\n  ")}\n}`,
  ];
  if (options.tls) {
    lines.push(
      "tls {",
      `  cert_file: ${JSON.stringify(options.tls.certFile)}`,
      `  key_file: ${JSON.stringify(options.tls.keyFile)}`,
      "  timeout: 5",
      "}",
    );
  }
  if (options.jetstreamDir !== undefined) {
    // Only the Guardians' account has JetStream limits in its JWT: the realms account (nodes) has none.
    lines.push("jetstream {", `  store_dir: ${JSON.stringify(options.jetstreamDir)}`, "}");
  }
  if (options.cluster) {
    lines.push(
      "cluster {",
      `  name: ${JSON.stringify(options.cluster.name)}`,
      `  listen: ${JSON.stringify(options.cluster.listen)}`,
      `  routes: [${options.cluster.routes.map((r) => JSON.stringify(r)).join(", ")}]`,
      "}",
    );
  }
  return lines.join("\n") + "\n";
}
