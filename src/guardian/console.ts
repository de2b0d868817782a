/**
 * The Guardian's web console (`guardian serve --console HOST:PORT`): realms, nodes, tokens and the realm's
 * topology, as server-rendered HTML with plain forms, a stylesheet and one small script (the topology's live
 * refresh), all served from here: nothing is fetched from elsewhere, and no build step.
 *
 * The console has no power of its own: it is a client of the admin API, in process. Signing in checks the admin
 * token by the API; every page reads through it and every action is an API call with that token, so the same
 * checks, limits and errors apply as to `guardian` commands.
 *
 * Signing in: with the admin token (the whole Guardian), or as a realm's administrator through the realm's OIDC
 * issuer (authorization code flow with PKCE, state and nonce; the realm's audience is the client id). The identity
 * token the issuer returns is then the session's credential towards the API, which decides what it may do: that
 * realm only, and only if the realm's settings name its holder among the `admins`.
 *
 * Sessions: a random id in a cookie (HttpOnly, SameSite=Strict, Secure with TLS), kept in memory for
 * SESSION_MS (or until the identity token expires). Every state change is a POST carrying the session's CSRF
 * token, from this console's own origin.
 * @module
 */

import { toHex } from "../crypto/identity.ts";
import type { NodeView } from "./guardian.ts";
import { verifyIdentity } from "./oidc.ts";
import type { TeamView, UserView } from "./people.ts";
import type { ReportedPeer } from "./reports.ts";
import type { RealmOidc } from "./store.ts";

/** How long a console session lasts. */
const SESSION_MS = 12 * 60 * 60_000;
/** Sessions kept at once (the oldest is dropped beyond). */
const MAX_SESSIONS = 1_000;
/** Largest form accepted. */
const MAX_FORM_BYTES = 16 * 1024;
const COOKIE = "vc_console";
/** The cookie that ties a sign-in through an issuer to the browser that started it. */
const FLOW_COOKIE = "vc_signin";
/** How long a sign-in at the issuer may take. */
const FLOW_MS = 10 * 60_000;
/** How long the issuer's endpoints (its discovery document) are kept. */
const DISCOVERY_MS = 10 * 60_000;
/** How long the console waits for the issuer. */
const ISSUER_TIMEOUT_MS = 5_000;

/** What the console needs around it. */
export interface ConsoleOptions {
  /** The admin API (guardianHandler), called in process. */
  api: (req: Request, info?: { remoteAddr: Deno.Addr }) => Promise<Response>;
  /** Whether the console is served over TLS (cookies are then Secure). */
  tls: boolean;
  /** The Guardian's API URL as nodes reach it, for the install lines. */
  guardianUrl: string;
  /** Where releases and install.sh are served (`--release-url`), for the install line; a placeholder if unset. */
  releaseUrl?: string;
  /** A realm's OIDC settings, for signing in through its issuer (the API still decides what the token may do). */
  realmOidc?: (realm: string) => RealmOidc | undefined;
  clock?: () => number;
}

interface Session {
  /** The API credential: the admin token, or a realm administrator's identity token. */
  token: string;
  csrf: string;
  expires: number;
  /** Who signed in through an issuer, and for which realm. */
  who?: string;
  /** A user of this realm (not an administrator): the console shows them their teams only. */
  userRealm?: string;
  /** That user's name. */
  userName?: string;
}

/** A sign-in at an issuer, between the redirect there and the return. */
interface Flow {
  realm: string;
  nonce: string;
  verifier: string;
  redirectUri: string;
  expires: number;
}

/** The endpoints of an issuer's discovery document that the sign-in uses. */
interface Endpoints {
  authorization: string;
  token: string;
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function httpUrl(value: unknown, what: string): string {
  if (typeof value === "string" && /^https?:\/\//.test(value)) return value;
  throw new Error(`the issuer's discovery document has no usable ${what}`);
}

/** The issuer's endpoints from its discovery document, which must name the same issuer. */
async function discover(issuer: string): Promise<Endpoints> {
  const url = `${issuer.replace(/\/$/, "")}/.well-known/openid-configuration`;
  const res = await fetch(url, { signal: AbortSignal.timeout(ISSUER_TIMEOUT_MS) });
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  const doc = await res.json() as Record<string, unknown>;
  if (doc.issuer !== issuer) throw new Error(`${url} names the issuer "${doc.issuer}", not "${issuer}"`);
  return {
    authorization: httpUrl(doc.authorization_endpoint, "authorization_endpoint"),
    token: httpUrl(doc.token_endpoint, "token_endpoint"),
  };
}

/** HTML-escapes text for element content and quoted attributes. */
export function esc(value: unknown): string {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function random(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(32)));
}

function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; " +
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  // "same-origin", not "no-referrer": with no-referrer the browser sends "Origin: null" on the console's own forms.
  "referrer-policy": "same-origin",
  "cache-control": "no-store",
};

function html(status: number, body: string, headers: Record<string, string> = {}): Response {
  return new Response(body, {
    status,
    headers: { "content-type": "text/html; charset=utf-8", ...SECURITY_HEADERS, ...headers },
  });
}

function redirect(to: string, headers: Record<string, string> = {}): Response {
  return new Response(null, { status: 303, headers: { location: to, ...SECURITY_HEADERS, ...headers } });
}

/** An admin API refusal, shown on the page that asked. */
class ApiError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** The console's request handler. */
export function consoleHandler(
  o: ConsoleOptions,
): (req: Request, info?: { remoteAddr: Deno.Addr }) => Promise<Response> {
  const clock = o.clock ?? Date.now;
  const sessions = new Map<string, Session>();
  const flows = new Map<string, Flow>();
  const endpoints = new Map<string, { at: number; endpoints: Promise<Endpoints> }>();
  const endpointsOf = (issuer: string): Promise<Endpoints> => {
    const known = endpoints.get(issuer);
    if (known && clock() - known.at < DISCOVERY_MS) return known.endpoints;
    const found = discover(issuer);
    endpoints.set(issuer, { at: clock(), endpoints: found });
    found.catch(() => endpoints.delete(issuer));
    return found;
  };
  const keep = <T>(map: Map<string, T>, id: string, value: T) => {
    if (map.size >= MAX_SESSIONS) map.delete(map.keys().next().value!);
    map.set(id, value);
  };

  const sessionOf = (req: Request): [string, Session] | undefined => {
    const cookie = req.headers.get("cookie") ?? "";
    const id = /(?:^|;\s*)vc_console=([0-9a-f]{64})(?:;|$)/.exec(cookie)?.[1];
    const s = id === undefined ? undefined : sessions.get(id);
    if (!id || !s) return undefined;
    if (s.expires <= clock()) {
      sessions.delete(id);
      return undefined;
    }
    return [id, s];
  };
  const cookie = (value: string, maxAge: number) =>
    `${COOKIE}=${value}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${o.tls ? "; Secure" : ""}`;
  // Lax, not Strict: the browser comes back to the callback from the issuer's site.
  const flowCookie = (value: string, maxAge: number) =>
    `${FLOW_COOKIE}=${value}; Path=/signin; HttpOnly; SameSite=Lax; Max-Age=${maxAge}${
      o.tls ? "; Secure" : ""
    }`;

  /**
   * Starts a session for a credential the API accepts (it is tried on GET /admin/realms); a page that says why
   * not otherwise. Returns the cookie to set.
   */
  const open = async (
    candidate: Session,
    info: { remoteAddr: Deno.Addr } | undefined,
  ): Promise<{ cookie: string } | { refused: Response }> => {
    try {
      const probe = candidate.userRealm ? `/admin/realms/${candidate.userRealm}/teams` : "/admin/realms";
      await call(candidate, info, "GET", probe);
    } catch (error) {
      const e = error as ApiError;
      return { refused: html(e.status === 429 ? 429 : 401, signinPage(`Not signed in: ${e.message}`)) };
    }
    const id = random();
    keep(sessions, id, candidate);
    return { cookie: cookie(id, Math.floor((candidate.expires - clock()) / 1000)) };
  };

  /** GET /signin/oidc?realm=NAME: off to the realm's issuer, with state, nonce and a PKCE challenge. */
  const startSignin = async (url: URL): Promise<Response> => {
    const realm = url.searchParams.get("realm")?.trim() ?? "";
    const oidc = o.realmOidc?.(realm);
    if (!oidc) return html(400, signinPage(`Realm "${realm}" has no identity provider to sign in with.`));
    let at: Endpoints;
    try {
      at = await endpointsOf(oidc.issuer);
    } catch (error) {
      return html(
        502,
        signinPage(`The issuer ${oidc.issuer} cannot be used now: ${(error as Error).message}`),
      );
    }
    const state = random();
    const flow: Flow = {
      realm,
      nonce: random(),
      verifier: random(),
      redirectUri: `${url.origin}/signin/return`,
      expires: clock() + FLOW_MS,
    };
    keep(flows, state, flow);
    const challenge = new Uint8Array(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(flow.verifier)),
    );
    const to = new URL(at.authorization);
    for (
      const [k, v] of Object.entries({
        response_type: "code",
        client_id: oidc.audience,
        redirect_uri: flow.redirectUri,
        scope: "openid email",
        state,
        nonce: flow.nonce,
        code_challenge: base64url(challenge),
        code_challenge_method: "S256",
      })
    ) to.searchParams.set(k, v);
    // A page that moves on, not a redirect: the sign-in form's submission may only lead to this console
    // (form-action 'self').
    return html(
      200,
      page("Sign in", `<p><a href="${esc(to.href)}">Continue to ${esc(oidc.issuer)}</a>.</p>`),
      { "set-cookie": flowCookie(state, FLOW_MS / 1000), refresh: `0; url=${to.href}` },
    );
  };

  /**
   * GET /signin/return?code&state: the issuer sent the browser back. The state must be this browser's (its
   * cookie) and still pending; the code is exchanged with the PKCE verifier; the identity token must carry the
   * flow's nonce; then the API decides whether its holder administers anything.
   */
  const finishSignin = async (
    req: Request,
    url: URL,
    info?: { remoteAddr: Deno.Addr },
  ): Promise<Response> => {
    const state = url.searchParams.get("state") ?? "";
    const mine = new RegExp(`(?:^|;\\s*)${FLOW_COOKIE}=([0-9a-f]{64})(?:;|$)`).exec(
      req.headers.get("cookie") ?? "",
    )?.[1];
    const flow = flows.get(state);
    const clear = { "set-cookie": flowCookie("", 0) };
    if (!flow || mine !== state || flow.expires <= clock()) {
      return html(
        400,
        signinPage("This sign-in was not started here, or took too long: start again."),
        clear,
      );
    }
    flows.delete(state);
    const oidc = o.realmOidc?.(flow.realm);
    const issuerError = url.searchParams.get("error");
    if (!oidc) return html(400, signinPage(`Realm "${flow.realm}" no longer has an issuer.`), clear);
    if (issuerError !== null) {
      const description = url.searchParams.get("error_description");
      return html(
        401,
        signinPage(`The issuer refused: ${issuerError}${description ? ` (${description})` : ""}`),
        clear,
      );
    }
    const iss = url.searchParams.get("iss");
    if (iss !== null && iss !== oidc.issuer) {
      return html(400, signinPage(`The answer came from "${iss}", not from ${oidc.issuer}.`), clear);
    }
    let idToken: string;
    let expires: number;
    let who: string;
    try {
      const at = await endpointsOf(oidc.issuer);
      const res = await fetch(at.token, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
        body: new URLSearchParams({
          grant_type: "authorization_code",
          code: url.searchParams.get("code") ?? "",
          redirect_uri: flow.redirectUri,
          client_id: oidc.audience,
          code_verifier: flow.verifier,
        }),
        signal: AbortSignal.timeout(ISSUER_TIMEOUT_MS),
      });
      const body = await res.json().catch(() => ({})) as { id_token?: unknown; error?: unknown };
      if (!res.ok || typeof body.id_token !== "string") {
        throw new Error(
          `the issuer's token endpoint answered ${res.status}${body.error ? ` (${body.error})` : ""}`,
        );
      }
      const verified = await verifyIdentity(body.id_token, oidc);
      if (verified.nonce !== flow.nonce) {
        throw new Error("the identity token is not for this sign-in (nonce)");
      }
      idToken = body.id_token;
      expires = Math.min(clock() + SESSION_MS, verified.expiresAt);
      who = `${verified.identity.email ?? verified.identity.subject} (realm ${flow.realm})`;
    } catch (error) {
      return html(401, signinPage(`Not signed in: ${(error as Error).message}`), clear);
    }
    // An administrator of the realm, else one of its users (who sees their teams only).
    let opened = await open({ token: idToken, csrf: random(), expires, who }, info);
    let home = "/nodes";
    if ("refused" in opened) {
      const me = await call({ token: idToken, csrf: "", expires }, info, "GET", "/admin/whoami")
        .catch(() => ({})) as { user?: string };
      opened = await open(
        { token: idToken, csrf: random(), expires, who, userRealm: flow.realm, userName: me.user },
        info,
      );
      home = "/teams";
    }
    if ("refused" in opened) return opened.refused;
    // A page, not a redirect: the session cookie is SameSite=Strict, and the browser would not send it on a
    // redirect that is still part of the navigation the issuer's site started.
    return html(200, page("Signed in", `<p>Signed in as ${esc(who)}. <a href="${home}">Continue</a>.</p>`), {
      "set-cookie": opened.cookie,
      refresh: `0; url=${home}`,
    });
  };

  /** Calls the admin API as the session's administrator. */
  const call = async (
    s: Session,
    info: { remoteAddr: Deno.Addr } | undefined,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<unknown> => {
    const res = await o.api(
      new Request(`http://guardian${path}`, {
        method,
        headers: {
          authorization: `Bearer ${s.token}`,
          ...(body !== undefined ? { "content-type": "application/json" } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      }),
      info,
    );
    const value = await res.json().catch(() => ({}));
    if (!res.ok) throw new ApiError(res.status, (value as { error?: string }).error ?? res.statusText);
    return value;
  };

  /** A form's fields; refuses a body above MAX_FORM_BYTES. */
  const form = async (req: Request): Promise<URLSearchParams> => {
    const text = await req.text();
    if (text.length > MAX_FORM_BYTES) throw new ApiError(413, "the form is too large");
    return new URLSearchParams(text);
  };

  /** A state change must come from this console's own pages: its origin, and the session's CSRF token. */
  const fromConsole = (req: Request, fields: URLSearchParams, s: Session): boolean => {
    const origin = req.headers.get("origin");
    const site = req.headers.get("sec-fetch-site");
    if (site !== null && site !== "same-origin") return false;
    if (origin !== null && origin !== new URL(req.url).origin) return false;
    return sameText(fields.get("csrf") ?? "", s.csrf);
  };

  return async (req, info) => {
    const url = new URL(req.url);
    const path = url.pathname;
    try {
      if (req.method === "GET" && path === "/console.css") {
        return new Response(CSS, { headers: { "content-type": "text/css", ...SECURITY_HEADERS } });
      }
      if (req.method === "GET" && path === "/console.js") {
        return new Response(JS, { headers: { "content-type": "text/javascript", ...SECURITY_HEADERS } });
      }
      if (req.method === "GET" && path === "/signin/oidc") return await startSignin(url);
      if (req.method === "GET" && path === "/signin/return") return await finishSignin(req, url, info);
      if (path === "/signin") {
        if (req.method === "GET") return html(200, signinPage());
        if (req.method !== "POST") return html(405, page("Not allowed", "<p>Use the sign-in form.</p>"));
        const site = req.headers.get("sec-fetch-site");
        if (site !== null && site !== "same-origin" && site !== "none") {
          return html(403, signinPage("Sign in from the console's own page."));
        }
        const token = (await form(req)).get("token")?.trim() ?? "";
        const opened = await open({ token, csrf: random(), expires: clock() + SESSION_MS }, info);
        if ("refused" in opened) return opened.refused;
        return redirect("/nodes", { "set-cookie": opened.cookie });
      }
      const current = sessionOf(req);
      if (!current) {
        return req.method === "GET" ? redirect("/signin") : html(401, signinPage("Your session ended."));
      }
      const [id, s] = current;
      const get = (p: string) => call(s, info, "GET", p);
      if (req.method === "GET") {
        if (s.userRealm !== undefined && (path === "/" || path === "/teams")) {
          const teams = await get(`/admin/realms/${s.userRealm}/teams`) as TeamView[];
          return html(200, userTeamsPage(s, s.userRealm, teams));
        }
        if (path === "/") return redirect("/nodes");
        if (path === "/nodes") return html(200, nodesPage(s, (await get("/admin/nodes")) as NodeView[]));
        const node = /^\/nodes\/([0-9a-f-]{36})$/.exec(path)?.[1];
        if (node) return html(200, nodePage(s, (await get(`/admin/nodes/${node}`)) as NodeView));
        if (path === "/tokens") {
          return html(200, tokensPage(s, (await get("/admin/tokens")) as TokenView[], await realmNames(get)));
        }
        if (path === "/realms") return html(200, realmsPage(s, (await get("/admin/realms")) as RealmView[]));
        const people = /^\/realms\/([A-Za-z0-9_.-]{1,64})\/people$/.exec(path)?.[1];
        if (people) {
          const [users, teams] = await Promise.all([
            get(`/admin/realms/${people}/users`),
            get(`/admin/realms/${people}/teams`),
          ]);
          return html(200, peoplePage(s, people, users as UserView[], teams as TeamView[]));
        }
        if (path === "/topology") {
          return html(200, topologyPage(s, (await get("/admin/nodes")) as NodeView[]));
        }
        if (path === "/topology.svg") {
          return new Response(topologySvg((await get("/admin/nodes")) as NodeView[], clock()), {
            headers: { "content-type": "image/svg+xml", ...SECURITY_HEADERS },
          });
        }
        return html(404, page("Not found", "<p>No such page.</p>", s));
      }
      if (req.method !== "POST") return html(405, page("Not allowed", "<p>Not allowed.</p>", s));
      const fields = await form(req);
      if (!fromConsole(req, fields, s)) {
        return html(403, page("Refused", "<p>This change did not come from the console's own page.</p>", s));
      }
      if (path === "/signout") {
        sessions.delete(id);
        return redirect("/signin", { "set-cookie": cookie("", 0) });
      }
      const field = (name: string) => fields.get(name)?.trim() ?? "";
      const list = (name: string) => field(name).split(",").map((t) => t.trim()).filter(Boolean);
      const action = /^\/nodes\/([0-9a-f-]{36})\/(revoke|remove|taints|tag|subnets|teams)$/.exec(path);
      try {
        if (action) {
          const [, ref, what] = action;
          const node = `/admin/nodes/${ref}`;
          if (what === "revoke") await call(s, info, "POST", `${node}/revoke`);
          if (what === "remove") {
            await call(s, info, "DELETE", node);
            return redirect("/nodes");
          }
          if (what === "taints") {
            await call(s, info, "PUT", `${node}/taints`, {
              taints: list("taints"),
              any: field("any") === "on",
            });
          }
          if (what === "tag") await call(s, info, "PUT", `${node}/tag`, { tag: field("tag") });
          if (what === "subnets") await call(s, info, "PUT", `${node}/subnets`, { subnets: list("subnets") });
          if (what === "teams") await call(s, info, "PUT", `${node}/teams`, { teams: list("teams") });
          return redirect(`/nodes/${ref}`);
        }
        if (path === "/tokens") {
          const uses = field("uses");
          const created = await call(s, info, "POST", "/admin/tokens", {
            realm: field("realm"),
            ...(field("ttl") ? { ttl: field("ttl") } : {}),
            ...(uses ? { uses: Number(uses) } : {}),
            ...(field("any_taints") === "on" ? { any_taints: true } : { taints: list("taints") }),
            subnets: list("subnets"),
          }) as { id: string; token: string };
          return html(201, createdPage(s, created, o));
        }
        const revoke = /^\/tokens\/([0-9a-f-]{36})\/revoke$/.exec(path)?.[1];
        if (revoke) {
          await call(s, info, "DELETE", `/admin/tokens/${revoke}`);
          return redirect("/tokens");
        }
        if (path === "/realms") {
          await call(s, info, "POST", "/admin/realms", {
            name: field("name"),
            ...(field("cidr") ? { cidr: field("cidr") } : {}),
          });
          return redirect("/realms");
        }
        // A realm's users and teams: each form is one admin API call.
        const change =
          /^\/realms\/([A-Za-z0-9_.-]{1,64})\/(users|teams)(?:\/([^/]+))?(?:\/(remove|delete|members))?(?:\/([^/]+)\/remove)?$/
            .exec(path);
        if (change) {
          const [, realm, kind, rawName, verb, rawMember] = change;
          const base = `/admin/realms/${realm}/${kind}`;
          const name = rawName === undefined ? undefined : encodeURIComponent(decodeURIComponent(rawName));
          const member = rawMember === undefined
            ? undefined
            : encodeURIComponent(decodeURIComponent(rawMember));
          if (name === undefined) {
            await call(s, info, "POST", base, {
              name: field("name"),
              ...(kind === "teams" && field("owner") ? { owner: field("owner") } : {}),
            });
          } else if (verb === "remove" || verb === "delete") await call(s, info, "DELETE", `${base}/${name}`);
          else if (verb === "members" && member === undefined) {
            await call(s, info, "PUT", `${base}/${name}/members/${encodeURIComponent(field("user"))}`);
          } else if (verb === "members") await call(s, info, "DELETE", `${base}/${name}/members/${member}`);
          else return html(404, page("Not found", "<p>No such action.</p>", s));
          return redirect(s.userRealm !== undefined ? "/teams" : `/realms/${realm}/people`);
        }
        const access = /^\/realms\/([A-Za-z0-9_.-]{1,64})\/access$/.exec(path)?.[1];
        if (access) {
          await call(s, info, "PUT", `/admin/realms/${access}/access`, { access: field("access") });
          return redirect("/realms");
        }
        const oidc = /^\/realms\/([A-Za-z0-9_.-]{1,64})\/oidc$/.exec(path)?.[1];
        if (oidc) {
          if (field("issuer") === "") await call(s, info, "DELETE", `/admin/realms/${oidc}/oidc`);
          else {
            await call(s, info, "PUT", `/admin/realms/${oidc}/oidc`, {
              issuer: field("issuer"),
              jwks_url: field("jwks_url"),
              audience: field("audience"),
              ...(field("taints_claim") ? { taints_claim: field("taints_claim") } : {}),
              admins: list("admins"),
            });
          }
          return redirect("/realms");
        }
        return html(404, page("Not found", "<p>No such action.</p>", s));
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        const back = s.userRealm !== undefined ? "/teams" : `/${path.split("/")[1]}`;
        return html(
          error.status,
          page(
            "Not done",
            `<p class="error">${esc(error.message)}</p><p><a href="${esc(back)}">Back</a></p>`,
            s,
          ),
        );
      }
    } catch (error) {
      if (error instanceof ApiError) {
        return html(error.status, page("Error", `<p class="error">${esc(error.message)}</p>`));
      }
      return html(500, page("Error", '<p class="error">The console failed; see the Guardian\'s log.</p>'));
    }
  };
}

interface TokenView {
  id: string;
  realm: string;
  taints: string[] | "any";
  subnets: string[];
  uses_left: number | null;
  expires_at: number | null;
  revoked: boolean;
}

interface RealmView {
  name: string;
  cidr4: string;
  cidr6: string;
  oidc?: { issuer: string; jwks_url: string; audience: string; taints_claim?: string; admins?: string[] };
  access?: "taints" | "teams";
  /** Where its nodes' traffic may cross a third party ([] anywhere). */
  regions?: string[];
}

async function realmNames(get: (p: string) => Promise<unknown>): Promise<string[]> {
  return ((await get("/admin/realms")) as RealmView[]).map((r) => r.name);
}

function when(ms: number | null | undefined): string {
  return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "never";
}

function csrf(s: Session): string {
  return `<input type="hidden" name="csrf" value="${esc(s.csrf)}">`;
}

function page(title: string, body: string, s?: Session): string {
  // A realm's user sees their teams only; an administrator, everything.
  const links = s?.userRealm !== undefined
    ? `<a href="/teams">My teams</a>`
    : `<a href="/nodes">Nodes</a><a href="/topology">Topology</a><a href="/tokens">Tokens</a>` +
      `<a href="/realms">Realms</a>`;
  const nav = s
    ? `<nav>${links}<span class="who">${esc(s.who ?? "administrator")}</span>` +
      `${postForm(s, "/signout", "<button>Sign out</button>")}</nav>`
    : "";
  return `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${esc(title)} · veilnet Guardian</title><link rel="stylesheet" href="/console.css">` +
    `<script src="/console.js" defer></script></head><body><header><b>veilnet Guardian</b>${nav}</header>` +
    `<main><h1>${esc(title)}</h1>${body}</main></body></html>`;
}

function signinPage(error?: string): string {
  return page(
    "Sign in",
    (error ? `<p class="error">${esc(error)}</p>` : "") +
      `<form method="post" action="/signin"><label>Admin token <input type="password" name="token" ` +
      `autocomplete="current-password" required></label><button>Sign in</button></form>` +
      `<p class="hint">The admin token is in the Guardian's data directory (admin.token).</p>` +
      `<h2>A realm's administrator</h2><form method="get" action="/signin/oidc"><label>Realm ` +
      `<input name="realm" required maxlength="64"></label>` +
      `<button>Sign in through its identity provider</button></form>`,
  );
}

function state(n: NodeView): string {
  if (n.revoked_at !== undefined) return `<span class="revoked">revoked</span>`;
  if (n.online === undefined) return "-";
  return n.online ? `<span class="online">online</span>` : `<span class="offline">offline</span>`;
}

function nodesPage(s: Session, nodes: NodeView[]): string {
  const rows = nodes.map((n) =>
    `<tr><td><a href="/nodes/${esc(n.id)}">${esc(n.tag)}</a></td><td>${esc(n.realm)}</td><td>${
      state(n)
    }</td>` +
    `<td>${when(n.last_seen)}</td><td>${esc(n.ips.join(" "))}</td><td>${
      esc(n.taints.join(", ") || "-")
    }</td>` +
    `<td>${esc(n.report?.version ?? "-")}</td><td>${n.report ? n.report.peers.length : "-"}</td>` +
    `<td>${esc(n.report?.publicAddress ?? "-")}</td><td>${esc(n.report?.nat ?? "-")}</td></tr>`
  ).join("");
  return page(
    "Nodes",
    `<div class="scroll"><table><thead><tr><th>Tag</th><th>Realm</th><th>State</th><th>Last seen</th>` +
      `<th>Addresses</th><th>Taints</th><th>Version</th><th>Peers</th><th>Public address</th><th>NAT</th>` +
      `</tr></thead><tbody>${rows}</tbody></table>` +
      `</div>${nodes.length === 0 ? "<p>No node yet: create a token, and register one with it.</p>" : ""}`,
    s,
  );
}

function peersTable(peers: ReportedPeer[], nodes: Map<string, string>): string {
  if (peers.length === 0) return "<p>No peer with traffic.</p>";
  return `<div class="scroll"><table><thead><tr><th>Peer</th><th>Path</th><th>Link</th><th>RTT</th>` +
    `<th>Sent</th><th>Received</th><th>Now</th></tr></thead><tbody>${
      peers.map((p) =>
        `<tr><td>${esc(nodes.get(p.id) ?? p.id)}</td><td>${esc(p.path)}${
          p.via ? ` via ${esc(p.via)}` : ""
        }</td>` +
        `<td>${esc(p.link ?? "-")}</td><td>${p.rttMs !== undefined ? `${esc(p.rttMs)} ms` : "-"}</td>` +
        `<td>${bytes(p.txBytes)}</td><td>${bytes(p.rxBytes)}</td>` +
        `<td>${p.bitsPerSecond !== undefined ? rate(p.bitsPerSecond) : "-"}</td></tr>`
      ).join("")
    }</tbody></table></div>`;
}

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024, i++);
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function rate(bitsPerSecond: number): string {
  const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
  let i = 0;
  while (bitsPerSecond >= 1000 && i < units.length - 1) (bitsPerSecond /= 1000, i++);
  return `${bitsPerSecond.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function nodePage(s: Session, n: NodeView): string {
  const action = (what: string, inner: string, cls = "") =>
    postForm(s, `/nodes/${esc(n.id)}/${what}`, inner, cls);
  const facts: [string, string][] = [
    ["State", state(n)],
    ["Realm", esc(n.realm)],
    ["Last seen", when(n.last_seen)],
    ["Addresses", esc(n.ips.join(" "))],
    ["Taints (held / granted)", `${esc(n.taints.join(", ") || "-")} / ${esc(n.granted_taints)}`],
    ["Identity", esc(n.identity ? (n.identity.email ?? n.identity.subject) : "-")],
    ["Owner", esc(n.owner ?? "-")],
    ["Teams it asks for", esc(n.teams?.join(", ") || "-")],
    ["Region", esc(n.region || "-")],
    [
      "Traffic may cross a third party in",
      `${esc(n.regions?.join(", ") || "any region")}${n.regions_follow_realm ? " (the realm's)" : ""}`,
    ],
    [
      "Portal subnets (offered / granted)",
      `${esc(n.subnets.join(", ") || "-")} / ${esc(n.granted_subnets.join(", ") || "-")}`,
    ],
    ["Version", esc(n.report?.version ?? "-")],
    ["Public address (as STUN saw it)", esc(n.report?.publicAddress ?? "-")],
    ["NAT", esc(n.report?.nat ?? "-")],
    ["Certificate ends", when(n.certificate_expires_at)],
    ["Conflux id", esc(n.id)],
  ];
  return page(
    `Node ${n.tag}`,
    `<dl>${facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join("")}</dl>` +
      `<h2>Peers it reports</h2>${
        n.report ? peersTable(n.report.peers, new Map()) : "<p>No report yet.</p>"
      }` +
      `<h2>Change</h2><div class="actions">` +
      action(
        "tag",
        `<label>Tag <input name="tag" value="${esc(n.tag)}" required></label><button>Rename</button>`,
      ) +
      action(
        "taints",
        `<label>Taints <input name="taints" value="${esc(n.taints.join(","))}"></label>` +
          `<label><input type="checkbox" name="any"${
            n.granted_taints === "any" ? " checked" : ""
          }> any</label>` +
          `<button>Set taints</button>`,
      ) +
      action(
        "subnets",
        `<label>Portal subnets <input name="subnets" value="${esc(n.granted_subnets.join(","))}"></label>` +
          `<button>Grant</button>`,
      ) +
      action(
        "teams",
        `<label>Teams <input name="teams" value="${esc(n.teams?.join(",") ?? "")}"></label>` +
          `<button>Set teams</button>`,
      ) +
      action("revoke", `<button class="danger">Revoke</button>`) +
      action("remove", `<button class="danger">Remove</button>`) +
      `</div>`,
    s,
  );
}

function tokensPage(s: Session, tokens: TokenView[], realms: string[]): string {
  const rows = tokens.map((t) =>
    `<tr><td>${esc(t.id)}</td><td>${esc(t.realm)}</td><td>${
      esc(t.taints === "any" ? "any" : t.taints.join(", ") || "-")
    }</td>` +
    `<td>${esc(t.subnets.join(", ") || "-")}</td><td>${t.uses_left ?? "unlimited"}</td><td>${
      when(t.expires_at)
    }</td>` +
    `<td>${
      t.revoked
        ? "revoked"
        : `<form method="post" action="/tokens/${esc(t.id)}/revoke">${
          csrf(s)
        }<button class="danger">Revoke</button></form>`
    }</td></tr>`
  ).join("");
  return page(
    "Tokens",
    `<form method="post" action="/tokens" class="create">${csrf(s)}` +
      `<label>Realm <select name="realm">${
        realms.map((r) => `<option>${esc(r)}</option>`).join("")
      }</select></label>` +
      `<label>Taints <input name="taints" placeholder="lab,web"></label>` +
      `<label><input type="checkbox" name="any_taints"> any taints</label>` +
      `<label>Portal subnets <input name="subnets" placeholder="192.168.1.0/24"></label>` +
      `<label>Uses <input name="uses" inputmode="numeric" placeholder="unlimited"></label>` +
      `<label>Lifetime <input name="ttl" placeholder="24h"></label><button>Create token</button></form>` +
      `<div class="scroll"><table><thead><tr><th>Id</th><th>Realm</th><th>Taints</th><th>Subnets</th><th>Uses left</th>` +
      `<th>Expires</th><th></th></tr></thead><tbody>${rows}</tbody></table></div>`,
    s,
  );
}

function createdPage(s: Session, created: { id: string; token: string }, o: ConsoleOptions): string {
  const base = o.releaseUrl ?? "$BASE";
  const install = `curl -fsSL "${base}/install.sh" | VEILNET_RELEASE_URL="${base}" ` +
    `VEILNET_REGISTRATION_TOKEN='${created.token}' sh -s -- --guardian ${o.guardianUrl}`;
  const container = `docker run -d --cap-add NET_ADMIN --device /dev/net/tun --network host ` +
    `-v veilnet-config:/root/.config/conflux -e VEILNET_GUARDIAN=${o.guardianUrl} ` +
    `-e VEILNET_REGISTRATION_TOKEN='${created.token}' veilnet-conflux`;
  return page(
    "Token created",
    `<p>Copy it now: the Guardian keeps only its hash.</p><pre id="token">${esc(created.token)}</pre>` +
      `<h2>Install and register a node</h2><pre id="install">${esc(install)}</pre>` +
      (o.releaseUrl ? "" : `<p class="hint">Set BASE to where install.sh and the binaries are served ` +
        `(or start the Guardian with --release-url).</p>`) +
      `<h2>Or run it in a container</h2><pre id="container">${esc(container)}</pre>` +
      `<p><a href="/tokens">Back to tokens</a></p>`,
    s,
  );
}

/** The console path of a realm's users and teams: `/realms/REALM/PART/...`, each part escaped. */
function realmPath(realm: string, ...parts: string[]): string {
  return `/realms/${esc(realm)}/${parts.map((p) => esc(encodeURIComponent(p))).join("/")}`;
}

/** A form that posts to `action` with the session's CSRF token. */
function postForm(s: Session, action: string, inner: string, cls = ""): string {
  return `<form method="post" action="${action}" class="${cls}">${csrf(s)}${inner}</form>`;
}

/** A user's own page: the teams they own or belong to; they manage the ones they own and may leave the others. */
function userTeamsPage(s: Session, realm: string, teams: TeamView[]): string {
  const me = s.userName;
  const at = (...parts: string[]) => realmPath(realm, ...parts);
  const post = (action: string, inner: string, cls = "") => postForm(s, action, inner, cls);
  const rows = teams.map((t) => {
    const mine = t.owner === me;
    const members = t.members.map((m) =>
      mine ? post(at("teams", t.name, "members", m, "remove"), `${esc(m)} <button>Remove</button>`) : esc(m)
    ).join(mine ? "" : ", ") || "-";
    const change = mine
      ? post(
        at("teams", t.name, "members"),
        `<input name="user" placeholder="user" required><button>Add</button>`,
      ) +
        post(at("teams", t.name, "delete"), `<button class="danger">Delete team</button>`)
      : post(at("teams", t.name, "members", me ?? "", "remove"), `<button>Leave</button>`);
    return `<tr><td>${esc(t.name)}</td><td>${esc(t.owner)}</td><td>${members}</td><td>${change}</td></tr>`;
  }).join("");
  return page(
    "My teams",
    post(
      at("teams"),
      `<label>Name <input name="name" required></label><button>Create team</button>`,
      "create",
    ) +
      `<div class="scroll"><table><thead><tr><th>Team</th><th>Owner</th><th>Members</th><th></th></tr></thead>` +
      `<tbody>${rows}</tbody></table></div>` +
      (teams.length === 0 ? "<p>No team yet: create one, and add the users you work with.</p>" : ""),
    s,
  );
}

function peoplePage(s: Session, realm: string, users: UserView[], teams: TeamView[]): string {
  const at = (...parts: string[]) => realmPath(realm, ...parts);
  const post = (action: string, inner: string, cls = "") => postForm(s, action, inner, cls);
  const userRows = users.map((u) =>
    `<tr><td>${esc(u.name)}</td><td>${esc(u.subject ? `${u.subject} at ${u.issuer}` : "-")}</td>` +
    `<td>${esc(u.nodes.join(", ") || "-")}</td>` +
    `<td>${post(at("users", u.name, "remove"), `<button class="danger">Remove</button>`)}</td></tr>`
  ).join("");
  const teamRows = teams.map((t) =>
    `<tr><td>${esc(t.name)}</td><td>${esc(t.owner)}</td><td>${
      t.members.map((m) =>
        post(at("teams", t.name, "members", m, "remove"), `${esc(m)} <button class="danger">Remove</button>`)
      ).join("") || "-"
    }${
      post(
        at("teams", t.name, "members"),
        `<input name="user" placeholder="user" required><button>Add member</button>`,
        "create",
      )
    }</td><td>${post(at("teams", t.name, "delete"), `<button class="danger">Delete</button>`)}</td></tr>`
  ).join("");
  return page(
    `Users and teams of ${realm}`,
    `<h2>Users</h2>` +
      post(
        at("users"),
        `<label>Name <input name="name" required></label><button>Create user</button>`,
        "create",
      ) +
      `<div class="scroll"><table><thead><tr><th>User</th><th>Signs in as</th><th>Nodes</th><th></th></tr>` +
      `</thead><tbody>${userRows}</tbody></table></div>` +
      `<h2>Teams</h2>` +
      post(
        at("teams"),
        `<label>Name <input name="name" required></label><label>Owner <input name="owner" required></label>` +
          `<button>Create team</button>`,
        "create",
      ) +
      `<div class="scroll"><table><thead><tr><th>Team</th><th>Owner</th><th>Members</th><th></th></tr></thead>` +
      `<tbody>${teamRows}</tbody></table></div>`,
    s,
  );
}

function realmsPage(s: Session, realms: RealmView[]): string {
  const rows = realms.map((r) =>
    `<tr><td>${esc(r.name)}<br><a href="/realms/${esc(r.name)}/people">Users and teams</a>` +
    `<br><span class="hint">regions: ${esc(r.regions?.join(", ") || "any")}</span></td>` +
    `<td>${esc(r.cidr4)}<br>${esc(r.cidr6)}</td><td><form method="post" action="/realms/${
      esc(r.name)
    }/access">` +
    `${csrf(s)}<select name="access">${
      (["taints", "teams"] as const).map((a) =>
        `<option${(r.access ?? "taints") === a ? " selected" : ""}>${a}</option>`
      ).join("")
    }</select><button>Set access</button></form></td><td>` +
    `<form method="post" action="/realms/${esc(r.name)}/oidc">${csrf(s)}` +
    `<input name="issuer" placeholder="issuer (empty: none)" value="${esc(r.oidc?.issuer ?? "")}">` +
    `<input name="jwks_url" placeholder="JWKS URL" value="${esc(r.oidc?.jwks_url ?? "")}">` +
    `<input name="audience" placeholder="audience" value="${esc(r.oidc?.audience ?? "")}">` +
    `<input name="taints_claim" placeholder="taints claim" value="${esc(r.oidc?.taints_claim ?? "")}">` +
    `<input name="admins" placeholder="administrators (sub or e-mail, ...)" value="${
      esc(r.oidc?.admins?.join(",") ?? "")
    }">` +
    `<button>Save OIDC</button></form></td></tr>`
  ).join("");
  return page(
    "Realms",
    `<form method="post" action="/realms" class="create">${csrf(s)}<label>Name <input name="name" required ` +
      `pattern="[a-z0-9-]{1,63}"></label><label>IPv4 range <input name="cidr" placeholder="10.128.0.0/16"></label>` +
      `<button>Create realm</button></form><div class="scroll"><table><thead><tr><th>Realm</th><th>Addresses</th>` +
      `<th>Access</th><th>OIDC</th></tr></thead><tbody>${rows}</tbody></table></div>`,
    s,
  );
}

function topologyPage(s: Session, nodes: NodeView[]): string {
  return page(
    "Topology",
    `<p class="hint">Nodes and the tethers they report: solid direct, dashed relayed, dotted backup pipeline. ` +
      `Updated every few seconds.</p><div id="topology" class="topology">${
        topologySvg(nodes, Date.now())
      }</div>`,
    s,
  );
}

/** One edge of the topology: a pair of nodes and how the traffic between them goes, as either end reported it. */
interface Edge {
  a: string;
  b: string;
  path: ReportedPeer["path"];
  via?: string;
  rttMs?: number;
  bytes: number;
  bitsPerSecond?: number;
}

/** The realm as an SVG: nodes on a circle (grey when offline), an edge per reported peer pair. */
export function topologySvg(nodes: NodeView[], now: number): string {
  const live = nodes.filter((n) => n.revoked_at === undefined);
  const size = 520;
  const r = live.length <= 1 ? 0 : size / 2 - 70;
  const at = new Map(live.map((n, i) => {
    const angle = (2 * Math.PI * i) / Math.max(1, live.length) - Math.PI / 2;
    return [n.id, { x: size / 2 + r * Math.cos(angle), y: size / 2 + r * Math.sin(angle), n }];
  }));
  const edges = new Map<string, Edge>();
  for (const n of live) {
    // A report older than three of its periods no longer says what is now.
    if (!n.report || now - n.report.at > 90_000) continue;
    for (const p of n.report.peers) {
      if (!at.has(p.id)) continue;
      const key = [n.id, p.id].sort().join(" ");
      const e = edges.get(key);
      const total = p.txBytes + p.rxBytes;
      if (!e || total > e.bytes) {
        edges.set(key, {
          a: n.id,
          b: p.id,
          path: p.path,
          via: p.via,
          rttMs: p.rttMs,
          bytes: total,
          bitsPerSecond: p.bitsPerSecond,
        });
      }
    }
  }
  const lines = [...edges.values()].map((e) => {
    const a = at.get(e.a)!, b = at.get(e.b)!;
    const label = [
      e.path + (e.via ? ` via ${e.via}` : ""),
      e.rttMs !== undefined ? `${e.rttMs} ms` : "",
      bytes(e.bytes),
    ]
      .filter(Boolean).join(" · ");
    return `<g class="edge ${e.path}" data-a="${esc(a.n.tag)}" data-b="${esc(b.n.tag)}">` +
      `<line x1="${a.x.toFixed(1)}" y1="${a.y.toFixed(1)}" x2="${b.x.toFixed(1)}" y2="${b.y.toFixed(1)}"/>` +
      `<text x="${((a.x + b.x) / 2).toFixed(1)}" y="${((a.y + b.y) / 2 - 4).toFixed(1)}">${
        esc(label)
      }</text></g>`;
  }).join("");
  const circles = [...at.values()].map(({ x, y, n }) =>
    `<g class="node ${n.online ? "online" : "offline"}" data-tag="${esc(n.tag)}"><circle cx="${
      x.toFixed(1)
    }" ` +
    `cy="${y.toFixed(1)}" r="18"/><text x="${x.toFixed(1)}" y="${(y + 34).toFixed(1)}">${
      esc(n.tag)
    }</text></g>`
  ).join("");
  return `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${size} ${size}" role="img" ` +
    `aria-label="realm topology">${lines}${circles}</svg>`;
}

const CSS = `
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,sans-serif;color:#1d2430;background:#f6f7f9}
header{display:flex;flex-wrap:wrap;gap:.8rem;align-items:center;padding:.7rem 1rem;background:#1d2430;color:#fff}
nav{display:flex;flex-wrap:wrap;gap:.8rem;align-items:center}nav a{color:#cfe0ff}nav form{margin:0}
main{padding:1rem;max-width:1100px;margin:auto}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:.4rem .5rem;border-bottom:1px solid #e2e5ea;
text-align:left;vertical-align:top}.scroll{overflow-x:auto}form{margin:.3rem 0}label{margin-right:.6rem}
input,select,button{font:inherit;padding:.3rem .5rem;margin:.15rem 0}button{cursor:pointer}
.danger{background:#b3261e;color:#fff;border:0;border-radius:3px}.error{color:#b3261e;font-weight:600}
.hint{color:#5b6472}.who{color:#cfe0ff;font-size:.9rem}.online{color:#137333}.offline{color:#80868b}.revoked{color:#b3261e}
pre{white-space:pre-wrap;word-break:break-all;background:#fff;padding:.6rem;border:1px solid #e2e5ea}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem}dt{color:#5b6472}dd{margin:0}
.actions form,.create{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}
.topology svg{width:100%;max-width:640px;background:#fff;border:1px solid #e2e5ea}
.node circle{fill:#1a73e8}.node.offline circle{fill:#9aa0a6}.node text,.edge text{font-size:11px;text-anchor:middle}
.edge line{stroke:#34a853;stroke-width:2.5}.edge.relay line{stroke:#f29900;stroke-dasharray:8 5}
.edge.backup line{stroke:#9334e6;stroke-dasharray:2 4}
`;

/** The one script: the topology refreshes itself (the rest of the console is plain forms). */
const JS = `
const box = document.getElementById("topology");
if (box) setInterval(async () => {
  try {
    const res = await fetch("/topology.svg", { credentials: "same-origin" });
    if (res.ok) box.innerHTML = await res.text();
  } catch { /* the next try */ }
}, 3000);
`;
