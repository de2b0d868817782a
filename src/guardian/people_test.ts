// Users and teams at the Guardian (issue 21): made and changed by an administrator only, through the admin API.

import { assert, assertEquals } from "../../tests/assert.ts";
import { guardianSetup as setup, testIssuer } from "../../tests/guardian_fixture.ts";
import { sharesIdentity } from "../crypto/identity_tags.ts";
import { decodeCertificate } from "../wire/certificate.ts";
import { fromBase64 } from "./rules.ts";

Deno.test("people: users own the nodes registered with their tokens; teams have an owner and members", async () => {
  const { call, admin } = await setup();
  const as = (method: string, path: string, body?: unknown) => call(method, path, { token: admin, body });
  assertEquals((await as("POST", "/admin/realms/home/users", { name: "james" })).status, 201);
  assertEquals((await as("POST", "/admin/realms/home/users", { name: "ben@example.com" })).status, 201);
  const refused: [n: number, body: unknown, status: number][] = [
    [1, { name: "james" }, 409], // taken
    [2, { name: "no spaces" }, 400],
    [3, { name: "x", issuer: "https://idp.test" }, 400], // an issuer without a subject
    [4, {}, 400],
  ];
  for (const [n, body, status] of refused) {
    assertEquals((await as("POST", "/admin/realms/home/users", body)).status, status, `case ${n}`);
  }
  assertEquals((await as("POST", "/admin/realms/nowhere/users", { name: "x" })).status, 404);

  // A token for james: the node it registers is his.
  const token = await as("POST", "/admin/tokens", { realm: "home", user: "james" });
  assertEquals(token.status, 201);
  assertEquals((await as("POST", "/admin/tokens", { realm: "home", user: "nobody" })).status, 404);
  const node =
    (await call("POST", "/conflux/register", { token: token.json.token, body: { tag: "jpc" } })).json;
  assertEquals((await as("GET", `/admin/nodes/${node.conflux_id}`)).json.owner, "james");
  const users = (await as("GET", "/admin/realms/home/users")).json;
  assertEquals(users.map((u: { name: string; nodes: string[] }) => [u.name, u.nodes]), [
    ["ben@example.com", []],
    ["james", ["jpc"]],
  ]);
  assertEquals((await as("DELETE", "/admin/realms/home/users/james")).status, 409); // he owns a node

  // Ben's team, James a member, then not.
  assertEquals(
    (await as("POST", "/admin/realms/home/teams", { name: "lab", owner: "ben@example.com" })).status,
    201,
  );
  assertEquals((await as("POST", "/admin/realms/home/teams", { name: "lab", owner: "james" })).status, 409);
  assertEquals((await as("POST", "/admin/realms/home/teams", { name: "Lab!", owner: "james" })).status, 400);
  assertEquals((await as("POST", "/admin/realms/home/teams", { name: "x", owner: "nobody" })).status, 404);
  const added = await as("PUT", "/admin/realms/home/teams/lab/members/james");
  assertEquals([added.status, added.json.owner, added.json.members], [200, "ben@example.com", ["james"]]);
  assertEquals((await as("PUT", "/admin/realms/home/teams/lab/members/ben%40example.com")).status, 409);
  assertEquals((await as("DELETE", "/admin/realms/home/users/ben@example.com")).status, 409); // owns lab
  assertEquals((await as("DELETE", "/admin/realms/home/teams/lab/members/james")).json.members, []);
  assertEquals((await as("DELETE", "/admin/realms/home/teams/lab/members/james")).status, 404);
  assertEquals((await as("DELETE", "/admin/realms/home/teams/lab")).status, 200);
  assertEquals((await as("GET", "/admin/realms/home/teams")).json, []);
  assertEquals((await as("DELETE", "/admin/realms/home/users/ben@example.com")).status, 200);

  // A node cannot do any of this: its own token is not an admin credential.
  const reg = await as("POST", "/admin/tokens", { realm: "home" });
  const own = (await call("POST", "/conflux/register", { token: reg.json.token, body: {} })).json.token;
  const tries: [string, string, unknown][] = [
    ["POST", "/admin/realms/home/users", { name: "mallory" }],
    ["POST", "/admin/realms/home/teams", { name: "mine", owner: "james" }],
    ["GET", "/admin/realms/home/users", undefined],
  ];
  for (const [method, path, body] of tries) {
    assertEquals((await call(method, path, { token: own, body })).status, 401, `${method} ${path}`);
  }
});

Deno.test("people: by teams, a node's certificate carries tags of what its owner holds, and only that", async () => {
  const { call, admin, login, store } = await setup();
  const as = (method: string, path: string, body?: unknown) => call(method, path, { token: admin, body });
  assertEquals((await as("PUT", "/admin/realms/home/access", { access: "teams" })).json.access, "teams");
  assertEquals((await as("PUT", "/admin/realms/home/access", { access: "friends" })).status, 400);
  for (const name of ["james", "ben", "mallory"]) await as("POST", "/admin/realms/home/users", { name });
  const nodeOf = async (user: string) => {
    const token = (await as("POST", "/admin/tokens", { realm: "home", user })).json.token;
    const r = await call("POST", "/conflux/register", { token, body: { teams: ["lab"] } });
    assertEquals(r.status, 201, JSON.stringify(r.json));
    return r.json as { conflux_id: string; token: string };
  };
  const [j, b, m] = [await nodeOf("james"), await nodeOf("ben"), await nodeOf("mallory")];
  const held = async (node: { token: string }) => {
    const r = (await login(node.token)).json;
    const cert = decodeCertificate(fromBase64(r.certificate)!);
    const secrets = (r.identity_secrets as string[]).map((s) => fromBase64(s)!);
    return { cert, secrets, ignored: r.ignored_teams as string[] };
  };
  // No team yet: each holds its owner alone, and says lab is ignored.
  const j1 = await held(j);
  assertEquals([j1.cert.access, j1.cert.identities.length, j1.secrets.length, j1.ignored], [1, 1, 1, [
    "lab",
  ]]);
  const b1 = await held(b);
  assertEquals(sharesIdentity(j1.secrets, b1.cert), false); // james's node does not recognise ben's
  // Ben makes lab and adds James: both hold it, and recognise each other; Mallory asks for it and does not get it.
  await as("POST", "/admin/realms/home/teams", { name: "lab", owner: "ben" });
  const revokedBefore = store.revocations(store.realmByName("home")!.id, Date.now()).length;
  await as("PUT", "/admin/realms/home/teams/lab/members/james");
  // James's node was told to log in again (a revocation of its older certificates).
  assert(store.revocations(store.realmByName("home")!.id, Date.now()).length > revokedBefore);
  const [j2, b2, m2] = [await held(j), await held(b), await held(m)];
  assertEquals([j2.cert.identities.length, b2.cert.identities.length, j2.ignored, b2.ignored], [
    2,
    2,
    [],
    [],
  ]);
  assert(sharesIdentity(j2.secrets, b2.cert) && sharesIdentity(b2.secrets, j2.cert));
  assertEquals([m2.cert.identities.length, m2.ignored], [1, ["lab"]]);
  // What peers see of a node (its certificate) names neither the team nor its members.
  const text = new TextDecoder("latin1").decode(j2.cert.signed);
  for (const name of ["lab", "james", "ben"]) assert(!text.includes(name), `the certificate names ${name}`);
  assertEquals(sharesIdentity(m2.secrets, j2.cert) || sharesIdentity(j2.secrets, m2.cert), false);
  // The secrets a node gets are its own identities' only: nothing of lab for Mallory.
  assertEquals(m2.secrets.some((s) => j2.secrets.some((t) => s.every((x, i) => x === t[i]))), false);
  // Removed, James's next certificate holds lab no more.
  await as("DELETE", "/admin/realms/home/teams/lab/members/james");
  const j3 = await held(j);
  assertEquals([j3.cert.identities.length, j3.ignored], [1, ["lab"]]);
  assertEquals(sharesIdentity(b2.secrets, j3.cert), false);
  // A node's teams are the administrator's to change (a node's own token cannot).
  assertEquals(
    (await call("PUT", `/admin/nodes/${m.conflux_id}/teams`, { token: m.token, body: { teams: [] } })).status,
    401,
  );
  assertEquals((await as("PUT", `/admin/nodes/${m.conflux_id}/teams`, { teams: ["Bad!"] })).status, 400);
  assertEquals((await as("PUT", `/admin/nodes/${m.conflux_id}/teams`, { teams: [] })).json.teams, undefined);
});

Deno.test("people: a user, by their identity token, manages the teams they own and their own nodes' teams, no more", async () => {
  await using issuer = await testIssuer();
  const { iss, tokenOf } = issuer;
  const { call, admin } = await setup();
  const as = (method: string, path: string, body?: unknown) => call(method, path, { token: admin, body });
  await as("PUT", "/admin/realms/home/oidc", issuer.oidc);
  for (const name of ["james", "ben", "mallory"]) {
    await as("POST", "/admin/realms/home/users", { name, issuer: iss, subject: `sub-${name}` });
  }
  const [james, ben, mallory] = await Promise.all(
    ["james", "ben", "mallory"].map((n) => tokenOf(`sub-${n}`)),
  );
  const by = (token: string, method: string, path: string, body?: unknown) =>
    call(method, path, { token, body });

  // Ben makes a team of his own and adds James; each sees it, Mallory does not.
  const made = await by(ben, "POST", "/admin/realms/home/teams", { name: "lab" });
  assertEquals([made.status, made.json.owner], [201, "ben"]);
  assertEquals((await by(ben, "PUT", "/admin/realms/home/teams/lab/members/james")).status, 200);
  const seen = async (token: string) =>
    (await by(token, "GET", "/admin/realms/home/teams")).json.map((t: { name: string }) => t.name);
  assertEquals([await seen(ben), await seen(james), await seen(mallory)], [["lab"], ["lab"], []]);
  // What they may not do.
  const refused: [n: number, token: string, method: string, path: string, body: unknown, status: number][] = [
    [1, mallory, "PUT", "/admin/realms/home/teams/lab/members/mallory", undefined, 403], // joining by herself
    [2, james, "PUT", "/admin/realms/home/teams/lab/members/mallory", undefined, 403], // a member, not the owner
    [3, mallory, "DELETE", "/admin/realms/home/teams/lab", undefined, 403],
    [4, mallory, "DELETE", "/admin/realms/home/teams/lab/members/james", undefined, 403],
    [5, mallory, "POST", "/admin/realms/home/teams", { name: "other", owner: "ben" }, 403], // one for another
    [6, mallory, "GET", "/admin/realms/other/teams", undefined, 403], // another realm
    [7, mallory, "GET", "/admin/realms/home/users", undefined, 401], // the directory is the administrator's
    [8, mallory, "POST", "/admin/realms/home/users", { name: "eve" }, 401],
    [9, mallory, "GET", "/admin/nodes", undefined, 401],
    [10, await tokenOf("sub-nobody"), "GET", "/admin/realms/home/teams", undefined, 401], // not a user here
  ];
  for (const [n, token, method, path, body, status] of refused) {
    assertEquals((await by(token, method, path, body)).status, status, `case ${n}`);
  }
  assertEquals((await as("GET", "/admin/realms/home/teams")).json[0].members, ["james"]);
  // James may leave; then he sees it no more.
  assertEquals((await by(james, "DELETE", "/admin/realms/home/teams/lab/members/james")).status, 200);
  assertEquals(await seen(james), []);

  // A user sets the teams of their own nodes, not another's.
  const nodeOf = async (user: string) => {
    const token = (await as("POST", "/admin/tokens", { realm: "home", user })).json.token;
    return (await call("POST", "/conflux/register", { token, body: { jwt: await tokenOf(`sub-${user}`) } }))
      .json.conflux_id as string;
  };
  const [benNode, malloryNode] = [await nodeOf("ben"), await nodeOf("mallory")];
  assertEquals((await by(ben, "PUT", `/admin/nodes/${benNode}/teams`, { teams: ["lab"] })).json.teams, [
    "lab",
  ]);
  assertEquals((await by(mallory, "PUT", `/admin/nodes/${benNode}/teams`, { teams: [] })).status, 404);
  assertEquals(
    (await by(mallory, "PUT", `/admin/nodes/${malloryNode}/teams`, { teams: ["lab"] })).status,
    200,
  );
  assertEquals((await as("GET", `/admin/nodes/${benNode}`)).json.teams, ["lab"]);
});
