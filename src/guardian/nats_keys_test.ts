/**
 * The Guardian's NATS keys are derived once and sign natively (nats_auth.ts): what they make must be exactly what
 * nkeys itself would, as nats-server checks it with nkeys' rules.
 */
import * as jwt from "@nats-io/jwt";
import * as nkeys from "@nats-io/nkeys";
import { assert, assertEquals } from "../../tests/assert.ts";
import { newNatsKeys, nodeCredentials, serverJwts } from "./nats_auth.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("nats_auth: node credentials verify under nkeys: issued by the realms account, to the seed's user", async () => {
  const keys = newNatsKeys();
  const account = nkeys.fromSeed(bytes(keys.accountSeed)).getPublicKey();
  const users = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const c = await nodeCredentials(keys, {
      realmId: "cd".repeat(16),
      nodeId: "ab".repeat(16),
      expiresAt: Date.now() + 60_000,
    }, { conflux: "ef".repeat(16), tag: "web", addresses: [], subnets: [] });
    const claims = jwt.decode(c.jwt) as { iss: string; sub: string; nats: { type: string } }; // throws unless signed
    const user = nkeys.fromSeed(bytes(c.seed));
    assertEquals([claims.iss, claims.sub, claims.nats.type, c.user], [
      account,
      user.getPublicKey(),
      "user",
      claims.sub,
    ]);
    assert(c.seed.startsWith("SU"));
    users.add(c.user);
  }
  assertEquals(users.size, 3, "each session has a user of its own");
});

Deno.test("nats_auth: server JWTs verify under nkeys, and keys of another seed are other keys", async () => {
  const [a, b] = [newNatsKeys(), newNatsKeys()];
  const [ja, jb] = [await serverJwts(a), await serverJwts(b)];
  for (const [keys, j] of [[a, ja], [b, jb]] as const) {
    const operator = jwt.decode(j.operator) as { iss: string };
    assertEquals(operator.iss, nkeys.fromSeed(bytes(keys.operatorSeed)).getPublicKey());
    assertEquals(j.accountKey, nkeys.fromSeed(bytes(keys.accountSeed)).getPublicKey());
    assertEquals((jwt.decode(j.account) as { sub: string }).sub, j.accountKey);
  }
  assert(ja.accountKey !== jb.accountKey);
});
