/**
 * The Guardian's state in SQLite (`node:sqlite`; the only importer): realms and their keys, registration tokens,
 * registered nodes (confluxes), and a few secrets. Token secrets are stored only as SHA-256 hashes.
 *
 * All calls are synchronous, so each method runs to completion before any other request is served: a
 * registration checks its token, picks an address and records the node in one transaction that nothing can
 * interleave with. The UNIQUE(realm_id, ip4) constraint backs that up.
 * @module
 */

import { DatabaseSync } from "node:sqlite";

/** A realm: one logical network with its own key and address ranges. */
export interface RealmRow {
  id: string;
  name: string;
  cidr4: string;
  cidr6: string;
  /** Base64 of the realm's 32-byte ML-DSA-65 seed. */
  keySeed: string;
  createdAt: number;
}

/** A registration token (its secret is not stored). */
export interface RegistrationTokenRow {
  id: string;
  realmId: string;
  secretHash: string;
  /** Taints a node registered with this token may hold; empty means any. */
  taints: string[];
  /** Registrations left, or null for unlimited. */
  usesLeft: number | null;
  expiresAt: number | null;
  revoked: boolean;
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
  /** Taints this node may ever hold (from its registration token); empty means any. */
  allowedTaints: string[];
  portal: boolean;
  subnets: string[];
  createdAt: number;
}

/** A constraint the caller broke (duplicate name, address taken): the API turns it into 409. */
export class ConflictError extends Error {
  override name = "ConflictError";
}

// busy_timeout: the server and an admin command (guardian token create --data-dir) share the file; a write
// waits for the other's instead of failing with "database is locked".
const SCHEMA = `
PRAGMA busy_timeout = 5000;
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;
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
  | "value";
type Row = Record<Column, unknown>;

function realm(r: Row): RealmRow {
  return {
    id: String(r.id),
    name: String(r.name),
    cidr4: String(r.cidr4),
    cidr6: String(r.cidr6),
    keySeed: String(r.key_seed),
    createdAt: Number(r.created_at),
  };
}

function token(r: Row): RegistrationTokenRow {
  return {
    id: String(r.id),
    realmId: String(r.realm_id),
    secretHash: String(r.secret_hash),
    taints: JSON.parse(String(r.taints)),
    usesLeft: r.uses_left === null ? null : Number(r.uses_left),
    expiresAt: r.expires_at === null ? null : Number(r.expires_at),
    revoked: Number(r.revoked) === 1,
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
    portal: Number(r.portal) === 1,
    subnets: JSON.parse(String(r.subnets)),
    createdAt: Number(r.created_at),
  };
}

/** The Guardian's database. */
export class Store implements Disposable {
  readonly #db: DatabaseSync;

  /** Opens (and creates if needed) the database at `path` (":memory:" for tests). */
  constructor(path: string) {
    this.#db = new DatabaseSync(path);
    this.#db.exec(SCHEMA);
  }

  /** Runs `fn` in one transaction: all of it happens, or none. */
  transaction<T>(fn: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const result = fn();
      this.#db.exec("COMMIT");
      return result;
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  getMeta(key: string): string | undefined {
    const row = this.#db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as Row | undefined;
    return row === undefined ? undefined : String(row.value);
  }

  setMeta(key: string, value: string): void {
    this.#db.prepare(
      "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    )
      .run(key, value);
  }

  addRealm(r: RealmRow): void {
    if (this.realmByName(r.name)) throw new ConflictError(`realm "${r.name}" already exists`);
    this.#db.prepare(
      "INSERT INTO realms (id, name, cidr4, cidr6, key_seed, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
      .run(r.id, r.name, r.cidr4, r.cidr6, r.keySeed, r.createdAt);
  }

  realmByName(name: string): RealmRow | undefined {
    const row = this.#db.prepare("SELECT * FROM realms WHERE name = ?").get(name) as Row | undefined;
    return row && realm(row);
  }

  realmById(id: string): RealmRow | undefined {
    const row = this.#db.prepare("SELECT * FROM realms WHERE id = ?").get(id) as Row | undefined;
    return row && realm(row);
  }

  realms(): RealmRow[] {
    return (this.#db.prepare("SELECT * FROM realms ORDER BY name").all() as Row[]).map(realm);
  }

  addToken(t: RegistrationTokenRow): void {
    this.#db.prepare(
      "INSERT INTO registration_tokens (id, realm_id, secret_hash, taints, uses_left, expires_at, revoked, created_at) " +
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ).run(
      t.id,
      t.realmId,
      t.secretHash,
      JSON.stringify(t.taints),
      t.usesLeft,
      t.expiresAt,
      t.revoked ? 1 : 0,
      t.createdAt,
    );
  }

  tokenById(id: string): RegistrationTokenRow | undefined {
    const row = this.#db.prepare("SELECT * FROM registration_tokens WHERE id = ?").get(id) as Row | undefined;
    return row && token(row);
  }

  tokens(): RegistrationTokenRow[] {
    return (this.#db.prepare("SELECT * FROM registration_tokens ORDER BY created_at").all() as Row[]).map(
      token,
    );
  }

  /** Marks a token revoked; false if there is no such token. */
  revokeToken(id: string): boolean {
    return Number(
      this.#db.prepare("UPDATE registration_tokens SET revoked = 1 WHERE id = ?").run(id).changes,
    ) === 1;
  }

  /** Uses up one registration of a token with limited uses. */
  consumeToken(id: string): void {
    this.#db.prepare(
      "UPDATE registration_tokens SET uses_left = uses_left - 1 WHERE id = ? AND uses_left > 0",
    )
      .run(id);
  }

  addConflux(c: ConfluxRow): void {
    if (this.confluxByIp(c.realmId, c.ip4)) {
      throw new ConflictError("that address is already taken in this realm");
    }
    this.#db.prepare(
      "INSERT INTO confluxes (id, realm_id, secret_hash, tag, ip4, taints, allowed_taints, portal, subnets, created_at) " +
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    ).run(
      c.id,
      c.realmId,
      c.secretHash,
      c.tag,
      c.ip4,
      JSON.stringify(c.taints),
      JSON.stringify(c.allowedTaints),
      c.portal ? 1 : 0,
      JSON.stringify(c.subnets),
      c.createdAt,
    );
  }

  confluxById(id: string): ConfluxRow | undefined {
    const row = this.#db.prepare("SELECT * FROM confluxes WHERE id = ?").get(id) as Row | undefined;
    return row && conflux(row);
  }

  confluxByIp(realmId: string, ip4: number): ConfluxRow | undefined {
    const row = this.#db.prepare("SELECT * FROM confluxes WHERE realm_id = ? AND ip4 = ?").get(
      realmId,
      ip4,
    ) as
      | Row
      | undefined;
    return row && conflux(row);
  }

  /** IPv4 addresses (as integers) taken in a realm, ascending. */
  takenAddresses(realmId: string): number[] {
    return (this.#db.prepare("SELECT ip4 FROM confluxes WHERE realm_id = ? ORDER BY ip4").all(
      realmId,
    ) as Row[])
      .map((r) => Number(r.ip4));
  }

  setTag(id: string, tag: string): void {
    this.#db.prepare("UPDATE confluxes SET tag = ? WHERE id = ?").run(tag, id);
  }

  setPortal(id: string, portal: boolean, subnets: string[]): void {
    this.#db.prepare("UPDATE confluxes SET portal = ?, subnets = ? WHERE id = ?")
      .run(portal ? 1 : 0, JSON.stringify(subnets), id);
  }

  setTaints(id: string, taints: string[]): void {
    this.#db.prepare("UPDATE confluxes SET taints = ? WHERE id = ?").run(JSON.stringify(taints), id);
  }

  /** Removes a node; false if there was none. */
  removeConflux(id: string): boolean {
    return Number(this.#db.prepare("DELETE FROM confluxes WHERE id = ?").run(id).changes) === 1;
  }

  close(): void {
    if (this.#db.isOpen) this.#db.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
