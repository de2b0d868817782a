import { assert, assertEquals } from "../../tests/assert.ts";
import {
  formatReport,
  natBehaviour,
  type NetcheckReport,
  parseCandidate,
  redactTurn,
  resultLine,
  type StunMapping,
} from "./report.ts";

Deno.test("netcheck report: NAT behaviour from two STUN mappings asked from one socket", () => {
  const m = (...mapped: (string | undefined)[]): StunMapping[] =>
    mapped.map((x, i) => ({ server: `g:${3478 + i}`, ...(x ? { mapped: x } : {}) }));
  const local = ["192.168.1.5", "fd00::5"];
  const cases: [n: number, mappings: StunMapping[], expected: ReturnType<typeof natBehaviour>][] = [
    [1, m("203.0.113.7:40000", "203.0.113.7:40000"), "endpoint-independent"],
    [2, m("203.0.113.7:40000", "203.0.113.7:40001"), "endpoint-dependent"],
    [3, m("203.0.113.7:40000", "203.0.113.8:40000"), "endpoint-dependent"],
    [4, m("192.168.1.5:5000", "192.168.1.5:5000"), "none"],
    [5, m("[fd00::5]:5000"), "none"],
    [6, m("203.0.113.7:40000", undefined), "unknown"], // one port only: cannot compare
    [7, m(undefined, undefined), "unknown"], // UDP blocked
    [8, [], "unknown"], // no STUN handed out
  ];
  for (const [n, mappings, expected] of cases) {
    assertEquals(natBehaviour(mappings, local), expected, `case ${n}`);
  }
});

Deno.test("netcheck report: candidate lines, and TURN URLs without their credentials", () => {
  assertEquals(
    parseCandidate("a=candidate:3 1 UDP 1678769663 10.201.5.2 53562 typ srflx raddr 0.0.0.0 rport 0"),
    {
      type: "srflx",
      address: "10.201.5.2",
      port: 53562,
    },
  );
  assertEquals(parseCandidate("candidate:1 1 UDP 2114977791 fd00::2 5 typ host")?.address, "fd00::2");
  assertEquals(parseCandidate("candidate:1 1 UDP 2114977791 fd00::2"), undefined);
  assertEquals(parseCandidate("garbage"), undefined);
  const cases: [n: number, url: string, shown: string][] = [
    [
      1,
      "turn:1796336243%3Anode5:blVeZY%2Bwq0X9MZD552abhXVFRsY%3D@10.0.0.1:3478?transport=udp",
      "turn:10.0.0.1:3478",
    ],
    [2, "turn:user:pass@[2001:db8::1]:3479", "turn:[2001:db8::1]:3479"],
    [3, "stun:guardian.example:3478", "stun:guardian.example:3478"],
  ];
  for (const [n, url, shown] of cases) assertEquals(redactTurn(url), shown, `case ${n}`);
});

Deno.test("netcheck report: the text names what failed, and no credential", () => {
  const base: NetcheckReport = {
    time: "2026-01-01T00:00:00.000Z",
    node: { confluxId: "c", guardian: "http://g:8080" },
    guardian: { reachable: true, rttMs: 1.25 },
    login: { ok: true, iceServers: ["stun:g:3478", "turn:g:3479"] },
    master: { reachable: true, server: "g:4222", connectMs: 12, rttMs: 0.4 },
    udp: { reachable: true, stunServer: "g:3478" },
    publicAddress: "203.0.113.7:40000",
    mappings: [{ server: "g:3478", mapped: "203.0.113.7:40000", rttMs: 3 }, {
      server: "g:3479",
      mapped: "203.0.113.7:40000",
      rttMs: 3,
    }],
    nat: "endpoint-independent",
    candidates: [{ type: "srflx", address: "203.0.113.7", port: 5 }],
    turn: [{ server: "turn:g:3479", reachable: true, relay: "198.51.100.1:50000" }],
    ok: true,
  };
  const text = formatReport(base, "9.9.9");
  assert(/^result\s+OK: the Guardian and the Master are reachable$/m.test(text), text);
  assert(/^nat\s+endpoint-independent/m.test(text), text);
  assert(/^turn\s+turn:g:3479: relay 198\.51\.100\.1:50000$/m.test(text), text);
  const cases: [n: number, change: Partial<NetcheckReport>, line: RegExp][] = [
    [1, { udp: { reachable: false, stunServer: "g:3478", error: "no answer" } }, /^OK: .*UDP is not/],
    [
      2,
      { ok: false, guardian: { reachable: false, error: "refused" } },
      /^FAILED: the Guardian is not reachable/,
    ],
    [
      3,
      { ok: false, login: { ok: false, error: "401", iceServers: [] } },
      /^FAILED: the Guardian refused the login/,
    ],
    [
      4,
      { ok: false, master: { reachable: false, error: "timeout" } },
      /^FAILED: the Master is not reachable \(timeout\)/,
    ],
  ];
  for (const [n, change, line] of cases) {
    const r = resultLine({ ...base, ...change });
    assert(line.test(r), `case ${n}: ${r}`);
  }
});
