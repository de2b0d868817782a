// Geo-location at the Guardian (issue 22): the administrator places each node in a region and says where its
// traffic may cross a third party (a realm's default, or the node's own). Nothing a node says of itself counts.

import { assert, assertEquals } from "../../tests/assert.ts";
import { guardianSetup as setup, testIssuer } from "../../tests/guardian_fixture.ts";
import { decodeCertificate } from "../wire/certificate.ts";
import { fromBase64 } from "./rules.ts";
import { openCountryDatabase } from "../../ffi/geoip.ts";

const certOf = (login: { json: { certificate: string } }) =>
  decodeCertificate(fromBase64(login.json.certificate)!);

Deno.test("regions: a node's region and regions are the administrator's; a change voids its certificates and the next carries it", async () => {
  let now = 1_800_000_000_000;
  const { call, login, admin, reg } = await setup(() => now);
  const as = (method: string, path: string, body?: unknown) => call(method, path, { token: admin, body });
  const web = (await call("POST", "/conflux/register", { token: reg, body: { tag: "web" } })).json;
  const db = (await call("POST", "/conflux/register", { token: reg, body: { tag: "db" } })).json;
  // Unplaced, and anywhere, until the administrator says otherwise.
  const first = await login(web.token);
  assertEquals(first.status, 200);
  assertEquals([certOf(first).region, certOf(first).regions, first.json.master_region], ["", [], ""]);
  const shown = (await as("GET", "/admin/nodes/web")).json;
  assertEquals([shown.region, shown.regions, shown.regions_follow_realm], ["", [], true]);
  assertEquals((await as("GET", "/admin/realms")).json.map((r: { regions: string[] }) => r.regions), [
    [],
    [],
  ]);

  // Placed in eu-west: its certificate of before is void (the answer lists it), its next one says eu-west.
  now += 1_000;
  const placed = await as("PUT", "/admin/nodes/web/region", { region: "eu-west" });
  assertEquals([placed.status, placed.json.region], [200, "eu-west"]);
  now += 1_000;
  const second = await login(web.token);
  const voided = second.json.revocations.find((r: { conflux_id: string }) => r.conflux_id === web.conflux_id);
  assert(voided && voided.before >= certOf(first).notBefore, JSON.stringify(second.json.revocations));
  assert(certOf(second).notBefore > voided.before, "the new certificate is dated after the revocation");
  assertEquals([certOf(second).region, certOf(second).regions], ["eu-west", []]);

  // The realm's regions reach the nodes that follow it, and only them: db gets its own list first.
  await login(db.token);
  now += 1_000;
  const own = await as("PUT", "/admin/nodes/db/regions", { regions: ["eu-west", "eu-north"] });
  assertEquals([own.status, own.json.regions, own.json.regions_follow_realm], [200, [
    "eu-west",
    "eu-north",
  ], false]);
  now += 1_000;
  const dbSecond = await login(db.token);
  assertEquals(certOf(dbSecond).regions, ["eu-west", "eu-north"]);
  now += 1_000;
  const realm = await as("PUT", "/admin/realms/home/regions", { regions: ["eu-west", "us-east"] });
  assertEquals([realm.status, realm.json.regions], [200, ["eu-west", "us-east"]]);
  now += 1_000;
  const third = await login(web.token);
  const revoked = (id: string) =>
    third.json.revocations.filter((r: { conflux_id: string }) => r.conflux_id === id)
      .map((r: { before: number }) => r.before);
  assert(revoked(web.conflux_id).some((b: number) => b >= certOf(second).notBefore), "web follows the realm");
  assert(!revoked(db.conflux_id).some((b: number) => b >= certOf(dbSecond).notBefore), "db has its own list");
  assertEquals([certOf(third).region, certOf(third).regions], ["eu-west", ["eu-west", "us-east"]]);
  now += 1_000;
  assertEquals(certOf(await login(db.token)).regions, ["eu-west", "eu-north"]);
  const listed = (await as("GET", "/admin/nodes")).json.map((
    n: { tag: string; region: string; regions: string[]; regions_follow_realm: boolean },
  ) => [n.tag, n.region, n.regions, n.regions_follow_realm]);
  assertEquals(listed, [
    ["web", "eu-west", ["eu-west", "us-east"], true],
    ["db", "", ["eu-west", "eu-north"], false],
  ]);

  // Back to the realm's (null), then unplaced (""), then the realm anywhere ([]).
  now += 1_000;
  assertEquals((await as("PUT", "/admin/nodes/db/regions", { regions: null })).json.regions, [
    "eu-west",
    "us-east",
  ]);
  now += 1_000;
  assertEquals(certOf(await login(db.token)).regions, ["eu-west", "us-east"]);
  now += 1_000;
  assertEquals((await as("PUT", "/admin/nodes/web/region", { region: "" })).json.region, "");
  assertEquals((await as("PUT", "/admin/realms/home/regions", { regions: [] })).json.regions, []);
  now += 1_000;
  const last = certOf(await login(web.token));
  assertEquals([last.region, last.regions], ["", []]);
  // A node's own "anywhere" ([]) is its own setting, not the realm's.
  const anywhere = (await as("PUT", "/admin/nodes/db/regions", { regions: [] })).json;
  assertEquals([anywhere.regions, anywhere.regions_follow_realm], [[], false]);
});

Deno.test("regions: bad region names, too many and duplicates are a 400 naming the value, and change nothing", async () => {
  const { call, admin, reg, snapshot } = await setup();
  const as = (method: string, path: string, body?: unknown) => call(method, path, { token: admin, body });
  await call("POST", "/conflux/register", { token: reg, body: { tag: "web" } });
  const seventeen = Array.from({ length: 17 }, (_, i) => `r${i}`);
  const cases: [n: number, path: string, body: unknown, says: string][] = [
    [1, "/admin/nodes/web/region", { region: "EU" }, `bad region "EU"`],
    [2, "/admin/nodes/web/region", { region: "a b" }, `bad region "a b"`],
    [3, "/admin/nodes/web/region", { region: "-eu" }, `bad region "-eu"`],
    [4, "/admin/nodes/web/region", { region: "x".repeat(33) }, "bad region"],
    [5, "/admin/nodes/web/region", {}, "region is required"],
    [6, "/admin/nodes/web/region", { region: ["eu"] }, "region must be a string"],
    [7, "/admin/nodes/web/regions", { regions: ["eu", "EU"] }, `bad region "EU" in regions`],
    [8, "/admin/nodes/web/regions", { regions: ["eu", "a b"] }, `bad region "a b" in regions`],
    [9, "/admin/nodes/web/regions", { regions: seventeen }, "at most 16 regions"],
    [10, "/admin/nodes/web/regions", { regions: ["eu", "us", "eu"] }, `region "eu" is in regions twice`],
    [11, "/admin/nodes/web/regions", {}, "regions is required"],
    [12, "/admin/nodes/web/regions", { regions: [1] }, "regions must be a list of strings"],
    [13, "/admin/realms/home/regions", { regions: ["Europe"] }, `bad region "Europe" in regions`],
    [14, "/admin/realms/home/regions", { regions: seventeen }, "at most 16 regions"],
    [15, "/admin/realms/home/regions", { regions: ["eu", "eu"] }, `region "eu" is in regions twice`],
    [16, "/admin/realms/home/regions", {}, "regions is required"],
  ];
  const before = snapshot();
  for (const [n, path, body, says] of cases) {
    const r = await as("PUT", path, body);
    assertEquals(r.status, 400, `case ${n}: ${JSON.stringify(r.json)}`);
    assert(String(r.json.error).includes(says), `case ${n}: "${r.json.error}" lacks "${says}"`);
  }
  const token = await as("POST", "/admin/tokens", { realm: "home", region: "Mars Base" });
  assertEquals([token.status, String(token.json.error).includes(`bad region "Mars Base"`)], [400, true]);
  assertEquals(snapshot(), before);
  // Sixteen distinct names, each of up to 32 characters, are fine.
  const sixteen = Array.from({ length: 16 }, (_, i) => `r${i}-${"x".repeat(28)}`.slice(0, 32));
  assertEquals((await as("PUT", "/admin/nodes/web/regions", { regions: sixteen })).status, 200);
  assertEquals((await as("PUT", "/admin/realms/nowhere/regions", { regions: [] })).status, 404);
  assertEquals((await as("PUT", "/admin/nodes/nobody/region", { region: "eu" })).status, 404);
});

Deno.test("regions: a node is placed where its token says, and cannot place itself or widen where its traffic goes", async () => {
  let now = 1_800_000_000_000;
  const { call, login, admin, guardian } = await setup(() => now);
  const as = (method: string, path: string, body?: unknown) => call(method, path, { token: admin, body });
  const made = await as("POST", "/admin/tokens", { realm: "home", region: "eu-west" });
  assertEquals(made.status, 201);
  const listed = (await as("GET", "/admin/tokens")).json.find((t: { id: string }) => t.id === made.json.id);
  assertEquals(listed.region, "eu-west");
  await as("PUT", "/admin/realms/home/regions", { regions: ["eu-west"] });
  // It asks to be elsewhere at registration, and to go anywhere: it is where its token says, as its realm says.
  const r = await call("POST", "/conflux/register", {
    token: made.json.token,
    body: { tag: "sly", region: "us-east", regions: [], regions_follow_realm: false },
  });
  assertEquals(r.status, 201, JSON.stringify(r.json));
  const node = (await as("GET", "/admin/nodes/sly")).json;
  assertEquals([node.region, node.regions, node.regions_follow_realm], ["eu-west", ["eu-west"], true]);
  // Nor at login: the certificate carries the administrator's values whatever the signed body says.
  const cert = certOf(
    await login(r.json.token, { fields: { region: "us-east", regions: ["us-east", "ap"] } }),
  );
  assertEquals([cert.region, cert.regions], ["eu-west", ["eu-west"]]);
  assertEquals(guardian.store.confluxById(r.json.conflux_id)!.region, "eu-west");
  assertEquals(guardian.store.confluxById(r.json.conflux_id)!.regions, null);
  // A token without a region places nobody; its own token cannot change its region through the admin API.
  const plain = (await guardian.createToken({ realm: "home" })).token;
  const other = await call("POST", "/conflux/register", { token: plain, body: { region: "eu-west" } });
  now += 1_000;
  assertEquals(certOf(await login(other.json.token)).region, "");
  for (
    const [path, body] of [
      [`/admin/nodes/${r.json.conflux_id}/region`, { region: "us-east" }],
      [`/admin/nodes/${r.json.conflux_id}/regions`, { regions: [] }],
      ["/admin/realms/home/regions", { regions: [] }],
    ] as const
  ) {
    assertEquals((await call("PUT", path, { token: r.json.token, body })).status, 401, path);
  }
  assertEquals((await as("GET", "/admin/nodes/sly")).json.region, "eu-west");
});

Deno.test("regions: the login answer says where the Master is (serve --region)", async () => {
  const { call, login, reg } = await setup(undefined, { masterRegion: "eu-central" });
  const node = (await call("POST", "/conflux/register", { token: reg, body: {} })).json;
  const answer = await login(node.token);
  assertEquals([answer.status, answer.json.master_region], [200, "eu-central"]);
});

Deno.test("regions: a realm's administrator sets regions in that realm only; a user's identity token sets none", async () => {
  await using issuer = await testIssuer();
  const { iss, tokenOf } = issuer;
  const { call, admin, guardian } = await setup();
  const as = (method: string, path: string, body?: unknown) => call(method, path, { token: admin, body });
  const { oidc } = issuer;
  await as("PUT", "/admin/realms/home/oidc", { ...oidc, admins: ["alice"] });
  await as("PUT", "/admin/realms/other/oidc", { ...oidc, admins: ["bob"] });
  await as("POST", "/admin/realms/home/users", { name: "ben", issuer: iss, subject: "sub-ben" });
  const [alice, ben] = [await tokenOf("alice"), await tokenOf("sub-ben")];
  // Ben's own node (registered with a token for him), and a node of the other realm.
  const bensToken = (await as("POST", "/admin/tokens", { realm: "home", user: "ben" })).json.token;
  const bens = (await call("POST", "/conflux/register", { token: bensToken, body: { jwt: ben } })).json;
  assertEquals((await as("GET", `/admin/nodes/${bens.conflux_id}`)).json.owner, "ben");
  const otherToken = (await guardian.createToken({ realm: "other" })).token;
  const other =
    (await call("POST", "/conflux/register", { token: otherToken, body: { jwt: await tokenOf("bob") } }))
      .json.conflux_id;

  // Alice, in her realm.
  const by = (token: string, method: string, path: string, body?: unknown) =>
    call(method, path, { token, body });
  const allowed: [n: number, path: string, body: unknown][] = [
    [1, "/admin/realms/home/regions", { regions: ["eu-west"] }],
    [2, `/admin/nodes/${bens.conflux_id}/region`, { region: "eu-west" }],
    [3, `/admin/nodes/${bens.conflux_id}/regions`, { regions: ["eu-west", "eu-north"] }],
    [4, `/admin/nodes/${bens.conflux_id}/regions?realm=home`, { regions: null }],
  ];
  for (const [n, path, body] of allowed) {
    const r = await by(alice, "PUT", path, body);
    assertEquals(r.status, 200, `case ${n}: ${JSON.stringify(r.json)}`);
  }
  const made = await by(alice, "POST", "/admin/tokens", { realm: "home", region: "eu-west" });
  assertEquals(made.status, 201);

  // Beyond it: refused, and another realm's node is not even found. Ben, a user, sets nothing (not his grant).
  const refused: [n: number, token: string, method: string, path: string, body: unknown, status: number][] = [
    [1, alice, "PUT", "/admin/realms/other/regions", { regions: ["eu-west"] }, 403],
    [2, alice, "PUT", `/admin/nodes/${other}/region`, { region: "eu-west" }, 404],
    [3, alice, "PUT", `/admin/nodes/${other}/regions`, { regions: [] }, 404],
    [4, alice, "PUT", `/admin/nodes/${other}/regions?realm=other`, { regions: [] }, 403],
    [5, alice, "POST", "/admin/tokens", { realm: "other", region: "eu-west" }, 403],
    [6, ben, "PUT", `/admin/nodes/${bens.conflux_id}/region`, { region: "us-east" }, 401],
    [7, ben, "PUT", `/admin/nodes/${bens.conflux_id}/regions`, { regions: [] }, 401],
    [8, ben, "PUT", "/admin/realms/home/regions", { regions: [] }, 401],
    [9, ben, "POST", "/admin/tokens", { realm: "home", region: "us-east" }, 401],
  ];
  for (const [n, token, method, path, body, status] of refused) {
    const r = await by(token, method, path, body);
    assertEquals(r.status, status, `case ${n}: ${JSON.stringify(r.json)}`);
  }
  const otherNode = (await as("GET", `/admin/nodes/${other}`)).json;
  assertEquals([otherNode.region, otherNode.regions, otherNode.regions_follow_realm], ["", [], true]);
  assertEquals((await as("GET", "/admin/realms")).json.map((r: { regions: string[] }) => r.regions), [
    ["eu-west"],
    [],
  ]);
  const bensNode = (await as("GET", `/admin/nodes/${bens.conflux_id}`)).json;
  assertEquals([bensNode.region, bensNode.regions, bensNode.regions_follow_realm], ["eu-west", [
    "eu-west",
  ], true]);
});

Deno.test("regions: with --geoip, an unplaced node is placed where its login came from, as the Guardian saw it", async () => {
  // Debian's database (geoip-database, which setup.sh installs for the tests), through libGeoIP.
  const { call, login, admin, reg } = await setup(undefined, {
    countryOf: openCountryDatabase("/usr/share/GeoIP"),
  });
  const node = (await call("POST", "/conflux/register", { token: reg, body: {} })).json;
  const region = async (o: { from?: string; fields?: Record<string, unknown> }) =>
    certOf(await login(node.token, o)).region;
  assertEquals(await region({ from: "81.2.69.160" }), "gb");
  assertEquals(await region({ from: "::ffff:193.51.224.1" }), "fr", "an IPv4-mapped address counts as IPv4");
  assertEquals(await region({ from: "10.1.2.3" }), "", "a private address places nowhere");
  assertEquals(await region({}), "", "no socket address, no place");
  // What the node says of where it is counts for nothing.
  assertEquals(
    await region({ from: "10.1.2.3", fields: { region: "gb", address: "81.2.69.160" } }),
    "",
    "placed by its own word",
  );
  // The administrator's placement wins over the address.
  await call("PUT", `/admin/nodes/${node.conflux_id}/region`, { token: admin, body: { region: "eu" } });
  assertEquals(await region({ from: "81.2.69.160" }), "eu");
});
