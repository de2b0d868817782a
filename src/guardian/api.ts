/**
 * The Guardian's HTTP JSON API: a flat route table over Guardian. Every refusal is a JSON `{ "error": "..." }`
 * with a 4xx status, and changes nothing.
 * @module
 */

import { parseDuration } from "./guardian.ts";
import { type Guardian, GuardianError, type RegisterRequest } from "./guardian.ts";

/** Largest request body accepted. */
export const MAX_BODY_BYTES = 64 * 1024;

type Handler = (
  ctx: { req: Request; url: URL; token: string | undefined; body: () => Promise<Record<string, unknown>> },
) => Promise<Response>;

function json(status: number, value: unknown): Response {
  return new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
}

async function readBody(req: Request): Promise<Record<string, unknown>> {
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > MAX_BODY_BYTES) {
    throw new HttpError(413, `body of ${declared} bytes exceeds ${MAX_BODY_BYTES}`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (req.body) {
    for await (const chunk of req.body) {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) throw new HttpError(413, `body exceeds ${MAX_BODY_BYTES} bytes`);
      chunks.push(chunk);
    }
  }
  const text = new TextDecoder().decode(Uint8Array.from(chunks.flatMap((c) => [...c])));
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

/** The request handler for `Deno.serve`. */
export function guardianHandler(guardian: Guardian): (req: Request) => Promise<Response> {
  const routes: Record<string, Handler> = {
    "GET /healthz": () => Promise.resolve(json(200, { ok: true })),

    "POST /conflux/register": async ({ token, body }) => {
      const b = await body();
      const oidcFields = ["jwt", "jwks_url", "issuer", "audience"].filter((k) => b[k] !== undefined);
      if (oidcFields.length !== 0 && oidcFields.length !== 4) {
        throw new HttpError(400, "jwt, jwks_url, issuer and audience must be given together");
      }
      const req: RegisterRequest = {
        tag: optional(b, "tag", "string"),
        ip: optional(b, "ip", "string"),
        taints: stringList(b, "taints"),
        portal: optional(b, "portal", "boolean"),
        subnets: stringList(b, "subnets"),
        oidc: oidcFields.length === 4
          ? {
            jwt: optional(b, "jwt", "string")!,
            jwksUrl: optional(b, "jwks_url", "string")!,
            issuer: optional(b, "issuer", "string")!,
            audience: optional(b, "audience", "string")!,
          }
          : undefined,
      };
      return json(201, await guardian.register(token, req));
    },

    "DELETE /conflux/unregister": async ({ token, url }) => {
      await guardian.unregister(token, url.searchParams.get("conflux_id"));
      return json(200, { ok: true });
    },

    "POST /conflux/session/login": async ({ req, token, body, url }) => {
      const b = await body();
      return json(
        200,
        await guardian.login(token, b.public_key, req.headers.get("host") ?? url.host, {
          tag: b.tag,
          portal: b.portal,
          subnets: b.subnets,
        }),
      );
    },

    "POST /conflux/taints": async ({ token, body }) => {
      const b = await body();
      return json(200, { taints: await guardian.setTaints(token, { add: b.add, remove: b.remove }) });
    },

    "POST /admin/realms": async ({ token, body }) => {
      await guardian.checkAdmin(token);
      const b = await body();
      const name = optional<string>(b, "name", "string");
      if (!name) throw new HttpError(400, "name is required");
      const r = guardian.createRealm(name, optional(b, "cidr", "string"));
      return json(201, { id: r.id, name: r.name, cidr4: r.cidr4, cidr6: r.cidr6 });
    },

    "GET /admin/realms": async ({ token }) => {
      await guardian.checkAdmin(token);
      return json(
        200,
        guardian.store.realms().map((r) => ({ id: r.id, name: r.name, cidr4: r.cidr4, cidr6: r.cidr6 })),
      );
    },

    "POST /admin/tokens": async ({ token, body }) => {
      await guardian.checkAdmin(token);
      const b = await body();
      const realm = optional<string>(b, "realm", "string");
      if (!realm) throw new HttpError(400, "realm is required");
      const ttl = optional<string>(b, "ttl", "string");
      return json(
        201,
        await guardian.createToken({
          realm,
          ttlMs: ttl === undefined ? undefined : parseDuration(ttl),
          uses: optional(b, "uses", "number"),
          taints: stringList(b, "taints"),
        }),
      );
    },

    "GET /admin/tokens": async ({ token }) => {
      await guardian.checkAdmin(token);
      return json(200, tokenList(guardian));
    },
  };

  return async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const auth = req.headers.get("authorization") ?? "";
    const token = auth.startsWith("Bearer ") ? auth.slice(7).trim() : undefined;
    let cached: Promise<Record<string, unknown>> | undefined;
    const ctx = { req, url, token, body: () => cached ??= readBody(req) };
    try {
      const revoke = /^\/admin\/tokens\/([0-9a-f]{16})$/.exec(url.pathname);
      if (revoke && req.method === "DELETE") {
        await guardian.checkAdmin(token);
        if (!guardian.store.revokeToken(revoke[1]!)) throw new GuardianError(404, `no token ${revoke[1]}`);
        return json(200, { ok: true });
      }
      const route = routes[`${req.method} ${url.pathname}`];
      if (!route) {
        const known = Object.keys(routes).some((r) => r.endsWith(` ${url.pathname}`));
        return json(known ? 405 : 404, {
          error: known ? `${req.method} not allowed here` : `no route ${url.pathname}`,
        });
      }
      return await route(ctx);
    } catch (error) {
      if (error instanceof GuardianError || error instanceof HttpError) {
        return json(error.status, { error: error.message });
      }
      console.error("guardian: internal error:", error);
      return json(500, { error: "internal error (logged by the Guardian)" });
    }
  };
}

/** Registration tokens without their secrets. */
export function tokenList(guardian: Guardian): unknown[] {
  const realms = new Map(guardian.store.realms().map((r) => [r.id, r.name]));
  return guardian.store.tokens().map((t) => ({
    id: t.id,
    realm: realms.get(t.realmId),
    taints: t.taints,
    uses_left: t.usesLeft,
    expires_at: t.expiresAt,
    revoked: t.revoked,
  }));
}
