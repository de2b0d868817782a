import { assertEquals, assertThrows } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import { formatAddress, parseAddress, parseCidr } from "../tun/ip.ts";
import { formatCidr, type Offer, SubnetTable } from "./subnets.ts";
import {
  addressesFromLinks,
  describeRefusal,
  formatUnderlay,
  gatewaysFromRoutes,
  hostOfUrl,
  screenOffers,
  type UnderlayAddress,
  type UnderlayKind,
  uniqueUnderlay,
} from "./underlay.ts";

const offer = (conflux: string, tag: string, ...subnets: string[]): Offer => ({
  node: `node-${tag}`,
  tag,
  conflux,
  subnets: subnets.map((s) => parseCidr(s)),
});
const at = (kind: UnderlayKind, text: string): UnderlayAddress => ({ kind, address: parseAddress(text)! });

/** A node at 10.201.5.3 (and 2001:db8:7::3) behind gateway 10.201.0.1, Guardian 10.201.5.1, Master 192.0.2.10. */
const UNDERLAY = [
  at("own-address", "10.201.5.3"),
  at("own-address", "2001:db8:7::3"),
  at("gateway", "10.201.0.1"),
  at("gateway", "fe80::1"),
  at("guardian", "10.201.5.1"),
  at("master", "192.0.2.10"),
  at("master", "2001:db8:99::10"),
];

Deno.test("screenOffers: numbered cases, a subnet covering an underlay address is refused and says which", () => {
  const cases: [n: number, subnet: string, refused: [kind: UnderlayKind, covers: string] | undefined][] = [
    [1, "10.201.5.1/32", ["guardian", "10.201.5.1"]], // the Guardian's /32
    [2, "10.201.5.0/24", ["own-address", "10.201.5.3"]], // holds this node's own address (and the Guardian's)
    [3, "10.201.0.0/16", ["own-address", "10.201.5.3"]], // holds the gateway, this node and the Guardian
    [4, "10.201.0.0/24", ["gateway", "10.201.0.1"]], // holds the gateway only
    [5, "192.0.2.0/24", ["master", "192.0.2.10"]],
    [6, "2001:db8:7::/48", ["own-address", "2001:db8:7::3"]], // IPv6: this node's own address
    [7, "2001:db8:99::10/128", ["master", "2001:db8:99::10"]], // IPv6: the Master's /128
    [8, "fe80::/16", ["gateway", "fe80::1"]], // IPv6: a link-local gateway
    [9, "10.50.0.0/24", undefined], // unrelated: kept
    [10, "10.201.5.4/30", undefined], // next to this node and the Guardian, holding neither: kept
    [11, "2001:db8:8::/48", undefined], // unrelated IPv6: kept
    [12, "192.0.2.11/32", undefined], // beside the Master: kept
  ];
  for (const [n, subnet, expected] of cases) {
    const { allowed, refused } = screenOffers([offer("c1", "web", subnet)], UNDERLAY);
    if (expected === undefined) {
      assertEquals([allowed.length, refused], [1, []], `case ${n}: ${subnet} should be kept`);
      continue;
    }
    assertEquals(allowed, [], `case ${n}: ${subnet} should be refused`);
    assertEquals(refused, [{
      subnet: formatCidr(parseCidr(subnet)),
      node: "node-web",
      tag: "web",
      conflux: "c1",
      kind: expected[0],
      covers: expected[1],
    }], `case ${n}`);
  }
});

Deno.test("screenOffers: a portal's other subnets keep working, and two portals for one LAN still share it", () => {
  const web = offer("0002", "web", "10.201.5.1/32", "10.50.0.0/24", "10.201.5.0/24", "10.60.0.0/16");
  const lan = offer("0001", "lan", "10.50.0.0/24");
  const bad = offer("0003", "bad", "10.201.5.1/32"); // nothing left to route: the whole offer goes
  const inputs = JSON.stringify([web, lan, bad]);
  const { allowed, refused } = screenOffers([web, lan, bad], UNDERLAY);
  assertEquals(allowed.map((o) => [o.tag, o.subnets.map(formatCidr)]), [
    ["web", ["10.50.0.0/24", "10.60.0.0/16"]],
    ["lan", ["10.50.0.0/24"]],
  ]);
  assertEquals(refused.map((r) => `${r.tag} ${r.subnet}`), [
    "web 10.201.5.1/32",
    "web 10.201.5.0/24",
    "bad 10.201.5.1/32",
  ]);
  assertEquals(JSON.stringify([web, lan, bad]), inputs, "the offers were changed");
  const table = new SubnetTable(allowed);
  assertEquals(table.routes(), [
    { subnet: "10.50.0.0/24", node: "node-lan", tag: "lan", shadowed: ["web"] },
    { subnet: "10.60.0.0/16", node: "node-web", tag: "web", shadowed: [] },
  ]);
  assertEquals(table.lookup(parseAddress("10.201.5.1")!), undefined);
  assertEquals(table.lookup(parseAddress("10.50.0.9")!), "node-lan");
});

Deno.test("screenOffers: nothing to protect keeps everything; an offer left whole is passed as is", () => {
  const o = offer("c1", "web", "10.201.5.0/24");
  assertEquals(screenOffers([o], []), { allowed: [o], refused: [] });
  assertEquals(screenOffers([o], [at("master", "10.99.0.1")]).allowed[0], o);
  assertEquals(screenOffers([], UNDERLAY), { allowed: [], refused: [] });
});

Deno.test("describeRefusal says what, from which portal, and why", () => {
  const { refused } = screenOffers([offer("c1", "web", "10.201.5.0/24")], UNDERLAY);
  assertEquals(
    describeRefusal(refused[0]!),
    "portal web offers 10.201.5.0/24, which covers this node's own address 10.201.5.3: refused",
  );
  const { refused: [guardian] } = screenOffers([offer("c1", "evil", "10.201.5.1/32")], UNDERLAY);
  assertEquals(
    describeRefusal(guardian!),
    "portal evil offers 10.201.5.1/32, which covers the Guardian's address 10.201.5.1: refused",
  );
});

/** `ip -j addr` of a host with loopback, an uplink (IPv4 + IPv6 + link-local), the TUN and a second link. */
const LINKS = JSON.stringify([
  {
    ifindex: 1,
    ifname: "lo",
    flags: ["LOOPBACK", "UP", "LOWER_UP"],
    addr_info: [{ family: "inet", local: "127.0.0.1", prefixlen: 8 }, {
      family: "inet6",
      local: "::1",
      prefixlen: 128,
    }],
  },
  {
    ifindex: 2,
    ifname: "eth0",
    flags: ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
    addr_info: [
      { family: "inet", local: "10.201.5.3", prefixlen: 24, scope: "global" },
      { family: "inet6", local: "2001:db8:7::3", prefixlen: 64, scope: "global" },
      { family: "inet6", local: "fe80::5054:ff:fe12:3456", prefixlen: 64, scope: "link" },
    ],
  },
  {
    ifindex: 3,
    ifname: "veilnet",
    flags: ["POINTOPOINT", "UP"],
    addr_info: [{ family: "inet", local: "10.128.0.7", prefixlen: 16 }, {
      family: "inet6",
      local: "fd12:3456:789a:1::7",
      prefixlen: 64,
    }],
  },
  { ifindex: 4, ifname: "eth1", flags: ["UP"], addr_info: [{ family: "inet", local: "127.0.0.5" }, {}] },
  { ifindex: 5, ifname: "eth2", flags: ["UP"], addr_info: [{ family: "inet", local: "192.168.9.2" }] },
  { ifindex: 6, ifname: "down0", flags: [] }, // no addresses
  "junk",
  null,
]);

Deno.test("addressesFromLinks: every interface's address but the TUN's and loopback's", () => {
  assertEquals(addressesFromLinks(LINKS, "veilnet").map(formatAddress), [
    "10.201.5.3",
    "2001:db8:7::3",
    "fe80::5054:ff:fe12:3456",
    "192.168.9.2",
  ]);
  // Another TUN name: this one's overlay addresses count as the host's own.
  assertEquals(addressesFromLinks(LINKS, "veilnet1").length, 6);
  assertEquals(addressesFromLinks("", "veilnet"), []);
  assertThrows(() => addressesFromLinks("not json", "veilnet"), Error, "did not print JSON");
  assertThrows(() => addressesFromLinks("{}", "veilnet"), Error, "expected a JSON array");
});

Deno.test("gatewaysFromRoutes: gateways, next hops of another family and multipath next hops", () => {
  const routes = JSON.stringify([
    { dst: "default", gateway: "192.168.1.1", dev: "eth0" },
    { dst: "10.20.0.0/16", gateway: "192.168.1.254", dev: "eth0" },
    { dst: "192.168.1.0/24", dev: "eth0", scope: "link" },
    { dst: "10.40.0.0/16", via: { family: "inet6", host: "fe80::9" }, dev: "eth0" },
    {
      dst: "10.30.0.0/16",
      nexthops: [{ gateway: "192.168.2.1", dev: "eth1" }, { gateway: "192.168.3.1", dev: "eth2" }, "junk"],
    },
    { dst: "default", gateway: "not an address" },
    7,
  ]);
  assertEquals(gatewaysFromRoutes(routes).map(formatAddress), [
    "192.168.1.1",
    "192.168.1.254",
    "fe80::9",
    "192.168.2.1",
    "192.168.3.1",
  ]);
  assertEquals(gatewaysFromRoutes(""), []);
  assertThrows(() => gatewaysFromRoutes("[{"), Error, "did not print JSON");
});

Deno.test("addressesFromLinks and gatewaysFromRoutes: hostile JSON never throws anything but their Error", () => {
  for (const m of mutants(new TextEncoder().encode(LINKS), 500, { seed: 3 })) {
    const text = new TextDecoder().decode(m.bytes);
    for (const parse of [(t: string) => addressesFromLinks(t, "veilnet"), gatewaysFromRoutes]) {
      try {
        parse(text);
      } catch (error) {
        const message = (error as Error).message;
        assertEquals(
          /^could not read .*(did not print JSON|expected a JSON array)/.test(message),
          true,
          m.what,
        );
      }
    }
  }
});

Deno.test("hostOfUrl: the host of Guardian and NATS URLs, IPv6 without brackets", () => {
  const cases: [n: number, url: string, host: string | undefined][] = [
    [1, "https://guardian.example:8080", "guardian.example"],
    [2, "http://10.201.5.1:4000/", "10.201.5.1"],
    [3, "nats://[2001:db8::10]:4222", "2001:db8::10"],
    [4, "tls://m1.example", "m1.example"],
    [5, "m2.example:4222", "m2.example"],
    [6, "nats://", undefined],
    [7, "::::", undefined],
  ];
  for (const [n, url, host] of cases) assertEquals(hostOfUrl(url), host, `case ${n}`);
});

Deno.test("uniqueUnderlay and formatUnderlay: repeats go, order stays", () => {
  const list = uniqueUnderlay([
    at("guardian", "10.201.5.1"),
    at("master", "10.201.5.1"),
    at("guardian", "10.201.5.1"),
    at("gateway", "fe80::1"),
  ]);
  assertEquals(formatUnderlay(list), "guardian 10.201.5.1, master 10.201.5.1, gateway fe80::1");
});
