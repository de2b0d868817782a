import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { assert, assertEquals, assertRejects, assertThrows } from "../../tests/assert.ts";
import { verifyCertificate } from "../crypto/certificate.ts";
import { Identity } from "../crypto/identity.ts";
import { formatCidr, subnetFromBytes } from "../portal/subnets.ts";
import { formatAddress } from "../tun/ip.ts";
import { decodeCertificate, MAX_SUBNETS } from "../wire/certificate.ts";
import { guardianHandler, MAX_BODY_BYTES } from "./api.ts";
import { checkSubnets, fromBase64, Guardian, GuardianError } from "./guardian.ts";
import { type RealmRow, Store } from "./store.ts";

async function setup(clock = () => Date.now()) {
  const store = new Store(":memory:");
  const guardian = new Guardian(store, {
    certTtlMs: 60_000,
    natsUrls: [],
    natsPort: 4222,
    iceServers: [],
    clock,
  });
  const admin = (await guardian.ensureAdminToken())!;
  const handler = guardianHandler(guardian);
  const call = async (
    method: string,
    path: string,
    options: { token?: string; body?: unknown; raw?: string } = {},
  ) => {
    const headers: Record<string, string> = { host: "guardian.test:8080" };
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    const body = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
    const res = await handler(new Request(`http://guardian.test:8080${path}`, { method, headers, body }));
    return { status: res.status, json: await res.json() };
  };
  guardian.createRealm("home", "10.128.0.0/24");
  guardian.createRealm("other", "10.129.0.0/24");
  const reg = (await guardian.createToken({ realm: "home", taints: ["dev", "prod"] })).token;
  const snapshot = () =>
    JSON.stringify({
      c: store.takenAddresses(store.realmByName("home")!.id),
      t: store.tokens(),
      r: store.realms(),
    });
  return { store, guardian, admin, call, reg, snapshot };
}

Deno.test("guardian API: register, log in with a fresh key, and receive a certificate of the realm", async () => {
  const { call, reg } = await setup();
  const registered = await call("POST", "/conflux/register", {
    token: reg,
    body: { tag: "web", taints: ["dev"] },
  });
  assertEquals(registered.status, 201, JSON.stringify(registered.json));
  const node = await Identity.generate();
  const login = await call("POST", "/conflux/session/login", {
    token: registered.json.token,
    body: { public_key: btoa(String.fromCharCode(...node.publicKey)) },
  });
  assertEquals(login.status, 200, JSON.stringify(login.json));
  const realm = Uint8Array.from(login.json.realm.id.match(/../g).map((h: string) => parseInt(h, 16)));
  const cert = await verifyCertificate(fromBase64(login.json.certificate)!, {
    realm,
    realmKey: fromBase64(login.json.realm.public_key)!,
    now: Date.now(),
  });
  assertEquals([cert.tag, formatAddress(cert.ipv4), cert.taints], ["web", "10.128.0.1", ["dev"]]);
  assertEquals(cert.nodeId, node.nodeId);
  assertEquals(login.json.nats.urls, ["nats://guardian.test:4222"]);
  assert(login.json.nats.jwt.split(".").length === 3 && login.json.nats.seed.startsWith("SU"));

  // A node restarted with a new tag is renamed from then on; a bad tag is refused and changes nothing.
  const tagOf = async (tag?: string) => {
    const r = await call("POST", "/conflux/session/login", {
      token: registered.json.token,
      body: { public_key: btoa(String.fromCharCode(...node.publicKey)), tag },
    });
    return r.status === 200 ? decodeCertificate(fromBase64(r.json.certificate)!).tag : r.json.error;
  };
  assertEquals(await tagOf("web2"), "web2");
  assertEquals(await tagOf(), "web2");
  assert(String(await tagOf("Bad_Tag")).includes("bad tag"));
  assertEquals(await tagOf(), "web2");
});

Deno.test("guardian API: addresses are allocated in order, and a requested free one is honoured", async () => {
  const { call, reg } = await setup();
  const ips: string[] = [];
  for (const ip of [undefined, "10.128.0.9", undefined]) {
    const r = await call("POST", "/conflux/register", { token: reg, body: { ip } });
    assertEquals(r.status, 201);
    const node = await Identity.generate();
    const login = await call("POST", "/conflux/session/login", {
      token: r.json.token,
      body: { public_key: btoa(String.fromCharCode(...node.publicKey)) },
    });
    ips.push(formatAddress(decodeCertificate(fromBase64(login.json.certificate)!).ipv4));
  }
  assertEquals(ips, ["10.128.0.1", "10.128.0.9", "10.128.0.2"]);
});

Deno.test("guardian API: every bad request gets a clear 4xx and changes nothing", async () => {
  const { call, reg, admin, guardian, snapshot } = await setup(() => 1_800_000_000_000);
  const expired = (await guardian.createToken({ realm: "home", ttlMs: -1 })).token;
  const revoked = await guardian.createToken({ realm: "home" });
  guardian.store.revokeToken(revoked.id);
  const usedUp = (await guardian.createToken({ realm: "home", uses: 1 })).token;
  assertEquals(
    (await call("POST", "/conflux/register", { token: usedUp, body: { ip: "10.128.0.5" } })).status,
    201,
  );
  const conflux = (await call("POST", "/conflux/register", { token: reg, body: {} })).json.token as string;
  const before = snapshot();

  const cases: [
    n: number,
    method: string,
    path: string,
    o: Parameters<typeof call>[2],
    status: number,
    text: string,
  ][] = [
    [1, "POST", "/conflux/register", { token: reg, raw: "{not json" }, 400, "not valid JSON"],
    [2, "POST", "/conflux/register", { token: reg, raw: "[1,2]" }, 400, "JSON object"],
    [
      3,
      "POST",
      "/conflux/register",
      { token: reg, raw: `{"tag":"${"a".repeat(MAX_BODY_BYTES)}"}` },
      413,
      "exceeds",
    ],
    [4, "POST", "/conflux/register", { body: {} }, 401, "got no token"],
    [5, "POST", "/conflux/register", { token: admin, body: {} }, 401, "got a vadm token"],
    [6, "POST", "/conflux/register", { token: conflux, body: {} }, 401, "got a vcfx token"],
    [7, "POST", "/conflux/register", { token: "vreg.0123456789abcdef.nope", body: {} }, 401, "unknown token"],
    [8, "POST", "/conflux/register", { token: expired, body: {} }, 403, "expired"],
    [9, "POST", "/conflux/register", { token: revoked.token, body: {} }, 403, "revoked"],
    [10, "POST", "/conflux/register", { token: usedUp, body: {} }, 403, "used up"],
    [11, "POST", "/conflux/register", { token: reg, body: { ip: "10.128.0.5" } }, 409, "already taken"],
    [12, "POST", "/conflux/register", { token: reg, body: { ip: "10.9.9.9" } }, 400, "not a host address"],
    [
      13,
      "POST",
      "/conflux/register",
      { token: reg, body: { ip: "10.128.0.255" } },
      400,
      "not a host address",
    ],
    [14, "POST", "/conflux/register", { token: reg, body: { ip: "banana" } }, 400, "bad ip"],
    [15, "POST", "/conflux/register", { token: reg, body: { tag: "Not A Label!" } }, 400, "bad tag"],
    [16, "POST", "/conflux/register", { token: reg, body: { taints: ["ops"] } }, 403, "does not grant"],
    [17, "POST", "/conflux/register", { token: reg, body: { taints: [1] } }, 400, "list of strings"],
    [18, "POST", "/conflux/register", { token: reg, body: { jwt: "x" } }, 400, "given together"],
    [
      19,
      "POST",
      "/conflux/register",
      { token: reg, body: { portal: "yes" } },
      400,
      "portal must be a boolean",
    ],
    [20, "POST", "/conflux/register", { token: reg, body: { subnets: ["10.50.0.0/33"] } }, 400, "prefix"],
    [21, "POST", "/conflux/session/login", { token: reg, body: {} }, 401, "conflux token"],
    [
      22,
      "POST",
      "/conflux/session/login",
      { token: conflux, body: { public_key: "AAAA" } },
      400,
      "public_key",
    ],
    [
      23,
      "POST",
      "/conflux/session/login",
      { token: conflux, body: { public_key: "%%%" } },
      400,
      "public_key",
    ],
    [24, "POST", "/conflux/taints", { token: conflux, body: { add: ["ops"] } }, 403, "may not hold"],
    [25, "POST", "/admin/realms", { token: reg, body: { name: "x" } }, 401, "admin token"],
    [26, "POST", "/admin/realms", { token: admin, body: { name: "home" } }, 409, "already exists"],
    [27, "POST", "/admin/realms", { token: admin, body: { name: "bad name!" } }, 400, "bad realm name"],
    [
      28,
      "POST",
      "/admin/realms",
      { token: admin, body: { name: "n", cidr: "10.0.0.0/31" } },
      400,
      "/8 to /30",
    ],
    [29, "POST", "/admin/tokens", { token: admin, body: { realm: "nope" } }, 404, "no realm"],
    [
      30,
      "POST",
      "/admin/tokens",
      { token: admin, body: { realm: "home", ttl: "soon" } },
      400,
      "bad duration",
    ],
    [
      31,
      "POST",
      "/admin/tokens",
      { token: admin, body: { realm: "home", uses: 0 } },
      400,
      "positive integer",
    ],
    [32, "DELETE", "/admin/tokens/0123456789abcdef", { token: admin }, 404, "no token"],
    [33, "DELETE", "/conflux/unregister?conflux_id=someone-else", { token: conflux }, 403, "its own"],
    [34, "GET", "/conflux/register", {}, 405, "not allowed"],
    [35, "GET", "/nope", {}, 404, "no route"],
  ];
  for (const [n, method, path, options, status, text] of cases) {
    const r = await call(method, path, options);
    assertEquals(r.status, status, `case ${n}: ${JSON.stringify(r.json)}`);
    assert(String(r.json.error).includes(text), `case ${n}: "${r.json.error}" lacks "${text}"`);
  }
  assertEquals(snapshot(), before);
});

Deno.test("guardian API: registrations racing for one address: one wins, the other gets 409", async () => {
  const { call, reg } = await setup();
  const results = await Promise.all(
    Array.from(
      { length: 4 },
      () => call("POST", "/conflux/register", { token: reg, body: { ip: "10.128.0.77" } }),
    ),
  );
  assertEquals(results.map((r) => r.status).sort(), [201, 409, 409, 409]);
});

Deno.test("guardian API: runtime taint changes are limited to what the token granted", async () => {
  const { call, reg } = await setup();
  const conflux =
    (await call("POST", "/conflux/register", { token: reg, body: { taints: ["dev"] } })).json.token;
  const r = await call("POST", "/conflux/taints", {
    token: conflux,
    body: { add: ["prod"], remove: ["dev"] },
  });
  assertEquals([r.status, r.json.taints], [200, ["prod"]]);
});

Deno.test("guardian API: an OIDC identity token is verified against the issuer's JWKS", async () => {
  const { privateKey, publicKey } = await generateKeyPair("ES256");
  const jwk = { ...await exportJWK(publicKey), kid: "k1", alg: "ES256" };
  await using server = Deno.serve({ port: 0, onListen() {} }, () => Response.json({ keys: [jwk] }));
  const jwksUrl = `http://127.0.0.1:${server.addr.port}/jwks`;
  const sign = (claims: { iss: string; aud: string; exp: string }) =>
    new SignJWT({ sub: "alice" }).setProtectedHeader({ alg: "ES256", kid: "k1" }).setIssuer(claims.iss)
      .setAudience(claims.aud).setIssuedAt().setExpirationTime(claims.exp).sign(privateKey);
  const { call, reg } = await setup();
  const good = { iss: "https://idp.test", aud: "veilnet", exp: "5m" };
  const register = async (
    jwt: string,
    issuer = good.iss,
    audience = good.aud,
  ) => (await call("POST", "/conflux/register", {
    token: reg,
    body: { jwt, jwks_url: jwksUrl, issuer, audience },
  }));
  assertEquals((await register(await sign(good))).status, 201);
  const refusals: [n: number, jwt: string, issuer: string, audience: string, text: string][] = [
    [1, await sign({ ...good, exp: "-1m" }), good.iss, good.aud, "exp"],
    [2, await sign(good), "https://other.test", good.aud, "iss"],
    [3, await sign(good), good.iss, "someone-else", "aud"],
    [4, "not.a.jwt", good.iss, good.aud, "identity token refused"],
  ];
  for (const [n, jwt, issuer, audience, text] of refusals) {
    const r = await register(jwt, issuer, audience);
    assertEquals(r.status, 401, `case ${n}`);
    assert(String(r.json.error).includes(text), `case ${n}: ${r.json.error}`);
  }
});

Deno.test("guardian API: an unregistered conflux can no longer log in, and its address is free again", async () => {
  const { call, reg } = await setup();
  const r = await call("POST", "/conflux/register", { token: reg, body: { ip: "10.128.0.50" } });
  const gone = await call("DELETE", `/conflux/unregister?conflux_id=${r.json.conflux_id}`, {
    token: r.json.token,
  });
  assertEquals(gone.status, 200);
  const node = await Identity.generate();
  const login = await call("POST", "/conflux/session/login", {
    token: r.json.token,
    body: { public_key: btoa(String.fromCharCode(...node.publicKey)) },
  });
  assertEquals([login.status, login.json.error], [401, "unknown token"]);
  assertEquals(
    (await call("POST", "/conflux/register", { token: reg, body: { ip: "10.128.0.50" } })).status,
    201,
  );
});

const REALM: RealmRow = {
  id: "00".repeat(16),
  name: "home",
  cidr4: "10.128.0.0/24",
  cidr6: "fd12:3456:789a:1::/64",
  keySeed: "",
  createdAt: 0,
};

Deno.test("checkSubnets: CIDRs a portal may offer are normalised and deduplicated", () => {
  const cases: [n: number, given: string[], expected: string[]][] = [
    [1, [], []],
    [2, ["10.50.0.0/24"], ["10.50.0.0/24"]],
    [3, ["10.50.0.77/24"], ["10.50.0.0/24"]], // host bits cleared
    [4, ["10.50.0.0/24", "10.50.0.9/24", "10.50.0.0/24"], ["10.50.0.0/24"]],
    [5, ["192.168.1.0/24", "10.50.0.0/16"], ["192.168.1.0/24", "10.50.0.0/16"]], // order kept
    [6, ["11.0.0.0/8"], ["11.0.0.0/8"]], // exactly /8 is allowed
    [7, ["10.129.0.1/32"], ["10.129.0.1/32"]], // one host outside the overlay
    [8, ["10.128.1.0/24"], ["10.128.1.0/24"]], // next to the overlay's /24
    [9, ["2001:0db8:0:0:1::5/64"], ["2001:db8::/64"]],
    [10, ["fd00::/16"], ["fd00::/16"]], // exactly /16; the overlay is fd12:…
    [11, ["fd12:3456:789a:2::/64"], ["fd12:3456:789a:2::/64"]], // the /64 next door
    [12, ["11.50.0.0/24", "11.0.0.0/8"], ["11.50.0.0/24", "11.0.0.0/8"]], // may overlap each other
  ];
  for (const [n, given, expected] of cases) {
    assertEquals(checkSubnets(given, REALM), expected, `case ${n}`);
  }
  const max = Array.from({ length: MAX_SUBNETS }, (_, i) => `10.50.${i}.0/24`);
  assertEquals(checkSubnets(max, REALM), max);
});

Deno.test("checkSubnets: anything else is a 400 saying why", () => {
  const cases: [n: number, given: unknown, text: string][] = [
    [1, "10.50.0.0/24", "list of CIDR strings"],
    [2, null, "list of CIDR strings"],
    [3, { 0: "10.50.0.0/24", length: 1 }, "list of CIDR strings"],
    [4, ["10.50.0.0/24", 7], "list of CIDR strings"],
    [5, [["10.50.0.0/24"]], "list of CIDR strings"],
    [6, Array.from({ length: MAX_SUBNETS + 1 }, (_, i) => `10.50.${i}.0/24`), `at most ${MAX_SUBNETS}`],
    [7, new Array(MAX_SUBNETS + 1).fill("10.50.0.0/24"), `at most ${MAX_SUBNETS}`],
    [8, ["10.50.0.0/33"], "prefix"],
    [9, ["10.50.0.0"], "no /prefix"],
    [10, ["banana/24"], "neither IPv4 nor IPv6"],
    [11, [""], "no /prefix"],
    [12, ["10.50.0.0/24 "], "prefix"],
    [13, ["x".repeat(100_000)], "no /prefix"],
    [14, ["0.0.0.0/0"], "too wide"],
    [15, ["8.0.0.0/7"], "too wide"],
    [16, ["::/0"], "too wide"],
    [17, ["2000::/3"], "too wide"],
    [18, ["2001::/15"], "too wide"],
    [19, ["10.128.0.0/24"], "overlaps the realm's overlay"],
    [20, ["10.128.0.5/32"], "overlaps the realm's overlay"],
    [21, ["10.0.0.0/8"], "overlaps the realm's overlay"],
    [22, ["10.128.0.128/25"], "overlaps the realm's overlay"],
    [23, ["fd12:3456:789a::/48"], "overlaps the realm's overlay"],
    [24, ["fd12:3456:789a:1:2::/80"], "overlaps the realm's overlay"],
    [25, ["fd12::/16"], "overlaps the realm's overlay"],
    [26, ["10.50.0.0/24", "10.128.0.0/16"], "10.128.0.0/16"], // names the one refused
  ];
  for (const [n, given, text] of cases) {
    const error = assertThrows(() => checkSubnets(given, REALM), GuardianError, text);
    assertEquals(error.status, 400, `case ${n}`);
  }
  // The realm's IPv6 prefix counts as its /64, whatever prefix the row spells.
  const wide = { ...REALM, cidr6: "fd12:3456:789a:1::/48" };
  assertEquals(checkSubnets(["fd12:3456:789a:2::/64"], wide), ["fd12:3456:789a:2::/64"]);
  assertThrows(() => checkSubnets(["fd12:3456:789a:1:8000::/65"], wide), GuardianError, "overlay");
});

/** The subnets a certificate carries, as text. */
const certSubnets = (certificate: string) =>
  decodeCertificate(fromBase64(certificate)!).subnets.map((b) => formatCidr(subnetFromBytes(b)!));

Deno.test("guardian: login as a portal stores the subnets, normalised, and the certificate carries them", async () => {
  const { guardian, reg } = await setup();
  const { conflux_id, token } = await guardian.register(reg, { tag: "gw" });
  const key = btoa(String.fromCharCode(...(await Identity.generate()).publicKey));

  const first = await guardian.login(token, key, "guardian.test", {
    portal: true,
    subnets: ["192.168.1.7/24", "fd00:99::/32", "192.168.1.0/24"],
  });
  assertEquals(decodeCertificate(fromBase64(first.certificate)!).portal, 1);
  assertEquals(certSubnets(first.certificate), ["192.168.1.0/24", "fd00:99::/32"]);
  const row = guardian.store.confluxById(conflux_id)!;
  assertEquals([row.portal, row.subnets], [true, ["192.168.1.0/24", "fd00:99::/32"]]);

  // A later login without a change keeps them; new subnets replace them; portal false drops them.
  assertEquals(certSubnets((await guardian.login(token, key, "guardian.test")).certificate), row.subnets);
  const moved = await guardian.login(token, key, "guardian.test", { subnets: ["10.60.0.0/16"] });
  assertEquals(certSubnets(moved.certificate), ["10.60.0.0/16"]);
  const off = await guardian.login(token, key, "guardian.test", { portal: false });
  assertEquals(decodeCertificate(fromBase64(off.certificate)!).portal, 0);
  assertEquals([certSubnets(off.certificate), guardian.store.confluxById(conflux_id)!.subnets], [[], []]);
});

Deno.test("guardian: a bad subnet at login is a 400 and changes nothing", async () => {
  const { guardian, call, reg } = await setup();
  const { conflux_id, token } = await guardian.register(reg, { tag: "gw" });
  const key = btoa(String.fromCharCode(...(await Identity.generate()).publicKey));
  await guardian.login(token, key, "guardian.test", { portal: true, subnets: ["192.168.1.0/24"] });
  const before = JSON.stringify(guardian.store.confluxById(conflux_id));

  const bad: [n: number, change: Record<string, unknown>, text: string][] = [
    [1, { subnets: ["192.168.1.0/33"] }, "prefix"],
    [2, { subnets: ["0.0.0.0/0"] }, "too wide"],
    [3, { subnets: ["10.128.0.0/16"] }, "overlay"],
    [4, { subnets: "192.168.2.0/24" }, "list"],
    [5, { portal: "yes" }, "portal must be"],
    [6, { tag: "renamed", subnets: ["banana/24"] }, "neither IPv4 nor IPv6"],
    [7, { tag: "renamed", portal: 1 }, "portal must be"],
  ];
  for (const [n, change, text] of bad) {
    const error = await assertRejects(
      () => guardian.login(token, key, "guardian.test", change),
      GuardianError,
    );
    assertEquals(error.status, 400, `case ${n}: ${error.message}`);
    assert(error.message.includes(text), `case ${n}: "${error.message}" lacks "${text}"`);
    assertEquals(JSON.stringify(guardian.store.confluxById(conflux_id)), before, `case ${n} changed the row`);
  }
  // The same through the HTTP API.
  const r = await call("POST", "/conflux/session/login", {
    token,
    body: { public_key: key, portal: true, subnets: ["10.128.0.0/24"] },
  });
  assertEquals([r.status, String(r.json.error).includes("overlay")], [400, true]);
  assertEquals(JSON.stringify(guardian.store.confluxById(conflux_id)), before);
});

Deno.test("guardian API: registering as a portal with subnets gives certificates that carry them", async () => {
  const { call, reg } = await setup();
  const registered = await call("POST", "/conflux/register", {
    token: reg,
    body: { tag: "gw", portal: true, subnets: ["10.50.0.9/24"] },
  });
  assertEquals(registered.status, 201, JSON.stringify(registered.json));
  const login = await call("POST", "/conflux/session/login", {
    token: registered.json.token,
    body: { public_key: btoa(String.fromCharCode(...(await Identity.generate()).publicKey)) },
  });
  assertEquals(login.status, 200, JSON.stringify(login.json));
  assertEquals(decodeCertificate(fromBase64(login.json.certificate)!).portal, 1);
  assertEquals(certSubnets(login.json.certificate), ["10.50.0.0/24"]);
});
