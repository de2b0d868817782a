// The Guardian against a hostile member: every test is an attack a registered node (or a token holder) tries,
// and the refusal it must get. Each fails when its defence is removed.

import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { assert, assertEquals, assertThrows } from "../../tests/assert.ts";
import { guardianSetup as setup } from "../../tests/guardian_fixture.ts";
import { Identity } from "../crypto/identity.ts";
import { decodeCertificate } from "../wire/certificate.ts";
import { checkCertTtl, fromBase64, GuardianError } from "./rules.ts";

const certOf = (login: { json: { certificate: string } }) =>
  decodeCertificate(fromBase64(login.json.certificate)!);

Deno.test("trust: a node holds only the taints its token grants; no taints granted means none", async () => {
  const { call, login, guardian, admin } = await setup();
  const bare = (await guardian.createToken({ realm: "home" })).token;
  const cases: [n: number, token: string, taints: string[] | undefined, status: number, held?: string[]][] = [
    [1, bare, ["prod"], 403], // self-granted taint
    [2, bare, ["finance", "prod"], 403],
    [3, bare, undefined, 201, []], // nothing asked, nothing granted
    [4, (await guardian.createToken({ realm: "home", taints: ["dev"] })).token, ["dev", "prod"], 403],
    [5, (await guardian.createToken({ realm: "home", taints: ["dev", "ops"] })).token, undefined, 201, [
      "dev",
      "ops",
    ]],
    [6, (await guardian.createToken({ realm: "home", taints: ["dev", "ops"] })).token, ["ops"], 201, ["ops"]],
    [7, (await guardian.createToken({ realm: "home", anyTaints: true })).token, ["finance"], 201, [
      "finance",
    ]],
  ];
  for (const [n, token, taints, status, held] of cases) {
    const r = await call("POST", "/conflux/register", { token, body: { taints } });
    assertEquals(r.status, status, `case ${n}: ${JSON.stringify(r.json)}`);
    if (held) assertEquals(certOf(await login(r.json.token)).taints, held, `case ${n}`);
  }
  // `taint add` stays inside the grant too.
  const node = (await call("POST", "/conflux/register", { token: bare, body: {} })).json.token;
  const add = await call("POST", "/conflux/taints", { token: node, body: { add: ["prod"] } });
  assertEquals([add.status, String(add.json.error).includes("may not hold")], [403, true]);
  // The administrator's grant is what counts from then on.
  const id = (await call("GET", "/admin/nodes", { token: admin })).json.at(-1).id;
  assertEquals(
    (await call("PUT", `/admin/nodes/${id}/taints`, { token: admin, body: { taints: ["ops"] } })).status,
    200,
  );
  assertEquals(certOf(await login(node)).taints, ["ops"]);
  assertEquals((await call("POST", "/conflux/taints", { token: node, body: { add: ["prod"] } })).status, 403);
});

Deno.test("trust: tags are unique in a realm, at registration, at login and by the administrator", async () => {
  const { call, login, reg, admin, guardian } = await setup();
  const db = await call("POST", "/conflux/register", { token: reg, body: { tag: "db" } });
  assertEquals(db.status, 201);
  const squat = await call("POST", "/conflux/register", { token: reg, body: { tag: "db" } });
  assertEquals(squat.status, 409);
  assert(String(squat.json.error).includes(`tag "db" is held by another node`), squat.json.error);
  // Another realm may have its own db.
  const other = (await guardian.createToken({ realm: "other" })).token;
  assertEquals((await call("POST", "/conflux/register", { token: other, body: { tag: "db" } })).status, 201);

  const web = (await call("POST", "/conflux/register", { token: reg, body: { tag: "web" } })).json;
  const rename = await login(web.token, { fields: { tag: "db" } });
  assertEquals(rename.status, 409, JSON.stringify(rename.json));
  assertEquals(certOf(await login(web.token)).tag, "web");
  const byAdmin = await call("PUT", `/admin/nodes/${web.conflux_id}/tag`, {
    token: admin,
    body: { tag: "db" },
  });
  assertEquals(byAdmin.status, 409);
  // The only holder keeps answering to it.
  assertEquals(certOf(await login(db.json.token)).tag, "db");
  const moved = await call("PUT", `/admin/nodes/${web.conflux_id}/tag`, {
    token: admin,
    body: { tag: "www" },
  });
  assertEquals([moved.status, moved.json.tag], [200, "www"]);
});

Deno.test("trust: portal subnets are granted by the administrator, never self-asserted", async () => {
  const { call, login, guardian, admin } = await setup();
  const plain = (await guardian.createToken({ realm: "home", taints: ["dev"] })).token;
  // A token that grants no subnets lets nobody be a portal, not for the internet, nor for anyone's /32.
  for (const subnets of [["8.8.8.0/24"], ["10.201.0.1/32"], undefined]) {
    const r = await call("POST", "/conflux/register", { token: plain, body: { portal: true, subnets } });
    assertEquals(r.status, 403, JSON.stringify(r.json));
    assert(String(r.json.error).includes("granted"), r.json.error);
  }
  const node = (await call("POST", "/conflux/register", { token: plain, body: { tag: "gw" } })).json;
  const self = await login(node.token, { fields: { portal: true, subnets: ["8.8.8.0/24"] } });
  assertEquals(self.status, 403);
  assertEquals(certOf(await login(node.token)).portal, 0);
  // The administrator grants a LAN; the node may offer it or a part of it, nothing else.
  const granted = await call("PUT", `/admin/nodes/${node.conflux_id}/subnets`, {
    token: admin,
    body: { subnets: ["192.168.7.0/24"] },
  });
  assertEquals(granted.status, 200, JSON.stringify(granted.json));
  assertEquals(
    (await login(node.token, { fields: { portal: true, subnets: ["192.168.7.0/25"] } })).status,
    200,
  );
  assertEquals(
    (await login(node.token, { fields: { portal: true, subnets: ["192.168.0.0/16"] } })).status,
    403,
  );
  const all = await login(node.token, { fields: { portal: true, subnets: null } });
  assertEquals(certOf(all).subnets.length, 1);
  // Narrowing the grant narrows what it offers at once.
  await call("PUT", `/admin/nodes/${node.conflux_id}/subnets`, { token: admin, body: { subnets: [] } });
  assertEquals(certOf(await login(node.token)).portal, 0);
});

Deno.test("trust: a login must prove it holds the key it asks to have certified", async () => {
  let now = 1_800_000_000_000;
  const { call, login, reg } = await setup(() => now);
  const victim = await Identity.generate();
  const mine = (await call("POST", "/conflux/register", { token: reg, body: { tag: "mallory" } })).json;
  const other = (await call("POST", "/conflux/register", { token: reg, body: { tag: "alice" } })).json;
  const ok = await login(mine.token);
  assertEquals(ok.status, 200, JSON.stringify(ok.json));

  const attacker = await Identity.generate();
  const cases: [n: number, attempt: () => ReturnType<typeof login>, text: string][] = [
    // The victim's public key (seen in every announcement), signed with the attacker's own key.
    [1, () => login(mine.token, { identity: victim, sign: { identity: attacker } }), "signed by the key"],
    [2, () => login(mine.token, { identity: victim, sign: false }), "signed by the key"],
    // A signature made for another conflux (a login of alice's, replayed with mallory's token).
    [3, () => login(mine.token, { sign: { confluxId: other.conflux_id } }), "signed by the key"],
    // A body changed after signing (a tag added).
    [
      4,
      () => login(mine.token, { fields: { tag: "x" }, sign: { body: new TextEncoder().encode("{}") } }),
      "signed",
    ],
    // An old request.
    [5, () => login(mine.token, { fields: { timestamp: now - 120_000 } }), "dated"],
    [6, () => login(mine.token, { fields: { nonce: "short" } }), "nonce"],
  ];
  for (const [n, attempt, text] of cases) {
    const r = await attempt();
    assertEquals(r.status, 400, `case ${n}: ${JSON.stringify(r.json)}`);
    assert(String(r.json.error).includes(text), `case ${n}: "${r.json.error}" lacks "${text}"`);
  }
  // A recorded login replayed as is.
  const recorded = await login(mine.token);
  assertEquals(recorded.status, 200);
  const replay = await call("POST", "/conflux/session/login", {
    token: mine.token,
    raw: new TextDecoder().decode(recorded.body),
    headers: { "veilnet-signature": recorded.headers["veilnet-signature"]! },
  });
  assertEquals([replay.status, String(replay.json.error).includes("replayed")], [400, true]);
  now += 1;
  assertEquals((await login(mine.token, { identity: victim })).status, 200); // the victim's own node may
});

Deno.test("trust: a revoked node cannot log in, and every login after it lists the revocation", async () => {
  let now = 1_800_000_000_000;
  const { call, login, reg, admin, store } = await setup(() => now);
  const bad = (await call("POST", "/conflux/register", { token: reg, body: { tag: "bad" } })).json;
  const good = (await call("POST", "/conflux/register", { token: reg, body: { tag: "good" } })).json;
  const session = await login(bad.token);
  assertEquals(session.status, 200);
  now += 1_000;
  const revoked = await call("POST", "/admin/nodes/bad/revoke", { token: admin });
  assertEquals([revoked.status, revoked.json.revoked_at], [200, now]);
  const again = await login(bad.token);
  assertEquals([again.status, String(again.json.error).includes("revoked")], [403, true]);
  assertEquals((await call("POST", "/conflux/taints", { token: bad.token, body: { add: [] } })).status, 403);
  // Peers learn it at their next login too (the serving Guardian also broadcasts it at once).
  const peer = await login(good.token);
  assertEquals(peer.json.revocations, [{ conflux_id: bad.conflux_id, before: now }]);
  // Its NATS session is on the list the Master is given.
  assertEquals(store.revokedSessions(now).map((s) => s.confluxId), [bad.conflux_id]);
  const listed = (await call("GET", "/admin/nodes", { token: admin })).json;
  assertEquals(listed.map((n: { tag: string; revoked_at?: number }) => [n.tag, n.revoked_at]), [
    ["bad", now],
    ["good", undefined],
  ]);
  // A taint change voids certificates too (without cutting the Master): the next certificate is dated after it.
  now += 1_000;
  await call("PUT", "/admin/nodes/good/taints", { token: admin, body: { taints: ["dev"] } });
  const renewed = await login(good.token);
  assert(certOf(renewed).notBefore > now - 1, "the certificate after a revocation is dated after it");
  assertEquals(store.revokedSessions(now).map((s) => s.confluxId), [bad.conflux_id]);
});

Deno.test("trust: certificates live at most 24 h", () => {
  assertEquals(checkCertTtl(3_600_000), 3_600_000);
  assertEquals(checkCertTtl(24 * 3_600_000), 24 * 3_600_000);
  for (const ms of [24 * 3_600_000 + 1, 365 * 86_400_000, 0]) {
    assertThrows(() => checkCertTtl(ms), GuardianError, "certificate lifetime");
  }
});

Deno.test("trust: an OIDC realm takes its issuer from the administrator and keeps the verified identity", async () => {
  // A real issuer: a web server publishing a JWKS, and tokens signed with its key.
  const issuerKey = await generateKeyPair("ES256");
  const jwk = { ...await exportJWK(issuerKey.publicKey), kid: "k1", alg: "ES256" };
  let fetches = 0;
  await using idp = Deno.serve({ port: 0, onListen() {} }, () => {
    fetches++;
    return Response.json({ keys: [jwk] });
  });
  const iss = "https://idp.test";
  const sign = (
    claims: Record<string, unknown>,
    o: { key?: CryptoKey; exp?: string | null; aud?: string; iss?: string } = {},
  ) => {
    const jwt = new SignJWT({ sub: "alice", email: "alice@example.com", ...claims })
      .setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(o.iss ?? iss).setAudience(o.aud ?? "veilnet")
      .setIssuedAt();
    if (o.exp !== null) jwt.setExpirationTime(o.exp ?? "5m");
    return jwt.sign(o.key ?? issuerKey.privateKey);
  };
  const { call, login, guardian, admin } = await setup();
  const set = await call("PUT", "/admin/realms/home/oidc", {
    token: admin,
    body: {
      issuer: iss,
      jwks_url: `http://127.0.0.1:${idp.addr.port}/jwks`,
      audience: "veilnet",
      taints_claim: "groups",
    },
  });
  assertEquals(set.status, 200, JSON.stringify(set.json));
  const token = (await guardian.createToken({ realm: "home", taints: ["dev"] })).token;
  const register = async (jwt?: string, extra: Record<string, unknown> = {}) =>
    await call("POST", "/conflux/register", { token, body: { jwt, ...extra } });

  const attacker = await generateKeyPair("ES256");
  const refusals: [n: number, jwt: string | undefined, status: number, text: string][] = [
    [1, undefined, 401, "needs an identity token"],
    [2, await sign({}, { key: attacker.privateKey }), 401, "signature"], // a self-made key
    [3, await sign({}, { exp: "-1m" }), 401, "exp"],
    [4, await sign({}, { exp: null }), 401, "exp"], // no expiry at all
    [5, await sign({}, { aud: "someone-else" }), 401, "aud"],
    [6, await sign({}, { iss: "https://evil.test" }), 401, "iss"],
    [7, await sign({ sub: "x".repeat(300) }), 401, "subject is"],
    [8, "not.a.jwt", 401, "identity token refused"],
  ];
  for (const [n, jwt, status, text] of refusals) {
    const r = await register(jwt);
    assertEquals(r.status, status, `case ${n}: ${JSON.stringify(r.json)}`);
    assert(String(r.json.error).includes(text), `case ${n}: "${r.json.error}" lacks "${text}"`);
  }
  // The client cannot name its own JWKS: that field is refused outright, and nothing it names is fetched.
  const before = fetches;
  const own = await register(await sign({}), {
    jwks_url: "http://attacker.test/jwks",
    issuer: iss,
    audience: "x",
  });
  assertEquals([own.status, fetches], [400, before]);

  // A good token: the identity is kept, carried in the certificate and listed; groups map to granted taints.
  const r = await register(await sign({ groups: ["ops", "not a taint!"] }), { taints: ["dev", "ops"] });
  assertEquals(r.status, 201, JSON.stringify(r.json));
  const cert = certOf(await login(r.json.token));
  assertEquals([cert.subject, cert.email, cert.taints], ["alice", "alice@example.com", ["dev", "ops"]]);
  const node = (await call("GET", `/admin/nodes/${r.json.conflux_id}`, { token: admin })).json;
  assertEquals(node.identity, { issuer: iss, subject: "alice", email: "alice@example.com" });
  // The node belongs to the user who signs in as that identity, made on first sight, and is theirs again after.
  assertEquals(node.owner, "alice@example.com");
  const again = await register(await sign({}), { taints: ["dev"] });
  assertEquals(
    (await call("GET", `/admin/nodes/${again.json.conflux_id}`, { token: admin })).json.owner,
    node.owner,
  );
  assertEquals(guardian.store.users().length, 1);
  // Groups the user is not in grant nothing.
  const greedy = await register(await sign({ groups: ["ops"] }), { taints: ["finance"] });
  assertEquals(greedy.status, 403);
});

Deno.test("trust: a realm without OIDC refuses an identity token instead of ignoring it", async () => {
  const { call, reg } = await setup();
  const r = await call("POST", "/conflux/register", { token: reg, body: { jwt: "a.b.c" } });
  assertEquals([r.status, String(r.json.error).includes("no identity issuer")], [400, true]);
});

Deno.test("trust: a realm's administrator, signed in through its issuer, administers that realm and nothing else", async () => {
  const issuerKey = await generateKeyPair("ES256");
  const jwk = { ...await exportJWK(issuerKey.publicKey), kid: "k1", alg: "ES256" };
  await using idp = Deno.serve({ port: 0, onListen() {} }, () => Response.json({ keys: [jwk] }));
  const iss = "https://idp.test";
  const sign = (claims: Record<string, unknown>, o: { key?: CryptoKey; aud?: string } = {}) =>
    new SignJWT({ sub: "alice", ...claims }).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(iss)
      .setAudience(o.aud ?? "veilnet").setIssuedAt().setExpirationTime("5m").sign(
        o.key ?? issuerKey.privateKey,
      );
  const { call, guardian, admin, reg } = await setup();
  const oidc = { issuer: iss, jwks_url: `http://127.0.0.1:${idp.addr.port}/jwks`, audience: "veilnet" };
  const home = (await call("POST", "/conflux/register", { token: reg, body: {} })).json.conflux_id;
  const otherToken = (await guardian.createToken({ realm: "other" })).token;
  const other = (await call("POST", "/conflux/register", { token: otherToken, body: {} })).json.conflux_id;
  for (const [realm, admins] of [["home", ["alice", "ops@example.com"]], ["other", ["bob"]]] as const) {
    const r = await call("PUT", `/admin/realms/${realm}/oidc`, { token: admin, body: { ...oidc, admins } });
    assertEquals([r.status, r.json.oidc?.admins], [200, admins]);
  }
  const otherTokenId = (await call("GET", "/admin/tokens", { token: admin })).json
    .find((t: { realm: string }) => t.realm === "other").id;

  const alice = await sign({});
  const realms = await call("GET", "/admin/realms", { token: alice });
  assertEquals([realms.status, realms.json.map((r: { name: string }) => r.name)], [200, ["home"]]);
  const nodes = await call("GET", "/admin/nodes", { token: alice });
  assertEquals(nodes.json.map((n: { id: string }) => n.id), [home]);
  const tokens = await call("GET", "/admin/tokens", { token: alice });
  assert(tokens.json.every((t: { realm: string }) => t.realm === "home"), JSON.stringify(tokens.json));
  assertEquals((await call("POST", `/admin/nodes/${home}/revoke`, { token: alice })).status, 200);
  assertEquals((await call("POST", "/admin/tokens", { token: alice, body: { realm: "home" } })).status, 201);

  // Reaching past the realm: refused, and another realm's node or token is not even found.
  const beyond: [n: number, method: string, path: string, body: unknown, status: number][] = [
    [1, "POST", "/admin/tokens", { realm: "other" }, 403],
    [2, "POST", "/admin/realms", { name: "mine" }, 403],
    [3, "PUT", "/admin/realms/other/oidc", { ...oidc, admins: ["alice"] }, 403],
    [4, "DELETE", "/admin/realms/other/oidc", undefined, 403],
    [5, "GET", `/admin/nodes/${other}`, undefined, 404],
    [6, "POST", `/admin/nodes/${other}/revoke`, undefined, 404],
    [7, "PUT", `/admin/nodes/${other}/taints`, { taints: [], any: true }, 404],
    [8, "DELETE", `/admin/nodes/${other}`, undefined, 404],
    [9, "DELETE", `/admin/tokens/${otherTokenId}`, undefined, 404],
    [10, "GET", "/admin/nodes?realm=other", undefined, 403],
    [11, "GET", `/admin/nodes/${other}?realm=other`, undefined, 403],
  ];
  for (const [n, method, path, body, status] of beyond) {
    const r = await call(method, path, { token: alice, body });
    assertEquals(r.status, status, `case ${n}: ${JSON.stringify(r.json)}`);
  }
  const otherNode = (await call("GET", `/admin/nodes/${other}`, { token: admin })).json;
  assertEquals([otherNode.revoked_at, otherNode.granted_taints], [undefined, []]);

  // Tokens that do not make an administrator.
  const attacker = await generateKeyPair("ES256");
  const refused: [n: number, jwt: string][] = [
    [1, await sign({ sub: "mallory" })], // a member of the issuer, not named
    [2, await sign({}, { key: attacker.privateKey })], // alice's subject, a self-made key
    [3, await sign({}, { aud: "another-app" })], // alice's token for another application
    [4, await sign({ sub: "mallory", email: "ops@example.com" })], // a named address the issuer did not verify
    [5, await sign({ sub: "mallory", email: "ops@example.com", email_verified: "true" })],
    [6, "vadm.guess"],
  ];
  for (const [n, jwt] of refused) {
    const r = await call("GET", "/admin/nodes", { token: jwt });
    assertEquals(r.status, 401, `case ${n}: ${JSON.stringify(r.json)}`);
  }
  // A verified address the realm names is an administrator.
  const ops = await sign({ sub: "carol", email: "OPS@example.com", email_verified: true });
  assertEquals((await call("GET", "/admin/nodes", { token: ops })).status, 200);
});
