/**
 * The local API: how the CLI talks to a running node, over a unix socket only its owner can open (0600).
 * A flat route table; every answer is JSON.
 * @module
 */

import { formatAddress } from "../tun/ip.ts";
import { isTag } from "../wire/certificate.ts";
import type { Owner } from "./membership.ts";
import type { NodeStatus, PeerStatus } from "./status.ts";

/** What the API asks of the running node. */
export interface LocalNode {
  status(): NodeStatus;
  peers(): PeerStatus[];
  lookup(tag: string): Promise<Owner[]>;
  changeTaints(change: { add?: string[]; remove?: string[] }): Promise<string[]>;
}

/** Serves the API for `agent` on the unix socket `path` until `signal` aborts. */
export function serveLocalApi(agent: LocalNode, path: string, signal: AbortSignal): Deno.HttpServer {
  try {
    Deno.removeSync(path); // a socket left by a node that did not exit cleanly
  } catch { /* none */ }
  const json = (status: number, value: unknown) => Response.json(value, { status });
  const routes: Record<string, (req: Request) => Promise<Response> | Response> = {
    "GET /status": () => json(200, agent.status()),
    "GET /peers": () => json(200, agent.peers()),
    "GET /taints": () => json(200, { taints: agent.status().taints }),
    "GET /resolve": async (req) => {
      const tag = new URL(req.url).searchParams.get("tag") ?? "";
      if (!isTag(tag)) return json(400, { error: `"${tag}" is not a tag (a DNS label)` });
      const owners = await agent.lookup(tag);
      return json(
        200,
        owners.map((o) => ({ tag: o.tag, ips: [formatAddress(o.ipv4), formatAddress(o.ipv6)] })),
      );
    },
    "POST /taints": async (req) => {
      let body: { add?: unknown; remove?: unknown };
      try {
        body = await req.json();
      } catch {
        return json(400, { error: 'body must be JSON: {"add": [...], "remove": [...]}' });
      }
      const list = (v: unknown) =>
        Array.isArray(v) && v.every((s) => typeof s === "string") ? v as string[] : undefined;
      const add = body.add === undefined ? [] : list(body.add);
      const remove = body.remove === undefined ? [] : list(body.remove);
      if (!add || !remove) return json(400, { error: "add and remove must be lists of strings" });
      try {
        return json(200, { taints: await agent.changeTaints({ add, remove }) });
      } catch (error) {
        return json(502, { error: (error as Error).message });
      }
    },
  };
  const server = Deno.serve({ path, signal, onListen() {} }, async (req) => {
    const route = routes[`${req.method} ${new URL(req.url).pathname}`];
    return route ? await route(req) : json(404, { error: "no such route" });
  });
  Deno.chmodSync(path, 0o600);
  return server;
}
