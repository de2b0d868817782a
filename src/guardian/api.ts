/**
 * The Guardian's HTTP JSON API: a flat route table over Guardian. Every refusal is a JSON `{ "error": "..." }`
 * with a 4xx status, and changes nothing.
 * @module
 */

import type { AdminScope, Guardian, RegisterRequest } from "./guardian.ts";
import { StateUnavailable } from "./replication.ts";
import { GuardianError, parseDuration } from "./rules.ts";
import { SourceLimits, type SourceLimitsOptions, sourceOf } from "./source_limits.ts";
import type { RealmOidc, RealmRow, UserRow } from "./store.ts";

/** Largest request body accepted (an administrator's); node endpoints take less, see BODY_CAPS. */
export const MAX_BODY_BYTES = 64 * 1024;

/**
 * Body caps of the node endpoints, by route: a login is a public key (~2.6 KiB in base64) and a few fields, a
 * registration may carry an OIDC identity token of a few KiB.
 */
export const BODY_CAPS: Record<string, number> = {
  "POST /conflux/register": 32 * 1024,
  "POST /conflux/session/login": 16 * 1024,
  "POST /conflux/taints": 8 * 1024,
  "DELETE /conflux/unregister": 1024,
};

/**
 * Refusals that count against a source's failure budget: a token or identity refused (401), and what no honest
 * client sends (no such route or method, a body above the cap).
 */
const UNAUTHENTICATED = new Set([401, 404, 405, 413]);

/** What a route handler gets: the request, its URL, path parameters, the Bearer token and the body. */
interface Context {
  req: Request;
  url: URL;
  params: Record<string, string>;
  token: string | undefined;
  /** The source has spent its failure budget: a token is checked without waiting for the shared state. */
  failing: boolean;
  body: () => Promise<Record<string, unknown>>;
  /** The exact body bytes (read once, shared with `body`). */
  raw: () => Promise<Uint8Array>;
  /** The address the request came from, as the socket saw it; undefined when not over a socket (tests). */
  remote?: string;
}

/** A remote address as text: IPv4 as itself, an IPv4-mapped IPv6 address as its IPv4 address. */
function unmapped(host: string): string {
  const bare = host.replace(/^\[|\]$/g, "");
  return /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare)?.[1] ?? bare;
}

type Handler = (ctx: Context) => Promise<Response>;

/**
 * Throws 403 unless `scope` may act on realm `name`. A realm administrator (signed in through the realm's issuer)
 * acts on that realm only; the admin token on all.
 */
function inScope(scope: AdminScope, name: string | undefined): void {
  if (sees(scope, name)) return;
  throw new HttpError(
    403,
    `${scope.who ?? "this identity"} administers realm ${[...scope.realms].join(", ")}, not ${
      name === undefined ? "the whole Guardian" : name
    }`,
  );
}

/** Whether `scope` may see and act on realm `name`. */
function sees(scope: AdminScope, name: string | undefined): boolean {
  return scope.all || (name !== undefined && scope.realms.has(name));
}

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
}

/**
 * The body, at most `cap` bytes: a declared length above it is refused before a byte is read, and a stream
 * (chunked, or longer than declared) is cancelled at the first chunk beyond it.
 */
async function readRaw(req: Request, cap: number): Promise<Uint8Array> {
  const header = req.headers.get("content-length");
  if (header !== null && !/^\d+$/.test(header.trim())) {
    throw new HttpError(400, `Content-Length must be a number of bytes, got "${header}"`);
  }
  const declared = Number(header ?? "0");
  if (declared > cap) throw new HttpError(413, `body of ${declared} bytes exceeds ${cap} here`);
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body?.getReader();
  while (reader) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > cap) {
      await reader.cancel().catch(() => {});
      throw new HttpError(413, `body exceeds ${cap} bytes here`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function parseBody(raw: Uint8Array): Record<string, unknown> {
  const text = new TextDecoder().decode(raw);
  let value: unknown;
  try {
    value = text === "" ? {} : JSON.parse(text);
  } catch (error) {
    throw new HttpError(400, `body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HttpError(400, "body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function optional<T>(
  body: Record<string, unknown>,
  key: string,
  type: "string" | "boolean" | "number",
): T | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  // deno-lint-ignore valid-typeof -- `type` is one of the three literal names above
  if (typeof v !== type) throw new HttpError(400, `${key} must be a ${type}`);
  return v as T;
}

function stringList(body: Record<string, unknown>, key: string): string[] | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") return v.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) {
    throw new HttpError(400, `${key} must be a list of strings`);
  }
  return v as string[];
}

/** How the API runs besides its Guardian. */
export interface HandlerOptions {
  /** Per-source budgets (defaults: DEFAULT_SOURCE_LIMITS), or the table itself (tests give one with a fake clock). */
  limits?: SourceLimits | Partial<SourceLimitsOptions>;
}

/**
 * The request handler for `Deno.serve` (which gives the remote address as `info`). A request goes: the source's
 * request budget (429), the route (404, 405), the Bearer token (401, a lookup and a hash, before any body byte is
 * read), then the handler, which reads the body up to the route's cap (413). A request refused before it
 * authenticated takes from the source's failure budget; once that is spent, such refusals are 429.
 */
export function guardianHandler(
  guardian: Guardian,
  options: HandlerOptions = {},
): (req: Request, info?: { remoteAddr: Deno.Addr }) => Promise<Response> {
  const limits = options.limits instanceof SourceLimits ? options.limits : new SourceLimits(options.limits);
  // The token is checked before the handler reads the body; the Guardian checks it again where it is used.
  const needs = (kind: "vreg" | "vcfx", handler: Handler): Handler => async (ctx) => {
    await guardian.authenticate(kind, ctx.token, { sync: !ctx.failing });
    return await handler(ctx);
  };
  // An administrator sees the newest state: with several Guardians, what another one took a moment ago too.
  const admin = (handler: (ctx: Context, scope: AdminScope) => Promise<Response>): Handler => async (ctx) => {
    const scope = await guardian.adminScope(ctx.token);
    await guardian.sync();
    return await handler(ctx, scope);
  };
  /**
   * A route administrators use, and users too for their own teams and nodes: the handler gets the admin scope,
   * or else the user an identity token from a realm's issuer belongs to.
   */
  const adminOrUser = (
    handler: (ctx: Context, who: { scope: AdminScope } | { user: UserRow }) => Promise<Response>,
  ): Handler =>
  async (ctx) => {
    let who: { scope: AdminScope } | { user: UserRow };
    try {
      who = { scope: await guardian.adminScope(ctx.token) };
    } catch (error) {
      const user = await guardian.userOf(ctx.token);
      if (!user) throw error;
      who = { user };
    }
    await guardian.sync();
    return await handler(ctx, who);
  };
  /** For a user: their realm must be the one named (403), and what they act on must be theirs (`mine`, else 403). */
  const userMay = (user: UserRow, realm: string | undefined, mine: boolean, what: string) => {
    if (guardian.store.realmById(user.realmId)?.name !== realm) {
      throw new HttpError(403, `${user.name} is a user of another realm`);
    }
    if (!mine) throw new HttpError(403, `${user.name} may not ${what}`);
  };
  const realmParam = (url: URL) => url.searchParams.get("realm") ?? undefined;
  const owns = (user: UserRow, team: string) =>
    guardian.store.teamByName(user.realmId, team)?.ownerId === user.id;
  const scoped = (scope: AdminScope, realmId: string) => sees(scope, guardian.store.realmById(realmId)?.name);
  /**
   * The node named in the path, within the `realm` parameter and the credential's realms: a node outside them is
   * not found, as if it did not exist.
   */
  const nodeOf = ({ url, params }: Context, scope: AdminScope) => {
    const asked = realmParam(url);
    if (asked !== undefined) inScope(scope, asked);
    const only = scope.all || scope.realms.size !== 1 ? undefined : [...scope.realms][0];
    const node = guardian.findNode(params.ref!, asked ?? only);
    if (!scoped(scope, node.realmId)) {
      throw new HttpError(404, `no node "${params.ref}" (give its id or tag)`);
    }
    return node;
  };
  const routes: Record<string, Handler> = {
    "GET /healthz": () => Promise.resolve(json(200, { ok: true })),

    "POST /conflux/register": needs("vreg", async ({ token, body }) => {
      const b = await body();
      const moved = ["jwks_url", "issuer", "audience"].filter((k) => b[k] !== undefined);
      if (moved.length > 0) {
        throw new HttpError(
          400,
          `${
            moved.join(", ")
          } are no longer taken from the client: the administrator sets the realm's issuer ` +
            "(guardian realm oidc); send only the identity token as jwt",
        );
      }
      const req: RegisterRequest = {
        tag: optional(b, "tag", "string"),
        ip: optional(b, "ip", "string"),
        taints: stringList(b, "taints"),
        portal: optional(b, "portal", "boolean"),
        subnets: stringList(b, "subnets"),
        identityToken: optional(b, "jwt", "string"),
        teams: stringList(b, "teams"),
      };
      return json(201, await guardian.register(token, req));
    }),

    "DELETE /conflux/unregister": needs("vcfx", async ({ token, url }) => {
      await guardian.unregister(token, url.searchParams.get("conflux_id"));
      return json(200, { ok: true });
    }),

    "POST /conflux/session/login": needs("vcfx", async ({ req, token, body, raw, url, remote }) => {
      const fields = await body();
      return json(
        200,
        await guardian.login(token, {
          body: await raw(),
          fields,
          signature: req.headers.get("veilnet-signature") ?? undefined,
          host: req.headers.get("host") ?? url.host,
          ...(remote !== undefined ? { from: remote } : {}),
        }),
      );
    }),

    "POST /conflux/taints": needs("vcfx", async ({ token, body }) => {
      const b = await body();
      return json(200, { taints: await guardian.setTaints(token, { add: b.add, remove: b.remove }) });
    }),

    "POST /admin/realms": admin(async ({ body }, scope) => {
      inScope(scope, undefined);
      const b = await body();
      const name = optional<string>(b, "name", "string");
      if (!name) throw new HttpError(400, "name is required");
      return json(201, realmView(await guardian.createRealm(name, optional(b, "cidr", "string"), oidcOf(b))));
    }),

    "GET /admin/realms": admin((_, scope) =>
      Promise.resolve(
        json(
          200,
          guardian.store.realms().filter((r) => sees(scope, r.name)).map(realmView),
        ),
      )
    ),

    "PUT /admin/realms/:name/oidc": admin(async ({ params, body }, scope) => {
      inScope(scope, params.name);
      return json(200, realmView(await guardian.setRealmOidc(params.name!, oidcOf(await body()) ?? null)));
    }),

    "PUT /admin/realms/:name/access": admin(async ({ params, body }, scope) => {
      inScope(scope, params.name);
      const access = optional<string>(await body(), "access", "string");
      if (access !== "taints" && access !== "teams") {
        throw new HttpError(400, 'access is "taints" or "teams"');
      }
      return json(200, realmView(await guardian.setRealmAccess(params.name!, access)));
    }),

    // Geo-location (issue 22): where a realm's nodes' traffic may cross a third party ([] anywhere).
    "PUT /admin/realms/:name/regions": admin(async ({ params, body }, scope) => {
      inScope(scope, params.name);
      const regions = stringList(await body(), "regions");
      if (regions === undefined) {
        throw new HttpError(400, "regions is required: a list of regions, [] for anywhere");
      }
      return json(200, realmView(await guardian.setRealmRegions(params.name!, regions)));
    }),

    "DELETE /admin/realms/:name/oidc": admin(async ({ params }, scope) => {
      inScope(scope, params.name);
      return json(200, realmView(await guardian.setRealmOidc(params.name!, null)));
    }),

    "POST /admin/tokens": admin(async ({ body }, scope) => {
      const b = await body();
      const realm = optional<string>(b, "realm", "string");
      if (!realm) throw new HttpError(400, "realm is required");
      inScope(scope, realm);
      const ttl = optional<string>(b, "ttl", "string");
      return json(
        201,
        await guardian.createToken({
          realm,
          ttlMs: ttl === undefined ? undefined : parseDuration(ttl),
          uses: optional(b, "uses", "number"),
          taints: stringList(b, "taints"),
          anyTaints: optional(b, "any_taints", "boolean"),
          subnets: stringList(b, "subnets"),
          user: optional(b, "user", "string"),
          region: optional(b, "region", "string"),
        }),
      );
    }),

    "GET /admin/tokens": admin((_, scope) =>
      Promise.resolve(
        json(200, tokenList(guardian).filter((t) => sees(scope, t.realm))),
      )
    ),

    "DELETE /admin/tokens/:id": admin(async ({ params }, scope) => {
      const token = guardian.store.tokenById(params.id!);
      if (token && !scoped(scope, token.realmId)) throw new HttpError(404, `no token ${params.id}`);
      await guardian.revokeToken(params.id!);
      return json(200, { ok: true });
    }),

    "GET /admin/nodes": admin(async ({ url }, scope) => {
      const realm = realmParam(url);
      if (realm !== undefined) inScope(scope, realm);
      const nodes = await guardian.nodes(realm);
      return json(200, nodes.filter((n) => sees(scope, n.realm)));
    }),

    "GET /admin/nodes/:ref": admin(async (ctx, scope) =>
      json(200, await guardian.node(nodeOf(ctx, scope).id))
    ),

    "POST /admin/nodes/:ref/revoke": admin(async (ctx, scope) =>
      json(200, await guardian.revokeNode(nodeOf(ctx, scope).id))
    ),

    "DELETE /admin/nodes/:ref": admin(async (ctx, scope) => {
      await guardian.removeNode(nodeOf(ctx, scope).id);
      return json(200, { ok: true });
    }),

    "PUT /admin/nodes/:ref/taints": admin(async (ctx, scope) => {
      const id = nodeOf(ctx, scope).id;
      const b = await ctx.body();
      return json(
        200,
        await guardian.setNodeTaints(id, { taints: stringList(b, "taints") ?? [], any: b.any === true }),
      );
    }),

    "PUT /admin/nodes/:ref/tag": admin(async (ctx, scope) => {
      const id = nodeOf(ctx, scope).id;
      const tag = optional<string>(await ctx.body(), "tag", "string");
      if (!tag) throw new HttpError(400, "tag is required");
      return json(200, await guardian.setNodeTag(id, tag));
    }),

    // Users and teams of a realm (issue 21).
    "GET /admin/realms/:realm/users": admin(({ params }, scope) => {
      inScope(scope, params.realm);
      return Promise.resolve(json(200, guardian.people.users(params.realm!)));
    }),

    "POST /admin/realms/:realm/users": admin(async ({ params, body }, scope) => {
      inScope(scope, params.realm);
      const b = await body();
      const name = optional<string>(b, "name", "string");
      if (!name) throw new HttpError(400, "name is required");
      const issuer = optional<string>(b, "issuer", "string");
      const subject = optional<string>(b, "subject", "string");
      if ((issuer === undefined) !== (subject === undefined)) {
        throw new HttpError(400, "issuer and subject go together");
      }
      return json(
        201,
        await guardian.people.createUser(
          params.realm!,
          name,
          issuer ? { issuer, subject: subject! } : undefined,
        ),
      );
    }),

    "DELETE /admin/realms/:realm/users/:user": admin(async ({ params }, scope) => {
      inScope(scope, params.realm);
      await guardian.people.removeUser(params.realm!, params.user!);
      return json(200, { ok: true });
    }),

    "GET /admin/whoami": adminOrUser((_, who) =>
      Promise.resolve(
        json(
          200,
          "scope" in who
            ? { administrator: who.scope.all ? "all" : [...who.scope.realms] }
            : { user: who.user.name, realm: guardian.store.realmById(who.user.realmId)?.name },
        ),
      )
    ),

    // Teams: administrators manage all of a realm's; a user sees the teams they own or belong to, and manages
    // the ones they own (and may leave one).
    "GET /admin/realms/:realm/teams": adminOrUser(({ params }, who) => {
      if ("scope" in who) inScope(who.scope, params.realm);
      else userMay(who.user, params.realm, true, "");
      const teams = guardian.people.teams(params.realm!);
      if ("scope" in who) return Promise.resolve(json(200, teams));
      const name = who.user.name;
      return Promise.resolve(json(200, teams.filter((t) => t.owner === name || t.members.includes(name))));
    }),

    "POST /admin/realms/:realm/teams": adminOrUser(async ({ params, body }, who) => {
      const b = await body();
      const name = optional<string>(b, "name", "string");
      let owner = optional<string>(b, "owner", "string");
      if ("scope" in who) inScope(who.scope, params.realm);
      else {
        userMay(
          who.user,
          params.realm,
          owner === undefined || owner === who.user.name,
          "make a team for another",
        );
        owner = who.user.name;
      }
      if (!name || !owner) throw new HttpError(400, "name and owner are required");
      return json(201, await guardian.people.createTeam(params.realm!, name, owner));
    }),

    "DELETE /admin/realms/:realm/teams/:team": adminOrUser(async ({ params }, who) => {
      if ("scope" in who) inScope(who.scope, params.realm);
      else userMay(who.user, params.realm, owns(who.user, params.team!), `delete team ${params.team}`);
      await guardian.people.deleteTeam(params.realm!, params.team!);
      return json(200, { ok: true });
    }),

    "PUT /admin/realms/:realm/teams/:team/members/:user": adminOrUser(async ({ params }, who) => {
      if ("scope" in who) inScope(who.scope, params.realm);
      else {userMay(
          who.user,
          params.realm,
          owns(who.user, params.team!),
          `add members to team ${params.team}`,
        );}
      return json(200, await guardian.people.addMember(params.realm!, params.team!, params.user!));
    }),

    "DELETE /admin/realms/:realm/teams/:team/members/:user": adminOrUser(async ({ params }, who) => {
      if ("scope" in who) inScope(who.scope, params.realm);
      else {
        const mine = owns(who.user, params.team!) || params.user === who.user.name; // or leaving it
        userMay(who.user, params.realm, mine, `remove members of team ${params.team}`);
      }
      return json(200, await guardian.people.removeMember(params.realm!, params.team!, params.user!));
    }),

    "PUT /admin/nodes/:ref/teams": adminOrUser(async (ctx, who) => {
      let id: string;
      if ("scope" in who) id = nodeOf(ctx, who.scope).id;
      else {
        // A user's own nodes only: another's is not found.
        const node = guardian.store.confluxById(ctx.params.ref!) ??
          guardian.store.confluxByTag(who.user.realmId, ctx.params.ref!);
        if (!node || node.ownerId !== who.user.id) {
          throw new HttpError(404, `no node "${ctx.params.ref}" of yours`);
        }
        id = node.id;
      }
      return json(200, await guardian.setNodeTeams(id, stringList(await ctx.body(), "teams") ?? []));
    }),

    // Where the administrator places a node ("" for nowhere), and where its traffic may go (null: as its realm).
    "PUT /admin/nodes/:ref/region": admin(async (ctx, scope) => {
      const id = nodeOf(ctx, scope).id;
      const region = optional<string>(await ctx.body(), "region", "string");
      if (region === undefined) throw new HttpError(400, 'region is required: a region name, or "" for none');
      return json(200, await guardian.setNodeRegion(id, region));
    }),

    "PUT /admin/nodes/:ref/regions": admin(async (ctx, scope) => {
      const id = nodeOf(ctx, scope).id;
      const b = await ctx.body();
      if (!("regions" in b)) {
        throw new HttpError(
          400,
          "regions is required: a list of regions ([] for anywhere), or null for the realm's",
        );
      }
      return json(
        200,
        await guardian.setNodeRegions(id, b.regions === null ? null : stringList(b, "regions")!),
      );
    }),

    "PUT /admin/nodes/:ref/subnets": admin(async (ctx, scope) => {
      const id = nodeOf(ctx, scope).id;
      const subnets = stringList(await ctx.body(), "subnets") ?? [];
      return json(200, await guardian.grantNodeSubnets(id, subnets));
    }),
  };
  const table = Object.entries(routes).map(([key, handler]) => {
    const [method, path] = key.split(" ") as [string, string];
    const names: string[] = [];
    const pattern = new RegExp(
      "^" + path.replace(/:(\w+)/g, (_, name) => {
        names.push(name);
        return "([^/]+)";
      }) + "$",
    );
    return { method, pattern, names, handler, cap: BODY_CAPS[key] ?? MAX_BODY_BYTES };
  });

  return async (req: Request, info?: { remoteAddr: Deno.Addr }): Promise<Response> => {
    const source = sourceOf(info && "hostname" in info.remoteAddr ? info.remoteAddr : undefined);
    const wait = limits.request(source);
    if (wait > 0) return tooMany(source, wait);
    const url = new URL(req.url);
    const auth = req.headers.get("authorization") ?? "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7).trim() : undefined;
    let cached: Promise<Uint8Array> | undefined;
    try {
      const matches = table.filter((r) => r.pattern.test(url.pathname));
      const route = matches.find((r) => r.method === req.method);
      if (!route) {
        throw new HttpError(
          matches.length > 0 ? 405 : 404,
          matches.length > 0 ? `${req.method} not allowed here` : `no route ${url.pathname}`,
        );
      }
      const values = route.pattern.exec(url.pathname)!.slice(1).map(decodeURIComponent);
      const params = Object.fromEntries(route.names.map((n, i) => [n, values[i]!]));
      const raw = () => cached ??= readRaw(req, route.cap);
      const failing = limits.failing(source) > 0;
      return await route.handler({
        req,
        url,
        remote: info && "hostname" in info.remoteAddr ? unmapped(info.remoteAddr.hostname) : undefined,
        params,
        token,
        failing,
        raw,
        body: async () => parseBody(await raw()),
      });
    } catch (error) {
      if (error instanceof GuardianError || error instanceof HttpError) {
        if (UNAUTHENTICATED.has(error.status)) {
          const wait = limits.failure(source);
          if (wait > 0) return tooMany(source, wait);
        }
        return json(error.status, { error: error.message });
      }
      // Another Guardian of the same state may be able to answer: a 5xx sends nodes on to it.
      if (error instanceof StateUnavailable) return json(503, { error: error.message });
      console.error("guardian: internal error:", error);
      return json(500, { error: "internal error (logged by the Guardian)" });
    }
  };
}

/** 429: `source` spent its budget; Retry-After says when it has some again. */
function tooMany(source: string, seconds: number): Response {
  return new Response(
    JSON.stringify({ error: `too many requests from ${source}: retry in ${seconds} s` }),
    { status: 429, headers: { "content-type": "application/json", "retry-after": String(seconds) } },
  );
}

function realmView(r: RealmRow): Record<string, unknown> {
  return {
    id: r.id,
    name: r.name,
    cidr4: r.cidr4,
    cidr6: r.cidr6,
    access: r.access ?? "taints",
    regions: r.regions ?? [],
    ...(r.oidc
      ? {
        oidc: {
          issuer: r.oidc.issuer,
          jwks_url: r.oidc.jwksUrl,
          audience: r.oidc.audience,
          ...(r.oidc.taintsClaim ? { taints_claim: r.oidc.taintsClaim } : {}),
          ...(r.oidc.admins ? { admins: r.oidc.admins } : {}),
        },
      }
      : {}),
  };
}

/**
 * A realm's OIDC settings from a request body (issuer, jwks_url, audience, taints_claim, admins), or undefined.
 */
function oidcOf(b: Record<string, unknown>): RealmOidc | undefined {
  const issuer = optional<string>(b, "issuer", "string");
  const jwksUrl = optional<string>(b, "jwks_url", "string");
  const audience = optional<string>(b, "audience", "string");
  const taintsClaim = optional<string>(b, "taints_claim", "string");
  const admins = stringList(b, "admins");
  if ([issuer, jwksUrl, audience, taintsClaim, admins].every((v) => v === undefined)) return undefined;
  if (!issuer || !jwksUrl || !audience) {
    throw new HttpError(
      400,
      "issuer, jwks_url and audience go together (taints_claim and admins are optional)",
    );
  }
  return {
    issuer,
    jwksUrl,
    audience,
    ...(taintsClaim ? { taintsClaim } : {}),
    ...(admins ? { admins } : {}),
  };
}

/** Registration tokens without their secrets. */
export function tokenList(guardian: Guardian): { realm: string | undefined }[] {
  const realms = new Map(guardian.store.realms().map((r) => [r.id, r.name]));
  return guardian.store.tokens().map((t) => ({
    id: t.id,
    realm: realms.get(t.realmId),
    taints: t.anyTaints ? "any" : t.taints,
    subnets: t.subnets,
    uses_left: t.usesLeft,
    expires_at: t.expiresAt,
    revoked: t.revoked,
    region: t.region ?? "",
    ...(t.userId ? { user: guardian.store.userById(t.userId)?.name } : {}),
  }));
}
