import { assert, assertEquals } from "../../tests/assert.ts";
import { guardianSetup } from "../../tests/guardian_fixture.ts";
import { consoleHandler, esc, topologySvg } from "./console.ts";
import type { NodeView } from "./guardian.ts";

const ORIGIN = "https://console.test";

async function setup() {
  const g = await guardianSetup();
  const handle = consoleHandler({ api: g.handler, tls: true, guardianUrl: "https://guardian.test:8080" });
  const request = (path: string, init: RequestInit & { cookie?: string } = {}) =>
    handle(
      new Request(`${ORIGIN}${path}`, {
        ...init,
        headers: {
          ...(init.cookie ? { cookie: init.cookie } : {}),
          ...(init.body ? { "content-type": "application/x-www-form-urlencoded" } : {}),
          ...init.headers as Record<string, string>,
        },
      }),
    );
  const signIn = async () => {
    const res = await request("/signin", { method: "POST", body: `token=${encodeURIComponent(g.admin)}` });
    assertEquals(res.status, 303);
    const cookie = res.headers.get("set-cookie")!;
    const session = cookie.split(";")[0]!;
    const page = await (await request("/tokens", { cookie: session })).text();
    const csrf = /name="csrf" value="([0-9a-f]{64})"/.exec(page)![1]!;
    return { cookie, session, csrf };
  };
  return { g, request, signIn };
}

Deno.test("console: a wrong admin token does not sign in; the right one gets a strict, HttpOnly, Secure cookie", async () => {
  const { request, signIn } = await setup();
  const wrong = await request("/signin", { method: "POST", body: "token=vadm.nope" });
  assertEquals(wrong.status, 401);
  assertEquals(wrong.headers.get("set-cookie"), null);
  assertEquals((await request("/nodes")).headers.get("location"), "/signin");
  const { cookie } = await signIn();
  for (const attribute of ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"]) {
    assert(cookie.includes(attribute), cookie);
  }
});

Deno.test("console: a change without the session's CSRF token or from another site is refused and does nothing", async () => {
  const { g, request, signIn } = await setup();
  const { session, csrf } = await signIn();
  const post = (body: string, headers: Record<string, string> = {}) =>
    request("/realms", { method: "POST", cookie: session, body, headers });
  assertEquals((await post("name=forged")).status, 403);
  assertEquals((await post(`name=forged&csrf=${"0".repeat(64)}`)).status, 403);
  assertEquals((await post(`name=forged&csrf=${csrf}`, { origin: "https://evil.test" })).status, 403);
  assertEquals((await post(`name=forged&csrf=${csrf}`, { "sec-fetch-site": "cross-site" })).status, 403);
  assertEquals(g.guardian.store.realms().some((r) => r.name === "forged"), false);
  assertEquals((await post(`name=made&csrf=${csrf}`, { origin: ORIGIN })).status, 303);
  assert(g.guardian.store.realms().some((r) => r.name === "made"));
  // The realm's OIDC settings, administrators included, are set from its row.
  const oidc = new URLSearchParams({
    csrf,
    issuer: "https://idp.test",
    jwks_url: "https://idp.test/jwks",
    audience: "veilnet-console",
    admins: "alice@example.com, bob",
  });
  const set = await request("/realms/made/oidc", { method: "POST", cookie: session, body: oidc.toString() });
  assertEquals(set.status, 303);
  assertEquals(g.guardian.store.realmByName("made")!.oidc!.admins, ["alice@example.com", "bob"]);
  assert(
    (await (await request("/realms", { cookie: session })).text()).includes('value="alice@example.com,bob"'),
  );
});

Deno.test("console: a token made in the console is an API token, shown with its install line; an API error is shown", async () => {
  const { request, signIn } = await setup();
  const { session, csrf } = await signIn();
  const made = await request("/tokens", {
    method: "POST",
    cookie: session,
    body: `csrf=${csrf}&realm=home&taints=lab`,
  });
  assertEquals(made.status, 201);
  const page = await made.text();
  const token = /<pre id="token">(vreg\.[^<]+)<\/pre>/.exec(page)?.[1];
  assert(token, page);
  assert(
    page.includes(
      `VEILNET_REGISTRATION_TOKEN=&#39;${token}&#39; sh -s -- --guardian https://guardian.test:8080`,
    ),
  );
  const refused = await request("/tokens", {
    method: "POST",
    cookie: session,
    body: `csrf=${csrf}&realm=nowhere`,
  });
  assertEquals(refused.status, 404);
  assert((await refused.text()).includes('class="error"'));
});

Deno.test("console: signing out ends the session", async () => {
  const { request, signIn } = await setup();
  const { session, csrf } = await signIn();
  assertEquals(
    (await request("/signout", { method: "POST", cookie: session, body: `csrf=${csrf}` })).status,
    303,
  );
  assertEquals((await request("/nodes", { cookie: session })).headers.get("location"), "/signin");
});

Deno.test("console: what nodes report is escaped, and the topology draws an edge per reported pair", () => {
  assertEquals(esc(`<img src=x onerror="a">'`), "&#60;img src=x onerror=&#34;a&#34;&#62;&#39;");
  const node = (id: string, tag: string, peers: string[]): NodeView => ({
    id,
    realm: "home",
    tag,
    ips: [],
    taints: [],
    granted_taints: [],
    portal: false,
    subnets: [],
    granted_subnets: [],
    online: true,
    created_at: 0,
    report: {
      at: 1_000,
      version: "0.1.0",
      peers: peers.map((p) => ({ id: p, path: "direct" as const, txBytes: 1, rxBytes: 1 })),
    },
  });
  const a = "00000000-0000-0000-0000-00000000000a", b = "00000000-0000-0000-0000-00000000000b";
  const svg = topologySvg([node(a, "a", [b]), node(b, "b", [a])], 2_000);
  assertEquals(svg.match(/class="edge direct"/g)?.length, 1);
  assertEquals(topologySvg([node(a, "a", [b]), node(b, "b", [a])], 200_000).includes("edge"), false, "stale");
});

Deno.test("console: a realm's users and teams are made and changed on its page, each form an admin API call", async () => {
  const { g, request, signIn } = await setup();
  const { session, csrf } = await signIn();
  const post = async (path: string, fields: Record<string, string> = {}) => {
    const res = await request(path, {
      method: "POST",
      cookie: session,
      body: new URLSearchParams({ csrf, ...fields }).toString(),
      headers: { origin: ORIGIN },
    });
    return res.status;
  };
  assertEquals(await post("/realms/home/users", { name: "james" }), 303);
  assertEquals(await post("/realms/home/users", { name: "ben@example.com" }), 303);
  assertEquals(await post("/realms/home/users", { name: "james" }), 409);
  assertEquals(await post("/realms/home/teams", { name: "lab", owner: "ben@example.com" }), 303);
  assertEquals(await post("/realms/home/teams/lab/members", { user: "james" }), 303);
  const people = g.guardian.people;
  assertEquals(people.teams("home").map((t) => [t.name, t.owner, t.members]), [["lab", "ben@example.com", [
    "james",
  ]]]);
  const shown = await (await request("/realms/home/people", { cookie: session })).text();
  assert(
    shown.includes("ben@example.com") &&
      shown.includes('action="/realms/home/teams/lab/members/james/remove"'),
  );
  assertEquals(await post("/realms/home/teams/lab/members/james/remove"), 303);
  assertEquals(people.teams("home")[0]!.members, []);
  assertEquals(await post("/realms/home/teams/lab/delete"), 303);
  assertEquals(await post(`/realms/home/users/${encodeURIComponent("ben@example.com")}/remove`), 303);
  assertEquals(people.users("home").map((u) => u.name), ["james"]);
  // The realm's access model, and a node's teams.
  assertEquals(await post("/realms/home/access", { access: "teams" }), 303);
  assertEquals(g.guardian.store.realmByName("home")!.access, "teams");
  assert(
    (await (await request("/realms", { cookie: session })).text()).includes(
      "<option selected>teams</option>",
    ),
  );
  const token = (await g.guardian.createToken({ realm: "home", user: "james" })).token;
  const node = (await g.call("POST", "/conflux/register", { token, body: {} })).json.conflux_id;
  assertEquals(await post(`/nodes/${node}/teams`, { teams: "lab, ops" }), 303);
  assertEquals(g.guardian.store.confluxById(node)!.teams, ["lab", "ops"]);
  const page = await (await request(`/nodes/${node}`, { cookie: session })).text();
  assert(page.includes("<dd>james</dd>") && page.includes("<dd>lab, ops</dd>"), page);
  // Without the session's CSRF token, nothing changes.
  const forged = await request("/realms/home/users", {
    method: "POST",
    cookie: session,
    body: "name=mallory",
    headers: { origin: ORIGIN },
  });
  assertEquals(forged.status, 403);
  assertEquals(people.users("home").map((u) => u.name), ["james"]);
});
