/**
 * `veilnet-conflux guardian ...`: run the Guardian, and administer it (realms, registration tokens, the nats-server
 * configuration). Admin subcommands work on the data directory of a Guardian on this host (`--data-dir`), or over
 * HTTP with `--guardian URL` and the admin token (`--admin-token-file FILE`, `--admin-token -` for standard input,
 * or VEILNET_ADMIN_TOKEN; `--admin-token T` too, though `ps` shows it).
 * @module
 */

import { tokenList } from "../guardian/api.ts";
import { Guardian, type NodeView } from "../guardian/guardian.ts";
import { checkCertTtl, parseDuration } from "../guardian/rules.ts";
import { parseTurnServer, type TurnConfig } from "../guardian/ice.ts";
import { completeKeys, isNatsKeys, natsServerConfig } from "../guardian/nats_auth.ts";
import { openStore, serveGuardian, sharedStateOf } from "../guardian/server.ts";
import { realmCa, realmServerTls, saveCa, savedCa, type TlsMode } from "../guardian/tls.ts";
import type { RealmOidc, Store } from "../guardian/store.ts";
import { guardianRequest, trustGuardianCa } from "../agent/guardian_client.ts";
import { hostPort, list, parse, UsageError } from "./args.ts";
import { isRegion } from "../wire/certificate.ts";
import type { Output } from "./main.ts";
import { readCaFile } from "./node.ts";
import { readSecret, secretInput } from "./secret.ts";
import { type CountryOf, openCountryDatabase } from "../../ffi/geoip.ts";

const DEFAULT_DATA_DIR = "/var/lib/veilnet/guardian";
/** Where a nats-server of the Master keeps its account JWTs (revocations included); one per server. */
const DEFAULT_RESOLVER_DIR = "/var/lib/veilnet/nats-jwt";
/** Where `nats-config` writes a server's certificate and key. */
const DEFAULT_TLS_DIR = "/var/lib/veilnet/nats-tls";

const TLS_FLAGS = {
  "tls-name": { type: "string" },
  "tls-cert": { type: "string" },
  "tls-key": { type: "string" },
  plaintext: { type: "boolean", default: false },
} as const;

/** The TLS flags as a mode: realm CA (default), an operator's certificate, or plain text. */
function tlsFlags(
  values: { "tls-name"?: string; "tls-cert"?: string; "tls-key"?: string; plaintext: boolean },
): TlsMode {
  const operator = values["tls-cert"] !== undefined || values["tls-key"] !== undefined;
  if (operator && (values["tls-cert"] === undefined || values["tls-key"] === undefined)) {
    throw new UsageError("--tls-cert and --tls-key go together");
  }
  if ([operator, values.plaintext, values["tls-name"] !== undefined].filter(Boolean).length > 1) {
    throw new UsageError("--tls-name (realm CA), --tls-cert/--tls-key and --plaintext exclude each other");
  }
  if (values.plaintext) return { kind: "off" };
  if (operator) return { kind: "operator", certFile: values["tls-cert"]!, keyFile: values["tls-key"]! };
  return { kind: "realm", names: list(values["tls-name"]) };
}

const ADMIN_FLAGS = {
  "data-dir": { type: "string" },
  guardian: { type: "string" },
  "guardian-ca": { type: "string" },
  "admin-token": { type: "string" },
  "admin-token-file": { type: "string" },
} as const;

/** The admin flags' values. */
type AdminFlags = {
  "data-dir"?: string;
  guardian?: string;
  "guardian-ca"?: string;
  "admin-token"?: string;
  "admin-token-file"?: string;
};

type RealmInfo = {
  id: string;
  name: string;
  cidr4: string;
  cidr6: string;
  oidc?: unknown;
  regions?: string[];
};

/** The admin operations, done locally on the store or remotely over HTTP. */
interface Admin {
  createRealm(name: string, cidr?: string, oidc?: RealmOidc): Promise<RealmInfo>;
  listRealms(): Promise<RealmInfo[]>;
  setRealmOidc(name: string, oidc: RealmOidc | null): Promise<RealmInfo>;
  setRealmAccess(name: string, access: "taints" | "teams"): Promise<RealmInfo>;
  setRealmRegions(name: string, regions: string[]): Promise<RealmInfo>;
  setNodeRegion(ref: string, realm: string | undefined, region: string): Promise<NodeView>;
  setNodeRegions(ref: string, realm: string | undefined, regions: string[] | null): Promise<NodeView>;
  setNodeTeams(ref: string, realm: string | undefined, teams: string[]): Promise<NodeView>;
  createToken(
    o: {
      realm: string;
      ttl?: string;
      uses?: number;
      taints: string[];
      anyTaints: boolean;
      subnets: string[];
      user?: string;
      region?: string;
    },
  ): Promise<{ id: string; token: string }>;
  /** Users and teams of a realm. */
  people(op: PeopleOp): Promise<unknown>;
  listTokens(): Promise<unknown[]>;
  revokeToken(id: string): Promise<void>;
  nodes(realm?: string): Promise<NodeView[]>;
  node(ref: string, realm?: string): Promise<NodeView>;
  revokeNode(ref: string, realm?: string): Promise<NodeView>;
  removeNode(ref: string, realm?: string): Promise<void>;
  setNodeTaints(ref: string, realm: string | undefined, taints: string[], any: boolean): Promise<NodeView>;
  setNodeTag(ref: string, realm: string | undefined, tag: string): Promise<NodeView>;
  grantNodeSubnets(ref: string, realm: string | undefined, subnets: string[]): Promise<NodeView>;
  close(): void;
}

/** One operation on a realm's users and teams. */
type PeopleOp =
  | { what: "users" | "teams"; realm: string }
  | { what: "createUser"; realm: string; name: string; issuer?: string; subject?: string }
  | { what: "removeUser" | "deleteTeam"; realm: string; name: string }
  | { what: "createTeam"; realm: string; name: string; owner: string }
  | { what: "addMember" | "removeMember"; realm: string; team: string; user: string };

/** A Guardian over a local store, for admin commands (it serves nothing, so the serving options are empty). */
function localGuardian(store: Store): Guardian {
  return new Guardian(store, {
    certTtlMs: 0,
    natsUrls: [],
    natsPort: 0,
    iceServers: [],
    clock: () => Date.now(),
  });
}

const realmInfo = (
  r: {
    id: string;
    name: string;
    cidr4: string;
    cidr6: string;
    oidc: RealmOidc | null;
    access?: string;
    regions?: string[];
  },
) => ({
  id: r.id,
  name: r.name,
  cidr4: r.cidr4,
  cidr6: r.cidr6,
  access: r.access ?? "taints",
  regions: r.regions ?? [],
  ...(r.oidc ? { oidc: r.oidc } : {}),
});

/**
 * Admin commands on the data directory of a Guardian on this host. Changes to nodes are recorded in the store;
 * the serving Guardian sends revocations to the realm and the Master within a second. (Online state needs the
 * Master: ask the serving Guardian with --guardian URL for it.)
 */
function localAdmin(dataDir: string): Admin {
  const store = openStore(dataDir);
  const shared = sharedStateOf(store);
  if (shared) {
    store.close();
    throw new UsageError(
      `the Guardian of ${dataDir} keeps its state in ${shared}: a change here would reach no Guardian; ` +
        "use --guardian URL with --admin-token-file FILE (or VEILNET_ADMIN_TOKEN)",
    );
  }
  const g = localGuardian(store);
  const id = (ref: string, realm?: string) => g.findNode(ref, realm).id;
  return {
    createRealm: async (name, cidr, oidc) => realmInfo(await g.createRealm(name, cidr, oidc ?? null)),
    listRealms: () => Promise.resolve(store.realms().map(realmInfo)),
    setRealmOidc: async (name, oidc) => realmInfo(await g.setRealmOidc(name, oidc)),
    setRealmAccess: async (name, access) => realmInfo(await g.setRealmAccess(name, access)),
    setRealmRegions: async (name, regions) => realmInfo(await g.setRealmRegions(name, regions)),
    setNodeRegion: (ref, realm, region) => g.setNodeRegion(id(ref, realm), region),
    setNodeRegions: (ref, realm, regions) => g.setNodeRegions(id(ref, realm), regions),
    setNodeTeams: (ref, realm, teams) => g.setNodeTeams(id(ref, realm), teams),
    createToken: (o) =>
      g.createToken({ ...o, ttlMs: o.ttl === undefined ? undefined : parseDuration(o.ttl) }),
    listTokens: () => Promise.resolve(tokenList(g)),
    revokeToken: (id) => g.revokeToken(id),
    nodes: (realm) => g.nodes(realm),
    node: (ref, realm) => g.node(ref, realm),
    revokeNode: (ref, realm) => g.revokeNode(id(ref, realm)),
    removeNode: (ref, realm) => g.removeNode(id(ref, realm)),
    setNodeTaints: (ref, realm, taints, any) => g.setNodeTaints(id(ref, realm), { taints, any }),
    setNodeTag: (ref, realm, tag) => g.setNodeTag(id(ref, realm), tag),
    grantNodeSubnets: (ref, realm, subnets) => g.grantNodeSubnets(id(ref, realm), subnets),
    people: async (op) => {
      const p = g.people;
      switch (op.what) {
        case "users":
          return p.users(op.realm);
        case "teams":
          return p.teams(op.realm);
        case "createUser":
          return await p.createUser(
            op.realm,
            op.name,
            op.issuer ? { issuer: op.issuer, subject: op.subject! } : undefined,
          );
        case "removeUser":
          return await p.removeUser(op.realm, op.name);
        case "deleteTeam":
          return await p.deleteTeam(op.realm, op.name);
        case "createTeam":
          return await p.createTeam(op.realm, op.name, op.owner);
        case "addMember":
          return await p.addMember(op.realm, op.team, op.user);
        case "removeMember":
          return await p.removeMember(op.realm, op.team, op.user);
      }
    },
    close: () => store.close(),
  };
}

function remoteAdmin(base: string, token: string): Admin {
  const call = <T>(method: string, path: string, body?: unknown) =>
    guardianRequest<T>(base, method, path, token, body);
  const node = (ref: string, realm?: string, action = "") =>
    `/admin/nodes/${encodeURIComponent(ref)}${action}${realm ? `?realm=${encodeURIComponent(realm)}` : ""}`;
  const oidcBody = (o: RealmOidc) => ({
    issuer: o.issuer,
    jwks_url: o.jwksUrl,
    audience: o.audience,
    taints_claim: o.taintsClaim,
    admins: o.admins,
  });
  return {
    createRealm: (name, cidr, oidc) =>
      call("POST", "/admin/realms", { name, cidr, ...(oidc ? oidcBody(oidc) : {}) }),
    listRealms: () => call("GET", "/admin/realms"),
    setRealmOidc: (name, oidc) =>
      oidc === null
        ? call("DELETE", `/admin/realms/${encodeURIComponent(name)}/oidc`)
        : call("PUT", `/admin/realms/${encodeURIComponent(name)}/oidc`, oidcBody(oidc)),
    setRealmAccess: (name, access) =>
      call("PUT", `/admin/realms/${encodeURIComponent(name)}/access`, { access }),
    setRealmRegions: (name, regions) =>
      call("PUT", `/admin/realms/${encodeURIComponent(name)}/regions`, { regions }),
    setNodeRegion: (ref, realm, region) => call("PUT", node(ref, realm, "/region"), { region }),
    setNodeRegions: (ref, realm, regions) => call("PUT", node(ref, realm, "/regions"), { regions }),
    setNodeTeams: (ref, realm, teams) => call("PUT", node(ref, realm, "/teams"), { teams }),
    createToken: (o) =>
      call("POST", "/admin/tokens", { ...o, any_taints: o.anyTaints, anyTaints: undefined }),
    listTokens: () => call<unknown[]>("GET", "/admin/tokens"),
    revokeToken: async (id) => void await call("DELETE", `/admin/tokens/${id}`),
    nodes: (realm) => call("GET", `/admin/nodes${realm ? `?realm=${encodeURIComponent(realm)}` : ""}`),
    node: (ref, realm) => call("GET", node(ref, realm)),
    revokeNode: (ref, realm) => call("POST", node(ref, realm, "/revoke")),
    removeNode: async (ref, realm) => void await call("DELETE", node(ref, realm)),
    setNodeTaints: (ref, realm, taints, any) => call("PUT", node(ref, realm, "/taints"), { taints, any }),
    setNodeTag: (ref, realm, tag) => call("PUT", node(ref, realm, "/tag"), { tag }),
    grantNodeSubnets: (ref, realm, subnets) => call("PUT", node(ref, realm, "/subnets"), { subnets }),
    people: (op) => {
      const at = (...parts: string[]) =>
        `/admin/realms/${[op.realm, ...parts].map(encodeURIComponent).join("/")}`;
      switch (op.what) {
        case "users":
        case "teams":
          return call("GET", at(op.what));
        case "createUser":
          return call("POST", at("users"), { name: op.name, issuer: op.issuer, subject: op.subject });
        case "removeUser":
          return call("DELETE", at("users", op.name));
        case "deleteTeam":
          return call("DELETE", at("teams", op.name));
        case "createTeam":
          return call("POST", at("teams"), { name: op.name, owner: op.owner });
        case "addMember":
          return call("PUT", at("teams", op.team, "members", op.user));
        case "removeMember":
          return call("DELETE", at("teams", op.team, "members", op.user));
      }
    },
    close: () => {},
  };
}

async function admin(values: AdminFlags, io: Output): Promise<Admin> {
  const source = {
    what: "admin token",
    flag: "--admin-token",
    value: values["admin-token"],
    fileFlag: "--admin-token-file",
    file: values["admin-token-file"],
    env: "VEILNET_ADMIN_TOKEN",
  };
  if (values.guardian) {
    const token = await readSecret(source, secretInput(io));
    if (!token) {
      throw new UsageError(
        "--guardian needs the admin token: --admin-token-file FILE, --admin-token - (standard input), " +
          "VEILNET_ADMIN_TOKEN or --admin-token T",
      );
    }
    const caFile = values["guardian-ca"] ?? Deno.env.get("VEILNET_GUARDIAN_CA");
    if (caFile) trustGuardianCa(readCaFile("--guardian-ca", caFile));
    return remoteAdmin(values.guardian, token);
  }
  if (values["guardian-ca"] !== undefined) throw new UsageError("--guardian-ca goes with --guardian URL");
  if (source.value !== undefined || source.file !== undefined) {
    throw new UsageError(
      `${source.value !== undefined ? "--admin-token" : "--admin-token-file"} goes with --guardian URL ` +
        "(with --data-dir the data directory is the authority)",
    );
  }
  return localAdmin(values["data-dir"] ?? DEFAULT_DATA_DIR);
}

const USAGE = `usage:
  veilnet-conflux guardian serve [--listen HOST:PORT] [--data-dir DIR] [--embedded-master [--nats-port N]]
                                 [--master nats://a,nats://b] [--state sqlite|nats] [--cert-ttl 1h (at most 24h)]
                                 [--ice stun:host:port,...] [--stun-port 3478|off]
                                 [--turn turn:host:port,... --turn-secret-file FILE]
                                 [--tls-name NAME,... | --tls-cert FILE --tls-key FILE | --plaintext]
                                 [--console HOST:PORT [--release-url URL]] [--region NAME] [--geoip DIR]
      TLS (default): the API is HTTPS and the embedded Master TLS, with a certificate from the realm CA made at
            first start (DATA_DIR/ca.pem) for this host's name, its addresses and --tls-name; every
            registration token carries the CA's SHA-256, so register verifies the Guardian with nothing else.
            --tls-cert/--tls-key: an operator's certificate (and key), verified by nodes as any HTTPS client
            does; tokens then carry nothing. --plaintext: no TLS at all (tokens readable on the network)
      state: sqlite (default), the data directory's database, for one Guardian; nats, a JetStream stream on the
            --master servers (all of them; 3 copies on a cluster of 3) shared by every Guardian started with the
            same NATS keys (nats-keys below): the first to start seeds it from its data directory, the others
            load it; admin commands then go through --guardian URL, not --data-dir
      STUN: answered on UDP --stun-port and the port after it, at the --listen host, and handed to every node
      TURN: coturn with use-auth-secret; the shared secret from --turn-secret-file or VEILNET_TURN_SECRET, never
            on the command line; each login gets its own credentials, valid as long as its certificate
      console: a web console (realms, nodes, tokens, topology) on its own listener, with the API's TLS; sign in
            with the admin token, or as a realm's administrator through its OIDC issuer (realm oidc
            --oidc-admins); every action in it is an admin API call. --release-url: where install.sh is
            served, for the install line it shows with a new token
      --region: the region the Master (NATS, the backup path) is in, told to nodes at login, so a node whose
            traffic must stay within given regions knows whether it may go through the Master
      --geoip DIR: Debian's offline country databases (geoip-database: /usr/share/GeoIP); a node not placed by
            node region or its token is placed at each login in its country's code ("fr"), from the address
            its login came from as this Guardian saw it
  veilnet-conflux guardian realm create NAME [--cidr 10.128.0.0/16] [OIDC flags]      (admin flags below)
  veilnet-conflux guardian realm list | realm oidc NAME (OIDC flags | --clear) | realm access NAME taints|teams
      access: who may talk to whom, by taints (one's set within the other's) or by teams (a shared identity:
      the same owner, or a team both nodes hold); the realm's nodes log in again at a change
      OIDC flags: --oidc-issuer URL --oidc-jwks-url URL --oidc-audience AUD [--oidc-taints-claim CLAIM]
                  [--oidc-admins SUBJECT_OR_EMAIL,...]
      (registering in such a realm needs a valid identity token from that issuer: register --jwt)
      --oidc-admins: who administers this realm, and only it, by signing in to the console through its issuer
      (the audience is the console's OIDC client id); their identity token also works as --admin-token
  veilnet-conflux guardian realm regions NAME (--allow a,b | --anywhere)
      where the realm's nodes' traffic may cross a third party (a relay or the Master), unless a node has its
      own (node regions); --anywhere: no limit. The nodes that follow the realm log in again at a change
  veilnet-conflux guardian token create --realm NAME [--ttl 24h] [--uses N] [--taints a,b | --any-taints]
                                        [--subnets CIDR,...] [--region R]
      a node holds only the taints and portal subnets its token grants (no --taints: no taints);
      --region: the region the nodes it registers are placed in (a node never says its own)
  veilnet-conflux guardian token list | token revoke ID
      token create --user NAME: the nodes it registers belong to that user (see guardian user)
  veilnet-conflux guardian user list|create|remove [NAME] --realm NAME [--issuer URL --subject SUB]
      users of a realm own nodes (registered with a token for them, or by signing in at the realm's issuer,
      which makes the user on first sight); --issuer/--subject: who they sign in as there
  veilnet-conflux guardian team list|create|delete [TEAM] --realm NAME [--owner USER]
  veilnet-conflux guardian team add|remove TEAM USER --realm NAME      (members; the owner is one by owning it)
  veilnet-conflux guardian node list [--realm NAME] [--json]
  veilnet-conflux guardian node show|revoke|remove NODE          (NODE: conflux id or tag; --realm NAME if ambiguous)
  veilnet-conflux guardian node taints NODE a,b [--any]          (what it is granted and holds; "" for none)
  veilnet-conflux guardian node tag NODE NEW_TAG
  veilnet-conflux guardian node subnets NODE CIDR,...            (portal subnets it is granted; "" for none)
  veilnet-conflux guardian node teams NODE a,b                   (teams it asks for; held if its owner is in them)
  veilnet-conflux guardian node region NODE (REGION | --none)    (where it is; --none: unplaced)
  veilnet-conflux guardian node regions NODE (--allow a,b | --anywhere | --follow-realm)
      where its traffic may cross a third party (a relay or the Master); --follow-realm: as its realm says
      (realm regions); a region is a-z, 0-9 and inner hyphens, at most 32 characters, e.g. eu-west
      revoke and remove take effect across the realm within seconds; remove also forgets the node
  veilnet-conflux guardian nats-config [--port 4222] [--cluster-name N --cluster-listen HOST:PORT --routes URL,...]
                                       [--resolver-dir ${DEFAULT_RESOLVER_DIR}] (the server's own JWT directory)
                                       [--server-name NAME --jetstream-dir DIR] (JetStream, for --state nats)
                                       [--tls-dir ${DEFAULT_TLS_DIR} [--tls-name NAME,...] |
                                        --tls-cert FILE --tls-key FILE | --plaintext]
      TLS (default): writes a certificate from the realm CA for this host (and --tls-name) to --tls-dir; give
      the servers to guardian serve as --master tls://host:port,...
  veilnet-conflux guardian nats-keys export [-o keys.json] | nats-keys import keys.json      (--data-dir DIR)
      the NATS operator and account keys and the realm CA (secret): a second Guardian of a shared state needs the
      first one's; -o FILE writes them to a new file, mode 0600 (without it: to standard output)
admin flags: --data-dir DIR (a Guardian on this host; default ${DEFAULT_DATA_DIR})
             or --guardian URL with the admin token from --admin-token-file FILE, --admin-token - (standard
             input) or VEILNET_ADMIN_TOKEN (--admin-token T also works, but shows it to every user in ps);
             --guardian-ca FILE (or VEILNET_GUARDIAN_CA): the Guardian's realm CA (its DATA_DIR/ca.pem)`;

const OIDC_FLAGS = {
  "oidc-issuer": { type: "string" },
  "oidc-jwks-url": { type: "string" },
  "oidc-audience": { type: "string" },
  "oidc-taints-claim": { type: "string" },
  "oidc-admins": { type: "string" },
} as const;

/** The OIDC settings of a command line, undefined when none is given; all three or none. */
function oidcFlags(values: {
  "oidc-issuer"?: string;
  "oidc-jwks-url"?: string;
  "oidc-audience"?: string;
  "oidc-taints-claim"?: string;
  "oidc-admins"?: string;
}): RealmOidc | undefined {
  const given = [values["oidc-issuer"], values["oidc-jwks-url"], values["oidc-audience"]];
  const optional = [values["oidc-taints-claim"], values["oidc-admins"]];
  if ([...given, ...optional].every((v) => v === undefined)) return undefined;
  if (given.some((v) => v === undefined)) {
    throw new UsageError("--oidc-issuer, --oidc-jwks-url and --oidc-audience go together");
  }
  return {
    issuer: values["oidc-issuer"]!,
    jwksUrl: values["oidc-jwks-url"]!,
    audience: values["oidc-audience"]!,
    ...(values["oidc-taints-claim"] ? { taintsClaim: values["oidc-taints-claim"] } : {}),
    ...(values["oidc-admins"] ? { admins: values["oidc-admins"].split(",").map((a) => a.trim()) } : {}),
  };
}

/** One line per node for `node list`. */
function nodeLine(n: NodeView): string {
  const state = n.revoked_at !== undefined
    ? "revoked"
    : n.online === undefined
    ? "-"
    : n.online
    ? "online"
    : "offline";
  const seen = n.last_seen === undefined ? "never" : new Date(n.last_seen).toISOString();
  const who = n.identity ? ` ${n.identity.email ?? n.identity.subject}` : "";
  // What it reported: its version and how it reaches the peers it has traffic with.
  const paths = n.report?.peers.reduce<Record<string, number>>(
    (c, p) => ({ ...c, [p.path]: (c[p.path] ?? 0) + 1 }),
    {},
  );
  const report = n.report
    ? `  v${n.report.version} peers ${
      Object.entries(paths!).map(([path, count]) => `${count} ${path}`).join(", ") || "none"
    }${n.report.nat ? `  nat ${n.report.nat}` : ""}${
      n.report.publicAddress ? ` ${n.report.publicAddress}` : ""
    }`
    : "";
  return `${n.tag.padEnd(20)} ${n.ips[0]!.padEnd(15)} ${state.padEnd(8)} last seen ${seen}  taints ${
    n.taints.join(",") || "-"
  }${n.portal ? `  portal ${n.subnets.join(",")}` : ""}${
    n.region ? `  region ${n.region}` : ""
  }${who}${report}  ${n.id}`;
}

/**
 * `--allow a,b` or one of the `others` flags (exactly one): the regions --allow names (at least one), or
 * undefined for one of the others.
 */
function allowFlags(values: Record<string, unknown>, ...others: string[]): string[] | undefined {
  const given = [
    ...(values.allow !== undefined ? ["--allow"] : []),
    ...others.filter((f) => values[f.slice(2)] === true),
  ];
  const all = ["--allow a,b", ...others].join(", ");
  if (given.length !== 1) {
    throw new UsageError(`give one of ${all}${given.length > 1 ? `, not ${given.join(" and ")}` : ""}`);
  }
  if (values.allow === undefined) return undefined;
  const regions = list(values.allow as string);
  if (regions.length === 0) throw new UsageError("--allow names at least one region (or --anywhere)");
  return regions;
}

/** Runs `fn` with the admin the flags name, and closes it; returns exit code 0. */
async function withAdmin(
  values: AdminFlags,
  io: Output,
  fn: (a: Admin) => Promise<void>,
): Promise<number> {
  const a = await admin(values, io);
  try {
    await fn(a);
  } finally {
    a.close();
  }
  return 0;
}

/** `--stun-port N|off`: N and N+1 (default 3478, not explicit), or undefined for off. */
function stunFlag(value: string | undefined): { port: number; explicit: boolean } | undefined {
  if (value === "off") return undefined;
  if (value === undefined) return { port: 3478, explicit: false };
  const port = Number(value);
  if (!/^\d+$/.test(value) || port < 1 || port > 65534) {
    throw new UsageError(`--stun-port must be 1..65534 (it also uses the next port) or off, got "${value}"`);
  }
  return { port, explicit: true };
}

/**
 * `--turn` servers and their shared secret: from `--turn-secret-file` (trailing newline removed), else
 * VEILNET_TURN_SECRET. Never a flag of its own: a secret on the command line is visible to every user in `ps`.
 */
function turnFlags(
  flags: { servers: string | undefined; secretFile: string | undefined },
  io: Output,
): TurnConfig | undefined {
  const { servers, secretFile } = flags;
  const urls = list(servers);
  const parsed = urls.map((url) => {
    try {
      return parseTurnServer(url);
    } catch (error) {
      throw new UsageError(`--turn: ${(error as Error).message}`);
    }
  });
  let secret = Deno.env.get("VEILNET_TURN_SECRET") || undefined;
  if (secretFile !== undefined) {
    try {
      secret = Deno.readTextFileSync(secretFile).replace(/[\r\n]+$/, "");
      if ((Deno.statSync(secretFile).mode ?? 0) & 0o077) {
        io.err(`guardian: ${secretFile} is readable by other users: chmod 600 ${secretFile}`);
      }
    } catch (error) {
      throw new UsageError(`--turn-secret-file ${secretFile}: ${(error as Error).message}`);
    }
    if (secret === "") throw new UsageError(`--turn-secret-file ${secretFile} is empty`);
  }
  if (parsed.length === 0) {
    if (secretFile !== undefined) throw new UsageError("--turn-secret-file goes with --turn turn:host:port");
    return undefined;
  }
  if (!secret) {
    throw new UsageError(
      "--turn needs the secret it shares with the TURN server (coturn's static-auth-secret): " +
        "--turn-secret-file FILE or VEILNET_TURN_SECRET",
    );
  }
  return { servers: parsed, secret };
}

/**
 * `nats-keys export` prints a data directory's NATS keys (JSON, secret); `nats-keys import FILE` puts them into
 * another, so that a second Guardian of a shared state connects to it as the first does.
 */
async function natsKeysCommand(args: string[], io: Output): Promise<number> {
  const [action, ...more] = args;
  if (action !== "export" && action !== "import") {
    throw new UsageError(`guardian nats-keys: expected export or import FILE, got "${action ?? ""}"`);
  }
  const { values, positionals } = parse(more, {
    "data-dir": { type: "string", default: DEFAULT_DATA_DIR },
    output: { type: "string", short: "o" },
  }, {
    min: action === "import" ? 1 : 0,
    max: action === "import" ? 1 : 0,
  });
  if (action === "import" && values.output !== undefined) throw new UsageError("--output belongs to export");
  using store = openStore(values["data-dir"]);
  if (action === "export") {
    await realmCa(store); // made now if it was not yet: the second Guardian must have the same one
    const keys = JSON.stringify({ ...localGuardian(store).natsKeys(), tls_ca: savedCa(store) });
    if (values.output === undefined) io.out(keys);
    else {
      // A new file, 0600 whatever the umask (a shell's `>` gives 0644 under the usual umask 022).
      try {
        await Deno.writeTextFile(values.output, keys + "\n", { mode: 0o600, createNew: true });
      } catch (error) {
        throw new Error(`nats-keys export: cannot create ${values.output}: ${(error as Error).message}`, {
          cause: error,
        });
      }
      io.err(`guardian: NATS keys written to ${values.output} (mode 0600; secret: remove it once imported)`);
    }
    return 0;
  }
  const file = positionals[0]!;
  let parsed: Record<string, unknown> | null;
  try {
    parsed = JSON.parse(await Deno.readTextFile(file));
  } catch (error) {
    throw new UsageError(`nats-keys import: cannot read ${file}: ${(error as Error).message}`);
  }
  const { tls_ca: ca, ...keys } = parsed ?? {};
  const isCa = (c: unknown): c is { cert: string; key: string } =>
    typeof c === "object" && c !== null && typeof (c as { cert?: unknown }).cert === "string" &&
    typeof (c as { key?: unknown }).key === "string";
  if (!isNatsKeys(keys) || JSON.stringify(completeKeys(keys)) !== JSON.stringify(keys)) {
    throw new UsageError(
      `nats-keys import: ${file} is not a whole key set from \`guardian nats-keys export\` (of this version)`,
    );
  }
  const saved = store.getMeta("nats_keys");
  if (saved !== undefined && saved !== JSON.stringify(keys) && store.realms().length > 0) {
    throw new UsageError(
      `nats-keys import: ${
        values["data-dir"]
      } already holds realms under other keys; import into an empty one`,
    );
  }
  if (ca !== undefined && !isCa(ca)) throw new UsageError(`nats-keys import: ${file} has a damaged tls_ca`);
  await store.transaction(() => {
    store.setMeta("nats_keys", JSON.stringify(keys));
    if (ca !== undefined) saveCa(store, ca);
  });
  io.err(`guardian: NATS keys${ca ? " and the realm CA" : ""} imported into ${values["data-dir"]}`);
  return 0;
}

/** Runs a guardian subcommand; returns the exit code. */
export async function guardianCommand(args: string[], io: Output): Promise<number> {
  const [sub, ...rest] = args;
  if (
    sub === undefined || sub === "--help" || sub === "-h" || rest.includes("--help") || rest.includes("-h")
  ) {
    io.out(USAGE);
    return sub === undefined ? 2 : 0;
  }
  if (sub === "serve") {
    const { values } = parse(rest, {
      listen: { type: "string", default: "127.0.0.1:8080" },
      "data-dir": { type: "string", default: DEFAULT_DATA_DIR },
      "embedded-master": { type: "boolean", default: false },
      "nats-port": { type: "string", default: "4222" },
      master: { type: "string" },
      state: { type: "string", default: "sqlite" },
      "cert-ttl": { type: "string", default: "1h" },
      ice: { type: "string" },
      "stun-port": { type: "string" },
      turn: { type: "string" },
      "turn-secret-file": { type: "string" },
      console: { type: "string" },
      "release-url": { type: "string" },
      region: { type: "string" },
      geoip: { type: "string" },
      ...TLS_FLAGS,
    });
    const tls = tlsFlags(values);
    if (values.region !== undefined && !isRegion(values.region)) {
      throw new UsageError(
        `--region is a region name (a-z, 0-9 and inner hyphens, at most 32 characters), got "${values.region}"`,
      );
    }
    const consoleAt = values.console === undefined ? undefined : hostPort(values.console, "--console");
    if (values["release-url"] !== undefined && !/^https?:\/\/\S+$/.test(values["release-url"])) {
      throw new UsageError(`--release-url is an http(s) URL, got "${values["release-url"]}"`);
    }
    const { hostname, port } = hostPort(values.listen, "--listen");
    const natsPort = Number(values["nats-port"]);
    if (!Number.isInteger(natsPort) || natsPort < 1 || natsPort > 65535) {
      throw new UsageError("--nats-port must be 1..65535");
    }
    const master = list(values.master);
    if (master.length > 0 && values["embedded-master"]) {
      throw new UsageError("--master and --embedded-master exclude each other");
    }
    for (const url of master) {
      if (!/^(nats|tls):\/\/[^/]+$/.test(url)) {
        throw new UsageError(
          `--master URLs look like tls://host:4222 (nats:// for plain text), got "${url}"`,
        );
      }
      if (tls.kind !== "off" && url.startsWith("nats://")) {
        io.err(
          `guardian: WARNING: --master ${url} is plain text (nodes' credentials readable on the network); ` +
            "nats-config makes TLS servers: give them as tls://",
        );
      }
    }
    const state = values.state;
    if (state !== "sqlite" && state !== "nats") {
      throw new UsageError(`--state is sqlite (one Guardian) or nats (shared on the Master), got "${state}"`);
    }
    if (state === "nats" && master.length === 0) {
      throw new UsageError(
        "--state nats keeps the state on the Master's servers (JetStream): give all of them, " +
          "--master nats://a:4222,nats://b:4222,nats://c:4222 (--embedded-master is one server: use sqlite)",
      );
    }
    let certTtl;
    try {
      certTtl = checkCertTtl(parseDuration(values["cert-ttl"]));
    } catch (error) {
      throw new UsageError(`--cert-ttl: ${(error as Error).message}`);
    }
    let countryOf: CountryOf | undefined;
    try {
      countryOf = values.geoip === undefined ? undefined : openCountryDatabase(values.geoip);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    const stun = stunFlag(values["stun-port"]);
    const turn = turnFlags({ servers: values.turn, secretFile: values["turn-secret-file"] }, io);
    const abort = new AbortController();
    const stop = () => abort.abort();
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    try {
      await serveGuardian({
        stun,
        turn,
        hostname,
        port,
        dataDir: values["data-dir"],
        state,
        embeddedMaster: values["embedded-master"],
        tls,
        natsPort,
        natsUrls: master,
        certTtlMs: certTtl,
        iceServers: list(values.ice),
        console: consoleAt && { ...consoleAt, releaseUrl: values["release-url"]?.replace(/\/+$/, "") },
        ...(values.region !== undefined ? { masterRegion: values.region } : {}),
        ...(countryOf !== undefined ? { countryOf } : {}),
        signal: abort.signal,
        log: io.err,
      });
    } finally {
      Deno.removeSignalListener("SIGINT", stop);
      Deno.removeSignalListener("SIGTERM", stop);
    }
    return 0;
  }
  if (sub === "nats-config") {
    const { values } = parse(rest, {
      "data-dir": { type: "string", default: DEFAULT_DATA_DIR },
      port: { type: "string", default: "4222" },
      "cluster-name": { type: "string" },
      "cluster-listen": { type: "string" },
      routes: { type: "string" },
      "resolver-dir": { type: "string", default: DEFAULT_RESOLVER_DIR },
      "server-name": { type: "string" },
      "jetstream-dir": { type: "string" },
      "tls-dir": { type: "string", default: DEFAULT_TLS_DIR },
      ...TLS_FLAGS,
    });
    const tlsMode = tlsFlags(values);
    if (values["jetstream-dir"] !== undefined && values["cluster-name"] && !values["server-name"]) {
      throw new UsageError(
        "--jetstream-dir in a cluster needs --server-name, a name of its own for each server",
      );
    }
    if (values["server-name"] !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(values["server-name"])) {
      throw new UsageError(`--server-name is 1-64 letters, digits, _ . -, got "${values["server-name"]}"`);
    }
    using store = openStore(values["data-dir"]);
    const g = localGuardian(store);
    const cluster = values["cluster-name"]
      ? {
        name: values["cluster-name"],
        listen: values["cluster-listen"] ?? "0.0.0.0:6222",
        routes: list(values.routes),
      }
      : undefined;
    let tls: { certFile: string; keyFile: string } | undefined;
    if (tlsMode.kind === "operator") tls = tlsMode;
    if (tlsMode.kind === "realm") {
      const dir = values["tls-dir"];
      tls = { certFile: `${dir}/cert.pem`, keyFile: `${dir}/key.pem` };
      const made = await realmServerTls(store, tlsMode.names);
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.writeTextFile(tls.certFile, made.certPem, { mode: 0o600 });
      await Deno.writeTextFile(tls.keyFile, made.keyPem, { mode: 0o600 });
      io.err(`guardian: certificate from the realm CA for this host written to ${dir}`);
    }
    io.out(
      await natsServerConfig(g.natsKeys(), {
        tls,
        port: Number(values.port),
        cluster,
        resolverDir: values["resolver-dir"],
        serverName: values["server-name"],
        jetstreamDir: values["jetstream-dir"],
      }),
    );
    return 0;
  }
  if (sub === "nats-keys") return natsKeysCommand(rest, io);
  if (sub === "realm") {
    const [action, ...more] = rest;
    if (action === "create" || action === "oidc") {
      const { values, positionals } = parse(more, {
        ...ADMIN_FLAGS,
        ...OIDC_FLAGS,
        cidr: { type: "string" },
        clear: { type: "boolean", default: false },
      }, { min: 1, max: 1 });
      const oidc = oidcFlags(values);
      if (action === "create" && values.clear) throw new UsageError("--clear belongs to realm oidc");
      if (action === "oidc" && (oidc === undefined) === !values.clear) {
        throw new UsageError("realm oidc needs the OIDC flags, or --clear to remove them");
      }
      return await withAdmin(values, io, async (a) => {
        const realm = action === "create"
          ? await a.createRealm(positionals[0]!, values.cidr, oidc)
          : await a.setRealmOidc(positionals[0]!, oidc ?? null);
        io.out(
          `realm ${realm.name} (${realm.id}): ${realm.cidr4}, ${realm.cidr6}${realm.oidc ? ", OIDC on" : ""}`,
        );
      });
    }
    if (action === "list") {
      const { values } = parse(more, ADMIN_FLAGS);
      return await withAdmin(values, io, async (a) => io.out(JSON.stringify(await a.listRealms(), null, 2)));
    }
    if (action === "access") {
      const { values, positionals } = parse(more, ADMIN_FLAGS, { min: 2, max: 2 });
      const access = positionals[1];
      if (access !== "taints" && access !== "teams") {
        throw new UsageError(`realm access NAME taints|teams, got "${access}"`);
      }
      return await withAdmin(values, io, async (a) => {
        const realm = await a.setRealmAccess(positionals[0]!, access);
        io.out(
          `realm ${realm.name}: access by ${access}; its nodes log in again for certificates that say so`,
        );
      });
    }
    if (action === "regions") {
      const { values, positionals } = parse(more, {
        ...ADMIN_FLAGS,
        allow: { type: "string" },
        anywhere: { type: "boolean", default: false },
      }, { min: 1, max: 1 });
      const regions = allowFlags(values, "--anywhere");
      return await withAdmin(values, io, async (a) => {
        const realm = await a.setRealmRegions(positionals[0]!, regions ?? []);
        io.out(
          `realm ${realm.name}: traffic may cross a third party ${
            realm.regions?.length ? `in ${realm.regions.join(", ")}` : "anywhere"
          }; its nodes that follow it log in again`,
        );
      });
    }
    throw new UsageError(
      `guardian realm: expected create, list, oidc, access or regions, got "${action ?? ""}"`,
    );
  }
  if (sub === "token") {
    const [action, ...more] = rest;
    if (action === "create") {
      const { values } = parse(more, {
        ...ADMIN_FLAGS,
        realm: { type: "string" },
        ttl: { type: "string" },
        uses: { type: "string" },
        taints: { type: "string" },
        "any-taints": { type: "boolean", default: false },
        subnets: { type: "string" },
        user: { type: "string" },
        region: { type: "string" },
      });
      if (!values.realm) throw new UsageError("token create needs --realm NAME");
      if (values["any-taints"] && values.taints !== undefined) {
        throw new UsageError("--taints and --any-taints exclude each other");
      }
      const uses = values.uses === undefined ? undefined : Number(values.uses);
      return await withAdmin(values, io, async (a) => {
        const created = await a.createToken({
          realm: values.realm!,
          ttl: values.ttl,
          uses,
          taints: list(values.taints),
          anyTaints: values["any-taints"],
          subnets: list(values.subnets),
          ...(values.user !== undefined ? { user: values.user } : {}),
          ...(values.region !== undefined ? { region: values.region } : {}),
        });
        io.out(created.token); // only the token on stdout, so scripts can capture it
      });
    }
    if (action === "list" || action === "revoke") {
      const { values, positionals } = parse(more, ADMIN_FLAGS, action === "revoke" ? { min: 1, max: 1 } : {});
      return await withAdmin(values, io, async (a) => {
        if (action === "list") io.out(JSON.stringify(await a.listTokens(), null, 2));
        else await a.revokeToken(positionals[0]!);
      });
    }
    throw new UsageError(`guardian token: expected create, list or revoke, got "${action ?? ""}"`);
  }
  if (sub === "node") {
    const [action, ...more] = rest;
    const counts: Record<string, [min: number, max: number]> = {
      list: [0, 0],
      show: [1, 1],
      revoke: [1, 1],
      remove: [1, 1],
      taints: [2, 2],
      tag: [2, 2],
      subnets: [2, 2],
      teams: [2, 2],
      region: [1, 2],
      regions: [1, 1],
    };
    const args = counts[action ?? ""];
    if (args === undefined) {
      throw new UsageError(
        `guardian node: expected ${Object.keys(counts).join(", ")}, got "${action ?? ""}"`,
      );
    }
    const { values, positionals } = parse(more, {
      ...ADMIN_FLAGS,
      realm: { type: "string" },
      json: { type: "boolean", default: false },
      any: { type: "boolean", default: false },
      none: { type: "boolean", default: false },
      allow: { type: "string" },
      anywhere: { type: "boolean", default: false },
      "follow-realm": { type: "boolean", default: false },
    }, { min: args[0], max: args[1] });
    if (action !== "region" && values.none) throw new UsageError("--none belongs to node region");
    if (action !== "regions" && (values.allow !== undefined || values.anywhere || values["follow-realm"])) {
      throw new UsageError("--allow, --anywhere and --follow-realm belong to node regions");
    }
    if (action === "region" && (positionals.length === 2) === values.none) {
      throw new UsageError("node region NODE REGION, or node region NODE --none");
    }
    const regions = action === "regions" ? allowFlags(values, "--anywhere", "--follow-realm") : undefined;
    const [ref, arg] = positionals as [string, string];
    const show = (n: NodeView) => io.out(JSON.stringify(n, null, 2));
    return await withAdmin(values, io, async (a) => {
      switch (action) {
        case "list": {
          const nodes = await a.nodes(values.realm);
          io.out(values.json ? JSON.stringify(nodes, null, 2) : nodes.map(nodeLine).join("\n") || "no nodes");
          return;
        }
        case "show":
          return show(await a.node(ref, values.realm));
        case "revoke":
          show(await a.revokeNode(ref, values.realm));
          return io.err(`node ${ref} revoked: it can no longer log in; its peers and the Master drop it`);
        case "remove":
          await a.removeNode(ref, values.realm);
          return io.err(`node ${ref} removed; its address stays unused while its last certificate is valid`);
        case "taints":
          return show(await a.setNodeTaints(ref, values.realm, list(arg), values.any));
        case "tag":
          return show(await a.setNodeTag(ref, values.realm, arg));
        case "subnets":
          return show(await a.grantNodeSubnets(ref, values.realm, list(arg)));
        case "teams":
          return show(await a.setNodeTeams(ref, values.realm, list(arg)));
        case "region":
          return show(await a.setNodeRegion(ref, values.realm, values.none ? "" : arg));
        case "regions":
          // --follow-realm: null (its realm's); --anywhere: [] (no limit of its own).
          return show(
            await a.setNodeRegions(ref, values.realm, values["follow-realm"] ? null : regions ?? []),
          );
      }
    });
  }
  if (sub === "user" || sub === "team") return await peopleCommand(sub, rest, io);
  throw new UsageError(`guardian: unknown subcommand "${sub}" (see guardian --help)`);
}

/** `guardian user ...` and `guardian team ...`: a realm's users and teams. */
async function peopleCommand(sub: "user" | "team", rest: string[], io: Output): Promise<number> {
  const [action, ...more] = rest;
  const counts: Record<string, Record<string, number>> = {
    user: { list: 0, create: 1, remove: 1 },
    team: { list: 0, create: 1, delete: 1, add: 2, remove: 2 },
  };
  const args = counts[sub]![action ?? ""];
  if (args === undefined) {
    throw new UsageError(
      `guardian ${sub}: expected ${Object.keys(counts[sub]!).join(", ")}, got "${action ?? ""}"`,
    );
  }
  const { values, positionals } = parse(more, {
    ...ADMIN_FLAGS,
    realm: { type: "string" },
    owner: { type: "string" },
    issuer: { type: "string" },
    subject: { type: "string" },
  }, { min: args, max: args });
  if (!values.realm) throw new UsageError(`guardian ${sub} ${action} needs --realm NAME`);
  if ((values.issuer === undefined) !== (values.subject === undefined)) {
    throw new UsageError("--issuer and --subject go together");
  }
  const realm = values.realm;
  const [name, user] = positionals as [string, string];
  const op: PeopleOp = sub === "user"
    ? action === "list"
      ? { what: "users", realm }
      : action === "create"
      ? { what: "createUser", realm, name, issuer: values.issuer, subject: values.subject }
      : { what: "removeUser", realm, name }
    : action === "list"
    ? { what: "teams", realm }
    : action === "create"
    ? { what: "createTeam", realm, name, owner: values.owner ?? usage("team create needs --owner USER") }
    : action === "delete"
    ? { what: "deleteTeam", realm, name }
    : { what: action === "add" ? "addMember" : "removeMember", realm, team: name, user };
  return await withAdmin(values, io, async (a) => {
    const result = await a.people(op);
    if (result !== undefined && !("ok" in (result as object))) io.out(JSON.stringify(result, null, 2));
  });
}

function usage(message: string): never {
  throw new UsageError(message);
}
