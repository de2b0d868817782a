/**
 * `veilnet-conflux guardian ...`: run the Guardian, and administer it (realms, registration tokens, the nats-server
 * configuration). Admin subcommands work on the data directory of a Guardian on this host (`--data-dir`), or over
 * HTTP with `--guardian URL --admin-token T`.
 * @module
 */

import { tokenList } from "../guardian/api.ts";
import { Guardian, GuardianError, parseDuration } from "../guardian/guardian.ts";
import { natsServerConfig } from "../guardian/nats_auth.ts";
import { openStore, serveGuardian } from "../guardian/server.ts";
import type { Store } from "../guardian/store.ts";
import { guardianRequest } from "../agent/guardian_client.ts";
import { hostPort, list, parse, UsageError } from "./args.ts";
import type { Output } from "./main.ts";

const DEFAULT_DATA_DIR = "/var/lib/veilnet/guardian";

const ADMIN_FLAGS = {
  "data-dir": { type: "string" },
  guardian: { type: "string" },
  "admin-token": { type: "string" },
} as const;

/** The admin operations, done locally on the store or remotely over HTTP. */
interface Admin {
  createRealm(
    name: string,
    cidr?: string,
  ): Promise<{ id: string; name: string; cidr4: string; cidr6: string }>;
  createToken(
    o: { realm: string; ttl?: string; uses?: number; taints: string[] },
  ): Promise<{ id: string; token: string }>;
  listTokens(): Promise<unknown[]>;
  revokeToken(id: string): Promise<void>;
  close(): void;
}

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

function localAdmin(dataDir: string): Admin {
  const store = openStore(dataDir);
  const g = localGuardian(store);
  return {
    createRealm: (name, cidr) => Promise.resolve(g.createRealm(name, cidr)),
    createToken: (o) =>
      g.createToken({ ...o, ttlMs: o.ttl === undefined ? undefined : parseDuration(o.ttl) }),
    listTokens: () => Promise.resolve(tokenList(g)),
    revokeToken: (id) => {
      if (!store.revokeToken(id)) throw new GuardianError(404, `no token ${id}`);
      return Promise.resolve();
    },
    close: () => store.close(),
  };
}

function remoteAdmin(base: string, token: string): Admin {
  const call = <T>(method: string, path: string, body?: unknown) =>
    guardianRequest<T>(base, method, path, token, body);
  return {
    createRealm: (name, cidr) => call("POST", "/admin/realms", { name, cidr }),
    createToken: (o) => call("POST", "/admin/tokens", o),
    listTokens: () => call<unknown[]>("GET", "/admin/tokens"),
    revokeToken: async (id) => void await call("DELETE", `/admin/tokens/${id}`),
    close: () => {},
  };
}

function admin(values: { "data-dir"?: string; guardian?: string; "admin-token"?: string }): Admin {
  if (values.guardian) {
    const token = values["admin-token"] ?? Deno.env.get("VEILNET_ADMIN_TOKEN");
    if (!token) throw new UsageError("--guardian needs --admin-token (or VEILNET_ADMIN_TOKEN)");
    return remoteAdmin(values.guardian, token);
  }
  return localAdmin(values["data-dir"] ?? DEFAULT_DATA_DIR);
}

const USAGE = `usage:
  veilnet-conflux guardian serve [--listen HOST:PORT] [--data-dir DIR] [--embedded-master [--nats-port N]]
                                 [--master nats://a,nats://b] [--cert-ttl 1h] [--ice stun:host:port,...]
  veilnet-conflux guardian realm create NAME [--cidr 10.128.0.0/16]      (admin flags below)
  veilnet-conflux guardian token create --realm NAME [--ttl 24h] [--uses N] [--taints a,b]
  veilnet-conflux guardian token list | token revoke ID
  veilnet-conflux guardian nats-config [--port 4222] [--cluster-name N --cluster-listen HOST:PORT --routes URL,...]
admin flags: --data-dir DIR (a Guardian on this host; default ${DEFAULT_DATA_DIR})
             or --guardian URL --admin-token T`;

/** Runs a guardian subcommand; returns the exit code. */
export async function guardianCommand(args: string[], io: Output): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === undefined || sub === "--help" || sub === "-h") {
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
      "cert-ttl": { type: "string", default: "1h" },
      ice: { type: "string" },
    });
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
        throw new UsageError(`--master URLs look like nats://host:4222, got "${url}"`);
      }
    }
    const abort = new AbortController();
    const stop = () => abort.abort();
    Deno.addSignalListener("SIGINT", stop);
    Deno.addSignalListener("SIGTERM", stop);
    try {
      await serveGuardian({
        hostname,
        port,
        dataDir: values["data-dir"],
        embeddedMaster: values["embedded-master"],
        natsPort,
        natsUrls: master,
        certTtlMs: parseDuration(values["cert-ttl"]),
        iceServers: list(values.ice),
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
    });
    using store = openStore(values["data-dir"]);
    const g = localGuardian(store);
    const cluster = values["cluster-name"]
      ? {
        name: values["cluster-name"],
        listen: values["cluster-listen"] ?? "0.0.0.0:6222",
        routes: list(values.routes),
      }
      : undefined;
    io.out(await natsServerConfig(g.natsKeys(), { port: Number(values.port), cluster }));
    return 0;
  }
  if (sub === "realm") {
    const [action, ...more] = rest;
    if (action !== "create") throw new UsageError(`guardian realm: expected "create", got "${action ?? ""}"`);
    const { values, positionals } = parse(more, { ...ADMIN_FLAGS, cidr: { type: "string" } }, {
      min: 1,
      max: 1,
    });
    const a = admin(values);
    try {
      const realm = await a.createRealm(positionals[0]!, values.cidr);
      io.out(`realm ${realm.name} (${realm.id}): ${realm.cidr4}, ${realm.cidr6}`);
    } finally {
      a.close();
    }
    return 0;
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
      });
      if (!values.realm) throw new UsageError("token create needs --realm NAME");
      const uses = values.uses === undefined ? undefined : Number(values.uses);
      const a = admin(values);
      try {
        // Only the token on stdout, so scripts can capture it.
        io.out(
          (await a.createToken({ realm: values.realm, ttl: values.ttl, uses, taints: list(values.taints) }))
            .token,
        );
      } finally {
        a.close();
      }
      return 0;
    }
    if (action === "list" || action === "revoke") {
      const { values, positionals } = parse(more, ADMIN_FLAGS, action === "revoke" ? { min: 1, max: 1 } : {});
      const a = admin(values);
      try {
        if (action === "list") io.out(JSON.stringify(await a.listTokens(), null, 2));
        else await a.revokeToken(positionals[0]!);
      } finally {
        a.close();
      }
      return 0;
    }
    throw new UsageError(`guardian token: expected create, list or revoke, got "${action ?? ""}"`);
  }
  throw new UsageError(`guardian: unknown subcommand "${sub}" (see guardian --help)`);
}
