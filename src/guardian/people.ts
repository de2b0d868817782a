/**
 * Users and teams of a realm (issue 21): users own the nodes registered for them; teams are created and owned by
 * a user, who adds other users as members. Everything here is the administrator's (through the admin API, scoped
 * to a realm for a realm administrator); what a node may then hold follows from it, never from what a node says.
 * @module
 */

import { ConflictError, type Store, type TeamRow, type UserRow } from "./store.ts";
import { base64, GuardianError, randomHex } from "./rules.ts";
import type { NodeIdentity } from "./store.ts";
import { MAX_IDENTITIES } from "../wire/certificate.ts";

/** A user's name: letters, digits and `@ . _ -` (an e-mail address fits), 1-64 characters. */
export const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9@._-]{0,63}$/;
/** A team's name: lower-case letters, digits and `-`, 1-63 characters (like a tag). */
export const TEAM_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Checks the team names a node asks for: each a team name, at most MAX_IDENTITIES - 1 (one is its owner). */
export function checkTeams(teams: string[]): string[] {
  const bad = teams.find((t) => !TEAM_NAME.test(t));
  if (bad !== undefined) {
    throw new GuardianError(400, `bad team name "${bad}": lower-case letters, digits and -`);
  }
  const unique = [...new Set(teams)];
  if (unique.length > MAX_IDENTITIES - 1) {
    throw new GuardianError(400, `at most ${MAX_IDENTITIES - 1} teams per node, got ${unique.length}`);
  }
  return unique;
}

/** A user as the admin API shows them. */
export interface UserView {
  name: string;
  realm: string;
  issuer?: string;
  subject?: string;
  /** Nodes they own, by tag. */
  nodes: string[];
  created_at: number;
}

/** A team as the admin API shows it. */
export interface TeamView {
  name: string;
  realm: string;
  owner: string;
  members: string[];
  created_at: number;
}

/** A new identity secret (base64 of 32 random bytes). */
function newSecret(): string {
  return base64(crypto.getRandomValues(new Uint8Array(32)));
}

/** The realm's users and teams, over the Guardian's store. */
export class People {
  constructor(
    readonly store: Store,
    readonly clock: () => number,
    /** A realm by name (404 if there is none). */
    readonly realm: (name: string) => { id: string; name: string },
    /** Makes a node log in again (within a transaction): its certificate then carries what it holds now. */
    readonly reissue: (confluxId: string) => void,
  ) {}

  /** Nodes of realm `realmId` that ask for team `team`, owned by `userId` (any owner when undefined). */
  #asking(realmId: string, team: string, userId?: string): string[] {
    return this.store.confluxes(realmId)
      .filter((c) => c.teams?.includes(team) && (userId === undefined || c.ownerId === userId))
      .map((c) => c.id);
  }

  /**
   * The identities a node holds (its owner, and each team it asks for whose owner or member its owner is), as
   * secrets, and the teams it asks for but does not get.
   */
  identitiesOf(node: { realmId: string; ownerId?: string | null; teams?: string[] }): {
    secrets: string[];
    ignored: string[];
  } {
    const owner = node.ownerId ? this.store.userById(node.ownerId) : undefined;
    const secrets = owner ? [owner.secret] : [];
    const ignored: string[] = [];
    for (const name of node.teams ?? []) {
      const t = this.store.teamByName(node.realmId, name);
      const holds = t && owner && (t.ownerId === owner.id || this.store.members(t.id).includes(owner.id));
      if (holds) secrets.push(t.secret);
      else ignored.push(name);
    }
    return { secrets, ignored };
  }

  /** The nodes a user owns. */
  #nodesOf(u: UserRow) {
    return this.store.confluxes(u.realmId).filter((c) => c.ownerId === u.id);
  }

  /** A new user's row (not yet stored), with a fresh identity secret. */
  #newUser(realmId: string, name: string, identity?: NodeIdentity): UserRow {
    return {
      id: randomHex(16),
      realmId,
      name,
      issuer: identity?.issuer ?? null,
      subject: identity?.subject ?? null,
      secret: newSecret(),
      createdAt: this.clock(),
    };
  }

  #user(realmId: string, name: string): UserRow {
    const u = this.store.userByName(realmId, name);
    if (!u) throw new GuardianError(404, `no user "${name}"`);
    return u;
  }

  #team(realmId: string, name: string): TeamRow {
    const t = this.store.teamByName(realmId, name);
    if (!t) throw new GuardianError(404, `no team "${name}"`);
    return t;
  }

  userView(u: UserRow): UserView {
    return {
      name: u.name,
      realm: this.store.realmById(u.realmId)?.name ?? "",
      ...(u.issuer ? { issuer: u.issuer } : {}),
      ...(u.subject ? { subject: u.subject } : {}),
      nodes: this.#nodesOf(u).map((c) => c.tag),
      created_at: u.createdAt,
    };
  }

  teamView(t: TeamRow): TeamView {
    const name = (id: string) => this.store.userById(id)?.name ?? id;
    return {
      name: t.name,
      realm: this.store.realmById(t.realmId)?.name ?? "",
      owner: name(t.ownerId),
      members: this.store.members(t.id).map(name),
      created_at: t.createdAt,
    };
  }

  /** Creates a user; with `identity`, the one they sign in with at the realm's issuer. */
  async createUser(realmName: string, name: string, identity?: NodeIdentity): Promise<UserView> {
    const realm = this.realm(realmName);
    if (!USER_NAME.test(name)) {
      throw new GuardianError(400, `bad user name "${name}": 1-64 letters, digits and @ . _ -`);
    }
    if (identity && this.store.userByIdentity(realm.id, identity.issuer, identity.subject)) {
      throw new GuardianError(409, `another user signs in as ${identity.subject} at ${identity.issuer}`);
    }
    const row = this.#newUser(realm.id, name, identity);
    await this.#change(() => this.store.addUser(row));
    return this.userView(row);
  }

  users(realmName: string): UserView[] {
    return this.store.users(this.realm(realmName).id).map((u) => this.userView(u));
  }

  /** Removes a user who owns no node and no team (those are removed or handed over first: nothing dangles). */
  async removeUser(realmName: string, name: string): Promise<void> {
    const realm = this.realm(realmName);
    const u = this.#user(realm.id, name);
    const nodes = this.#nodesOf(u);
    if (nodes.length > 0) {
      throw new GuardianError(
        409,
        `${name} owns nodes (${nodes.map((c) => c.tag).join(", ")}): remove them first`,
      );
    }
    const teams = this.store.teams(realm.id).filter((t) => t.ownerId === u.id);
    if (teams.length > 0) {
      throw new GuardianError(
        409,
        `${name} owns teams (${teams.map((t) => t.name).join(", ")}): delete them first`,
      );
    }
    await this.store.transaction(() => this.store.removeUser(u.id));
  }

  /**
   * The user a node registered with an identity belongs to: the one who signs in as that identity, made on first
   * sight (named by the e-mail address, else the subject, with a suffix if the name is taken).
   */
  userFor(realmId: string, identity: NodeIdentity): UserRow {
    const known = this.store.userByIdentity(realmId, identity.issuer, identity.subject);
    if (known) return known;
    const base = (identity.email ?? identity.subject).replace(/[^A-Za-z0-9@._-]/g, "-").slice(0, 55) ||
      "user";
    let name = USER_NAME.test(base) ? base : `u-${base}`.slice(0, 55);
    if (this.store.userByName(realmId, name)) name = `${name}-${randomHex(3)}`;
    const row = this.#newUser(realmId, name, identity);
    this.store.addUser(row);
    return row;
  }

  async createTeam(realmName: string, name: string, owner: string): Promise<TeamView> {
    const realm = this.realm(realmName);
    if (!TEAM_NAME.test(name)) {
      throw new GuardianError(400, `bad team name "${name}": 1-63 lower-case letters, digits and -`);
    }
    const row: TeamRow = {
      id: randomHex(16),
      realmId: realm.id,
      name,
      ownerId: this.#user(realm.id, owner).id,
      secret: newSecret(),
      createdAt: this.clock(),
    };
    await this.#change(() => {
      this.store.addTeam(row);
      // The owner's nodes that asked for it hold it from now on.
      for (const id of this.#asking(realm.id, name, row.ownerId)) this.reissue(id);
    });
    return this.teamView(row);
  }

  teams(realmName: string): TeamView[] {
    return this.store.teams(this.realm(realmName).id).map((t) => this.teamView(t));
  }

  async deleteTeam(realmName: string, name: string): Promise<void> {
    const t = this.#team(this.realm(realmName).id, name);
    await this.store.transaction(() => {
      this.store.removeTeam(t.id);
      for (const id of this.#asking(t.realmId, t.name)) this.reissue(id);
    });
  }

  /** Adds a member (the owner is one already, as owner). */
  async addMember(realmName: string, teamName: string, userName: string): Promise<TeamView> {
    const realm = this.realm(realmName);
    const t = this.#team(realm.id, teamName);
    const u = this.#user(realm.id, userName);
    if (u.id === t.ownerId) throw new GuardianError(409, `${userName} owns team ${teamName}`);
    await this.store.transaction(() => {
      if (this.store.addMember(t.id, u.id)) {
        for (const id of this.#asking(realm.id, t.name, u.id)) this.reissue(id);
      }
    });
    return this.teamView(t);
  }

  async removeMember(realmName: string, teamName: string, userName: string): Promise<TeamView> {
    const realm = this.realm(realmName);
    const t = this.#team(realm.id, teamName);
    const u = this.#user(realm.id, userName);
    const removed = await this.store.transaction(() => {
      const was = this.store.removeMember(t.id, u.id);
      if (was) { for (const id of this.#asking(realm.id, t.name, u.id)) this.reissue(id); }
      return was;
    });
    if (!removed) {
      throw new GuardianError(404, `${userName} is not a member of team ${teamName}`);
    }
    return this.teamView(t);
  }

  async #change(write: () => void): Promise<void> {
    try {
      await this.store.transaction(write);
    } catch (error) {
      if (error instanceof ConflictError) throw new GuardianError(409, error.message);
      throw error;
    }
  }
}
