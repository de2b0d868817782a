/**
 * What the Guardian does, independent of HTTP: realms, registration tokens, registering nodes, and logging a node
 * session in (a certificate signed by the realm key, plus NATS credentials). The HTTP API (api.ts) and the admin
 * CLI on the same host both call this.
 *
 * Tokens are `vreg.<id>.<secret>[.<pin>]` (registration; the pin is the SHA-256 of the Guardian's realm CA, see
 * tls.ts), `vcfx.<id>.<secret>` (a node's long-lived conflux token) and `vadm.<secret>` (admin). The prefix
 * makes a token of the wrong kind a clear 401; only SHA-256 hashes of the secrets are stored.
 * @module
 */

import { type NodeReport, Reports } from "./reports.ts";
import { issueCertificate } from "../crypto/certificate.ts";
import { fromHex, nodeIdOf, toHex } from "../crypto/identity.ts";
import { verifyLogin } from "../crypto/login_proof.ts";
import { pq, type SigningKey } from "../crypto/pq.ts";
import { SeenIds } from "../crypto/control_signing.ts";
import { LOGIN_MAX_SKEW_MS, ML_DSA_65_PUBLIC_KEY_BYTES, ML_DSA_65_SIGNATURE_BYTES } from "../spec.ts";
import { formatAddress, parseCidr, parseIPv4 } from "../tun/ip.ts";
import type { CountryOf } from "../../ffi/geoip.ts";
import { ACCESS_TAINTS, ACCESS_TEAMS, identityProblem, isTag, MAX_TAG_BYTES } from "../wire/certificate.ts";
import { subnetToBytes } from "../portal/subnets.ts";
import {
  completeKeys,
  type NatsCredentials,
  type NatsKeys,
  newNatsKeys,
  nodeCredentials,
} from "./nats_auth.ts";
import { loginIceServers, type TurnConfig } from "./ice.ts";
import { claimedIssuer, isAdministrator, type VerifiedIdentity, verifyIdentity } from "./oidc.ts";
import { checkTeams, People } from "./people.ts";
import { identityTag } from "../crypto/identity_tags.ts";
import { tokenPin } from "./tls.ts";
import {
  base64,
  base64url,
  checkOidc,
  checkRegion,
  checkRegions,
  checkSubnets,
  checkTaints,
  fromBase64,
  GuardianError,
  hashSecret,
  hostRange,
  intToIp,
  ipToInt,
  ipv6For,
  randomHex,
  REALM_NAME,
  tagTaken,
  TAINT,
  withinGrant,
} from "./rules.ts";
import {
  ConflictError,
  type ConfluxRow,
  type NodeIdentity,
  type RealmOidc,
  type RealmRow,
  type RegistrationTokenRow,
  type Store,
  type UserRow,
} from "./store.ts";

/** What a node asks for at registration. */
export interface RegisterRequest {
  tag?: string;
  ip?: string;
  taints?: string[];
  portal?: boolean;
  subnets?: string[];
  /** An identity token from the realm's OIDC issuer; required when the realm has one. */
  identityToken?: string;
  /** Teams to be associated with (held only if the node's owner owns or is a member of each). */
  teams?: string[];
}

/** A login request: the body the node signed, and the signature (header `Veilnet-Signature`). */
export interface LoginRequest {
  /** The exact body bytes (what the signature covers). */
  body: Uint8Array;
  /** The same body, parsed. */
  fields: Record<string, unknown>;
  /** Base64 ML-DSA-65 signature by the key in `fields.public_key` (see crypto/login_proof.ts). */
  signature: string | undefined;
  /** The Host the node used to reach the Guardian (the default NATS URL uses it). */
  host: string;
  /** The address the login came from, as this Guardian's socket saw it (not as the node says). */
  from?: string;
}

/** What a node gets at login. */
/** A realm as registration and login answers name it: the node pins `public_key` at registration. */
export interface RealmAnswer {
  id: string;
  name: string;
  /** The realm's ML-DSA-65 public key (base64), which signs every certificate and revocation of the realm. */
  public_key: string;
}

export interface LoginResponse {
  conflux_id: string;
  certificate: string;
  realm: RealmAnswer;
  nats: Omit<NatsCredentials, "user"> & { urls: string[] };
  /** The Guardian's own STUN, TURN with credentials of this login (until `expires_at`), then `--ice` (ice.ts). */
  ice_servers: string[];
  expires_at: number;
  /** Certificates of these nodes issued at or before `before` are void (revoked, removed, or changed since). */
  revocations: { conflux_id: string; before: number }[];
  /**
   * Overlay IPv4 addresses of the realm's portals with a live session: the node looks them up at once, so their
   * subnets are routed before any packet needs them (portals that come later announce themselves).
   */
  portals: string[];
  /**
   * The secrets of the identities this node holds (base64; its owner and its teams), to recognise the same
   * identities in its peers' certificates; only in a realm whose access is by teams.
   */
  identity_secrets?: string[];
  /** Teams it asks for but does not get (its owner neither owns nor is a member of them, or they do not exist). */
  ignored_teams?: string[];
  /**
   * The region the Master (the backup pipeline over NATS) is in, as the Guardian's administrator said
   * (`guardian serve --region`); "" when unsaid. Optional: Guardians before issue 22 do not send it.
   */
  master_region?: string;
}

/** What the Guardian says about a node to its administrator. */
export interface NodeView {
  id: string;
  realm: string;
  tag: string;
  ips: string[];
  taints: string[];
  granted_taints: string[] | "any";
  portal: boolean;
  subnets: string[];
  granted_subnets: string[];
  identity?: NodeIdentity;
  /** The node id of its latest session (hash of its current key). */
  node_id?: string;
  /** Connected to the Master now (when the Guardian can ask it). */
  online?: boolean;
  /** Last time the node was seen: at the Master, else its last login (ms). */
  last_seen?: number;
  certificate_expires_at?: number;
  revoked_at?: number;
  created_at: number;
  /** What the node last reported it sees (its version, and the peers it has traffic with), and when. */
  report?: NodeReport;
  /** The user it belongs to. */
  owner?: string;
  /** Teams it asks for (it holds those its owner owns or is a member of). */
  teams?: string[];
  /** The region the administrator placed it in ("" for none). Always sent by this Guardian. */
  region?: string;
  /** Where its traffic may cross a third party (its own setting, else its realm's); [] for anywhere. */
  regions?: string[];
  /** Whether `regions` are its realm's (it has no setting of its own). */
  regions_follow_realm?: boolean;
}

/** What an admin credential may act on: everything (`all`), or the named realms. */
export interface AdminScope {
  all: boolean;
  realms: Set<string>;
  /** The identity signed in (an e-mail address or subject), for a realm administrator. */
  who?: string;
}

/** Which node users the Master sees, by node id (hex). */
export type Presence = () => Promise<Map<string, { connected: boolean; lastSeen: number }>>;

/** How a Guardian runs. */
export interface GuardianOptions {
  /** Certificate (and NATS credential) lifetime. */
  certTtlMs: number;
  /**
   * NATS URLs handed to nodes; empty means "the host the node used to reach the Guardian, at natsPort", as
   * `tls://` when `masterTls` (the embedded Master speaks TLS), else `nats://`.
   */
  natsUrls: string[];
  masterTls?: boolean;
  natsPort: number;
  /** ICE servers handed out as given, after the Guardian's own STUN and TURN (`--ice`). */
  iceServers: string[];
  /** The Guardian's own STUN port, handed out as `stun:<host the node used>:<port>`; none when undefined. */
  stunPort?: number;
  /** TURN servers sharing a secret with the Guardian: each login gets credentials until its certificate ends. */
  turn?: TurnConfig;
  /** The region the Master is in (`--region`), told to nodes at login; none when undefined. */
  masterRegion?: string;
  /**
   * The country of an address (`--geoip`, ffi/geoip.ts): a node the administrator did not place is
   * placed, at each login, in the region named by its login's country.
   */
  countryOf?: CountryOf;
  clock: () => number;
}

/** The Guardian's behaviour over a Store. */
/** Whether a node's regions are its realm's (it has no setting of its own). */
function followsRealm(row: ConfluxRow): boolean {
  return row.regions === null || row.regions === undefined;
}

export class Guardian {
  /** Set by whoever connects the Guardian to its Master: which node users are connected. */
  presence: Presence | undefined;
  /**
   * Login nonces seen recently by this Guardian, so a recorded login cannot be replayed; the store keeps them too
   * (`useNonce`), shared by every Guardian of a replicated state.
   */
  readonly #nonces = new SeenIds(100_000);
  /**
   * Realm signing keys by realm id, with the seed each was made from: making one from its seed takes ~10 ms of
   * pure JavaScript (its public key), which every login paid. A realm whose seed changes gets a new key.
   */
  readonly #realmKeys = new Map<string, { seed: string; key: Promise<SigningKey> }>();

  /** What nodes report they see (from the Master's report subjects, once the Guardian listens to them). */
  readonly reports: Reports;

  /** The realms' users and teams. */
  readonly people: People;

  constructor(readonly store: Store, readonly options: GuardianOptions) {
    this.people = new People(
      store,
      options.clock,
      (name) => this.#realm(name),
      (id) => this.#revoke(id, false),
    );
    this.reports = new Reports({
      realmKey: async (realmId) => {
        const realm = store.realmById(realmId);
        return realm && (await this.#realmKey(realm)).publicKey;
      },
      inSession: (confluxId, nodeId) =>
        store.confluxById(confluxId)?.revokedAt === null &&
        store.sessions(confluxId, options.clock()).some((s) => s.nodeId === nodeId),
      clock: options.clock,
    });
  }

  /**
   * The NATS operator/account keys, made on first use and kept in the store (a local one: a replica has them from
   * the Guardian that seeded the shared state, as every Guardian connects to it with them).
   */
  natsKeys(): NatsKeys {
    const saved = this.store.getMeta("nats_keys");
    const keys = saved ? completeKeys(JSON.parse(saved)) : newNatsKeys();
    // Keys saved before the system or the Guardians' account existed gain one, kept from then on.
    const text = JSON.stringify(keys);
    if (text !== saved) this.store.setMeta("nats_keys", text);
    return keys;
  }

  /** Creates the admin token on first start; returns it then (only then, to one Guardian), undefined afterwards. */
  async ensureAdminToken(): Promise<string | undefined> {
    if (this.store.getMeta("admin_hash")) return undefined;
    const secret = base64url(crypto.getRandomValues(new Uint8Array(32)));
    const hash = await hashSecret(secret);
    const created = await this.store.transaction(() => {
      if (this.store.getMeta("admin_hash")) return false; // another Guardian of the same state was first
      this.store.setMeta("admin_hash", hash);
      return true;
    });
    return created ? `vadm.${secret}` : undefined;
  }

  /**
   * Whom an admin credential speaks for: the admin token speaks for the whole Guardian; an identity token from a
   * realm's issuer speaks for each realm whose settings name its holder among the `admins` (and for nothing
   * else). Throws 401 for anything else.
   */
  async adminScope(token: string | undefined): Promise<AdminScope> {
    if (token?.startsWith("vadm.")) {
      await this.checkAdmin(token);
      return { all: true, realms: new Set() };
    }
    const realms = new Set<string>();
    let who: string | undefined;
    let refused: string | undefined;
    for await (const { realm, verified, error } of this.#verifiedAt(token, (r) => !!r.oidc?.admins?.length)) {
      const name = verified && (verified.identity.email ?? verified.identity.subject);
      if (verified && isAdministrator(verified, realm.oidc!.admins!)) {
        realms.add(realm.name);
        who = name;
      } else refused ??= error ?? `${name} administers no realm here`;
    }
    if (realms.size > 0) return { all: false, realms, who };
    throw new GuardianError(
      401,
      "this needs the admin token (Authorization: Bearer vadm....) or an identity token of a realm's " +
        `administrator${refused ? `: ${refused}` : ""}`,
    );
  }

  /**
   * The user an identity token from a realm's issuer belongs to (one the realm knows by issuer and subject), or
   * undefined: a user's credential for their own teams and nodes.
   */
  async userOf(token: string | undefined): Promise<UserRow | undefined> {
    for await (const { realm, verified } of this.#verifiedAt(token, () => true)) {
      const user = verified &&
        this.store.userByIdentity(realm.id, verified.identity.issuer, verified.identity.subject);
      if (user) return user;
    }
    return undefined;
  }

  /**
   * An identity token checked against each realm (that `wanted` picks) whose issuer is the one it claims: the
   * verified identity, or why it was refused.
   */
  async *#verifiedAt(
    token: string | undefined,
    wanted: (realm: RealmRow) => boolean,
  ): AsyncGenerator<{ realm: RealmRow; verified?: VerifiedIdentity; error?: string }> {
    const issuer = token === undefined ? undefined : claimedIssuer(token);
    for (const realm of this.store.realms()) {
      if (!realm.oidc || realm.oidc.issuer !== issuer || !wanted(realm)) continue;
      try {
        yield { realm, verified: await verifyIdentity(token!, realm.oidc) };
      } catch (error) {
        yield { realm, error: (error as Error).message };
      }
    }
  }

  /** Throws 401 unless `token` is the admin token. */
  async checkAdmin(token: string | undefined): Promise<void> {
    const secret = token?.startsWith("vadm.") ? token.slice(5) : undefined;
    if (!secret || await hashSecret(secret) !== this.store.getMeta("admin_hash")) {
      throw new GuardianError(401, "this needs the admin token (Authorization: Bearer vadm....)");
    }
  }

  async createRealm(name: string, cidr4 = "10.128.0.0/16", oidc: RealmOidc | null = null): Promise<RealmRow> {
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
      oidc: oidc === null ? null : checkOidc(oidc),
      createdAt: this.options.clock(),
    };
    try {
      await this.store.transaction(() => this.store.addRealm(realm));
    } catch (error) {
      if (error instanceof ConflictError) throw new GuardianError(409, error.message);
      throw error;
    }
    return realm;
  }

  /** Sets (or with null clears) the OIDC issuer a realm trusts for registration. */
  async setRealmOidc(name: string, oidc: RealmOidc | null): Promise<RealmRow> {
    const realm = this.#realm(name);
    const checked = oidc === null ? null : checkOidc(oidc);
    await this.store.transaction(() => this.store.setRealmOidc(realm.id, checked));
    return { ...realm, oidc: checked };
  }

  #realm(name: string): RealmRow {
    const realm = this.store.realmByName(name);
    if (!realm) throw new GuardianError(404, `no realm named "${name}"`);
    return realm;
  }

  /**
   * A new registration token; the token text is returned once and never stored. It grants exactly `taints`
   * (none when empty; `anyTaints` is the explicit "any taint") and the portal `subnets`.
   */
  async createToken(
    o: {
      realm: string;
      ttlMs?: number;
      uses?: number;
      taints?: string[];
      anyTaints?: boolean;
      subnets?: string[];
      /** The user whose nodes it registers. */
      user?: string;
      /** The region the nodes it registers are placed in. */
      region?: string;
    },
  ): Promise<{ id: string; token: string }> {
    const realm = this.#realm(o.realm);
    const user = o.user === undefined ? undefined : this.store.userByName(realm.id, o.user);
    if (o.user !== undefined && !user) {
      throw new GuardianError(404, `no user "${o.user}" in realm ${realm.name}`);
    }
    if (o.uses !== undefined && (!Number.isInteger(o.uses) || o.uses < 1)) {
      throw new GuardianError(400, `uses must be a positive integer, got ${o.uses}`);
    }
    const region = checkRegion(o.region ?? "");
    const id = randomHex(8);
    const secret = base64url(crypto.getRandomValues(new Uint8Array(32)));
    const now = this.options.clock();
    const row: RegistrationTokenRow = {
      id,
      realmId: realm.id,
      secretHash: await hashSecret(secret),
      taints: checkTaints(o.taints ?? []),
      anyTaints: o.anyTaints === true,
      subnets: checkSubnets(o.subnets ?? [], realm),
      usesLeft: o.uses ?? null,
      expiresAt: o.ttlMs === undefined ? null : now + o.ttlMs,
      revoked: false,
      createdAt: now,
      userId: user?.id ?? null,
      region,
    };
    await this.store.transaction(() => this.store.addToken(row));
    // With the Guardian's own realm CA, the token names it: `register` verifies the Guardian by it.
    const pin = tokenPin(this.store);
    return { id, token: `vreg.${id}.${secret}${pin ? `.${pin}` : ""}` };
  }

  /** Revokes a registration token; 404 if there is none. */
  async revokeToken(id: string): Promise<void> {
    if (!await this.store.transaction(() => this.store.revokeToken(id))) {
      throw new GuardianError(404, `no token ${id}`);
    }
  }

  /**
   * Splits `kind.id.secret` and checks the secret's hash; 401 for anything else. A registration token may end in
   * `.pin` (the CA it names), which only the node uses.
   */
  async #token(
    kind: "vreg" | "vcfx",
    token: string | undefined,
    lookup: (id: string) => { secretHash: string } | undefined,
    o: { sync?: boolean } = {},
  ) {
    const parts = token?.split(".") ?? [];
    const names = { vreg: "a registration token (vreg.…)", vcfx: "a conflux token (vcfx.…)" };
    if (kind === "vreg" && parts.length === 4) parts.pop();
    if (parts.length !== 3 || parts[0] !== kind) {
      const got = ["vreg", "vcfx", "vadm"].includes(parts[0]!)
        ? `a ${parts[0]} token`
        : token
        ? "something else"
        : "no token";
      throw new GuardianError(401, `this needs ${names[kind]} as Bearer token, got ${got}`);
    }
    let row = lookup(parts[1]!);
    if (!row && this.store.replicated && o.sync !== false) {
      // Perhaps made at another Guardian a moment ago: "unknown" is final for a node, so look at the newest state.
      await this.sync();
      row = lookup(parts[1]!);
    }
    if (!row || await hashSecret(parts[2]!) !== row.secretHash) throw new GuardianError(401, "unknown token");
    return parts[1]!;
  }

  /**
   * Registers a node with what its token (and, in an OIDC realm, its identity) grants: taints it asks for must be
   * granted, portal subnets must lie inside granted ones, and its tag must be free. The token's use is taken in
   * the same transaction that writes the node, so a `--uses N` token registers exactly N nodes.
   */
  async register(
    registrationToken: string | undefined,
    req: RegisterRequest,
  ): Promise<{ conflux_id: string; token: string; realm: RealmAnswer }> {
    const tokenId = await this.#token("vreg", registrationToken, (id) => this.store.tokenById(id));
    const row = this.store.tokenById(tokenId)!;
    this.#usable(row, this.options.clock());
    const realm = this.store.realmById(row.realmId)!;
    const tag = req.tag ?? "";
    if (tag !== "" && !isTag(tag)) {
      throw new GuardianError(400, `bad tag "${tag}": a DNS label (a-z, 0-9, -, at most ${MAX_TAG_BYTES})`);
    }
    if (tag !== "" && this.store.confluxByTag(realm.id, tag)) throw tagTaken(tag, realm);
    let identity: NodeIdentity | null = null;
    let granted = row.taints;
    if (realm.oidc) {
      if (!req.identityToken) {
        throw new GuardianError(
          401,
          `realm ${realm.name} needs an identity token from ${realm.oidc.issuer} (--jwt)`,
        );
      }
      try {
        const verified = await verifyIdentity(req.identityToken, realm.oidc);
        const problem = identityProblem({
          subject: verified.identity.subject,
          email: verified.identity.email ?? "",
        });
        if (problem) throw new Error(`identity token refused: ${problem}`);
        identity = verified.identity;
        granted = checkTaints([...granted, ...verified.claimValues.filter((v) => TAINT.test(v))]);
      } catch (error) {
        throw new GuardianError(401, (error as Error).message);
      }
    } else if (req.identityToken) {
      throw new GuardianError(400, `realm ${realm.name} has no identity issuer: register without --jwt`);
    }
    const taints = req.taints === undefined ? granted : checkTaints(req.taints);
    const outside = row.anyTaints ? [] : taints.filter((t) => !granted.includes(t));
    if (outside.length > 0) {
      throw new GuardianError(403, `this token does not grant the taint(s) ${outside.join(", ")}`);
    }
    const portal = req.portal === true;
    const subnets = portal ? this.#offer(req.subnets, row.subnets, realm) : [];
    const teams = checkTeams(req.teams ?? []);
    const id = crypto.randomUUID();
    const secret = base64url(crypto.getRandomValues(new Uint8Array(32)));
    const secretHash = await hashSecret(secret);
    // The token's use, the address and the row are one transaction.
    const now = this.options.clock();
    await this.store.transaction(() => {
      if (!this.store.consumeToken(row.id, now)) this.#usable(this.store.tokenById(row.id)!, now);
      const ip4 = this.#address(realm, req.ip, now);
      const finalTag = tag || `node-${id.slice(0, 8)}`;
      if (this.store.confluxByTag(realm.id, finalTag)) throw tagTaken(finalTag, realm);
      this.store.addConflux({
        id,
        realmId: realm.id,
        secretHash,
        tag: finalTag,
        ip4,
        taints,
        allowedTaints: granted,
        anyTaints: row.anyTaints,
        portal,
        subnets,
        grantedSubnets: row.subnets,
        identity,
        nodeId: null,
        lastLogin: null,
        certExpires: 0,
        revokedAt: null,
        createdAt: now,
        // The token's user, else whoever signed in at the realm's issuer.
        ownerId: row.userId ?? (identity ? this.people.userFor(realm.id, identity).id : null),
        teams,
        // Where it is, as its token says: never what the node says of itself. Its regions follow the realm.
        region: row.region ?? "",
        regions: null,
      });
    });
    const realmKey = await this.#realmKey(realm);
    return {
      conflux_id: id,
      token: `vcfx.${id}.${secret}`,
      realm: { id: realm.id, name: realm.name, public_key: base64(realmKey.publicKey) },
    };
  }

  /** The realm's signing key, made from its seed once (see #realmKeys). */
  #realmKey(realm: RealmRow): Promise<SigningKey> {
    const cached = this.#realmKeys.get(realm.id);
    if (cached?.seed === realm.keySeed) return cached.key;
    const key = pq().then((backend) => backend.signingKey(fromBase64(realm.keySeed)!));
    const entry = { seed: realm.keySeed, key };
    this.#realmKeys.set(realm.id, entry);
    // A failure is not kept: the next login tries again.
    key.catch(() => this.#realmKeys.get(realm.id) === entry && this.#realmKeys.delete(realm.id));
    return key;
  }

  /**
   * Checks a Bearer token of `kind` (401; 403 for a revoked node) and nothing else: the API calls it before it reads
   * a request's body, so a bad token costs a lookup and a hash. With `sync: false` an unknown token is refused
   * without asking the shared state whether it was made a moment ago at another Guardian.
   */
  async authenticate(
    kind: "vreg" | "vcfx" | "vadm",
    token: string | undefined,
    o: { sync?: boolean } = {},
  ): Promise<void> {
    if (kind === "vadm") await this.adminScope(token);
    else if (kind === "vreg") await this.#token("vreg", token, (id) => this.store.tokenById(id), o);
    else await this.#conflux(token, o);
  }

  /** Catches up with the shared state; 503 when it cannot be reached. */
  async sync(): Promise<void> {
    try {
      await this.store.sync();
    } catch (error) {
      throw new GuardianError(503, `the shared state cannot be read now: ${(error as Error).message}`);
    }
  }

  /** Throws 403 unless a registration token may register a node now. */
  #usable(row: { revoked: boolean; expiresAt: number | null; usesLeft: number | null }, now: number): void {
    if (row.revoked) throw new GuardianError(403, "this registration token was revoked");
    if (row.expiresAt !== null && now >= row.expiresAt) {
      throw new GuardianError(403, "this registration token has expired");
    }
    if (row.usesLeft !== null && row.usesLeft <= 0) {
      throw new GuardianError(403, "this registration token is used up");
    }
  }

  /**
   * The portal subnets a node offers: `asked` (normalised), each inside a granted subnet; all of `granted` when it
   * asks for none. 403 when it asks outside its grant, or has no grant at all.
   */
  #offer(asked: unknown, granted: string[], realm: RealmRow): string[] {
    if (granted.length === 0) {
      throw new GuardianError(
        403,
        "no portal subnets were granted to this node: the administrator grants them on the registration token " +
          "(token create --subnets) or to the node (guardian node subnets)",
      );
    }
    if (asked === undefined) return granted;
    const offered = checkSubnets(asked, realm);
    const outside = withinGrant(offered, granted);
    if (outside.length > 0) {
      throw new GuardianError(
        403,
        `subnet(s) ${outside.join(", ")} are not inside what this node was granted (${granted.join(", ")})`,
      );
    }
    return offered;
  }

  /**
   * The requested address if it is in the realm and free, else the lowest free one. An address whose node was
   * removed is not free while a certificate naming it may still be valid. Runs inside a transaction.
   */
  #address(realm: RealmRow, requested: string | undefined, now: number): number {
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
      const until = this.store.retiredUntil(realm.id, n, now);
      if (until !== undefined) {
        throw new GuardianError(
          409,
          `${requested} belonged to a removed node whose certificate is valid until ${
            new Date(until).toISOString()
          }`,
        );
      }
      return n;
    }
    let candidate = range.first;
    for (const taken of this.store.takenAddresses(realm.id, now)) {
      if (taken > candidate) break;
      if (taken === candidate) candidate++;
    }
    if (candidate > range.last) throw new GuardianError(409, `realm ${realm.name} has no free address left`);
    return candidate;
  }

  async #conflux(token: string | undefined, o: { sync?: boolean } = {}): Promise<ConfluxRow> {
    const id = await this.#token("vcfx", token, (id) => this.store.confluxById(id), o);
    const row = this.store.confluxById(id)!;
    if (row.revokedAt !== null) {
      throw new GuardianError(
        403,
        `this node was revoked by the administrator at ${new Date(row.revokedAt).toISOString()}`,
      );
    }
    return row;
  }

  /** A node leaves the realm: removed as the administrator would (its certificates and sessions are void). */
  async unregister(token: string | undefined, confluxId: string | null): Promise<void> {
    const row = await this.#conflux(token);
    if (confluxId !== null && confluxId !== row.id) {
      throw new GuardianError(403, "a conflux token can only unregister its own conflux");
    }
    await this.removeNode(row.id);
  }

  /**
   * A session for a node's fresh key: certificate, realm key, NATS credentials. The request must be signed with
   * that key (crypto/login_proof.ts), dated now and never seen before. A `tag` renames the node (if no other node
   * holds it); `portal`/`subnets` change what it offers, within its grant. A refused login changes nothing.
   */
  async login(token: string | undefined, req: LoginRequest): Promise<LoginResponse> {
    const row = await this.#conflux(token);
    const { public_key: publicKey, timestamp, nonce } = req.fields;
    const key = typeof publicKey === "string" ? fromBase64(publicKey) : undefined;
    if (!key || key.length !== ML_DSA_65_PUBLIC_KEY_BYTES) {
      throw new GuardianError(
        400,
        `public_key must be a base64 ML-DSA-65 public key (${ML_DSA_65_PUBLIC_KEY_BYTES} bytes)`,
      );
    }
    const now = this.options.clock();
    if (typeof timestamp !== "number" || typeof nonce !== "string" || !/^[0-9a-f]{32}$/.test(nonce)) {
      throw new GuardianError(400, "a login carries timestamp (ms) and nonce (32 hex digits), and is signed");
    }
    // Refusals of the proof are 400, not 401/403: a node stops for good only when its token is unknown or revoked,
    // and a clock that is off is worth retrying once fixed.
    if (Math.abs(now - timestamp) > LOGIN_MAX_SKEW_MS) {
      throw new GuardianError(
        400,
        `login dated ${Math.round((now - timestamp) / 1000)} s from the Guardian's clock (limit ±${
          LOGIN_MAX_SKEW_MS / 1000
        } s): check this host's clock`,
      );
    }
    const signature = req.signature === undefined ? undefined : fromBase64(req.signature);
    if (
      !signature || signature.length !== ML_DSA_65_SIGNATURE_BYTES ||
      !await verifyLogin(key, { confluxId: row.id, body: req.body, signature })
    ) {
      throw new GuardianError(
        400,
        "a login must be signed by the key it asks to have certified (Veilnet-Signature)",
      );
    }
    const seen = { key: `${row.id}/${nonce}`, until: timestamp + LOGIN_MAX_SKEW_MS };
    if (!this.#nonces.add(seen.key, seen.until, now)) throw replayed();
    return await this.#session(row, key, req, seen);
  }

  /** A login session; `nonce` is taken in the store with the session (shared by every Guardian of a state). */
  async #session(
    row: ConfluxRow,
    key: Uint8Array,
    req: LoginRequest,
    nonce: { key: string; until: number },
  ): Promise<LoginResponse> {
    const { tag, portal, subnets } = req.fields;
    const realm = this.store.realmById(row.realmId)!;
    if (tag !== undefined && tag !== null && tag !== row.tag) {
      if (typeof tag !== "string" || !isTag(tag)) {
        throw new GuardianError(
          400,
          `bad tag ${JSON.stringify(tag)}: a DNS label (a-z, 0-9, -, at most ${MAX_TAG_BYTES})`,
        );
      }
      const holder = this.store.confluxByTag(realm.id, tag);
      if (holder && holder.id !== row.id) throw tagTaken(tag, realm);
    }
    let offer: { portal: boolean; subnets: string[] } | undefined;
    if ((portal !== undefined && portal !== null) || (subnets !== undefined && subnets !== null)) {
      if (portal !== undefined && portal !== null && typeof portal !== "boolean") {
        throw new GuardianError(400, "portal must be true or false");
      }
      const on = (portal as boolean | undefined | null) ?? row.portal;
      const asked = subnets ?? (row.portal && row.subnets.length > 0 ? row.subnets : undefined);
      offer = { portal: on, subnets: on ? this.#offer(asked, row.grantedSubnets, realm) : [] };
    }
    const nodeId = toHex(await nodeIdOf(key));
    const realmKey = await this.#realmKey(realm);
    // Everything is checked: write the changes and the session together, then sign.
    const now = this.options.clock();
    // A certificate is dated after the node's latest revocation, so a revocation never voids the one issued next.
    const latest = this.store.revocations(realm.id, now).filter((r) => r.confluxId === row.id).at(-1);
    const notBefore = Math.max(now, (latest?.before ?? 0) + 1);
    const expiresAt = notBefore + this.options.certTtlMs;
    const routed = offer ? offer.subnets : row.portal ? row.subnets : [];
    const nats = await nodeCredentials(this.natsKeys(), { realmId: realm.id, nodeId, expiresAt }, {
      conflux: row.id.replaceAll("-", ""),
      tag: typeof tag === "string" ? tag : row.tag,
      addresses: [intToIp(row.ip4), ipv6For(realm, row.ip4)],
      subnets: routed.map((c) => parseCidr(c)),
    });
    const current = await this.store.transaction(() => {
      if (!this.store.useNonce(nonce.key, nonce.until, now)) throw replayed(); // at another Guardian
      const newest = this.store.revocations(realm.id, now).filter((r) => r.confluxId === row.id).at(-1);
      if (newest && newest.before >= notBefore) {
        // Revoked (or changed) at another Guardian while this login was on its way: its certificate would be void.
        throw new GuardianError(503, "this node changed while it logged in: log in again");
      }
      this.store.pruneRevocations(now);
      if (typeof tag === "string" && tag !== row.tag) {
        const holder = this.store.confluxByTag(realm.id, tag);
        if (holder && holder.id !== row.id) throw tagTaken(tag, realm); // taken while this login was on its way
        this.store.setTag(row.id, tag);
      }
      if (offer) this.store.setPortal(row.id, offer.portal, offer.subnets);
      this.store.addSession({
        confluxId: row.id,
        realmId: realm.id,
        nodeId,
        natsUser: nats.user,
        issuedAt: notBefore,
        expiresAt,
      });
      const current = this.store.confluxById(row.id);
      // Revoked or removed while this login was on its way: nothing is written.
      if (!current || current.revokedAt !== null) {
        throw new GuardianError(403, "this node was revoked or removed");
      }
      // The realm's regions as they are now: a change made while this login was on its way voids nothing of a
      // node with no live certificate, so the certificate must carry the newest.
      return { ...current, regions: this.#regionsOf(current) };
    });
    // In a realm whose access is by teams: the identities the node holds now, as tags in its certificate.
    const teamsRealm = realm.access === "teams";
    const held = teamsRealm ? this.people.identitiesOf(current) : { secrets: [], ignored: [] };
    // Taints in a certificate are always inside the node's grant, whatever the row says.
    const taints = current.anyTaints
      ? current.taints
      : current.taints.filter((t) => current.allowedTaints.includes(t));
    const certificate = await issueCertificate(realmKey, {
      serial: crypto.getRandomValues(new Uint8Array(16)),
      conflux: fromHex(current.id.replaceAll("-", "")),
      realm: fromHex(realm.id),
      realmName: realm.name,
      tag: current.tag,
      ipv4: intToIp(current.ip4),
      prefix4: parseCidr(realm.cidr4).prefix,
      ipv6: ipv6For(realm, current.ip4),
      prefix6: 64,
      taints,
      portal: current.portal ? 1 : 0,
      subnets: current.subnets.map((s) => subnetToBytes(parseCidr(s))),
      // By teams, who a node belongs to is not said on the network: its identities are tags only.
      subject: teamsRealm ? "" : current.identity?.subject ?? "",
      email: teamsRealm ? "" : current.identity?.email ?? "",
      access: teamsRealm ? ACCESS_TEAMS : ACCESS_TAINTS,
      identities: held.secrets.map((s) => identityTag(fromBase64(s)!, key)),
      // Where the administrator placed it (else where its login came from, with --geoip) and where its traffic
      // may go: nothing the node said of itself.
      region: current.region || (req.from && this.options.countryOf?.(req.from)) || "",
      regions: current.regions,
      nodeKey: key,
      notBefore,
      notAfter: expiresAt,
    });
    const host = req.host.includes(":") && !req.host.startsWith("[")
      ? req.host.slice(0, req.host.lastIndexOf(":"))
      : req.host.replace(/:\d+$/, "");
    const urls = this.options.natsUrls.length > 0
      ? this.options.natsUrls
      : [`${this.options.masterTls ? "tls" : "nats"}://${host}:${this.options.natsPort}`];
    return {
      conflux_id: current.id,
      certificate: base64(certificate),
      realm: { id: realm.id, name: realm.name, public_key: base64(realmKey.publicKey) },
      nats: { jwt: nats.jwt, seed: nats.seed, inboxPrefix: nats.inboxPrefix, urls },
      ice_servers: await loginIceServers(this.options, { host: req.host, user: current.id, expiresAt }),
      expires_at: expiresAt,
      revocations: this.store.revocations(realm.id, now).map((r) => ({
        conflux_id: r.confluxId,
        before: r.before,
      })),
      portals: this.store.confluxes(realm.id)
        .filter((c) =>
          c.portal && c.subnets.length > 0 && c.revokedAt === null && c.id !== current.id &&
          this.store.sessions(c.id, now).length > 0
        )
        .map((c) => formatAddress(intToIp(c.ip4))),
      ...(teamsRealm ? { identity_secrets: held.secrets, ignored_teams: held.ignored } : {}),
      master_region: this.options.masterRegion ?? "",
    };
  }

  /** Where a node's traffic may cross a third party: its own setting, else its realm's. */
  #regionsOf(row: ConfluxRow, realm = this.store.realmById(row.realmId)): string[] {
    return row.regions ?? realm?.regions ?? [];
  }

  /** Sets a realm's access model: by taints, or by teams (a shared identity); its nodes log in again. */
  async setRealmAccess(name: string, access: "taints" | "teams"): Promise<RealmRow> {
    const realm = this.#realm(name);
    if (access !== "taints" && access !== "teams") {
      throw new GuardianError(400, `access is "taints" or "teams", got "${access}"`);
    }
    await this.store.transaction(() => {
      this.store.setRealmAccess(realm.id, access);
      for (const c of this.store.confluxes(realm.id)) this.#revoke(c.id, false);
    });
    return { ...realm, access };
  }

  /** Sets the teams a node asks for (it holds those its owner owns or is a member of); it logs in again. */
  setNodeTeams(id: string, teams: string[]): Promise<NodeView> {
    return this.#changeNode(id, () => checkTeams(teams), (c, t) => this.store.setConfluxTeams(c.id, t));
  }

  /**
   * Changes node `id` (404 unless it exists, also inside the transaction): `check` the new value against the node
   * (400), `write` it to the node's row as it is inside the transaction, and void the node's certificates so it
   * logs in again to carry the change; returns the node as it is then.
   */
  async #changeNode<T>(
    id: string,
    check: (row: ConfluxRow) => T,
    write: (current: ConfluxRow, value: T) => void,
  ): Promise<NodeView> {
    const row = this.#existing(id);
    const value = check(row);
    await this.store.transaction(() => {
      write(this.#existing(row.id), value);
      this.#revoke(row.id, false);
    });
    return this.#view(this.#existing(row.id));
  }

  /**
   * Sets a realm's default regions (where its nodes' traffic may cross a third party; [] for anywhere). Its nodes
   * that follow the realm log in again to carry them.
   */
  async setRealmRegions(name: string, regions: string[]): Promise<RealmRow> {
    const realm = this.#realm(name);
    const checked = checkRegions(regions);
    await this.store.transaction(() => {
      this.store.setRealmRegions(realm.id, checked);
      for (const c of this.store.confluxes(realm.id)) {
        if (followsRealm(c)) this.#revoke(c.id, false);
      }
    });
    return { ...realm, regions: checked };
  }

  /** Places a node in a region ("" for none); it logs in again to carry it. */
  setNodeRegion(id: string, region: string): Promise<NodeView> {
    return this.#changeNode(id, () => checkRegion(region), (c, r) => this.store.setConfluxRegion(c.id, r));
  }

  /** Sets where a node's traffic may cross a third party, or with null makes it follow its realm; it logs in again. */
  setNodeRegions(id: string, regions: string[] | null): Promise<NodeView> {
    return this.#changeNode(
      id,
      () => regions === null ? null : checkRegions(regions),
      (c, r) => this.store.setConfluxRegions(c.id, r),
    );
  }

  /**
   * Adds and removes taints of the node holding `token`, within its grant; its current certificates are void and
   * it logs in again to get one with the new taints.
   */
  async setTaints(token: string | undefined, change: { add?: unknown; remove?: unknown }): Promise<string[]> {
    const row = await this.#conflux(token);
    const add = checkTaints(change.add ?? []);
    const remove = checkTaints(change.remove ?? []);
    const outside = row.anyTaints ? [] : add.filter((t) => !row.allowedTaints.includes(t));
    if (outside.length > 0) {
      throw new GuardianError(403, `this conflux may not hold the taint(s) ${outside.join(", ")}`);
    }
    const taints = checkTaints([...row.taints.filter((t) => !remove.includes(t)), ...add]);
    await this.store.transaction(() => {
      this.store.setTaints(row.id, taints);
      if (remove.some((t) => row.taints.includes(t))) this.#revoke(row.id, false);
    });
    return taints;
  }

  // ---- Node administration ---------------------------------------------------------------------------------

  /** A node by conflux id, or by tag (with `realm` when several realms have that tag). */
  findNode(ref: string, realm?: string): ConfluxRow {
    const byId = this.store.confluxById(ref);
    if (byId && (realm === undefined || this.store.realmById(byId.realmId)?.name === realm)) return byId;
    const realms = realm === undefined ? this.store.realms() : [this.#realm(realm)];
    const found = realms.map((r) => this.store.confluxByTag(r.id, ref)).filter((c) => c !== undefined);
    if (found.length === 1) return found[0]!;
    if (found.length > 1) {
      throw new GuardianError(
        409,
        `tag "${ref}" exists in several realms: name the realm (--realm) or the id`,
      );
    }
    throw new GuardianError(404, `no node "${ref}"${realm ? ` in realm ${realm}` : ""} (give its id or tag)`);
  }

  /** Nodes (of one realm or all), with presence at the Master when the Guardian can ask it. */
  async nodes(realm?: string): Promise<NodeView[]> {
    const rows = this.store.confluxes(realm === undefined ? undefined : this.#realm(realm).id);
    const presence = await this.presence?.().catch(() => undefined);
    return rows.map((r) => this.#view(r, presence));
  }

  #view(r: ConfluxRow, presence?: Map<string, { connected: boolean; lastSeen: number }>): NodeView {
    const realm = this.store.realmById(r.realmId)!;
    // Any session of the node still valid counts (netcheck's extra login is a session too).
    const seen = presence && this.store.sessions(r.id, this.options.clock())
      .map((s) => presence.get(s.nodeId))
      .reduce<{ connected: boolean; lastSeen: number } | undefined>(
        (a, b) =>
          !b ? a : {
            connected: (a?.connected ?? false) || b.connected,
            lastSeen: Math.max(a?.lastSeen ?? 0, b.lastSeen),
          },
        undefined,
      );
    const lastSeen = Math.max(seen?.lastSeen ?? 0, r.lastLogin ?? 0);
    return {
      id: r.id,
      realm: realm.name,
      tag: r.tag,
      ips: [formatAddress(intToIp(r.ip4)), formatAddress(ipv6For(realm, r.ip4))],
      taints: r.taints,
      granted_taints: r.anyTaints ? "any" : r.allowedTaints,
      portal: r.portal,
      subnets: r.subnets,
      granted_subnets: r.grantedSubnets,
      ...(r.identity ? { identity: r.identity } : {}),
      ...(r.nodeId ? { node_id: r.nodeId } : {}),
      ...(presence ? { online: seen?.connected === true && r.revokedAt === null } : {}),
      ...(lastSeen > 0 ? { last_seen: lastSeen } : {}),
      ...(r.certExpires > 0 ? { certificate_expires_at: r.certExpires } : {}),
      ...(r.revokedAt !== null ? { revoked_at: r.revokedAt } : {}),
      ...(r.ownerId ? { owner: this.store.userById(r.ownerId)?.name ?? r.ownerId } : {}),
      ...(r.teams?.length ? { teams: r.teams } : {}),
      region: r.region ?? "",
      regions: this.#regionsOf(r, realm),
      regions_follow_realm: followsRealm(r),
      created_at: r.createdAt,
      ...(this.reports.get(r.id) ? { report: this.reports.get(r.id) } : {}),
    };
  }

  /** One node, as the administrator sees it. */
  async node(ref: string, realm?: string): Promise<NodeView> {
    const row = this.findNode(ref, realm);
    return this.#view(row, await this.presence?.().catch(() => undefined));
  }

  /** Revokes a node: it can no longer log in, its certificates and NATS sessions are void across the realm. */
  async revokeNode(id: string): Promise<NodeView> {
    const row = this.#existing(id);
    const now = this.options.clock();
    await this.store.transaction(() => {
      if (this.#existing(row.id).revokedAt === null) this.store.setRevoked(row.id, now);
      this.#revoke(row.id, true);
    });
    return this.#view(this.#existing(row.id));
  }

  /** Removes a node (as revoke does, and forgets it; its address stays unused while its certificate lives). */
  async removeNode(id: string): Promise<void> {
    const row = this.#existing(id);
    const now = this.options.clock();
    await this.store.transaction(() => {
      const current = this.#existing(row.id); // 404 when another Guardian removed it first
      this.#revoke(row.id, true);
      this.store.removeConflux(row.id, Math.max(current.certExpires, now));
    });
    this.reports.forget(row.id);
  }

  /** Sets the taints a node is granted and holds; its current certificates are void (it logs in again). */
  setNodeTaints(id: string, o: { taints: string[]; any?: boolean }): Promise<NodeView> {
    return this.#changeNode(id, () => checkTaints(o.taints), (c, taints) => {
      this.store.setGrant(c.id, { allowedTaints: taints, anyTaints: o.any === true });
      this.store.setTaints(c.id, taints);
    });
  }

  /** Renames a node (409 when another node of its realm holds the tag); it logs in again to carry the new tag. */
  setNodeTag(id: string, tag: string): Promise<NodeView> {
    const check = () => {
      if (!isTag(tag)) {
        throw new GuardianError(400, `bad tag "${tag}": a DNS label (a-z, 0-9, -, at most ${MAX_TAG_BYTES})`);
      }
    };
    return this.#changeNode(id, check, (c) => {
      const holder = this.store.confluxByTag(c.realmId, tag);
      if (holder && holder.id !== c.id) throw tagTaken(tag, this.store.realmById(c.realmId)!);
      this.store.setTag(c.id, tag);
    });
  }

  /**
   * Sets the portal subnets a node is granted. What it offers shrinks to what stays inside the grant; its
   * current certificates are void (it logs in again).
   */
  grantNodeSubnets(id: string, subnets: string[]): Promise<NodeView> {
    const check = (row: ConfluxRow) => checkSubnets(subnets, this.store.realmById(row.realmId)!);
    return this.#changeNode(id, check, (c, granted) => {
      const kept = c.subnets.filter((s) => withinGrant([s], granted).length === 0);
      this.store.setGrant(c.id, { grantedSubnets: granted });
      this.store.setPortal(c.id, c.portal && kept.length > 0, kept);
    });
  }

  #existing(id: string): ConfluxRow {
    const row = this.store.confluxById(id);
    if (!row) throw new GuardianError(404, `no node ${id}`);
    return row;
  }

  /**
   * Voids every certificate of node `id` issued until now, and with `cutMaster` its NATS sessions too. It is only
   * recorded here: the serving Guardian sends what is recorded to the realm and the Master (notices.ts), whoever
   * wrote it (this process, an admin command on the same data directory, or another Guardian of a shared state),
   * and nodes get the list at login. Runs inside a transaction (it reads the node as the transaction sees it).
   */
  #revoke(id: string, cutMaster: boolean): void {
    const row = this.#existing(id);
    const now = this.options.clock();
    if (row.certExpires <= now) return; // no certificate of it can be valid: nothing to void
    this.store.addRevocation({
      realmId: row.realmId,
      confluxId: row.id,
      before: now,
      until: Math.max(row.certExpires, now) + 1,
      cutMaster,
    });
  }
}

/** A login whose nonce was seen before. */
function replayed(): GuardianError {
  return new GuardianError(400, "this login request was already used (replayed)");
}
