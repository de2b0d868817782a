import { assert, assertEquals, assertThrows } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import { WireError } from "./bytes.ts";
import {
  answerBinding,
  bindingRequest,
  crc32,
  decodeStun,
  encodeStun,
  readXorMappedAddress,
  STUN_MAX_UDP_BYTES,
  STUN_METHOD_BINDING,
  StunAttribute,
  StunClass,
} from "./stun.ts";

const hex = (text: string) => Uint8Array.from(text.replace(/\s+/g, "").match(/../g)!, (h) => parseInt(h, 16));
const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

// RFC 5769 (test vectors for STUN): the transaction id they share, and the three messages.
const RFC5769_ID = hex("b7e7a701 bc34d686 fa87dfae");
const RFC5769_REQUEST = hex(`
  00010058 2112a442 b7e7a701 bc34d686 fa87dfae
  80220010 5354554e 20746573 7420636c 69656e74
  00240004 6e0001ff
  80290008 932ff9b1 51263b36
  00060009 6576746a 3a683676 59202020
  00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
  80280004 e57a3bcf`);
const RFC5769_IPV4_RESPONSE = hex(`
  0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200008 0001a147 e112a643
  00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280004 c07d4c96`);
const RFC5769_IPV6_RESPONSE = hex(`
  01010048 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
  80280004 c8fb0b4c`);
const V4 = Uint8Array.of(192, 0, 2, 1);
const V6 = hex("20010db8 12345678 00112233 44556677");

Deno.test("stun: the RFC 5769 vectors decode, FINGERPRINT checked, XOR-MAPPED-ADDRESS recovered", () => {
  const cases: [n: number, bytes: Uint8Array, cls: StunClass, attributes: number, mapped?: Uint8Array][] = [
    [1, RFC5769_REQUEST, StunClass.Request, 6],
    [2, RFC5769_IPV4_RESPONSE, StunClass.Success, 4, V4],
    [3, RFC5769_IPV6_RESPONSE, StunClass.Success, 4, V6],
  ];
  for (const [n, bytes, cls, attributes, mapped] of cases) {
    const m = decodeStun(bytes);
    assertEquals(
      [m.class, m.method, toHex(m.transactionId)],
      [cls, STUN_METHOD_BINDING, toHex(RFC5769_ID)],
      `${n}`,
    );
    assertEquals(m.attributes.length, attributes, `case ${n}`);
    assertEquals(m.attributes.at(-1)!.type, StunAttribute.Fingerprint, `case ${n}`);
    const got = readXorMappedAddress(m);
    assertEquals(
      got && { address: toHex(got.address), port: got.port },
      mapped && {
        address: toHex(mapped),
        port: 32853,
      },
      `case ${n}`,
    );
  }
});

Deno.test("stun: encoding the vectors' mapped addresses gives their XOR-MAPPED-ADDRESS bytes", () => {
  const cases: [n: number, address: Uint8Array, attribute: string][] = [
    [1, V4, "00200008 0001a147 e112a643"],
    [2, V6, "00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9"],
  ];
  for (const [n, address, attribute] of cases) {
    const request = encodeStun({
      class: StunClass.Request,
      method: STUN_METHOD_BINDING,
      transactionId: RFC5769_ID,
      attributes: [],
    });
    const answer = answerBinding(request, { address, port: 32853 });
    assertEquals(toHex(answer.subarray(20)), toHex(hex(attribute)), `case ${n}`);
    assertEquals(toHex(answer.subarray(0, 2)), "0101", `case ${n}: Binding success response`);
  }
});

Deno.test("stun: encodeStun with a fingerprint round-trips, and crc32 is zlib's", () => {
  assertEquals(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  const m = encodeStun({
    class: StunClass.Indication,
    method: STUN_METHOD_BINDING,
    transactionId: RFC5769_ID,
    attributes: [{ type: StunAttribute.Software, value: new TextEncoder().encode("abc") }],
  }, { fingerprint: true });
  assertEquals(m.length, 20 + 8 + 8);
  const back = decodeStun(m);
  assertEquals([back.class, back.attributes.map((a) => a.type)], [StunClass.Indication, [
    StunAttribute.Software,
    StunAttribute.Fingerprint,
  ]]);
});

Deno.test("stun: answers a Binding request, libjuice's form included, with exactly 32 (IPv4) or 44 (IPv6) bytes", () => {
  const id = crypto.getRandomValues(new Uint8Array(12));
  // What libjuice sends a STUN server: no attributes but a FINGERPRINT (28 bytes).
  const juice = encodeStun(
    { class: StunClass.Request, method: STUN_METHOD_BINDING, transactionId: id, attributes: [] },
    { fingerprint: true },
  );
  const cases: [n: number, request: Uint8Array, from: Uint8Array, size: number][] = [
    [1, bindingRequest(id), Uint8Array.of(203, 0, 113, 7), 32],
    [2, juice, Uint8Array.of(203, 0, 113, 7), 32],
    [3, bindingRequest(id), V6, 44],
    [4, RFC5769_REQUEST, V4, 32], // an ICE check's attributes (USERNAME, PRIORITY, MESSAGE-INTEGRITY) are ignored
  ];
  for (const [n, request, address, size] of cases) {
    const answer = answerBinding(request, { address, port: 40000 + n });
    assertEquals(answer.length, size, `case ${n}`);
    const m = decodeStun(answer);
    assertEquals(toHex(m.transactionId), toHex(decodeStun(request).transactionId), `case ${n}`);
    assertEquals(
      m.attributes.map((a) => a.type),
      [StunAttribute.XorMappedAddress],
      `case ${n}: nothing else`,
    );
    const mapped = readXorMappedAddress(m)!;
    assertEquals([toHex(mapped.address), mapped.port], [toHex(address), 40000 + n], `case ${n}`);
  }
});

Deno.test("stun: no amplification: only Binding requests get an answer, never more than 24 bytes above the request", () => {
  const id = crypto.getRandomValues(new Uint8Array(12));
  const from = { address: V6, port: 1 };
  const refused: [n: number, datagram: Uint8Array, reason: string][] = [
    [1, RFC5769_IPV4_RESPONSE, "type"], // a response: answering it would let two servers ping-pong
    [2, encodeStun({ class: StunClass.Indication, method: 1, transactionId: id, attributes: [] }), "type"],
    [3, encodeStun({ class: StunClass.Request, method: 0x003, transactionId: id, attributes: [] }), "type"], // Allocate
    [4, encodeStun({ class: StunClass.Error, method: 1, transactionId: id, attributes: [] }), "type"],
    // An unknown comprehension-required attribute: a 420 answer would be larger than the request.
    [
      5,
      encodeStun({
        class: StunClass.Request,
        method: 1,
        transactionId: id,
        attributes: [{ type: 0x0003, value: new Uint8Array(4) }],
      }),
      "value",
    ],
    // Oversize: a padded request (a SOFTWARE of 600 bytes) is not answered at all.
    [
      6,
      encodeStun({
        class: StunClass.Request,
        method: 1,
        transactionId: id,
        attributes: [{ type: StunAttribute.Software, value: new Uint8Array(600) }],
      }),
      "oversize",
    ],
  ];
  for (const [n, datagram, reason] of refused) {
    const error = assertThrows(() => answerBinding(datagram, from), WireError);
    assertEquals(error.reason, reason, `case ${n}: ${error.message}`);
  }
  // The largest answer (IPv6) to the smallest request (20 bytes) is 44 bytes; attributes in the request never
  // make the answer grow (nothing is echoed).
  const padded = encodeStun({
    class: StunClass.Request,
    method: 1,
    transactionId: id,
    attributes: [{ type: StunAttribute.Software, value: new Uint8Array(STUN_MAX_UDP_BYTES - 24) }],
  });
  assertEquals(padded.length, STUN_MAX_UDP_BYTES);
  assertEquals(answerBinding(padded, from).length, 44);
  assertEquals(answerBinding(bindingRequest(id), from).length, 44);
});

Deno.test("stun: the decoder refuses malformed messages with a WireError", () => {
  const id = new Uint8Array(12);
  const good = bindingRequest(id);
  const withLength = (m: Uint8Array, length: number) => {
    const out = m.slice();
    new DataView(out.buffer).setUint16(2, length);
    return out;
  };
  const cases: [n: number, bytes: Uint8Array, reason: string][] = [
    [1, new Uint8Array(0), "truncated"],
    [2, good.subarray(0, 19), "truncated"],
    [3, Uint8Array.of(0xc0, ...good.subarray(1)), "type"], // top bits set (RTP, DTLS...)
    [4, Uint8Array.of(...good.subarray(0, 4), 0x21, 0x12, 0xa4, 0x43, ...good.subarray(8)), "version"],
    [5, withLength(good, 4), "truncated"], // says 4 bytes of attributes, has none
    [6, Uint8Array.of(...good, 0, 0, 0, 0), "trailing"], // holds 4 bytes the length does not count
    [7, withLength(Uint8Array.of(...good, 0, 0), 2), "value"], // not a multiple of 4
    [8, withLength(Uint8Array.of(...good, 0x80, 0x22, 0, 8, 1, 2, 3, 4), 8), "truncated"], // value overruns
    // A FINGERPRINT that does not match, and one that is not last.
    [
      9,
      (() => {
        const m = RFC5769_REQUEST.slice();
        m[m.length - 1]! ^= 1;
        return m;
      })(),
      "value",
    ],
    [
      10,
      (() => {
        // A correct FINGERPRINT (over the header with the final length), then one more attribute.
        const m = withLength(Uint8Array.of(...good, 0x80, 0x28, 0, 4, 0, 0, 0, 0, 0x80, 0x22, 0, 0), 12);
        new DataView(m.buffer).setUint32(24, (crc32(m.subarray(0, 20)) ^ 0x5354554e) >>> 0);
        return m;
      })(),
      "trailing",
    ],
  ];
  for (const [n, bytes, reason] of cases) {
    const error = assertThrows(() => decodeStun(bytes), WireError);
    assertEquals(error.reason, reason, `case ${n}: ${error.message}`);
  }
});

Deno.test("stun: junk never escapes as anything but a WireError, and what is answered is a well-formed answer", () => {
  const from = { address: Uint8Array.of(198, 51, 100, 9), port: 5 };
  let answered = 0;
  for (const valid of [bindingRequest(new Uint8Array(12)), RFC5769_REQUEST, RFC5769_IPV4_RESPONSE]) {
    for (const m of mutants(valid, 3_000, { maxLength: 700 })) {
      let answer: Uint8Array;
      try {
        answer = answerBinding(m.bytes, from);
      } catch (error) {
        assert(error instanceof WireError, `${m.what}: ${error}`);
        continue;
      }
      answered++;
      assertEquals(answer.length, 32, m.what);
      assertEquals(toHex(decodeStun(answer).transactionId), toHex(m.bytes.subarray(8, 20)), m.what);
    }
  }
  assert(answered > 0, "some mutants (a flipped transaction id bit) are still Binding requests");
});
