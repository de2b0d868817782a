import { DatabaseSync } from "node:sqlite";
import { assertEquals, assertThrows } from "../../tests/assert.ts";
import { tempDir } from "../../tests/harness.ts";
import { ConflictError, Store } from "./store.ts";

/** A database as the first release wrote it (user_version 0), with what that release allowed. */
function writeVersion0(path: string): void {
  const db = new DatabaseSync(path);
  db.exec(`
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE realms (
      id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, cidr4 TEXT NOT NULL, cidr6 TEXT NOT NULL,
      key_seed TEXT NOT NULL, created_at INTEGER NOT NULL);
    CREATE TABLE registration_tokens (
      id TEXT PRIMARY KEY, realm_id TEXT NOT NULL REFERENCES realms(id), secret_hash TEXT NOT NULL,
      taints TEXT NOT NULL, uses_left INTEGER, expires_at INTEGER, revoked INTEGER NOT NULL DEFAULT 0,
      created_at INTEGER NOT NULL);
    CREATE TABLE confluxes (
      id TEXT PRIMARY KEY, realm_id TEXT NOT NULL REFERENCES realms(id), secret_hash TEXT NOT NULL,
      tag TEXT NOT NULL, ip4 INTEGER NOT NULL, taints TEXT NOT NULL, allowed_taints TEXT NOT NULL,
      portal INTEGER NOT NULL, subnets TEXT NOT NULL, created_at INTEGER NOT NULL,
      UNIQUE (realm_id, ip4));
    INSERT INTO realms VALUES ('r1', 'home', '10.128.0.0/24', 'fd00::/64', 'seed', 1);
    INSERT INTO registration_tokens VALUES ('t1', 'r1', 'h', '[]', NULL, NULL, 0, 1);
    -- Two nodes that squatted tag "db" (the older keeps it), one that gave itself taints with an "any" token,
    -- and a portal that asserted its own subnet.
    INSERT INTO confluxes VALUES ('aaaa-1', 'r1', 'h', 'db', 1, '["dev"]', '["dev","prod"]', 0, '[]', 10);
    INSERT INTO confluxes VALUES ('bbbb-2', 'r1', 'h', 'db', 2, '["finance"]', '[]', 0, '[]', 20);
    INSERT INTO confluxes VALUES ('cccc-3', 'r1', 'h', 'gw', 3, '["dev"]', '[]', 1, '["10.50.0.0/24"]', 30);
  `);
  db.close();
}

Deno.test("store: a version 0 database migrates to the trust model without losing a node", async () => {
  await using dir = await tempDir("vc-store-");
  const path = `${dir.path}/guardian.db`;
  writeVersion0(path);
  using store = new Store(path);
  const nodes = store.confluxes("r1");
  assertEquals(nodes.map((n) => [n.id, n.tag, n.taints, n.allowedTaints, n.anyTaints, n.grantedSubnets]), [
    ["aaaa-1", "db", ["dev"], ["dev", "prod"], false, []],
    ["bbbb-2", "db-bbbb-2", ["finance"], ["finance"], false, []], // its grant is what it held: no more
    ["cccc-3", "gw", ["dev"], ["dev"], false, ["10.50.0.0/24"]],
  ]);
  // The old "no taints means any" token now grants none.
  assertEquals([store.tokenById("t1")!.taints, store.tokenById("t1")!.anyTaints], [[], false]);
  // Tags are unique from now on.
  assertThrows(() => store.setTag("cccc-3", "db"), ConflictError, "held by another node");
  // Geo-location (3 -> 4): every older node is unplaced and follows its realm, which allows anywhere.
  assertEquals(store.schema, 4);
  assertEquals(nodes.map((n) => [n.region, n.regions]), [["", null], ["", null], ["", null]]);
  assertEquals([store.realmById("r1")!.regions, store.tokenById("t1")!.region], [[], ""]);
  // Opening it again changes nothing.
  store.close();
  using again = new Store(path);
  assertEquals(again.confluxes("r1").map((n) => n.tag), ["db", "db-bbbb-2", "gw"]);
});

/** A realm row for the tests that need one. */
const REALM_R = {
  id: "r",
  name: "r",
  cidr4: "10.0.0.0/24",
  cidr6: "fd00::/64",
  keySeed: "",
  oidc: null,
  createdAt: 0,
};

Deno.test("store: a token's last use is taken once, in one statement", () => {
  using store = new Store(":memory:");
  store.addRealm(REALM_R);
  const token = { realmId: "r", secretHash: "", taints: [], anyTaints: false, subnets: [], revoked: false };
  store.addToken({ ...token, id: "one", usesLeft: 1, expiresAt: null, createdAt: 0 });
  store.addToken({ ...token, id: "late", usesLeft: null, expiresAt: 100, createdAt: 0 });
  assertEquals([store.consumeToken("one", 0), store.consumeToken("one", 0)], [true, false]);
  assertEquals([store.consumeToken("late", 99), store.consumeToken("late", 100)], [true, false]);
  store.revokeToken("late");
  assertEquals(store.consumeToken("late", 0), false);
});

Deno.test("store: regions of realms, nodes and tokens are kept, and travel in a dump to another store", () => {
  using store = new Store(":memory:");
  const realm = REALM_R;
  store.addRealm(realm);
  const token = { realmId: "r", secretHash: "", taints: [], anyTaints: false, subnets: [], revoked: false };
  store.addToken({ ...token, id: "t", usesLeft: null, expiresAt: null, createdAt: 0, region: "eu-west" });
  const node = {
    realmId: "r",
    secretHash: "",
    taints: [],
    allowedTaints: [],
    anyTaints: false,
    portal: false,
    subnets: [],
    grantedSubnets: [],
    identity: null,
    nodeId: null,
    lastLogin: null,
    certExpires: 0,
    revokedAt: null,
    createdAt: 0,
  };
  store.addConflux({ ...node, id: "a", tag: "a", ip4: 1, region: "eu-west" });
  store.addConflux({ ...node, id: "b", tag: "b", ip4: 2, regions: ["us-east"] });
  store.setRealmRegions("r", ["eu-west", "eu-north"]);
  store.setConfluxRegion("b", "us-east");
  store.setConfluxRegions("a", ["eu-west"]);
  store.setConfluxRegions("b", null);
  const seen = (s: Store) => [
    s.realmById("r")!.regions,
    s.tokenById("t")!.region,
    s.confluxes("r").map((n) => [n.id, n.region, n.regions]),
  ];
  const expected = [["eu-west", "eu-north"], "eu-west", [["a", "eu-west", ["eu-west"]], [
    "b",
    "us-east",
    null,
  ]]];
  assertEquals(seen(store), expected);
  using replica = new Store(":memory:");
  replica.load(store.dump());
  assertEquals(seen(replica), expected);
});
