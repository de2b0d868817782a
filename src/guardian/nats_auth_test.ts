import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import {
  accountKeys,
  completeKeys,
  guardianCredentials,
  guardianStateCredentials,
  natsServerConfig,
  newNatsKeys,
  nodeCredentials,
  realmsAccountJwt,
  serverJwts,
  userOfJwt,
  withSystemKey,
} from "./nats_auth.ts";

const claimsOf = (token: string) =>
  JSON.parse(atob(token.split(".")[1]!.replaceAll("-", "+").replaceAll("_", "/")));

Deno.test("nats_auth: withSystemKey gives keys saved without a system account one, and keeps an existing one", () => {
  const keys = newNatsKeys();
  assertEquals(withSystemKey(keys), keys);
  const old = { operatorSeed: keys.operatorSeed, accountSeed: keys.accountSeed };
  const upgraded = withSystemKey(old);
  assert(upgraded.systemSeed?.startsWith("SA"), "no account seed made");
  assertEquals({ ...upgraded, systemSeed: undefined }, { ...old, systemSeed: undefined });
});

Deno.test("nats_auth: a node's credentials name its user, which a revocation names", async () => {
  const keys = newNatsKeys();
  const node = "ab".repeat(16);
  const c = await nodeCredentials(keys, {
    realmId: "cd".repeat(16),
    nodeId: node,
    expiresAt: Date.now() + 60_000,
  }, { conflux: "ef".repeat(16), tag: "web", addresses: [], subnets: [] });
  assertEquals(userOfJwt(c.jwt), { user: c.user, name: `node-${node}` });
  // JWTs issued at or before the revocation time (rounded down to seconds, as a JWT's iat is) are revoked.
  const account = await realmsAccountJwt(keys, {
    revocations: [{ user: c.user, at: 1_700_000_000_999 }],
    issuedAt: 5_000,
  });
  const claims = claimsOf(account);
  assertEquals(claims.nats.revocations, { [c.user]: 1_700_000_000 });
  assertEquals([claims.iat, claims.sub, claims.iss.startsWith("O")], [5, accountKeys(keys).account, true]);
  assertEquals(
    claimsOf(await realmsAccountJwt(keys, { revocations: [], issuedAt: 0 })).nats.revocations,
    undefined,
  );
  await assertRejects(
    () => realmsAccountJwt(keys, { revocations: [{ user: accountKeys(keys).account, at: 0 }], issuedAt: 0 }),
    TypeError,
    "user's public nkey",
  );
});

Deno.test("nats_auth: the Guardian's users belong to the system and realms accounts", async () => {
  const keys = newNatsKeys();
  const { system, realms } = await guardianCredentials(keys);
  assertEquals(claimsOf(system.jwt).iss, accountKeys(keys).system);
  assertEquals(claimsOf(realms.jwt).iss, accountKeys(keys).account);
  assertEquals(claimsOf(realms.jwt).nats.pub, { allow: ["veilnet.>"] });
});

Deno.test("nats_auth: the server configuration names the system account and a full resolver in its directory", async () => {
  const keys = newNatsKeys();
  const config = await natsServerConfig(keys, { port: 4222, resolverDir: "/var/lib/x/jwt" });
  assert(config.includes(`system_account: ${accountKeys(keys).system}`), config);
  assert(config.includes("type: full") && config.includes('dir: "/var/lib/x/jwt"'), config);
  assert(config.includes("allow_delete: false"), config);
});

Deno.test("nats_auth: JetStream is on for the Guardians' account only, and keys saved before it gain one", async () => {
  const { guardianSeed: _, ...old } = newNatsKeys();
  const keys = completeKeys(old);
  assert(keys.guardianSeed?.startsWith("SA"), "a Guardians' account is made");
  assertEquals(completeKeys(keys), keys, "and kept");
  const jwts = await serverJwts(keys);
  assertEquals(claimsOf(jwts.guardian!.jwt).nats.limits.disk_storage, -1);
  assertEquals(claimsOf(jwts.account).nats.limits.disk_storage, undefined, "nodes' account: no JetStream");
  const config = await natsServerConfig(keys, {
    port: 4222,
    resolverDir: "/x/jwt",
    serverName: "nats-a",
    jetstreamDir: "/x/js",
  });
  assert(config.includes('server_name: "nats-a"') && config.includes('store_dir: "/x/js"'), config);
  assert(config.includes(`${jwts.guardian!.key}: `), config);
  const state = await guardianStateCredentials(keys);
  assertEquals(claimsOf(state.jwt).iss, jwts.guardian!.key);
});
