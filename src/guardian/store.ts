/**
 * The Guardian's state in SQLite (`node:sqlite`; the only importer): realms and their keys, registration tokens,
 * registered nodes (confluxes), and a few secrets. Token secrets are stored only as SHA-256 hashes.
 *
 * Reads are synchronous. Writes belong in `await store.transaction(fn)`, where `fn` is synchronous, so it runs to
 * completion before any other request is served: a registration checks its token, picks an address and records
 * the node in one transaction that nothing can interleave with. The UNIQUE(realm_id, ip4) constraint backs that
 * up. A local store (one Guardian, one file) commits `fn` at once; a replicated one (several Guardians sharing a
 * log, replication.ts) records `fn`'s writes, undoes them, and applies them once the shared log took them, in
 * the log's order. So every write statement is deterministic: times and ids come as parameters, never from SQL
 * functions, and a statement's effect depends only on the state before it.
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";

/** A realm: one logical network with its own key and address ranges. */
export interface RealmRow {
  id: string;
  name: string;
  cidr4: string;
  cidr6: string;
  /** Base64 of the realm's 32-byte ML-DSA-65 seed. */
  keySeed: string;
  /** OIDC settings: when set, registering needs a valid identity token from this issuer. */
  oidc: RealmOidc | null;
  createdAt: number;
  /** Who may talk to whom: by taints (subset rule) or by teams (a shared identity). */
  access?: "taints" | "teams";
  /** Where its nodes' traffic may cross a third party (a relay or the Master), unless a node has its own; [] anywhere. */
  regions?: string[];
}

/** A registration token (its secret is not stored). */
export interface RegistrationTokenRow {
  id: string;
  realmId: string;
  secretHash: string;
  /** Taints a node registered with this token may hold (and holds, unless it asks for fewer). */
  taints: string[];
  /** The administrator's explicit "any taint": a node may hold any taint it asks for. */
  anyTaints: boolean;
  /** Portal subnets a node registered with this token may offer. */
  subnets: string[];
  /** Registrations left, or null for unlimited. */
  usesLeft: number | null;
  expiresAt: number | null;
  revoked: boolean;
  createdAt: number;
  /** The user a node registered with this token belongs to, if the token names one. */
  userId?: string | null;
  /** The region a node registered with this token is placed in ("" for none). */
  region?: string;
}

/** A user of a realm: owns the nodes registered for them; a member or owner of teams. */
export interface UserRow {
  id: string;
  realmId: string;
  name: string;
  /** The identity they sign in with at the realm's issuer, if any. */
  issuer: string | null;
  subject: string | null;
  /** Base64 of the 32-byte secret their identity tags are made with. */
  secret: string;
  createdAt: number;
}

/** A team of a realm: created and owned by a user, with members (users). */
export interface TeamRow {
  id: string;
  realmId: string;
  name: string;
  ownerId: string;
  /** Base64 of the 32-byte secret its identity tags are made with. */
  secret: string;
  createdAt: number;
}

/** A registered node. */
export interface ConfluxRow {
  id: string;
  realmId: string;
  secretHash: string;
  tag: string;
  /** IPv4 address as an unsigned 32-bit integer. */
  ip4: number;
  taints: string[];
  /** Taints this node may hold (granted by its token or the administrator). */
  allowedTaints: string[];
  /** The administrator's explicit "any taint". */
  anyTaints: boolean;
  portal: boolean;
  /** The subnets it offers as a portal: a subset of grantedSubnets. */
  subnets: string[];
  /** Portal subnets the administrator granted (on its token or later). */
  grantedSubnets: string[];
  /** The identity verified at registration (OIDC), if the realm asks for one. */
  identity: NodeIdentity | null;
  /** Node id (hex) of its latest session, when it logged in last, and when its latest certificate expires. */
  nodeId: string | null;
  lastLogin: number | null;
  certExpires: number;
  /** When the administrator revoked it (it can no longer log in), or null. */
  revokedAt: number | null;
  createdAt: number;
  /** The user who registered it (by a token for them, or by signing in at the realm's issuer), if known. */
  ownerId?: string | null;
  /** Teams it asks to be associated with (it holds those its owner owns or is a member of). */
  teams?: string[];
  /** The region the administrator placed it in ("" for none). */
  region?: string;
  /** Where its traffic may cross a third party, as the administrator set for it; null: as its realm says. */
  regions?: string[] | null;
}

/** A verified identity: who registered a node, according to the realm's OIDC issuer. */
export interface NodeIdentity {
  issuer: string;
  subject: string;
  email?: string;
}

/** A realm's OIDC settings, set by the administrator (never taken from a client). */
export interface RealmOidc {
  issuer: string;
  jwksUrl: string;
  audience: string;
  /** A claim whose values (strings) become taints granted to the node, e.g. "groups". */
  taintsClaim?: string;
  /**
   * Who administers this realm (and only this realm) by signing in through its issuer: subjects, or e-mail
   * addresses the issuer verified. Their identity tokens are admin API credentials scoped to the realm.
   */
  admins?: string[];
}

/** One login session: its NATS user key, so the session can be revoked at the Master. */
export interface SessionRow {
  confluxId: string;
  realmId: string;
  nodeId: string;
  natsUser: string;
  issuedAt: number;
  expiresAt: number;
}

/** "Every certificate of this node issued before `before` is void", kept until no such certificate can live. */
export interface RevocationRow {
  realmId: string;
  confluxId: string;
  before: number;
  until: number;
  /** Whether the node's NATS sessions are revoked too (revoked or removed), not only its certificates. */
  cutMaster: boolean;
}

/** A value bound to an SQL parameter: all the Guardian writes (no blobs). */
export type SqlValue = string | number | null;

/** One write statement with its parameters: what a transaction did, replayed as is on every replica. */
export interface Write {
  sql: string;
  params: SqlValue[];
}

/** Every row of every table with its rowid, and the schema version: a store's whole state. */
export interface StoreDump {
  schema: number;
  tables: Record<string, Record<string, SqlValue>[]>;
}

/**
 * How a replicated store commits (replication.ts): `commit` runs `fn` against the shared log and resolves once its
 * writes are applied here; `sync` applies what other replicas committed meanwhile.
 */
export interface Committer {
  commit<T>(fn: () => T): Promise<T>;
  sync(): Promise<void>;
}

/** A constraint the caller broke (duplicate name, address taken): the API turns it into 409. */
export class ConflictError extends Error {
  override name = "ConflictError";
}

/** The database and what SQLite keeps beside it (WAL, shared-memory index, rollback journal): all hold secrets. */
const DATABASE_FILES = ["", "-wal", "-shm", "-journal"] as const;

/**
 * Makes the database file 0600 before SQLite opens it, creating it empty if needed, and any file left beside it
 * too. SQLite creates the main file with 0644 minus the umask, but gives every file it makes beside it (`-wal`,
 * `-shm`, `-journal`) exactly the main file's mode, umask or not: a database made 0600 first keeps them all
 * private however open the directory is. (Created 0600 minus the umask, so never wider, then set to 0600.)
 */
function makePrivate(path: string): void {
  try {
    Deno.openSync(path, { create: true, write: true, mode: 0o600 }).close();
    for (const suffix of DATABASE_FILES) {
      try {
        Deno.chmodSync(path + suffix, 0o600);
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
  } catch (error) {
    throw new Error(
      `cannot make ${path} private (mode 0600): ${(error as Error).message}; it holds realm keys and NATS ` +
        "seeds: run the Guardian as the user who owns its data directory",
      { cause: error },
    );
  }
}

/** Throws when the database or a file beside it may be read by anyone but its owner. */
function checkPrivate(path: string): void {
  for (const suffix of DATABASE_FILES) {
    let mode: number;
    try {
      mode = (Deno.statSync(path + suffix).mode ?? 0) & 0o777;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw error;
    }
    if (mode & 0o077) {
      throw new Error(
        `${path}${suffix} is mode ${mode.toString(8)}, expected 600: it holds realm keys and NATS seeds. ` +
          `chmod 600 ${path}*, then start again`,
      );
    }
  }
}

// busy_timeout: the server and an admin command (guardian token create --data-dir) share the file; a write
// waits for the other's instead of failing with "database is locked".
const PRAGMAS = `
PRAGMA busy_timeout = 5000;
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;
`;

/** The first schema (user_version 0). Later changes are MIGRATIONS, never edits here. */
const SCHEMA_V0 = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS realms (
  id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, cidr4 TEXT NOT NULL, cidr6 TEXT NOT NULL,
  key_seed TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS registration_tokens (
  id TEXT PRIMARY KEY, realm_id TEXT NOT NULL REFERENCES realms(id), secret_hash TEXT NOT NULL,
  taints TEXT NOT NULL, uses_left INTEGER, expires_at INTEGER, revoked INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS confluxes (
  id TEXT PRIMARY KEY, realm_id TEXT NOT NULL REFERENCES realms(id), secret_hash TEXT NOT NULL,
  tag TEXT NOT NULL, ip4 INTEGER NOT NULL, taints TEXT NOT NULL, allowed_taints TEXT NOT NULL,
  portal INTEGER NOT NULL, subnets TEXT NOT NULL, created_at INTEGER NOT NULL,
  UNIQUE (realm_id, ip4));
`;

/**
 * Schema changes, in order: migration i brings user_version i to i + 1, in one transaction with the version bump.
 * Append only; each says in a comment what it changes and what happens to rows written before it.
 */
const MIGRATIONS: ((db: DatabaseSync) => void)[] = [
  // 0 -> 1, the trust model: what a node may hold is what an administrator granted.
  // - Tokens grant taints explicitly (`any_taints` is the administrator's explicit "any"); a token written before
  //   with no taints (which meant "any") now grants none. Tokens grant portal subnets too.
  // - Nodes keep their grant: an older node's grant becomes the taints and subnets it holds now (so running nodes
  //   keep working and cannot widen themselves later).
  // - Tags are unique per realm: an older duplicate tag keeps its oldest holder; the others get "-<id>" appended.
  // - Sessions (to revoke NATS credentials), retired addresses (not given out while a certificate may live),
  //   revocations (sent to nodes at login), OIDC settings per realm and the verified identity per node.
  (db) => {
    db.exec(`
      ALTER TABLE registration_tokens ADD COLUMN any_taints INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE registration_tokens ADD COLUMN subnets TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE confluxes ADD COLUMN any_taints INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE confluxes ADD COLUMN granted_subnets TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE confluxes ADD COLUMN identity TEXT;
      ALTER TABLE confluxes ADD COLUMN node_id TEXT;
      ALTER TABLE confluxes ADD COLUMN last_login INTEGER;
      ALTER TABLE confluxes ADD COLUMN cert_expires INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE confluxes ADD COLUMN revoked_at INTEGER;
      ALTER TABLE realms ADD COLUMN oidc TEXT;
      UPDATE confluxes SET allowed_taints = taints WHERE allowed_taints = '[]';
      UPDATE confluxes SET granted_subnets = subnets;
      UPDATE confluxes SET tag = tag || '-' || substr(id, 1, 8) WHERE EXISTS (
        SELECT 1 FROM confluxes o WHERE o.realm_id = confluxes.realm_id AND o.tag = confluxes.tag
          AND (o.created_at < confluxes.created_at OR (o.created_at = confluxes.created_at AND o.id < confluxes.id)));
      CREATE UNIQUE INDEX confluxes_tag ON confluxes (realm_id, tag);
      CREATE TABLE sessions (
        conflux_id TEXT NOT NULL, realm_id TEXT NOT NULL, node_id TEXT NOT NULL, nats_user TEXT NOT NULL,
        issued_at INTEGER NOT NULL, expires_at INTEGER NOT NULL);
      CREATE INDEX sessions_conflux ON sessions (conflux_id);
      CREATE TABLE retired_addresses (
        realm_id TEXT NOT NULL, ip4 INTEGER NOT NULL, until INTEGER NOT NULL, PRIMARY KEY (realm_id, ip4));
      CREATE TABLE revocations (
        realm_id TEXT NOT NULL, conflux_id TEXT NOT NULL, before INTEGER NOT NULL, until INTEGER NOT NULL,
        cut_master INTEGER NOT NULL);
    `);
  },
  // 1 -> 2, several Guardians: login nonces are shared state (a login recorded at one Guardian cannot be replayed
  // at another), kept until the login's date falls out of the accepted skew. Nothing written before changes.
  (db) => {
    db.exec("CREATE TABLE login_nonces (key TEXT PRIMARY KEY, until INTEGER NOT NULL);");
  },
  // 2 -> 3, users and teams: users of a realm (who own nodes), teams they own and belong to, each with the secret
  // its identity tags are made with. Tokens may name the user their nodes belong to; nodes ask for teams. A realm
  // chooses its access model. Nodes and tokens written before belong to nobody; realms keep taints.
  (db) => {
    db.exec(`
      CREATE TABLE users (
        id TEXT PRIMARY KEY, realm_id TEXT NOT NULL REFERENCES realms(id), name TEXT NOT NULL, issuer TEXT,
        subject TEXT, secret TEXT NOT NULL, created_at INTEGER NOT NULL, UNIQUE (realm_id, name));
      CREATE UNIQUE INDEX users_identity ON users (realm_id, issuer, subject) WHERE subject IS NOT NULL;
      CREATE TABLE teams (
        id TEXT PRIMARY KEY, realm_id TEXT NOT NULL REFERENCES realms(id), name TEXT NOT NULL,
        owner_id TEXT NOT NULL REFERENCES users(id), secret TEXT NOT NULL, created_at INTEGER NOT NULL,
        UNIQUE (realm_id, name));
      CREATE TABLE team_members (
        team_id TEXT NOT NULL REFERENCES teams(id), user_id TEXT NOT NULL REFERENCES users(id),
        PRIMARY KEY (team_id, user_id));
      ALTER TABLE registration_tokens ADD COLUMN user_id TEXT;
      ALTER TABLE confluxes ADD COLUMN owner_id TEXT;
      ALTER TABLE confluxes ADD COLUMN teams TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE realms ADD COLUMN access TEXT NOT NULL DEFAULT 'taints';
    `);
  },
  // 3 -> 4, geo-location (issue 22): the administrator places a node in a region (on the node, or on the token
  // that registers it) and says where traffic may cross a third party: a realm's default list, and a node's own
  // list (NULL: the realm's). Everything written before is unplaced, its realm allows anywhere ('[]'), and its
  // nodes follow their realm.
  (db) => {
    db.exec(`
      ALTER TABLE realms ADD COLUMN regions TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE confluxes ADD COLUMN region TEXT NOT NULL DEFAULT '';
      ALTER TABLE confluxes ADD COLUMN regions TEXT;
      ALTER TABLE registration_tokens ADD COLUMN region TEXT NOT NULL DEFAULT '';
    `);
  },
];

/** Every table, parents before children (foreign keys): what a dump holds and a load fills. */
const TABLES = [
  "meta",
  "realms",
  "registration_tokens",
  "confluxes",
  "sessions",
  "retired_addresses",
  "revocations",
  "login_nonces",
  "users",
  "teams",
  "team_members",
] as const;

/** A column name from a dump: it is spliced into SQL, so nothing but a plain identifier passes. */
const COLUMN_NAME = /^[a-z_][a-z0-9_]*$/;

/** Applies the migrations a database has not had yet. */
function migrate(db: DatabaseSync): void {
  const version = () =>
    Number((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version);
  while (version() < MIGRATIONS.length) {
    const v = version();
    db.exec("BEGIN IMMEDIATE");
    try {
      if (version() === v) { // another process may have migrated while we waited for the lock
        MIGRATIONS[v]!(db);
        db.exec(`PRAGMA user_version = ${v + 1}`);
      }
      db.exec("COMMIT");
    } catch (error) {
      db.exec("ROLLBACK");
      throw new Error(`guardian store: migration ${v} -> ${v + 1} failed: ${(error as Error).message}`, {
        cause: error,
      });
    }
  }
}

/** Columns of any table, so rows can be read with property access. */
type Column =
  | "id"
  | "name"
  | "cidr4"
  | "cidr6"
  | "key_seed"
  | "created_at"
  | "realm_id"
  | "secret_hash"
  | "taints"
  | "uses_left"
  | "expires_at"
  | "revoked"
  | "tag"
  | "ip4"
  | "allowed_taints"
  | "portal"
  | "subnets"
  | "value"
  | "any_taints"
  | "granted_subnets"
  | "identity"
  | "node_id"
  | "last_login"
  | "cert_expires"
  | "revoked_at"
  | "oidc"
  | "conflux_id"
  | "nats_user"
  | "issued_at"
  | "before"
  | "until"
  | "cut_master"
  | "key"
  | "user_id"
  | "owner_id"
  | "issuer"
  | "subject"
  | "team_id"
  | "secret"
  | "access"
  | "teams"
  | "region"
  | "regions";
type Row = Record<Column, unknown>;

function realm(r: Row): RealmRow {
  return {
    id: String(r.id),
    name: String(r.name),
    cidr4: String(r.cidr4),
    cidr6: String(r.cidr6),
    keySeed: String(r.key_seed),
    oidc: r.oidc === null || r.oidc === undefined ? null : JSON.parse(String(r.oidc)),
    createdAt: Number(r.created_at),
    access: r.access === "teams" ? "teams" : "taints",
    regions: r.regions === null || r.regions === undefined ? [] : JSON.parse(String(r.regions)),
  };
}

function token(r: Row): RegistrationTokenRow {
  return {
    id: String(r.id),
    realmId: String(r.realm_id),
    secretHash: String(r.secret_hash),
    taints: JSON.parse(String(r.taints)),
    anyTaints: Number(r.any_taints) === 1,
    subnets: JSON.parse(String(r.subnets)),
    usesLeft: r.uses_left === null ? null : Number(r.uses_left),
    expiresAt: r.expires_at === null ? null : Number(r.expires_at),
    revoked: Number(r.revoked) === 1,
    createdAt: Number(r.created_at),
    userId: r.user_id === null || r.user_id === undefined ? null : String(r.user_id),
    region: r.region === null || r.region === undefined ? "" : String(r.region),
  };
}

function user(r: Row): UserRow {
  return {
    id: String(r.id),
    realmId: String(r.realm_id),
    name: String(r.name),
    issuer: r.issuer === null ? null : String(r.issuer),
    subject: r.subject === null ? null : String(r.subject),
    secret: String(r.secret),
    createdAt: Number(r.created_at),
  };
}

function team(r: Row): TeamRow {
  return {
    id: String(r.id),
    realmId: String(r.realm_id),
    name: String(r.name),
    ownerId: String(r.owner_id),
    secret: String(r.secret),
    createdAt: Number(r.created_at),
  };
}

function conflux(r: Row): ConfluxRow {
  return {
    id: String(r.id),
    realmId: String(r.realm_id),
    secretHash: String(r.secret_hash),
    tag: String(r.tag),
    ip4: Number(r.ip4),
    taints: JSON.parse(String(r.taints)),
    allowedTaints: JSON.parse(String(r.allowed_taints)),
    anyTaints: Number(r.any_taints) === 1,
    portal: Number(r.portal) === 1,
    subnets: JSON.parse(String(r.subnets)),
    grantedSubnets: JSON.parse(String(r.granted_subnets)),
    identity: r.identity === null ? null : JSON.parse(String(r.identity)),
    nodeId: r.node_id === null ? null : String(r.node_id),
    lastLogin: r.last_login === null ? null : Number(r.last_login),
    certExpires: Number(r.cert_expires),
    revokedAt: r.revoked_at === null ? null : Number(r.revoked_at),
    createdAt: Number(r.created_at),
    ownerId: r.owner_id === null || r.owner_id === undefined ? null : String(r.owner_id),
    teams: r.teams === null || r.teams === undefined ? [] : JSON.parse(String(r.teams)),
    region: r.region === null || r.region === undefined ? "" : String(r.region),
    regions: r.regions === null || r.regions === undefined ? null : JSON.parse(String(r.regions)),
  };
}

function session(r: Row): SessionRow {
  return {
    confluxId: String(r.conflux_id),
    realmId: String(r.realm_id),
    nodeId: String(r.node_id),
    natsUser: String(r.nats_user),
    issuedAt: Number(r.issued_at),
    expiresAt: Number(r.expires_at),
  };
}

function revocation(r: Row): RevocationRow {
  return {
    realmId: String(r.realm_id),
    confluxId: String(r.conflux_id),
    before: Number(r.before),
    until: Number(r.until),
    cutMaster: Number(r.cut_master) === 1,
  };
}

/** The Guardian's database. */
export class Store implements Disposable {
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  /** Set once the store is a replica: writes then go through it (replication.ts). */
  #committer: Committer | undefined;
  /** The writes of the transaction being recorded, if one is. */
  #recording: Write[] | undefined;
  /** Whether writes of the shared log are being applied. */
  #applying = false;

  /**
   * Opens (and creates if needed) the database at `path` (":memory:" for tests and replicas). A file database
   * and the files SQLite keeps beside it are 0600 whatever the umask or the directory's mode (`makePrivate`).
   */
  constructor(path: string) {
    const onDisk = path !== ":memory:" && path !== "";
    if (onDisk) makePrivate(path);
    this.#db = new DatabaseSync(path);
    try {
      this.#db.exec(PRAGMAS);
      this.#db.exec(SCHEMA_V0);
      migrate(this.#db);
      if (onDisk) checkPrivate(path);
    } catch (error) {
      this.#db.close();
      throw error;
    }
  }

  /**
   * Runs `fn` (synchronous) in one transaction: all of it happens, or none. A local store commits it before this
   * returns (the promise is already settled, so a caller that does not wait still sees its effects); a replica
   * resolves once the shared log took it and it is applied here, and may run `fn` more than once (it is run
   * again over the newer state when another Guardian committed first): `fn` has no effect but its writes.
   */
  transaction<T>(fn: () => T): Promise<T> {
    if (this.#committer) return this.#committer.commit(fn);
    try {
      this.#db.exec("BEGIN IMMEDIATE");
    } catch (error) {
      return Promise.reject(error);
    }
    try {
      const result = fn();
      this.#db.exec("COMMIT");
      return Promise.resolve(result);
    } catch (error) {
      this.#db.exec("ROLLBACK");
      return Promise.reject(error);
    }
  }

  /** Catches up with what other Guardians committed (a replica); a local store is always current. */
  sync(): Promise<void> {
    return this.#committer?.sync() ?? Promise.resolve();
  }

  /** Whether the store is a replica of shared state. */
  get replicated(): boolean {
    return this.#committer !== undefined;
  }

  /** Makes this store a replica: from now on every write goes through `committer` (replication.ts). */
  replicateThrough(committer: Committer): void {
    if (this.#committer) throw new Error("guardian store: this store is already a replica");
    this.#committer = committer;
  }

  /**
   * Runs `fn` in a transaction that is rolled back, and returns what it returned and the writes it made, in
   * order: replaying them on this state has the same effect (replication.ts commits them through the log).
   */
  record<T>(fn: () => T): { result: T; writes: Write[] } {
    if (this.#recording) throw new Error("guardian store: transactions do not nest");
    this.#db.exec("BEGIN IMMEDIATE");
    const writes: Write[] = [];
    this.#recording = writes;
    try {
      return { result: fn(), writes };
    } finally {
      this.#recording = undefined;
      this.#db.exec("ROLLBACK");
    }
  }

  /** Applies recorded writes in one transaction (all or none; a failure means this replica diverged). */
  apply(writes: Write[]): void {
    this.#db.exec("BEGIN IMMEDIATE");
    this.#applying = true;
    try {
      for (const w of writes) this.#prepare(w.sql).run(...w.params);
      this.#db.exec("COMMIT");
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw new Error(`guardian store: a replicated write failed: ${(error as Error).message}`, {
        cause: error,
      });
    } finally {
      this.#applying = false;
    }
  }

  /** The schema version of this store (how many migrations it has had). */
  get schema(): number {
    return Number((this.#prepare("PRAGMA user_version").get() as { user_version: number }).user_version);
  }

  /** Every row of every table, with rowids (so a store loaded from it numbers what follows the same way). */
  dump(): StoreDump {
    const tables: StoreDump["tables"] = {};
    for (const t of TABLES) {
      tables[t] = this.#prepare(`SELECT _rowid_ AS _rowid_, * FROM ${t} ORDER BY _rowid_`).all() as Record<
        string,
        SqlValue
      >[];
    }
    return { schema: this.schema, tables };
  }

  /** Replaces this store's whole state with `dump` (a replica starting, or starting over). */
  load(dump: StoreDump): void {
    if (dump.schema !== this.schema) {
      throw new Error(
        `guardian store: the shared state has schema version ${dump.schema}, this Guardian ${this.schema}: ` +
          "every Guardian sharing a state must run the same version",
      );
    }
    this.#db.exec("BEGIN IMMEDIATE");
    this.#applying = true;
    try {
      for (const t of [...TABLES].reverse()) this.#db.exec(`DELETE FROM ${t}`);
      for (const t of TABLES) {
        for (const row of dump.tables[t] ?? []) {
          const columns = Object.keys(row);
          const bad = columns.find((c) => !COLUMN_NAME.test(c));
          if (bad !== undefined) throw new Error(`a dump names a column "${bad}" in ${t}`);
          this.#prepare(
            `INSERT INTO ${t} (${columns.join(", ")}) VALUES (${columns.map(() => "?").join(", ")})`,
          ).run(...columns.map((c) => row[c]!));
        }
      }
      this.#db.exec("COMMIT");
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw new Error(`guardian store: loading the shared state failed: ${(error as Error).message}`, {
        cause: error,
      });
    } finally {
      this.#applying = false;
    }
  }

  /**
   * Runs a write statement; recorded when a transaction is being recorded. A replica refuses writes outside a
   * transaction: they would change this replica alone.
   */
  /**
   * The compiled statement for `sql`, made once: the revocation notices ask four times a second, and compiling
   * each time cost work and native memory held until the garbage collector finalized the statement.
   */
  #prepare(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) this.#statements.set(sql, statement = this.#db.prepare(sql));
    return statement;
  }

  #write(sql: string, ...params: SqlValue[]): { changes: number | bigint } {
    if (this.#committer && !this.#recording && !this.#applying) {
      throw new Error("guardian store: a replica writes only inside `await store.transaction(fn)`");
    }
    const result = this.#prepare(sql).run(...params);
    this.#recording?.push({ sql, params });
    return result;
  }

  getMeta(key: string): string | undefined {
    const row = this.#prepare("SELECT value FROM meta WHERE key = ?").get(key) as Row | undefined;
    return row === undefined ? undefined : String(row.value);
  }

  setMeta(key: string, value: string): void {
    this.#write(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
      key,
      value,
    );
  }

  addRealm(r: RealmRow): void {
    if (this.realmByName(r.name)) throw new ConflictError(`realm "${r.name}" already exists`);
    this.#write(
      "INSERT INTO realms (id, name, cidr4, cidr6, key_seed, oidc, created_at, regions) " +
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      r.id,
      r.name,
      r.cidr4,
      r.cidr6,
      r.keySeed,
      r.oidc === null ? null : JSON.stringify(r.oidc),
      r.createdAt,
      JSON.stringify(r.regions ?? []),
    );
  }

  setRealmAccess(id: string, access: "taints" | "teams"): void {
    this.#write("UPDATE realms SET access = ? WHERE id = ?", access, id);
  }

  setConfluxTeams(id: string, teams: string[]): void {
    this.#write("UPDATE confluxes SET teams = ? WHERE id = ?", JSON.stringify(teams), id);
  }

  /** Sets a realm's default regions: where its nodes' traffic may cross a third party ([] anywhere). */
  setRealmRegions(id: string, regions: string[]): void {
    this.#write("UPDATE realms SET regions = ? WHERE id = ?", JSON.stringify(regions), id);
  }

  /** Places a node in a region ("" for none). */
  setConfluxRegion(id: string, region: string): void {
    this.#write("UPDATE confluxes SET region = ? WHERE id = ?", region, id);
  }

  /** Sets a node's own regions, or with null makes it follow its realm's. */
  setConfluxRegions(id: string, regions: string[] | null): void {
    this.#write(
      "UPDATE confluxes SET regions = ? WHERE id = ?",
      regions === null ? null : JSON.stringify(regions),
      id,
    );
  }

  /** Sets (or, with null, clears) a realm's OIDC settings. */
  setRealmOidc(id: string, oidc: RealmOidc | null): void {
    this.#write("UPDATE realms SET oidc = ? WHERE id = ?", oidc === null ? null : JSON.stringify(oidc), id);
  }

  realmByName(name: string): RealmRow | undefined {
    const row = this.#prepare("SELECT * FROM realms WHERE name = ?").get(name) as Row | undefined;
    return row && realm(row);
  }

  realmById(id: string): RealmRow | undefined {
    const row = this.#prepare("SELECT * FROM realms WHERE id = ?").get(id) as Row | undefined;
    return row && realm(row);
  }

  realms(): RealmRow[] {
    return (this.#prepare("SELECT * FROM realms ORDER BY name").all() as Row[]).map(realm);
  }

  addToken(t: RegistrationTokenRow): void {
    this.#write(
      "INSERT INTO registration_tokens (id, realm_id, secret_hash, taints, any_taints, subnets, uses_left, " +
        "expires_at, revoked, created_at, user_id, region) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      t.id,
      t.realmId,
      t.secretHash,
      JSON.stringify(t.taints),
      t.anyTaints ? 1 : 0,
      JSON.stringify(t.subnets),
      t.usesLeft,
      t.expiresAt,
      t.revoked ? 1 : 0,
      t.createdAt,
      t.userId ?? null,
      t.region ?? "",
    );
  }

  tokenById(id: string): RegistrationTokenRow | undefined {
    const row = this.#prepare("SELECT * FROM registration_tokens WHERE id = ?").get(id) as Row | undefined;
    return row && token(row);
  }

  tokens(): RegistrationTokenRow[] {
    return (this.#prepare("SELECT * FROM registration_tokens ORDER BY created_at").all() as Row[]).map(
      token,
    );
  }

  /** Marks a token revoked; false if there is no such token. */
  revokeToken(id: string): boolean {
    return Number(this.#write("UPDATE registration_tokens SET revoked = 1 WHERE id = ?", id).changes) === 1;
  }

  /**
   * Uses up one registration of a token, in one statement: false (and nothing changed) when the token is revoked,
   * expired at `now` or used up. Called inside the registration's transaction, so a refusal rolls it back.
   */
  consumeToken(id: string, now: number): boolean {
    return Number(
      this.#write(
        "UPDATE registration_tokens SET uses_left = uses_left - 1 WHERE id = ? AND revoked = 0 " +
          "AND (expires_at IS NULL OR expires_at > ?) AND (uses_left IS NULL OR uses_left > 0)",
        id,
        now,
      ).changes,
    ) === 1;
  }

  addConflux(c: ConfluxRow): void {
    if (this.confluxByIp(c.realmId, c.ip4)) {
      throw new ConflictError("that address is already taken in this realm");
    }
    if (this.confluxByTag(c.realmId, c.tag)) {
      throw new ConflictError(`tag "${c.tag}" is held by another node`);
    }
    this.#write(
      "INSERT INTO confluxes (id, realm_id, secret_hash, tag, ip4, taints, allowed_taints, any_taints, portal, " +
        "subnets, granted_subnets, identity, node_id, last_login, cert_expires, revoked_at, created_at, owner_id, " +
        "teams, region, regions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      c.id,
      c.realmId,
      c.secretHash,
      c.tag,
      c.ip4,
      JSON.stringify(c.taints),
      JSON.stringify(c.allowedTaints),
      c.anyTaints ? 1 : 0,
      c.portal ? 1 : 0,
      JSON.stringify(c.subnets),
      JSON.stringify(c.grantedSubnets),
      c.identity === null ? null : JSON.stringify(c.identity),
      c.nodeId,
      c.lastLogin,
      c.certExpires,
      c.revokedAt,
      c.createdAt,
      c.ownerId ?? null,
      JSON.stringify(c.teams ?? []),
      c.region ?? "",
      c.regions === undefined || c.regions === null ? null : JSON.stringify(c.regions),
    );
  }

  // ---- Users and teams -------------------------------------------------------------------------------------

  addUser(u: UserRow): void {
    if (this.userByName(u.realmId, u.name)) throw new ConflictError(`user "${u.name}" already exists`);
    this.#write(
      "INSERT INTO users (id, realm_id, name, issuer, subject, secret, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
      u.id,
      u.realmId,
      u.name,
      u.issuer,
      u.subject,
      u.secret,
      u.createdAt,
    );
  }

  userByName(realmId: string, name: string): UserRow | undefined {
    const row = this.#prepare("SELECT * FROM users WHERE realm_id = ? AND name = ?").get(realmId, name);
    return row ? user(row as Row) : undefined;
  }

  userById(id: string): UserRow | undefined {
    const row = this.#prepare("SELECT * FROM users WHERE id = ?").get(id);
    return row ? user(row as Row) : undefined;
  }

  userByIdentity(realmId: string, issuer: string, subject: string): UserRow | undefined {
    const row = this.#prepare("SELECT * FROM users WHERE realm_id = ? AND issuer = ? AND subject = ?").get(
      realmId,
      issuer,
      subject,
    );
    return row ? user(row as Row) : undefined;
  }

  users(realmId?: string): UserRow[] {
    return this.#byName("users", realmId).map(user);
  }

  /** Rows of `table` (of one realm, or all), by name. */
  #byName(table: "users" | "teams", realmId?: string): Row[] {
    const rows = realmId === undefined
      ? this.#prepare(`SELECT * FROM ${table} ORDER BY name`).all()
      : this.#prepare(`SELECT * FROM ${table} WHERE realm_id = ? ORDER BY name`).all(realmId);
    return rows as Row[];
  }

  /** Deletes a user or a team with its memberships; false if there is none. */
  #removeWithMembers(table: "users" | "teams", id: string): boolean {
    this.#write(`DELETE FROM team_members WHERE ${table === "users" ? "user_id" : "team_id"} = ?`, id);
    return Number(this.#write(`DELETE FROM ${table} WHERE id = ?`, id).changes) === 1;
  }

  /** Removes a user with their memberships; false if there is none. (Their teams and nodes are the caller's.) */
  removeUser(id: string): boolean {
    return this.#removeWithMembers("users", id);
  }

  addTeam(t: TeamRow): void {
    if (this.teamByName(t.realmId, t.name)) throw new ConflictError(`team "${t.name}" already exists`);
    this.#write(
      "INSERT INTO teams (id, realm_id, name, owner_id, secret, created_at) VALUES (?, ?, ?, ?, ?, ?)",
      t.id,
      t.realmId,
      t.name,
      t.ownerId,
      t.secret,
      t.createdAt,
    );
  }

  teamByName(realmId: string, name: string): TeamRow | undefined {
    const row = this.#prepare("SELECT * FROM teams WHERE realm_id = ? AND name = ?").get(realmId, name);
    return row ? team(row as Row) : undefined;
  }

  teams(realmId?: string): TeamRow[] {
    return this.#byName("teams", realmId).map(team);
  }

  /** Deletes a team and its memberships; false if there is none. */
  removeTeam(id: string): boolean {
    return this.#removeWithMembers("teams", id);
  }

  /** Adds a member; false if they already were one. */
  addMember(teamId: string, userId: string): boolean {
    return Number(
      this.#write("INSERT OR IGNORE INTO team_members (team_id, user_id) VALUES (?, ?)", teamId, userId)
        .changes,
    ) === 1;
  }

  /** Removes a member; false if they were not one. */
  removeMember(teamId: string, userId: string): boolean {
    return Number(
      this.#write("DELETE FROM team_members WHERE team_id = ? AND user_id = ?", teamId, userId).changes,
    ) === 1;
  }

  /** The user ids of a team's members, by name. */
  members(teamId: string): string[] {
    return (this.#prepare(
      "SELECT u.id FROM team_members m JOIN users u ON u.id = m.user_id WHERE m.team_id = ? ORDER BY u.name",
    ).all(teamId) as Row[]).map((r) => String(r.id));
  }

  confluxByTag(realmId: string, tag: string): ConfluxRow | undefined {
    const row = this.#prepare("SELECT * FROM confluxes WHERE realm_id = ? AND tag = ?").get(
      realmId,
      tag,
    ) as
      | Row
      | undefined;
    return row && conflux(row);
  }

  /** Nodes of a realm (or of every realm), by address. */
  confluxes(realmId?: string): ConfluxRow[] {
    const rows = realmId === undefined
      ? this.#prepare("SELECT * FROM confluxes ORDER BY realm_id, ip4").all()
      : this.#prepare("SELECT * FROM confluxes WHERE realm_id = ? ORDER BY ip4").all(realmId);
    return (rows as Row[]).map(conflux);
  }

  confluxById(id: string): ConfluxRow | undefined {
    const row = this.#prepare("SELECT * FROM confluxes WHERE id = ?").get(id) as Row | undefined;
    return row && conflux(row);
  }

  confluxByIp(realmId: string, ip4: number): ConfluxRow | undefined {
    const row = this.#prepare("SELECT * FROM confluxes WHERE realm_id = ? AND ip4 = ?").get(
      realmId,
      ip4,
    ) as
      | Row
      | undefined;
    return row && conflux(row);
  }

  /**
   * IPv4 addresses (as integers) not to hand out in a realm at `now`, ascending: those of its nodes, and those of
   * removed nodes whose certificates may still be valid.
   */
  takenAddresses(realmId: string, now: number): number[] {
    return (this.#prepare(
      "SELECT ip4 FROM confluxes WHERE realm_id = ? UNION SELECT ip4 FROM retired_addresses " +
        "WHERE realm_id = ? AND until > ? ORDER BY ip4",
    ).all(realmId, realmId, now) as Row[]).map((r) => Number(r.ip4));
  }

  /** Until when an address of a removed node stays out of use (its last certificate's expiry), if it does. */
  retiredUntil(realmId: string, ip4: number, now: number): number | undefined {
    const row = this.#prepare(
      "SELECT until FROM retired_addresses WHERE realm_id = ? AND ip4 = ? AND until > ?",
    )
      .get(realmId, ip4, now) as Row | undefined;
    return row === undefined ? undefined : Number(row.until);
  }

  /** Renames a node; ConflictError when another node of its realm holds the tag. */
  setTag(id: string, tag: string): void {
    const row = this.confluxById(id);
    const holder = row && this.confluxByTag(row.realmId, tag);
    if (holder && holder.id !== id) throw new ConflictError(`tag "${tag}" is held by another node`);
    this.#write("UPDATE confluxes SET tag = ? WHERE id = ?", tag, id);
  }

  /** Sets what an administrator granted a node: the taints it may hold (and their "any"), its portal subnets. */
  setGrant(
    id: string,
    grant: { allowedTaints?: string[]; anyTaints?: boolean; grantedSubnets?: string[] },
  ): void {
    const row = this.confluxById(id);
    if (!row) return;
    this.#write(
      "UPDATE confluxes SET allowed_taints = ?, any_taints = ?, granted_subnets = ? WHERE id = ?",
      JSON.stringify(grant.allowedTaints ?? row.allowedTaints),
      (grant.anyTaints ?? row.anyTaints) ? 1 : 0,
      JSON.stringify(grant.grantedSubnets ?? row.grantedSubnets),
      id,
    );
  }

  /** Records a session issued at login: the node's current key, its NATS user, and its certificate's expiry. */
  addSession(s: SessionRow): void {
    this.#write(
      "INSERT INTO sessions (conflux_id, realm_id, node_id, nats_user, issued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
      s.confluxId,
      s.realmId,
      s.nodeId,
      s.natsUser,
      s.issuedAt,
      s.expiresAt,
    );
    this.#write(
      "UPDATE confluxes SET node_id = ?, last_login = ?, cert_expires = max(cert_expires, ?) WHERE id = ?",
      s.nodeId,
      s.issuedAt,
      s.expiresAt,
      s.confluxId,
    );
    this.#write("DELETE FROM sessions WHERE expires_at <= ?", s.issuedAt);
  }

  /** Sessions of a node still valid at `now`. */
  sessions(confluxId: string, now: number): SessionRow[] {
    return (this.#prepare("SELECT * FROM sessions WHERE conflux_id = ? AND expires_at > ?").all(
      confluxId,
      now,
    ) as Row[]).map(session);
  }

  /** Every session still valid at `now` whose node is revoked or removed (for the Master's revocation list). */
  revokedSessions(now: number): SessionRow[] {
    return (this.#prepare(
      "SELECT s.* FROM sessions s JOIN revocations r ON r.conflux_id = s.conflux_id " +
        "WHERE s.expires_at > ? AND s.issued_at <= r.before AND r.cut_master = 1",
    ).all(now) as Row[]).map(session);
  }

  /** Records that a node's certificates issued up to `before` are void, until `until` (when none can live). */
  addRevocation(r: RevocationRow): void {
    this.#write(
      "INSERT INTO revocations (realm_id, conflux_id, before, until, cut_master) VALUES (?, ?, ?, ?, ?)",
      r.realmId,
      r.confluxId,
      r.before,
      r.until,
      r.cutMaster ? 1 : 0,
    );
  }

  /** Forgets revocations that no longer matter at `now` (a write: call it inside a transaction). */
  pruneRevocations(now: number): void {
    // The newest row stays, so its number is never reused (revocationsSince counts on increasing numbers).
    this.#write(
      "DELETE FROM revocations WHERE until <= ? AND rowid < (SELECT max(rowid) FROM revocations)",
      now,
    );
  }

  /** Revocations of a realm that still matter at `now`. */
  revocations(realmId: string, now: number): RevocationRow[] {
    return (this.#prepare(
      "SELECT * FROM revocations WHERE realm_id = ? AND until > ? ORDER BY before, rowid",
    ).all(realmId, now) as Row[]).map(revocation);
  }

  /**
   * Takes a login nonce (`key`), kept until `until`: false if it was taken before (a replay). Forgets the nonces
   * whose time has passed at `now`.
   */
  useNonce(key: string, until: number, now: number): boolean {
    this.#write("DELETE FROM login_nonces WHERE until <= ?", now);
    return Number(
      this.#write(
        "INSERT INTO login_nonces (key, until) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        key,
        until,
      )
        .changes,
    ) === 1;
  }

  /** Revocations recorded after the one numbered `after` (0: all), with their numbers, oldest first. */
  revocationsSince(after: number): (RevocationRow & { seq: number })[] {
    return (this.#prepare("SELECT rowid AS seq, * FROM revocations WHERE rowid > ? ORDER BY rowid").all(
      after,
    ) as (Row & { seq: number })[]).map((r) => ({ ...revocation(r), seq: Number(r.seq) }));
  }

  /** Marks a node revoked at `at`: it can no longer log in. */
  setRevoked(id: string, at: number): void {
    this.#write("UPDATE confluxes SET revoked_at = ? WHERE id = ?", at, id);
  }

  setPortal(id: string, portal: boolean, subnets: string[]): void {
    this.#write(
      "UPDATE confluxes SET portal = ?, subnets = ? WHERE id = ?",
      portal ? 1 : 0,
      JSON.stringify(subnets),
      id,
    );
  }

  setTaints(id: string, taints: string[]): void {
    this.#write("UPDATE confluxes SET taints = ? WHERE id = ?", JSON.stringify(taints), id);
  }

  /**
   * Removes a node; false if there was none. Its address stays out of use until its last certificate expires
   * (`retireUntil`), so no other node is given an address a live certificate still names.
   */
  removeConflux(id: string, retireUntil: number): boolean {
    const row = this.confluxById(id);
    if (!row) return false;
    this.#write(
      "INSERT INTO retired_addresses (realm_id, ip4, until) VALUES (?, ?, ?) " +
        "ON CONFLICT (realm_id, ip4) DO UPDATE SET until = max(until, excluded.until)",
      row.realmId,
      row.ip4,
      retireUntil,
    );
    return Number(this.#write("DELETE FROM confluxes WHERE id = ?", id).changes) === 1;
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
