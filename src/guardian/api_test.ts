import { assert, assertEquals, assertThrows } from "../../tests/assert.ts";
import { verifyCertificate } from "../crypto/certificate.ts";
import { Identity } from "../crypto/identity.ts";
import { formatCidr, subnetFromBytes } from "../portal/subnets.ts";
import { formatAddress } from "../tun/ip.ts";
import { decodeCertificate, MAX_SUBNETS } from "../wire/certificate.ts";
import { guardianSetup as setup } from "../../tests/guardian_fixture.ts";
import { MAX_BODY_BYTES } from "./api.ts";
import { checkSubnets, fromBase64, GuardianError } from "./rules.ts";
import type { RealmRow } from "./store.ts";

Deno.test("guardian API: register, log in with a fresh key, and receive a certificate of the realm", async () => {
  const { call, login: logIn, reg } = await setup();
  const registered = await call("POST", "/conflux/register", {
    token: reg,
    body: { tag: "web", taints: ["dev"] },
  });
  assertEquals(registered.status, 201, JSON.stringify(registered.json));
  const node = await Identity.generate();
  const login = await logIn(registered.json.token, { identity: node });
  assertEquals(login.status, 200, JSON.stringify(login.json));
  const realm = Uint8Array.from(login.json.realm.id.match(/../g).map((h: string) => parseInt(h, 16)));
  const cert = await verifyCertificate(fromBase64(login.json.certificate)!, {
    realm,
    realmKey: fromBase64(login.json.realm.public_key)!,
    now: Date.now(),
  });
  assertEquals([cert.tag, formatAddress(cert.ipv4), cert.taints], ["web", "10.128.0.1", ["dev"]]);
  assertEquals(cert.nodeId, node.nodeId);
  // The registration answer named the same realm and key: what the node pins.
  assertEquals(registered.json.realm, login.json.realm);
  assertEquals(login.json.nats.urls, ["nats://guardian.test:4222"]);
  assert(login.json.nats.jwt.split(".").length === 3 && login.json.nats.seed.startsWith("SU"));

  // A node restarted with a new tag is renamed from then on; a bad tag is refused and changes nothing.
  const tagOf = async (tag?: string) => {
    const r = await logIn(registered.json.token, { identity: node, fields: { tag } });
    return r.status === 200 ? decodeCertificate(fromBase64(r.json.certificate)!).tag : r.json.error;
  };
  assertEquals(await tagOf("web2"), "web2");
  assertEquals(await tagOf(), "web2");
  assert(String(await tagOf("Bad_Tag")).includes("bad tag"));
  assertEquals(await tagOf(), "web2");
});

Deno.test("guardian API: addresses are allocated in order, and a requested free one is honoured", async () => {
  const { call, login: logIn, reg } = await setup();
  const ips: string[] = [];
  for (const ip of [undefined, "10.128.0.9", undefined]) {
    const r = await call("POST", "/conflux/register", { token: reg, body: { ip } });
    assertEquals(r.status, 201);
    const login = await logIn(r.json.token);
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
    [18, "POST", "/conflux/register", { token: reg, body: { jwt: "x" } }, 400, "has no identity issuer"],
    [
      19,
      "POST",
      "/conflux/register",
      { token: reg, body: { portal: "yes" } },
      400,
      "portal must be a boolean",
    ],
    [
      20,
      "POST",
      "/conflux/register",
      { token: reg, body: { portal: true, subnets: ["10.50.0.0/33"] } },
      400,
      "prefix",
    ],
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
    [
      36,
      "POST",
      "/conflux/register",
      { token: reg, body: { jwks_url: "http://x", jwt: "y" } },
      400,
      "administrator",
    ],
    [
      37,
      "POST",
      "/conflux/register",
      { token: reg, body: { portal: true, subnets: ["8.8.8.0/24"] } },
      403,
      "granted",
    ],
    [38, "GET", "/admin/nodes", { token: conflux }, 401, "admin token"],
    [39, "POST", "/admin/nodes/nobody/revoke", { token: admin }, 404, "no node"],
    [40, "PUT", "/admin/nodes/nobody/tag", { token: admin, body: { tag: "x" } }, 404, "no node"],
    [41, "PUT", "/admin/realms/home/oidc", { token: admin, body: { issuer: "x" } }, 400, "go together"],
    [
      42,
      "PUT",
      "/admin/realms/home/oidc",
      { token: admin, body: { issuer: "x", audience: "a", jwks_url: "file:///etc/passwd" } },
      400,
      "http(s)",
    ],
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

Deno.test("guardian API: a --uses 1 token registers exactly one node under 20 concurrent requests", async () => {
  const { call, guardian } = await setup();
  for (const uses of [1, 3]) {
    const token = (await guardian.createToken({ realm: "home", uses })).token;
    const results = await Promise.all(
      Array.from({ length: 20 }, () => call("POST", "/conflux/register", { token, body: {} })),
    );
    const codes = results.map((r) => r.status);
    assertEquals(codes.filter((c) => c === 201).length, uses, codes.join(","));
    assert(results.every((r) => r.status === 201 || String(r.json.error).includes("used up")));
  }
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

Deno.test("guardian API: an unregistered conflux can no longer log in; its address waits for its certificate to end", async () => {
  let now = 1_800_000_000_000;
  const { call, login, reg } = await setup(() => now);
  const r = await call("POST", "/conflux/register", { token: reg, body: { ip: "10.128.0.50" } });
  assertEquals((await login(r.json.token)).status, 200); // a certificate until now + 60 s
  const gone = await call("DELETE", `/conflux/unregister?conflux_id=${r.json.conflux_id}`, {
    token: r.json.token,
  });
  assertEquals(gone.status, 200);
  const again = await login(r.json.token);
  assertEquals([again.status, again.json.error], [401, "unknown token"]);
  const early = await call("POST", "/conflux/register", { token: reg, body: { ip: "10.128.0.50" } });
  assertEquals(early.status, 409);
  assert(String(early.json.error).includes("certificate is valid until"), early.json.error);
  const next = await call("POST", "/conflux/register", { token: reg, body: {} });
  assertEquals((await login(next.json.token)).json.conflux_id, next.json.conflux_id);
  now += 61_000;
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
  oidc: null,
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
  const { guardian, login, reg } = await setup();
  const { conflux_id, token } = await guardian.register(reg, { tag: "gw" });
  const identity = await Identity.generate();
  const as = async (fields: Record<string, unknown> = {}) => {
    const r = await login(token, { identity, fields });
    assertEquals(r.status, 200, JSON.stringify(r.json));
    return r.json.certificate as string;
  };

  const first = await as({ portal: true, subnets: ["192.168.1.7/24", "fd00:99::/32", "192.168.1.0/24"] });
  assertEquals(decodeCertificate(fromBase64(first)!).portal, 1);
  assertEquals(certSubnets(first), ["192.168.1.0/24", "fd00:99::/32"]);
  const row = guardian.store.confluxById(conflux_id)!;
  assertEquals([row.portal, row.subnets], [true, ["192.168.1.0/24", "fd00:99::/32"]]);

  // A later login without a change keeps them; new subnets replace them; portal false drops them; portal true
  // without subnets offers everything granted.
  assertEquals(certSubnets(await as()), row.subnets);
  assertEquals(certSubnets(await as({ subnets: ["10.60.0.0/16"] })), ["10.60.0.0/16"]);
  const off = await as({ portal: false });
  assertEquals(decodeCertificate(fromBase64(off)!).portal, 0);
  assertEquals([certSubnets(off), guardian.store.confluxById(conflux_id)!.subnets], [[], []]);
  assertEquals(certSubnets(await as({ portal: true })), row.grantedSubnets);
});

Deno.test("guardian: a bad subnet at login is refused and changes nothing", async () => {
  const { guardian, login, reg } = await setup();
  const { conflux_id, token } = await guardian.register(reg, { tag: "gw" });
  const identity = await Identity.generate();
  assertEquals(
    (await login(token, { identity, fields: { portal: true, subnets: ["192.168.1.0/24"] } })).status,
    200,
  );
  const before = JSON.stringify(guardian.store.confluxById(conflux_id));

  const bad: [n: number, change: Record<string, unknown>, status: number, text: string][] = [
    [1, { subnets: ["192.168.1.0/33"] }, 400, "prefix"],
    [2, { subnets: ["0.0.0.0/0"] }, 400, "too wide"],
    [3, { subnets: ["10.128.0.0/16"] }, 400, "overlay"],
    [4, { subnets: "192.168.2.0/24" }, 400, "list"],
    [5, { portal: "yes" }, 400, "portal must be"],
    [6, { tag: "renamed", subnets: ["banana/24"] }, 400, "neither IPv4 nor IPv6"],
    [7, { tag: "renamed", portal: 1 }, 400, "portal must be"],
    [8, { subnets: ["8.8.8.0/24"] }, 403, "not inside what this node was granted"],
    [9, { subnets: ["192.0.0.0/8"] }, 403, "not inside"], // wider than the grant
    [10, { tag: "renamed", subnets: ["10.50.0.0/16", "10.70.0.0/16"] }, 403, "10.70.0.0/16"],
  ];
  for (const [n, change, status, text] of bad) {
    const r = await login(token, { identity, fields: change });
    assertEquals(r.status, status, `case ${n}: ${r.json.error}`);
    assert(String(r.json.error).includes(text), `case ${n}: "${r.json.error}" lacks "${text}"`);
    assertEquals(JSON.stringify(guardian.store.confluxById(conflux_id)), before, `case ${n} changed the row`);
  }
});

Deno.test("guardian API: registering as a portal with subnets gives certificates that carry them", async () => {
  const { call, login: logIn, reg } = await setup();
  const registered = await call("POST", "/conflux/register", {
    token: reg,
    body: { tag: "gw", portal: true, subnets: ["10.50.0.9/24"] },
  });
  assertEquals(registered.status, 201, JSON.stringify(registered.json));
  const login = await logIn(registered.json.token);
  assertEquals(login.status, 200, JSON.stringify(login.json));
  assertEquals(decodeCertificate(fromBase64(login.json.certificate)!).portal, 1);
  assertEquals(certSubnets(login.json.certificate), ["10.50.0.0/24"]);
});
