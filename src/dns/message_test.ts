// @ts-types="./dns_packet.d.ts"
import * as dnsPacket from "dns-packet";
import { Buffer } from "node:buffer";
import { assert, assertEquals } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import type { Owner } from "../agent/membership.ts";
import { isAnswerTo, MAX_DNS_MESSAGE_BYTES, Rcode, type Resolver, Responder } from "./message.ts";

const owner = (tag: string, n: number): Owner => ({
  tag,
  ipv4: Uint8Array.of(10, 128, 0, n),
  ipv6: Uint8Array.of(0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n),
});

const TABLE: Record<string, Owner[]> = {
  b: [owner("b", 3)],
  web: [owner("web", 4), owner("web", 5)],
  many: Array.from({ length: 25 }, (_, i) => owner("many", 10 + i)),
};

function responder(forward?: Resolver["forward"]) {
  const asked: string[] = [];
  const r = new Responder({
    lookup: (tag) => {
      asked.push(tag);
      return Promise.resolve(TABLE[tag] ?? []);
    },
    forward,
  });
  return { r, asked };
}

function query(
  name: string,
  type = "A",
  o: { id?: number; edns?: boolean; class?: string } = {},
): Uint8Array {
  return new Uint8Array(dnsPacket.encode({
    type: "query",
    id: o.id ?? 4242,
    flags: 0x0100, // RD
    questions: [{ name, type, class: o.class ?? "IN" }],
    additionals: o.edns ? [{ type: "OPT", name: ".", udpPayloadSize: 4096, flags: 0, options: [] }] : [],
  }));
}

function decode(bytes: Uint8Array | undefined) {
  assert(bytes, "expected a response");
  const p = dnsPacket.decode(Buffer.from(bytes));
  return { ...p, rcode: (p.flags ?? 0) & 0xf, data: (p.answers ?? []).map((a) => a.data) };
}

Deno.test("dns: <tag>.veilnet answers A and AAAA from the owners, authoritative, with a short TTL", async () => {
  const { r } = responder();
  const a = decode(await r.respond(query("b.veilnet"), "udp"));
  assertEquals([a.id, a.type, a.rcode, a.data], [4242, "response", Rcode.NoError, ["10.128.0.3"]]);
  assert((a.flags! & 0x0400) !== 0, "AA");
  assert((a.flags! & 0x0100) !== 0, "RD copied");
  assertEquals(a.answers![0]!.ttl, 5);
  assertEquals(decode(await r.respond(query("b.veilnet", "AAAA"), "udp")).data, ["fd00::3"]);
  assertEquals(decode(await r.respond(query("B.VeilNet.", "ANY"), "udp")).data, ["10.128.0.3", "fd00::3"]);
  const mx = decode(await r.respond(query("b.veilnet", "MX"), "udp"));
  assertEquals([mx.rcode, mx.data], [Rcode.NoError, []]);
  const apex = decode(await r.respond(query("veilnet"), "udp"));
  assertEquals([apex.rcode, apex.data], [Rcode.NoError, []]);
});

Deno.test("dns: a shared tag gives every owner, the first one in turn", async () => {
  const { r } = responder();
  const first = decode(await r.respond(query("web.veilnet"), "udp")).data;
  const second = decode(await r.respond(query("web.veilnet"), "udp")).data;
  assertEquals([...first].sort(), ["10.128.0.4", "10.128.0.5"]);
  assertEquals([...second].sort(), ["10.128.0.4", "10.128.0.5"]);
  assert(first[0] !== second[0], "rotated");
});

Deno.test("dns: unknown tags, bad labels and deeper names are NXDOMAIN; bad labels are not even looked up", async () => {
  const { r, asked } = responder();
  for (const name of ["nobody.veilnet", "x.b.veilnet", "-b.veilnet", "b_.veilnet", "b-.veilnet"]) {
    assertEquals(decode(await r.respond(query(name), "udp")).rcode, Rcode.NxDomain, name);
  }
  assertEquals(asked, ["nobody"]);
  // A 64-byte label is not a DNS name at all.
  assertEquals(decode(await r.respond(query(`${"a".repeat(64)}.veilnet`), "udp")).rcode, Rcode.FormErr);
  assertEquals(decode(await r.respond(query("b.veilnet", "A", { class: "CH" }), "udp")).rcode, Rcode.Refused);
});

Deno.test("dns: names outside the zone are forwarded, refused without upstreams, SERVFAIL when upstreams fail", async () => {
  const q = query("example.com");
  assertEquals(decode(await responder().r.respond(q, "udp")).rcode, Rcode.Refused);
  const upstreamAnswer = Uint8Array.of(1, 2, 3);
  const seen: [Uint8Array, string][] = [];
  const forwarding = responder((query, transport) => {
    seen.push([query, transport]);
    return Promise.resolve(upstreamAnswer);
  });
  assertEquals(await forwarding.r.respond(q, "tcp"), upstreamAnswer);
  assertEquals(seen, [[q, "tcp"]]);
  assertEquals(forwarding.asked, []);
  const failing = decode(await responder(() => Promise.resolve(undefined)).r.respond(q, "udp"));
  assertEquals(failing.rcode, Rcode.ServFail);
  assert((failing.flags! & 0x0080) !== 0, "RA when forwarding");
});

Deno.test("dns: too many records for 512 bytes of UDP set TC; EDNS and TCP carry them all", async () => {
  const { r } = responder();
  const udp = decode(await r.respond(query("many.veilnet", "AAAA"), "udp"));
  assert((udp.flags! & 0x0200) !== 0, "TC");
  assertEquals(udp.data.length, 0);
  assertEquals(decode(await r.respond(query("many.veilnet", "AAAA"), "tcp")).data.length, 25);
  const edns = decode(await r.respond(query("many.veilnet", "AAAA", { edns: true }), "udp"));
  assertEquals([edns.data.length, edns.additionals?.[0]?.type], [25, "OPT"]);
});

Deno.test("dns: malformed queries get FORMERR from the header alone; headerless and response packets are dropped", async () => {
  const { r } = responder();
  const valid = query("b.veilnet", "A", { id: 0x1234 });
  const formerr = async (bytes: Uint8Array, what: string) => {
    const out = await r.respond(bytes, "udp");
    assert(out, what);
    assertEquals([out[0], out[1], out[2]! & 0x80, out[3]! & 0xf], [0x12, 0x34, 0x80, Rcode.FormErr], what);
  };
  for (let n = 0; n < 12; n++) {
    assertEquals(await r.respond(valid.slice(0, n), "udp"), undefined, `${n} bytes`);
  }
  for (let n = 12; n < valid.length; n++) await formerr(valid.slice(0, n), `truncated to ${n}`);
  const response = valid.slice();
  response[2]! |= 0x80;
  assertEquals(await r.respond(response, "udp"), undefined, "QR set");

  const header = valid.slice(0, 12);
  const withName = (name: number[]) => {
    const out = new Uint8Array([...header, ...name, 0, 1, 0, 1]);
    return out;
  };
  await formerr(withName([0xc0, 12]), "a pointer to itself");
  await formerr(withName([1, 0x61, 0xc0, 12]), "a pointer loop through a label");
  await formerr(withName([0xc0, 40]), "a pointer forwards");
  await formerr(withName([0x80, 1]), "a reserved label type");
  const big = new Uint8Array(MAX_DNS_MESSAGE_BYTES + 1);
  big.set(valid);
  await formerr(big, "oversize");
  const none = valid.slice(0, 12);
  none[5] = 0; // QDCOUNT 0
  await formerr(none, "no question");
  const two = new Uint8Array([...valid, ...valid.subarray(12)]);
  two[5] = 2;
  await formerr(two, "two questions");
  const status = valid.slice();
  status[2] = (status[2]! & 0x87) | (2 << 3); // opcode STATUS
  assertEquals(decode(await r.respond(status, "udp")).rcode, Rcode.NotImp);
});

Deno.test("dns: 5000 corrupted queries never throw; every response echoes the id and is a response", async () => {
  const { r } = responder(() => Promise.resolve(undefined));
  const valid = query("web.veilnet", "A", { edns: true });
  for (const m of mutants(valid, 5000, { seed: 53, maxLength: 600 })) {
    const out = await r.respond(m.bytes, "udp");
    if (!out) continue;
    assertEquals([out[0], out[1], out[2]! & 0x80], [m.bytes[0], m.bytes[1], 0x80], m.what);
  }
});

Deno.test("dns: isAnswerTo takes only a response with the query's id and question", () => {
  const q = query("example.com");
  const response = (o: { id?: number; name?: string; type?: string; questions?: number } = {}) => {
    const name = o.name ?? "example.com";
    return new Uint8Array(dnsPacket.encode({
      type: "response",
      id: o.id ?? 4242,
      flags: 0x8180,
      questions: o.questions === 0 ? [] : [{ name, type: o.type ?? "A" }],
      answers: [{ type: "A", name, ttl: 60, data: "192.0.2.1" }],
    }));
  };
  const pointerFirst = response();
  pointerFirst.set([0xc0, 0x0c], 12); // a compression pointer as the first name: to itself
  const vectors: [number, Uint8Array, boolean][] = [
    [1, response(), true],
    [2, response({ name: "EXAMPLE.Com" }), true], // case may differ (0x20 randomisation)
    [3, response({ id: 4243 }), false],
    [4, response({ name: "example.net" }), false],
    [5, response({ name: "example.com.evil" }), false],
    [6, response({ type: "AAAA" }), false],
    [7, response({ questions: 0 }), false],
    [8, q, false], // the query itself: no response bit
    [9, response().subarray(0, 20), false], // cut inside the question
    [10, response().subarray(0, 11), false],
    [11, pointerFirst, false],
  ];
  for (const [n, answer, expected] of vectors) assertEquals(isAnswerTo(answer, q), expected, `vector ${n}`);
});
