import { assert, assertEquals } from "../../tests/assert.ts";
import { mutants, prng, randomBytes } from "../../tests/fuzz.ts";
import { type Cidr, parseCidr } from "../tun/ip.ts";
import {
  contains,
  formatCidr,
  masked,
  type Offer,
  overlaps,
  subnetFromBytes,
  SubnetTable,
  subnetToBytes,
} from "./subnets.ts";

const ip = (text: string): Uint8Array => parseCidr(`${text}/${text.includes(":") ? 128 : 32}`).address;

Deno.test("subnetFromBytes and subnetToBytes: numbered vectors, host bits cleared both ways", () => {
  const cases: [n: number, text: string, bytes: number[], normal: string][] = [
    [1, "10.50.0.0/24", [10, 50, 0, 0, 24], "10.50.0.0/24"],
    [2, "10.50.0.77/24", [10, 50, 0, 0, 24], "10.50.0.0/24"],
    [3, "192.168.255.255/17", [192, 168, 128, 0, 17], "192.168.128.0/17"],
    [4, "0.0.0.0/0", [0, 0, 0, 0, 0], "0.0.0.0/0"],
    [5, "1.2.3.4/32", [1, 2, 3, 4, 32], "1.2.3.4/32"],
    [6, "255.255.255.255/1", [128, 0, 0, 0, 1], "128.0.0.0/1"],
    [
      7,
      "2001:db8:1:2::9/48",
      [0x20, 0x01, 0x0d, 0xb8, 0, 1, ...new Array(10).fill(0), 48],
      "2001:db8:1::/48",
    ],
    [8, "fd00::1/128", [0xfd, ...new Array(14).fill(0), 1, 128], "fd00::1/128"],
    [9, "ffff::/0", [...new Array(16).fill(0), 0], "::/0"],
    [
      10,
      "2001:db8:ffff::/33",
      [0x20, 0x01, 0x0d, 0xb8, 0x80, ...new Array(11).fill(0), 33],
      "2001:db8:8000::/33",
    ],
  ];
  for (const [n, text, bytes, normal] of cases) {
    const encoded = subnetToBytes(parseCidr(text));
    assertEquals(encoded, Uint8Array.from(bytes), `case ${n}: encode`);
    const decoded = subnetFromBytes(encoded);
    assert(decoded, `case ${n}: decode`);
    assertEquals(formatCidr(decoded), normal, `case ${n}`);
    assertEquals(decoded.version, text.includes(":") ? 6 : 4, `case ${n}`);
    // Bytes with host bits set decode to the same, cleared subnet.
    const address = parseCidr(text).address;
    const dirty = subnetFromBytes(Uint8Array.of(...address, bytes.at(-1)!));
    assertEquals(dirty && formatCidr(dirty), normal, `case ${n}: dirty bytes`);
  }
});

Deno.test("subnetFromBytes refuses every length but 5 and 17, and prefixes beyond the address", () => {
  for (let length = 0; length <= 40; length++) {
    if (length === 5 || length === 17) continue;
    assertEquals(subnetFromBytes(new Uint8Array(length).fill(8)), undefined, `length ${length}`);
  }
  for (let prefix = 0; prefix <= 255; prefix++) {
    const four = subnetFromBytes(Uint8Array.of(10, 1, 2, 3, prefix));
    const six = subnetFromBytes(Uint8Array.of(...new Array(16).fill(0xff), prefix));
    assertEquals(four?.prefix, prefix <= 32 ? prefix : undefined, `IPv4 /${prefix}`);
    assertEquals(six?.prefix, prefix <= 128 ? prefix : undefined, `IPv6 /${prefix}`);
  }
  // A view into a larger buffer reads only its own bytes.
  const big = Uint8Array.of(99, 10, 0, 0, 0, 8, 99);
  assertEquals(formatCidr(subnetFromBytes(big.subarray(1, 6))!), "10.0.0.0/8");
});

Deno.test("subnetFromBytes: hostile bytes never throw, and what it accepts is a clean subnet", () => {
  const check = (bytes: Uint8Array, what: string) => {
    const c = subnetFromBytes(bytes);
    if (c === undefined) return;
    const size = c.version === 4 ? 4 : 16;
    assertEquals(bytes.length, size + 1, what);
    assert(c.prefix <= size * 8, what);
    assertEquals(c.address, masked(c.address, c.prefix), `${what}: host bits left`);
    assertEquals(subnetFromBytes(subnetToBytes(c)), c, `${what}: round trip`);
  };
  for (const valid of [subnetToBytes(parseCidr("10.50.0.0/24")), subnetToBytes(parseCidr("fd00:50::/32"))]) {
    for (const m of mutants(valid, 2_000, { seed: valid.length, maxLength: 64 })) check(m.bytes, m.what);
  }
  const rand = prng(7);
  for (let i = 0; i < 2_000; i++) check(randomBytes(rand, i % 2 ? 5 : 17), `random #${i}`);
  check(new Uint8Array(1 << 20), "1 MiB");
});

Deno.test("masked returns a cleared copy and leaves its input alone", () => {
  const cases: [n: number, address: string, prefix: number, expected: string][] = [
    [1, "10.1.2.3", 32, "10.1.2.3"],
    [2, "10.1.2.3", 24, "10.1.2.0"],
    [3, "10.1.2.3", 23, "10.1.2.0"],
    [4, "10.1.3.3", 23, "10.1.2.0"],
    [5, "255.255.255.255", 9, "255.128.0.0"],
    [6, "255.255.255.255", 0, "0.0.0.0"],
    [7, "2001:db8::ffff", 112, "2001:db8::"],
    [8, "2001:db8::ffff", 127, "2001:db8::fffe"],
  ];
  for (const [n, address, prefix, expected] of cases) {
    const input = ip(address);
    const before = input.slice();
    assertEquals(masked(input, prefix), ip(expected), `case ${n}`);
    assertEquals(input, before, `case ${n}: input changed`);
  }
});

Deno.test("contains and overlaps: numbered vectors, across byte boundaries and families", () => {
  const inside: [n: number, subnet: string, address: string, expected: boolean][] = [
    [1, "10.50.0.0/24", "10.50.0.1", true],
    [2, "10.50.0.0/24", "10.50.1.1", false],
    [3, "10.50.0.0/19", "10.50.31.255", true],
    [4, "10.50.0.0/19", "10.50.32.0", false],
    [5, "0.0.0.0/0", "203.0.113.9", true],
    [6, "128.0.0.0/1", "127.255.255.255", false],
    [7, "10.1.2.3/32", "10.1.2.3", true],
    [8, "10.1.2.3/32", "10.1.2.2", false],
    [9, "10.0.0.0/8", "::ffff:10.0.0.1", false], // another family never matches
    [10, "::/0", "10.0.0.1", false],
    [11, "2001:db8::/32", "2001:db8:ffff::1", true],
    [12, "2001:db8::/33", "2001:db8:8000::1", false],
    [13, "fd00::/7", "fdff::1", true],
    [14, "fd00::/8", "fc00::1", false],
  ];
  for (const [n, subnet, address, expected] of inside) {
    assertEquals(contains(parseCidr(subnet), ip(address)), expected, `contains case ${n}`);
  }
  assertEquals(contains(parseCidr("10.0.0.0/8"), new Uint8Array(5)), false, "a 5-byte address");
  assertEquals(contains(parseCidr("10.0.0.0/8"), new Uint8Array(0)), false, "an empty address");

  const shared: [n: number, a: string, b: string, expected: boolean][] = [
    [1, "10.0.0.0/8", "10.50.0.0/24", true],
    [2, "10.50.0.0/24", "10.50.0.128/25", true],
    [3, "10.50.0.0/25", "10.50.0.128/25", false],
    [4, "10.50.0.0/24", "10.51.0.0/24", false],
    [5, "10.50.0.0/24", "10.50.0.0/24", true],
    [6, "0.0.0.0/0", "192.0.2.0/24", true],
    [7, "10.0.0.0/8", "a00::/8", false],
    [8, "fd12:3456::/32", "fd12:3456:1::/48", true],
    [9, "fd12:3456::/32", "fd12:3457::/32", false],
  ];
  for (const [n, a, b, expected] of shared) {
    assertEquals(overlaps(parseCidr(a), parseCidr(b)), expected, `overlaps case ${n}`);
    assertEquals(overlaps(parseCidr(b), parseCidr(a)), expected, `overlaps case ${n} (swapped)`);
  }
});

Deno.test("formatCidr clears host bits and compresses IPv6", () => {
  assertEquals(formatCidr(parseCidr("10.50.0.200/24")), "10.50.0.0/24");
  assertEquals(formatCidr(parseCidr("2001:0db8:0000:0000:0000:0000:0000:0001/64")), "2001:db8::/64");
  assertEquals(formatCidr(parseCidr("fd00:1:2:3:4:5:6:7/128")), "fd00:1:2:3:4:5:6:7/128");
});

const offer = (conflux: string, tag: string, ...subnets: string[]): Offer => ({
  node: `node-${tag}`,
  tag,
  conflux,
  subnets: subnets.map((s) => parseCidr(s)),
});

Deno.test("SubnetTable: the longest prefix wins, across families, and nothing matches outside", () => {
  const table = new SubnetTable([
    offer("c1", "wide", "10.0.0.0/8", "fd00::/16"),
    offer("c2", "mid", "10.50.0.0/16"),
    offer("c3", "narrow", "10.50.7.0/24", "fd00:1::/32"),
  ]);
  const cases: [n: number, address: string, node: string | undefined][] = [
    [1, "10.50.7.9", "node-narrow"],
    [2, "10.50.8.9", "node-mid"],
    [3, "10.1.1.1", "node-wide"],
    [4, "11.0.0.1", undefined],
    [5, "fd00:1::5", "node-narrow"],
    [6, "fd00:2::5", "node-wide"],
    [7, "fe80::1", undefined],
  ];
  for (const [n, address, node] of cases) assertEquals(table.lookup(ip(address)), node, `case ${n}`);
  assertEquals(table.lookup(new Uint8Array(3)), undefined);
  // Most specific first, whatever the order of the offers.
  assertEquals(table.subnets, ["fd00:1::/32", "10.50.7.0/24", "10.50.0.0/16", "fd00::/16", "10.0.0.0/8"]);
});

Deno.test("SubnetTable: the same subnet from two portals goes to the lowest conflux id; the other is shadowed", () => {
  const a = offer("0001-aaaa", "alpha", "10.50.0.0/24");
  const b = offer("0002-bbbb", "beta", "10.50.0.99/24"); // host bits: the same subnet
  const c = offer("0003-cccc", "gamma", "10.50.0.0/24", "10.60.0.0/24");
  const orders = [[a, b, c], [c, b, a], [b, c, a], [c, a, b]];
  for (const [n, offers] of orders.entries()) {
    const inputs = JSON.stringify(offers);
    const table = new SubnetTable(offers);
    assertEquals(table.routes(), [
      { subnet: "10.50.0.0/24", node: "node-alpha", tag: "alpha", shadowed: ["beta", "gamma"] },
      { subnet: "10.60.0.0/24", node: "node-gamma", tag: "gamma", shadowed: [] },
    ], `order ${n}`);
    assertEquals(table.lookup(ip("10.50.0.1")), "node-alpha", `order ${n}`);
    assertEquals(JSON.stringify(offers), inputs, `order ${n}: the offers were changed`);
  }
  // The winner leaves: the next lowest conflux id takes over.
  const after = new SubnetTable([c, b]);
  assertEquals(after.lookup(ip("10.50.0.1")), "node-beta");
  assertEquals(after.routes()[0]!.shadowed, ["gamma"]);
});

Deno.test("SubnetTable: a portal listing a subnet twice does not shadow itself; empty table routes nothing", () => {
  const table = new SubnetTable([offer("c1", "solo", "10.50.0.0/24", "10.50.0.1/24")]);
  assertEquals(table.routes(), [{ subnet: "10.50.0.0/24", node: "node-solo", tag: "solo", shadowed: [] }]);
  const empty = new SubnetTable([]);
  assertEquals([empty.routes(), empty.subnets, empty.lookup(ip("10.0.0.1"))], [[], [], undefined]);
});

Deno.test("SubnetTable: changing what routes() returned does not change the table", () => {
  const table = new SubnetTable([offer("c1", "a", "10.50.0.0/24"), offer("c2", "b", "10.50.0.0/24")]);
  const routes = table.routes();
  routes[0]!.node = "node-mallory";
  routes.pop();
  assertEquals(table.routes()[0], { subnet: "10.50.0.0/24", node: "node-a", tag: "a", shadowed: ["b"] });
  assertEquals(table.lookup(ip("10.50.0.9")), "node-a");
});

Deno.test("SubnetTable: lookups agree with a brute-force longest-prefix search", () => {
  const rand = prng(42);
  const subnets: Cidr[] = Array.from({ length: 200 }, () => {
    const prefix = 8 + Math.floor(rand() * 25);
    const address = Uint8Array.of(10, rand() * 4 | 0, rand() * 4 | 0, rand() * 256 | 0);
    return { version: 4 as const, address: masked(address, prefix), prefix };
  });
  const offers = subnets.map((s, i) => ({
    node: `n${i}`,
    tag: `t${i}`,
    conflux: String(i).padStart(4, "0"),
    subnets: [s],
  }));
  const table = new SubnetTable(offers);
  for (let i = 0; i < 2_000; i++) {
    const address = Uint8Array.of(10, rand() * 4 | 0, rand() * 4 | 0, rand() * 256 | 0);
    let best: { prefix: number; conflux: string; node: string } | undefined;
    for (const o of offers) {
      const s = o.subnets[0]!;
      if (!contains(s, address)) continue;
      if (!best || s.prefix > best.prefix || (s.prefix === best.prefix && o.conflux < best.conflux)) {
        best = { prefix: s.prefix, conflux: o.conflux, node: o.node };
      }
    }
    assertEquals(table.lookup(address), best?.node, `address ${address.join(".")}`);
  }
});
