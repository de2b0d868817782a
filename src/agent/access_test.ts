import { assertEquals } from "../../tests/assert.ts";
import { ipPacket } from "../../tests/packets.ts";
import { parseCidr, parseIPv4, parseIPv6 } from "../tun/ip.ts";
import { subnetToBytes } from "../portal/subnets.ts";
import { type AddressFacts, admitPacket, mayCommunicate } from "./access.ts";
import { identityTag } from "../crypto/identity_tags.ts";

const R1 = new Uint8Array(16).fill(1);
const R2 = new Uint8Array(16).fill(2);

// Each row: taints of a, taints of b, same realm?, may they talk? (The seeds' examples are rows 1-4.)
const TABLE: [n: number, a: string[], b: string[], sameRealm: boolean, expected: boolean][] = [
  [1, ["dev", "stage"], ["dev"], true, true], // staging server talks to a dev server (subset)
  [2, ["dev", "stage"], ["dev", "stage"], true, true],
  [3, ["prod"], ["prod"], true, true],
  [4, ["prod"], ["dev"], true, false],
  [5, ["a", "b"], ["b", "c"], true, false], // overlap is not enough: neither contains the other
  [6, [], ["dev"], true, false], // no taints: no peers
  [7, [], [], true, false],
  [8, ["dev"], ["dev"], false, false], // another realm
  [9, ["dev", "dev"], ["dev"], true, true], // duplicates do not matter
];

Deno.test("access: the taint rule, row by row, holds both ways", () => {
  for (const [n, ta, tb, sameRealm, expected] of TABLE) {
    const a = { realm: R1, taints: ta };
    const b = { realm: sameRealm ? R1 : R2, taints: tb };
    assertEquals(mayCommunicate(a, b), expected, `row ${n}`);
    assertEquals(mayCommunicate(b, a), expected, `row ${n} reversed`);
  }
});

Deno.test("access: by teams, a peer must hold one of this node's identities; taints count for nothing", () => {
  const lab = new Uint8Array(32).fill(1); // a team's secret
  const james = new Uint8Array(32).fill(2); // a user's
  const peerKey = new Uint8Array(1952).fill(9);
  const self = { realm: R1, taints: [], access: 1 };
  const peer = (identities: Uint8Array[], o: { realm?: Uint8Array; access?: number } = {}) => ({
    realm: o.realm ?? R1,
    taints: ["dev"],
    access: o.access ?? 1,
    nodeKey: peerKey,
    identities,
  });
  const rows: [n: number, secrets: Uint8Array[], b: ReturnType<typeof peer>, expected: boolean][] = [
    [1, [james, lab], peer([identityTag(lab, peerKey)]), true], // a shared team
    [2, [james], peer([identityTag(james, peerKey)]), true], // the same owner
    [3, [james], peer([identityTag(lab, peerKey)]), false], // a team this node does not hold
    [4, [lab], peer([]), false], // no identity at all
    [5, [lab], peer([identityTag(lab, new Uint8Array(1952))]), false], // another key's tag
    [6, [lab], peer([identityTag(lab, peerKey)], { access: 0 }), false], // a certificate of the other model
    [7, [lab], peer([identityTag(lab, peerKey)], { realm: R2 }), false],
  ];
  for (const [n, secrets, b, expected] of rows) {
    assertEquals(mayCommunicate(self, b, secrets), expected, `row ${n}`);
  }
  // Taints, even the same ones, do not open a realm whose access is by teams.
  assertEquals(mayCommunicate({ ...self, taints: ["dev"] }, peer([]), [lab]), false);
});

function node(ip4: string, ip6: string, subnets: string[] = []): AddressFacts {
  return {
    ipv4: parseIPv4(ip4)!,
    ipv6: parseIPv6(ip6)!,
    portal: subnets.length > 0 ? 1 : 0,
    subnets: subnets.map((s) => subnetToBytes(parseCidr(s))),
  };
}

Deno.test("access: packets reach the TUN only from the peer's addresses to this node's (or a portal's subnets)", () => {
  const a = node("10.128.0.1", "fd00::1");
  const b = node("10.128.0.2", "fd00::2");
  const portal = node("10.128.0.3", "fd00::3", ["10.50.0.0/24", "fd50::/64"]);
  const notPortal = { ...node("10.128.0.4", "fd00::4", ["10.60.0.0/24"]), portal: 0 };
  const v4 = (src: string, dst: string) => ipPacket(parseIPv4(src)!, parseIPv4(dst)!, 17, new Uint8Array(8));
  const v6 = (src: string, dst: string) => ipPacket(parseIPv6(src)!, parseIPv6(dst)!, 17, new Uint8Array(8));
  const rows: [string, AddressFacts, AddressFacts, Uint8Array, string | undefined][] = [
    ["b to a", b, a, v4("10.128.0.2", "10.128.0.1"), undefined],
    ["b to a, IPv6", b, a, v6("fd00::2", "fd00::1"), undefined],
    ["b claiming to be another node", b, a, v4("10.128.0.9", "10.128.0.1"), "spoofed-source"],
    ["b to a third node through a", b, a, v4("10.128.0.2", "10.128.0.9"), "foreign-destination"],
    ["a to the portal's LAN", a, portal, v4("10.128.0.1", "10.50.0.10"), undefined],
    ["a to the portal's IPv6 LAN", a, portal, v6("fd00::1", "fd50::10"), undefined],
    ["a to the internet through the portal", a, portal, v4("10.128.0.1", "8.8.8.8"), "foreign-destination"],
    ["a to the portal's next subnet", a, portal, v4("10.128.0.1", "10.50.1.10"), "foreign-destination"],
    ["the portal's LAN answering a", portal, a, v4("10.50.0.10", "10.128.0.1"), undefined],
    ["subnets of a node that is not a portal", notPortal, a, v4("10.60.0.5", "10.128.0.1"), "spoofed-source"],
    ["to a node that is not a portal", a, notPortal, v4("10.128.0.1", "10.60.0.5"), "foreign-destination"],
    ["IPv4 source, IPv6 addresses", b, a, v4("0.0.0.0", "10.128.0.1"), "spoofed-source"],
    ["not IP", b, a, new Uint8Array([0x10, 1, 2, 3]), "spoofed-source"],
    ["empty", b, a, new Uint8Array(0), "spoofed-source"],
    ["truncated IPv4 header", b, a, v4("10.128.0.2", "10.128.0.1").subarray(0, 19), "spoofed-source"],
  ];
  for (const [what, from, self, packet, expected] of rows) {
    assertEquals(admitPacket(from, self, packet), expected, what);
  }
});
