/**
 * What the Guardian does, independent of HTTP: realms, registration tokens, registering nodes, and logging a node
 * session in (a certificate signed by the realm key, plus NATS credentials). The HTTP API (api.ts) and the admin
 * CLI on the same host both call this.
 *
 * Tokens are `vreg.<id>.<secret>` (registration), `vcfx.<id>.<secret>` (a node's long-lived conflux token) and
 * `vadm.<secret>` (admin). The prefix makes a token of the wrong kind a clear 401; only SHA-256 hashes of the
 * secrets are stored.
 * @module
 */

import { issueCertificate } from "../crypto/certificate.ts";
import { fromHex, nodeIdOf, sha256, toHex } from "../crypto/identity.ts";
import { pq } from "../crypto/pq.ts";
import { ML_DSA_65_PUBLIC_KEY_BYTES } from "../spec.ts";
import { formatAddress, parseCidr, parseIPv4 } from "../tun/ip.ts";
import { isTag, MAX_SUBNETS, MAX_TAG_BYTES, MAX_TAINTS } from "../wire/certificate.ts";
import { formatCidr, overlaps, subnetToBytes } from "../portal/subnets.ts";
import { type NatsCredentials, type NatsKeys, newNatsKeys, nodeCredentials } from "./nats_auth.ts";
import { type OidcProof, verifyOidc } from "./oidc.ts";
import { ConflictError, type ConfluxRow, type RealmRow, type Store } from "./store.ts";

/** A refused request: `status` is the HTTP status the API answers with. */
export class GuardianError extends Error {
  override name = "GuardianError";
  constructor(readonly status: 400 | 401 | 403 | 404 | 409, message: string) {
    super(message);
  }
}

const base64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));
const base64url = (b: Uint8Array) => base64(b).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
const randomHex = (n: number) => toHex(crypto.getRandomValues(new Uint8Array(n)));
const hashSecret = async (secret: string) => toHex(await sha256(new TextEncoder().encode(secret)));

/** Decodes standard base64; undefined if it is not. */
export function fromBase64(text: string): Uint8Array | undefined {
  try {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  } catch {
    return undefined;
  }
}

const TAINT = /^[A-Za-z0-9_.:-]{1,64}$/;
const REALM_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

function checkTaints(taints: unknown): string[] {
  if (!Array.isArray(taints) || taints.some((t) => typeof t !== "string" || !TAINT.test(t))) {
    throw new GuardianError(400, "taints must be a list of 1-64 character names (letters, digits, _ . : -)");
  }
  const unique = [...new Set(taints as string[])].sort();
  if (unique.length > MAX_TAINTS) throw new GuardianError(400, `at most ${MAX_TAINTS} taints`);
  return unique;
}

function ipToInt(bytes: Uint8Array): number {
  return ((bytes[0]! << 24) >>> 0) + (bytes[1]! << 16) + (bytes[2]! << 8) + bytes[3]!;
}

function intToIp(n: number): Uint8Array {
  return Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** The usable host range of an IPv4 CIDR: first and last address, network and broadcast excluded. */
function hostRange(cidr4: string): { first: number; last: number; prefix: number } {
  const c = parseCidr(cidr4);
  const size = 2 ** (32 - c.prefix);
  const network = Math.floor(ipToInt(c.address) / size) * size;
  return { first: network + 1, last: network + size - 2, prefix: c.prefix };
}

/** A node's IPv6 address: the realm's /64 with the IPv4 address in the low 32 bits. */
function ipv6For(realm: RealmRow, ip4: number): Uint8Array {
  const out = parseCidr(realm.cidr6).address.slice();
  out.set(intToIp(ip4), 12);
  return out;
}

/**
 * The subnets a portal may offer, normalised ("10.50.0.7/24" → "10.50.0.0/24"), or a 400 saying why not: CIDRs, at
 * most MAX_SUBNETS, none wider than /8 (IPv4) or /16 (IPv6), so a portal is never an exit to the internet, and
 * none overlapping the realm's own overlay prefixes.
 */
export function checkSubnets(value: unknown, realm: RealmRow): string[] {
  if (!Array.isArray(value) || value.some((s) => typeof s !== "string")) {
    throw new GuardianError(400, "subnets must be a list of CIDR strings");
  }
  if (value.length > MAX_SUBNETS) throw new GuardianError(400, `at most ${MAX_SUBNETS} subnets`);
  const overlay = [parseCidr(realm.cidr4), { ...parseCidr(realm.cidr6), prefix: 64 }];
  const out: string[] = [];
  for (const text of value as string[]) {
    let c;
    try {
      c = parseCidr(text);
    } catch (error) {
      throw new GuardianError(400, (error as Error).message);
    }
    if (c.prefix < (c.version === 4 ? 8 : 16)) {
      throw new GuardianError(
        400,
        `subnet ${text} is too wide: a portal offers networks, never the internet (at least /8, or /16 for IPv6)`,
      );
    }
    if (overlay.some((o) => overlaps(o, c))) {
      throw new GuardianError(400, `subnet ${text} overlaps the realm's overlay addresses`);
    }
    const normal = formatCidr(c);
    if (!out.includes(normal)) out.push(normal);
  }
  return out;
}

/** Parsed duration like "90s", "15m", "24h", "7d" in ms. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(text);
  if (!m) throw new GuardianError(400, `bad duration "${text}": use a number and s, m, h or d (e.g. 24h)`);
  return Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "s" | "m" | "h" | "d"];
}

/** What a node asks for at registration. */
export interface RegisterRequest {
  tag?: string;
  ip?: string;
  taints?: string[];
  portal?: boolean;
  subnets?: string[];
  oidc?: OidcProof;
}

/** What a node gets at login. */
export interface LoginResponse {
  conflux_id: string;
  certificate: string;
  realm: { id: string; name: string; public_key: string };
  nats: NatsCredentials & { urls: string[] };
  ice_servers: string[];
  expires_at: number;
}

/** How a Guardian runs. */
export interface GuardianOptions {
  /** Certificate (and NATS credential) lifetime. */
  certTtlMs: number;
  /** NATS URLs handed to nodes; empty means "the host the node used to reach the Guardian, at natsPort". */
  natsUrls: string[];
  natsPort: number;
  iceServers: string[];
  clock: () => number;
}

/** The Guardian's behaviour over a Store. */
export class Guardian {
  constructor(readonly store: Store, readonly options: GuardianOptions) {}

  /** The NATS operator/account keys, made on first use and kept in the store. */
  natsKeys(): NatsKeys {
    const saved = this.store.getMeta("nats_keys");
    if (saved) return JSON.parse(saved);
    const keys = newNatsKeys();
    this.store.setMeta("nats_keys", JSON.stringify(keys));
    return keys;
  }

  /** Creates the admin token on first start; returns it then (only then), undefined afterwards. */
  async ensureAdminToken(): Promise<string | undefined> {
    if (this.store.getMeta("admin_hash")) return undefined;
    const secret = base64url(crypto.getRandomValues(new Uint8Array(32)));
    this.store.setMeta("admin_hash", await hashSecret(secret));
    return `vadm.${secret}`;
  }

  /** Throws 401 unless `token` is the admin token. */
  async checkAdmin(token: string | undefined): Promise<void> {
    const secret = token?.startsWith("vadm.") ? token.slice(5) : undefined;
    if (!secret || await hashSecret(secret) !== this.store.getMeta("admin_hash")) {
      throw new GuardianError(401, "this needs the admin token (Authorization: Bearer vadm....)");
    }
  }

  createRealm(name: string, cidr4 = "10.128.0.0/16"): RealmRow {
    if (!REALM_NAME.test(name)) {
      throw new GuardianError(400, `bad realm name "${name}": 1-64 letters, digits, _ . -`);
    }
    let range;
    try {
      range = hostRange(cidr4);
    } catch (error) {
      throw new GuardianError(400, (error as Error).message);
    }
    if (parseCidr(cidr4).version !== 4 || range.prefix > 30 || range.prefix < 8) {
      throw new GuardianError(400, `realm CIDR must be IPv4 with a prefix of /8 to /30, got ${cidr4}`);
    }
    const id = randomHex(16);
    const six = new Uint8Array(16);
    six[0] = 0xfd;
    six.set(crypto.getRandomValues(new Uint8Array(7)), 1);
    const seed = crypto.getRandomValues(new Uint8Array(32));
    const realm: RealmRow = {
      id,
      name,
      cidr4: `${formatAddress(intToIp(range.first - 1))}/${range.prefix}`,
      cidr6: `${formatAddress(six)}/64`,
      keySeed: base64(seed),
      createdAt: this.options.clock(),
    };
    try {
      this.store.addRealm(realm);
    } catch (error) {
      if (error instanceof ConflictError) throw new GuardianError(409, error.message);
      throw error;
    }
    return realm;
  }

  #realm(name: string): RealmRow {
    const realm = this.store.realmByName(name);
    if (!realm) throw new GuardianError(404, `no realm named "${name}"`);
    return realm;
  }

  /** A new registration token; the token text is returned once and never stored. */
  async createToken(o: { realm: string; ttlMs?: number; uses?: number; taints?: string[] }): Promise<
    { id: string; token: string }
  > {
    const realm = this.#realm(o.realm);
    if (o.uses !== undefined && (!Number.isInteger(o.uses) || o.uses < 1)) {
      throw new GuardianError(400, `uses must be a positive integer, got ${o.uses}`);
    }
    const id = randomHex(8);
    const secret = base64url(crypto.getRandomValues(new Uint8Array(32)));
    const now = this.options.clock();
    this.store.addToken({
      id,
      realmId: realm.id,
      secretHash: await hashSecret(secret),
      taints: checkTaints(o.taints ?? []),
      usesLeft: o.uses ?? null,
      expiresAt: o.ttlMs === undefined ? null : now + o.ttlMs,
      revoked: false,
      createdAt: now,
    });
    return { id, token: `vreg.${id}.${secret}` };
  }

  /** Splits `kind.id.secret` and checks the secret's hash; 401 for anything else. */
  async #token(
    kind: "vreg" | "vcfx",
    token: string | undefined,
    lookup: (id: string) => { secretHash: string } | undefined,
  ) {
    const parts = token?.split(".") ?? [];
    const names = { vreg: "a registration token (vreg.…)", vcfx: "a conflux token (vcfx.…)" };
    if (parts.length !== 3 || parts[0] !== kind) {
      const got = ["vreg", "vcfx", "vadm"].includes(parts[0]!)
        ? `a ${parts[0]} token`
        : token
        ? "something else"
        : "no token";
      throw new GuardianError(401, `this needs ${names[kind]} as Bearer token, got ${got}`);
    }
    const row = lookup(parts[1]!);
    if (!row || await hashSecret(parts[2]!) !== row.secretHash) throw new GuardianError(401, "unknown token");
    return parts[1]!;
  }

  async register(
    registrationToken: string | undefined,
    req: RegisterRequest,
  ): Promise<{ conflux_id: string; token: string }> {
    const tokenId = await this.#token("vreg", registrationToken, (id) => this.store.tokenById(id));
    const row = this.store.tokenById(tokenId)!;
    const now = this.options.clock();
    if (row.revoked) throw new GuardianError(403, "this registration token was revoked");
    if (row.expiresAt !== null && now >= row.expiresAt) {
      throw new GuardianError(403, "this registration token has expired");
    }
    if (row.usesLeft !== null && row.usesLeft <= 0) {
      throw new GuardianError(403, "this registration token is used up");
    }
    const tag = req.tag ?? "";
    if (tag !== "" && !isTag(tag)) {
      throw new GuardianError(400, `bad tag "${tag}": a DNS label (a-z, 0-9, -, at most ${MAX_TAG_BYTES})`);
    }
    const taints = req.taints === undefined ? row.taints : checkTaints(req.taints);
    const outside = row.taints.length === 0 ? [] : taints.filter((t) => !row.taints.includes(t));
    if (outside.length > 0) {
      throw new GuardianError(403, `this token does not grant the taint(s) ${outside.join(", ")}`);
    }
    const subnets = checkSubnets(req.subnets ?? [], this.store.realmById(row.realmId)!);
    // The identity check is the only await before the transaction: everything after it runs without yielding.
    if (req.oidc) {
      try {
        await verifyOidc(req.oidc);
      } catch (error) {
        throw new GuardianError(401, (error as Error).message);
      }
    }
    const realm = this.store.realmById(row.realmId)!;
    const id = crypto.randomUUID();
    const secret = base64url(crypto.getRandomValues(new Uint8Array(32)));
    const secretHash = await hashSecret(secret);
    this.store.transaction(() => {
      const ip4 = this.#address(realm, req.ip);
      this.store.addConflux({
        id,
        realmId: realm.id,
        secretHash,
        tag: tag || `node-${id.slice(0, 8)}`,
        ip4,
        taints,
        allowedTaints: row.taints,
        portal: req.portal === true,
        subnets: req.portal === true ? subnets : [], // a node that is no portal offers nothing
        createdAt: now,
      });
      this.store.consumeToken(row.id);
    });
    return { conflux_id: id, token: `vcfx.${id}.${secret}` };
  }

  /** The requested address if it is in the realm and free, else the lowest free one. Runs inside a transaction. */
  #address(realm: RealmRow, requested: string | undefined): number {
    const range = hostRange(realm.cidr4);
    if (requested !== undefined) {
      const bytes = typeof requested === "string" ? parseIPv4(requested.replace(/\/\d+$/, "")) : undefined;
      if (!bytes) throw new GuardianError(400, `bad ip "${requested}": expected an IPv4 address`);
      const n = ipToInt(bytes);
      if (n < range.first || n > range.last) {
        throw new GuardianError(
          400,
          `${requested} is not a host address of realm ${realm.name} (${realm.cidr4})`,
        );
      }
      if (this.store.confluxByIp(realm.id, n)) throw new GuardianError(409, `${requested} is already taken`);
      return n;
    }
    let candidate = range.first;
    for (const taken of this.store.takenAddresses(realm.id)) {
      if (taken > candidate) break;
      if (taken === candidate) candidate++;
    }
    if (candidate > range.last) throw new GuardianError(409, `realm ${realm.name} has no free address left`);
    return candidate;
  }

  async #conflux(token: string | undefined): Promise<ConfluxRow> {
    const id = await this.#token("vcfx", token, (id) => this.store.confluxById(id));
    return this.store.confluxById(id)!;
  }

  async unregister(token: string | undefined, confluxId: string | null): Promise<void> {
    const row = await this.#conflux(token);
    if (confluxId !== null && confluxId !== row.id) {
      throw new GuardianError(403, "a conflux token can only unregister its own conflux");
    }
    this.store.removeConflux(row.id);
  }

  /**
   * A session for a node's fresh key: certificate, realm key, NATS credentials. A `tag` renames the node from
   * now on (a node restarted with a new tag); DNS follows with the new certificate.
   */
  async login(
    token: string | undefined,
    publicKey: unknown,
    requestHost: string,
    change: { tag?: unknown; portal?: unknown; subnets?: unknown } = {},
  ): Promise<LoginResponse> {
    const { tag } = change;
    const row = await this.#conflux(token);
    const key = typeof publicKey === "string" ? fromBase64(publicKey) : undefined;
    if (!key || key.length !== ML_DSA_65_PUBLIC_KEY_BYTES) {
      throw new GuardianError(
        400,
        `public_key must be a base64 ML-DSA-65 public key (${ML_DSA_65_PUBLIC_KEY_BYTES} bytes)`,
      );
    }
    let renamed: string | undefined;
    if (tag !== undefined && tag !== row.tag) {
      if (typeof tag !== "string" || !isTag(tag)) {
        throw new GuardianError(
          400,
          `bad tag ${JSON.stringify(tag)}: a DNS label (a-z, 0-9, -, at most ${MAX_TAG_BYTES})`,
        );
      }
      renamed = tag;
    }
    const realm = this.store.realmById(row.realmId)!;
    if (change.portal !== undefined || change.subnets !== undefined) {
      if (change.portal !== undefined && typeof change.portal !== "boolean") {
        throw new GuardianError(400, "portal must be true or false");
      }
      const portal = change.portal ?? row.portal;
      const subnets = portal ? checkSubnets(change.subnets ?? row.subnets, realm) : [];
      this.store.setPortal(row.id, portal, subnets);
      row.portal = portal;
      row.subnets = subnets;
    }
    // The new tag is written only once every check has passed: a refused login changes nothing.
    if (renamed !== undefined) {
      this.store.setTag(row.id, renamed);
      row.tag = renamed;
    }
    const realmKey = await (await pq()).signingKey(fromBase64(realm.keySeed)!);
    const now = this.options.clock();
    const expiresAt = now + this.options.certTtlMs;
    const nodeId = toHex(await nodeIdOf(key));
    const certificate = await issueCertificate(realmKey, {
      serial: crypto.getRandomValues(new Uint8Array(16)),
      conflux: fromHex(row.id.replaceAll("-", "")),
      realm: fromHex(realm.id),
      realmName: realm.name,
      tag: row.tag,
      ipv4: intToIp(row.ip4),
      prefix4: parseCidr(realm.cidr4).prefix,
      ipv6: ipv6For(realm, row.ip4),
      prefix6: 64,
      taints: row.taints,
      portal: row.portal ? 1 : 0,
      subnets: row.subnets.map((s) => subnetToBytes(parseCidr(s))),
      nodeKey: key,
      notBefore: now,
      notAfter: expiresAt,
    });
    const host = requestHost.includes(":") && !requestHost.startsWith("[")
      ? requestHost.slice(0, requestHost.lastIndexOf(":"))
      : requestHost.replace(/:\d+$/, "");
    const urls = this.options.natsUrls.length > 0
      ? this.options.natsUrls
      : [`nats://${host}:${this.options.natsPort}`];
    return {
      conflux_id: row.id,
      certificate: base64(certificate),
      realm: { id: realm.id, name: realm.name, public_key: base64(realmKey.publicKey) },
      nats: { ...await nodeCredentials(this.natsKeys(), { realmId: realm.id, nodeId, expiresAt }), urls },
      ice_servers: this.options.iceServers,
      expires_at: expiresAt,
    };
  }

  /** Adds and removes taints of the node holding `token`; the node logs in again to get a certificate with them. */
  async setTaints(token: string | undefined, change: { add?: unknown; remove?: unknown }): Promise<string[]> {
    const row = await this.#conflux(token);
    const add = checkTaints(change.add ?? []);
    const remove = checkTaints(change.remove ?? []);
    const outside = row.allowedTaints.length === 0 ? [] : add.filter((t) => !row.allowedTaints.includes(t));
    if (outside.length > 0) {
      throw new GuardianError(403, `this conflux may not hold the taint(s) ${outside.join(", ")}`);
    }
    const taints = checkTaints([...row.taints.filter((t) => !remove.includes(t)), ...add]);
    this.store.setTaints(row.id, taints);
    return taints;
  }
}
