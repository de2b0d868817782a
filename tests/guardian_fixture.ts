/**
 * An in-process Guardian over an in-memory store, driven through its HTTP handler as nodes and administrators
 * would, for the Guardian's unit tests: realms "home" (10.128.0.0/24) and "other", a registration token granting
 * taints dev and prod and a few portal subnets, and a login that signs like a node (or is told how to cheat).
 * @module
 */

import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { Identity } from "../src/crypto/identity.ts";
import { signLogin } from "../src/crypto/login_proof.ts";
import { guardianHandler } from "../src/guardian/api.ts";
import { Guardian } from "../src/guardian/guardian.ts";
import { Store } from "../src/guardian/store.ts";

export const b64 = (b: Uint8Array): string => btoa(String.fromCharCode(...b));

/** The Guardian, its store and handler, the admin token, a registration token, and request helpers. */
/** Guardian options for tests: one-minute certificates, no Master URLs or ICE servers, the real clock. */
export const TEST_GUARDIAN_OPTIONS = {
  certTtlMs: 60_000,
  natsUrls: [],
  natsPort: 4222,
  iceServers: [],
  clock: () => Date.now(),
};

// deno-lint-ignore explicit-module-boundary-types -- a test fixture; its inferred type is its documentation
export async function guardianSetup(
  clock = () => Date.now(),
  options: { masterRegion?: string; countryOf?: (address: string) => string | undefined } = {},
) {
  const store = new Store(":memory:");
  const guardian = new Guardian(store, { ...TEST_GUARDIAN_OPTIONS, clock, ...options });
  const admin = (await guardian.ensureAdminToken())!;
  const handler = guardianHandler(guardian);
  const call = async (
    method: string,
    path: string,
    options: { token?: string; body?: unknown; raw?: string; headers?: Record<string, string> } = {},
  ) => {
    const headers: Record<string, string> = { host: "guardian.test:8080", ...options.headers };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    const body = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
    const res = await handler(new Request(`http://guardian.test:8080${path}`, { method, headers, body }));
    return { status: res.status, json: await res.json() };
  };
  guardian.createRealm("home", "10.128.0.0/24");
  guardian.createRealm("other", "10.129.0.0/24");
  const reg = (await guardian.createToken({
    realm: "home",
    taints: ["dev", "prod"],
    subnets: ["192.168.0.0/16", "10.50.0.0/16", "10.60.0.0/16", "fd00:99::/32"],
  })).token;
  const snapshot = () =>
    JSON.stringify({
      c: store.confluxes(),
      t: store.tokens(),
      r: store.realms(),
    });
  /**
   * Logs in over HTTP as a node does: `fields` added to the body, signed by `identity` (a fresh one by default).
   * `sign` may sign other bytes or for another conflux, to attack the proof.
   */
  const login = async (
    token: string,
    o: {
      identity?: Identity;
      fields?: Record<string, unknown>;
      sign?: { identity?: Identity; confluxId?: string; body?: Uint8Array } | false;
      /** The address the login comes from, as the Guardian's socket would see it. */
      from?: string;
    } = {},
  ) => {
    const identity = o.identity ?? await Identity.generate();
    const body = new TextEncoder().encode(JSON.stringify({
      public_key: b64(identity.publicKey),
      timestamp: clock(),
      nonce: crypto.randomUUID().replaceAll("-", ""),
      ...o.fields,
    }));
    const headers: Record<string, string> = { host: "guardian.test:8080", authorization: `Bearer ${token}` };
    if (o.sign !== false) {
      const s = o.sign ?? {};
      headers["veilnet-signature"] = b64(
        await signLogin(s.identity ?? identity, s.confluxId ?? token.split(".")[1] ?? "", s.body ?? body),
      );
    }
    const res = await handler(
      new Request("http://guardian.test:8080/conflux/session/login", { method: "POST", headers, body }),
      o.from === undefined ? undefined : { remoteAddr: { transport: "tcp", hostname: o.from, port: 40000 } },
    );
    return { status: res.status, json: await res.json(), body, headers };
  };
  return { store, guardian, admin, call, login, reg, snapshot, handler };
}

/**
 * A real OIDC issuer, as far as the Guardian sees one: a web server publishing a JWKS, and identity tokens signed
 * with its key (`tokenOf(sub)`, audience "veilnet", valid 5 minutes). `oidc` is the realm setting naming it.
 */
export async function testIssuer(): Promise<
  {
    iss: string;
    oidc: { issuer: string; jwks_url: string; audience: string };
    tokenOf(sub: string): Promise<string>;
  } & AsyncDisposable
> {
  const key = await generateKeyPair("ES256");
  const jwk = { ...await exportJWK(key.publicKey), kid: "k1", alg: "ES256" };
  const server = Deno.serve({ port: 0, onListen() {} }, () => Response.json({ keys: [jwk] }));
  const iss = "https://idp.test";
  return {
    iss,
    oidc: { issuer: iss, jwks_url: `http://127.0.0.1:${server.addr.port}/jwks`, audience: "veilnet" },
    tokenOf: (sub) =>
      new SignJWT({ sub }).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(iss).setAudience(
        "veilnet",
      )
        .setIssuedAt().setExpirationTime("5m").sign(key.privateKey),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}
