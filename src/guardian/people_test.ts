// Users and teams at the Guardian (issue 21): made and changed by an administrator only, through the admin API.

import { assertEquals } from "../../tests/assert.ts";
import { guardianSetup as setup } from "../../tests/guardian_fixture.ts";

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
