import { assertEquals, assertThrows } from "../../tests/assert.ts";
import { prng } from "../../tests/fuzz.ts";
import {
  destinationOf,
  formatAddress,
  internetChecksum,
  ipVersion,
  parseCidr,
  parseIPv4,
  parseIPv6,
} from "./ip.ts";

const VALID: [n: number, text: string, version: 4 | 6, canonical: string, prefix: number][] = [
  [1, "10.128.0.1/16", 4, "10.128.0.1", 16],
  [2, "0.0.0.0/0", 4, "0.0.0.0", 0],
  [3, "255.255.255.255/32", 4, "255.255.255.255", 32],
  [4, "fd00:128::1/64", 6, "fd00:128::1", 64],
  [5, "::/0", 6, "::", 0],
  [6, "::1/128", 6, "::1", 128],
  [7, "1:2:3:4:5:6:7:8/64", 6, "1:2:3:4:5:6:7:8", 64],
  [8, "FD00:0:0:0:0:0:0:1/8", 6, "fd00::1", 8],
  [9, "::ffff:10.1.2.3/96", 6, "::ffff:a01:203", 96],
  [10, "1:0:0:2:0:0:0:3/48", 6, "1:0:0:2::3", 48], // the longer zero run is compressed
  [11, "1::/16", 6, "1::", 16],
];

for (const [n, text, version, canonical, prefix] of VALID) {
  Deno.test(`ip vector ${n}: "${text}" parses and formats back as ${canonical}`, () => {
    const cidr = parseCidr(text);
    assertEquals([cidr.version, formatAddress(cidr.address), cidr.prefix], [version, canonical, prefix]);
  });
}

const INVALID: [n: number, text: string, why: string][] = [
  [1, "", "no /prefix"],
  [2, "10.0.0.1", "no /prefix"],
  [3, "10.0.0/8", "neither IPv4 nor IPv6"],
  [4, "10.0.0.1.5/8", "neither IPv4 nor IPv6"],
  [5, "10.0.0.256/8", "neither IPv4 nor IPv6"],
  [6, "10.0.0.01/8", "neither IPv4 nor IPv6"], // leading zeros are ambiguous (octal in some parsers)
  [7, "10.0.0.1/33", "prefix must be 0..32"],
  [8, "10.0.0.1/-1", "prefix must be 0..32"],
  [9, "10.0.0.1/08", "prefix must be 0..32"],
  [10, "10.0.0.1/", "prefix must be 0..32"],
  [11, "fd00::1/129", "prefix must be 0..128"],
  [12, "fd00:::1/64", "neither IPv4 nor IPv6"],
  [13, "1::2::3/64", "neither IPv4 nor IPv6"],
  [14, "1:2:3:4:5:6:7:8:9/64", "neither IPv4 nor IPv6"],
  [15, "1:2:3:4:5:6:7/64", "neither IPv4 nor IPv6"],
  [16, "12345::1/64", "neither IPv4 nor IPv6"],
  [17, "fe80::1%eth0/64", "neither IPv4 nor IPv6"],
  [18, "1:2:3:4:5:6:7::8/64", "neither IPv4 nor IPv6"], // "::" beside all eight groups stands for none
  [19, `${"1".repeat(10_000)}/8`, "neither IPv4 nor IPv6"],
  [20, "10.0.0.1/8/8", "prefix must be"],
];

Deno.test("ip: every malformed address is refused with a SyntaxError saying why", () => {
  for (const [n, text, why] of INVALID) {
    const error = assertThrows(() => parseCidr(text), SyntaxError, why);
    assertEquals(error.message.includes("expected e.g."), true, `case ${n}`);
  }
});

Deno.test("ip: the parser is total over 5000 random strings from an address alphabet", () => {
  const rand = prng(9);
  const alphabet = "0123456789abcdefABCDEF:./%-x ";
  for (let i = 0; i < 5000; i++) {
    const text = Array.from(
      { length: Math.floor(rand() * 48) },
      () => alphabet[Math.floor(rand() * alphabet.length)],
    )
      .join("");
    try {
      const c = parseCidr(text);
      assertEquals(c.address.length, c.version === 4 ? 4 : 16, text);
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw new Error(`"${text}": ${error}`);
    }
  }
});

Deno.test("ip: the Internet checksum matches RFC 1071's worked example", () => {
  // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (after folding); the checksum is its complement.
  assertEquals(
    internetChecksum(Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7)),
    0xffff - 0xddf2,
  );
  assertEquals(internetChecksum(Uint8Array.of(0xff)), 0x00ff); // odd length: padded with a zero byte
});

Deno.test("ip: version and destination of IPv4, IPv6 and non-IP packets", () => {
  const v4 = new Uint8Array(20);
  v4[0] = 0x45;
  v4.set(parseIPv4("10.1.2.3")!, 16);
  const v6 = new Uint8Array(40);
  v6[0] = 0x60;
  v6.set(parseIPv6("fd00::9")!, 24);
  assertEquals([ipVersion(v4), formatAddress(destinationOf(v4)!)], [4, "10.1.2.3"]);
  assertEquals([ipVersion(v6), formatAddress(destinationOf(v6)!)], [6, "fd00::9"]);
  for (
    const junk of [new Uint8Array(0), Uint8Array.of(0x45), new Uint8Array(39).fill(0x60), new Uint8Array(60)]
  ) {
    assertEquals([ipVersion(junk), destinationOf(junk)], [0, undefined]);
  }
});
