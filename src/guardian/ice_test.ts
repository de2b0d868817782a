import { assert, assertEquals, assertThrows } from "../../tests/assert.ts";
import { guardianSetup } from "../../tests/guardian_fixture.ts";
import { decodeCertificate } from "../wire/certificate.ts";
import { fromBase64 } from "./rules.ts";
import { hostOf, loginIceServers, parseTurnServer, turnCredentials, turnUrl } from "./ice.ts";

Deno.test("ice: TURN credentials are coturn's use-auth-secret (vectors computed with openssl dgst -sha1 -hmac)", async () => {
  const cases: [
    n: number,
    secret: string,
    expiresAt: number,
    user: string,
    username: string,
    password: string,
  ][] = [
    [1, "north", 1_700_000_000_999, "abc", "1700000000:abc", "g5HTmCBrPDhYXFpM/1dHUtfE+c4="],
    [2, "north", 1_796_336_243_000, "node5", "1796336243:node5", "zpahd1xtBiCQCuFti05oiAU3nc4="],
    [3, "s3cr3t+/=", 1_796_336_243_000, "node5", "1796336243:node5", "blVeZY+wq0X9MZD552abhXVFRsY="],
  ];
  for (const [n, secret, expiresAt, user, username, password] of cases) {
    assertEquals(await turnCredentials(secret, { user, expiresAt }), { username, password }, `case ${n}`);
  }
});

Deno.test("ice: a TURN URL percent-encodes the username's colon and the password's + / =", () => {
  const url = turnUrl({ host: "turn.example", port: 3478 }, {
    username: "1796336243:node5",
    password: "blVeZY+wq0X9MZD552abhXVFRsY=",
  });
  assertEquals(
    url,
    "turn:1796336243%3Anode5:blVeZY%2Bwq0X9MZD552abhXVFRsY%3D@turn.example:3478?transport=udp",
  );
  // What libdatachannel does with it: split at the first ':' and the '@', then percent-decode each part.
  const m = /^turn:([^:@]*):([^@]*)@([^:]+):(\d+)\?transport=udp$/.exec(url)!;
  assertEquals([decodeURIComponent(m[1]!), decodeURIComponent(m[2]!)], [
    "1796336243:node5",
    "blVeZY+wq0X9MZD552abhXVFRsY=",
  ]);
  assertEquals(
    turnUrl({ host: "[2001:db8::1]", port: 3479 }, { username: "1:a", password: "/" }),
    "turn:1%3Aa:%2F@[2001:db8::1]:3479?transport=udp",
  );
});

Deno.test("ice: --turn takes turn:host[:port][?transport=udp] only, saying why not", () => {
  const good: [n: number, text: string, host: string, port: number][] = [
    [1, "turn:turn.example", "turn.example", 3478],
    [2, "turn:10.0.0.1:3479", "10.0.0.1", 3479],
    [3, "turn:[2001:db8::1]:5000?transport=udp", "[2001:db8::1]", 5000],
  ];
  for (const [n, text, host, port] of good) assertEquals(parseTurnServer(text), { host, port }, `case ${n}`);
  const bad: [n: number, text: string, says: string][] = [
    [1, "turns:turn.example:5349", "UDP only"],
    [2, "turn:turn.example:3478?transport=tcp", "UDP only"],
    [3, "turn:user:pass@turn.example:3478", "leave the credentials out"],
    [4, "stun:turn.example:3478", "turn:host:3478"],
    [5, "turn:turn.example:70000", "1..65535"],
    [6, "turn:", "turn:host:3478"],
  ];
  for (const [, text, says] of bad) assertThrows(() => parseTurnServer(text), RangeError, says);
});

Deno.test("ice: the Guardian's STUN comes first, at the host the node reached it by, then TURN, then --ice", async () => {
  const turn = { servers: [{ host: "t1", port: 3478 }, { host: "t2", port: 3479 }], secret: "north" };
  const cases: [n: number, host: string, o: Parameters<typeof loginIceServers>[0], first: string[]][] = [
    [1, "guardian.example:8080", { stunPort: 3478, iceServers: [] }, ["stun:guardian.example:3478"]],
    [2, "10.0.0.1:8080", { stunPort: 5000, iceServers: ["stun:other:19302"] }, [
      "stun:10.0.0.1:5000",
      "stun:other:19302",
    ]],
    [3, "[fd00::1]:8080", { stunPort: 3478, iceServers: [] }, ["stun:[fd00::1]:3478"]],
    [4, "guardian.example", { iceServers: ["stun:x:1"] }, ["stun:x:1"]], // --stun-port off
    [5, "g:1", { stunPort: 3478, turn, iceServers: ["stun:x:1"] }, [
      "stun:g:3478",
      "turn:1796336243%3Anode5:zpahd1xtBiCQCuFti05oiAU3nc4%3D@t1:3478?transport=udp",
      "turn:1796336243%3Anode5:zpahd1xtBiCQCuFti05oiAU3nc4%3D@t2:3479?transport=udp",
      "stun:x:1",
    ]],
  ];
  for (const [n, host, o, expected] of cases) {
    assertEquals(
      await loginIceServers(o, { host, user: "node5", expiresAt: 1_796_336_243_500 }),
      expected,
      `case ${n}`,
    );
  }
  assertEquals([hostOf("h:80"), hostOf("[::1]:80"), hostOf("h"), hostOf("[::1]")], [
    "h",
    "[::1]",
    "h",
    "[::1]",
  ]);
});

Deno.test("ice: a login's TURN credentials expire with its certificate, and each login gets its own", async () => {
  let now = 1_800_000_000_000;
  const { guardian, call, login, reg } = await guardianSetup(() => now);
  Object.assign(guardian.options, {
    stunPort: 3478,
    turn: { servers: [{ host: "turn.test", port: 3478 }], secret: "north" },
  });
  const node = (await call("POST", "/conflux/register", { token: reg, body: {} })).json;
  const first = await login(node.token);
  assertEquals(first.status, 200, JSON.stringify(first.json));
  const servers: string[] = first.json.ice_servers;
  assertEquals(servers[0], "stun:guardian.test:3478");
  const m = /^turn:([^:]+):([^@]+)@turn\.test:3478\?transport=udp$/.exec(servers[1]!)!;
  const username = decodeURIComponent(m[1]!);
  const certificate = decodeCertificate(fromBase64(first.json.certificate)!);
  // Not a second longer than the certificate (a node that lost its session loses TURN with it), for this node.
  assertEquals(username, `${Math.floor(certificate.notAfter / 1000)}:${node.conflux_id}`);
  assertEquals(first.json.expires_at, certificate.notAfter);
  assert(Number(username.split(":")[0]) * 1000 <= certificate.notAfter);
  const expected = await turnCredentials("north", { user: node.conflux_id, expiresAt: certificate.notAfter });
  assertEquals(decodeURIComponent(m[2]!), expected.password);
  // A later login: later expiry, other credentials.
  now += 600_000;
  const second = (await login(node.token)).json;
  const later = decodeURIComponent(/^turn:([^:]+):/.exec(second.ice_servers[1])![1]!);
  assertEquals(later, `${Math.floor(second.expires_at / 1000)}:${node.conflux_id}`);
  assert(second.expires_at === first.json.expires_at + 600_000 && later !== username);
});
