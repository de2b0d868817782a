import { assertEquals, assertThrows } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import { MAX_CONTROL_MESSAGE_BYTES } from "../spec.ts";
import { ByteReader, ByteWriter, WireError } from "./bytes.ts";
import { MAX_TAG_BYTES } from "./certificate.ts";
import { bytes, list, readRecord, writeRecord } from "./schema.ts";
import {
  type AnyControlMessage,
  BROADCAST,
  type ControlFields,
  ControlKind,
  decodeControl,
  encodeControlUnsigned,
  GUARDIAN_SENDER,
  LookupKind,
  MAX_CERTIFICATE_BYTES,
  NO_CERT_REF,
  TetherSignalType,
  withSignature,
} from "./control.ts";

const SIGNATURE = new Uint8Array(3309).fill(0x5a);
const base = {
  sender: new Uint8Array(16).fill(1),
  recipient: new Uint8Array(16).fill(2),
  certRef: new Uint8Array(16).fill(3),
  timestamp: 1_800_000_000_123,
  id: new Uint8Array(16).fill(4),
};

/** One valid message of every kind. */
const SAMPLES: ControlFields[] = [
  {
    ...base,
    recipient: BROADCAST,
    kind: ControlKind.Announce,
    body: { certificate: new Uint8Array(900).fill(9), leaving: 0 },
  },
  {
    ...base,
    kind: ControlKind.StreamRequest,
    body: { kemPublicKey: new Uint8Array(1184).fill(5), x25519PublicKey: new Uint8Array(32).fill(6) },
  },
  {
    ...base,
    kind: ControlKind.StreamResponse,
    body: {
      requestHash: new Uint8Array(32).fill(7),
      kemCiphertext: new Uint8Array(1088).fill(8),
      x25519PublicKey: new Uint8Array(32).fill(9),
    },
  },
  {
    ...base,
    kind: ControlKind.TetherSignal,
    body: {
      session: new Uint8Array(16).fill(10),
      signal: TetherSignalType.Offer,
      payload: "v=0\r\no=- 1 2 IN IP4 ✓",
    },
  },
  {
    ...base,
    recipient: BROADCAST,
    kind: ControlKind.Lookup,
    body: {
      certificate: new Uint8Array(12).fill(3),
      what: LookupKind.Tag,
      key: new TextEncoder().encode("web"),
    },
  },
  {
    ...base,
    kind: ControlKind.Found,
    body: { query: new Uint8Array(16).fill(11), certificate: new Uint8Array(20).fill(4) },
  },
  { ...base, recipient: BROADCAST, kind: ControlKind.TaintUpdate, body: { certificate: new Uint8Array(10) } },
  {
    ...base,
    recipient: BROADCAST,
    kind: ControlKind.RouteQuery,
    body: { destination: new Uint8Array(16).fill(12) },
  },
  { ...base, kind: ControlKind.RouteAnswer, body: { destination: new Uint8Array(16).fill(13), rttMs: 7 } },
  {
    ...base,
    sender: GUARDIAN_SENDER,
    recipient: BROADCAST,
    certRef: NO_CERT_REF,
    kind: ControlKind.Revoke,
    body: { conflux: new Uint8Array(16).fill(14), before: 1_800_000_000_000 },
  },
] as ControlFields[];

function encode(m: ControlFields): Uint8Array {
  return withSignature(encodeControlUnsigned(m), SIGNATURE);
}

for (const sample of SAMPLES) {
  Deno.test(`control: ${ControlKind[sample.kind]} round-trips field for field`, () => {
    const bytes = encode(sample);
    const decoded: AnyControlMessage = decodeControl(bytes);
    const { signed, signature, ...fields } = decoded;
    assertEquals(fields, sample);
    assertEquals(signature, SIGNATURE);
    assertEquals(signed.length, bytes.length - SIGNATURE.length);
  });

  Deno.test(`control: ${ControlKind[sample.kind]} decoding is total over 2000 hostile inputs`, () => {
    for (const { what, bytes } of mutants(encode(sample), 2000, { seed: sample.kind })) {
      try {
        decodeControl(bytes);
      } catch (error) {
        if (!(error instanceof WireError)) throw new Error(`${what}: ${error}`);
      }
    }
  });
}

Deno.test("control: the header layout is as documented", () => {
  const bytes = encode(SAMPLES[4]!);
  assertEquals(Array.from(bytes.subarray(0, 3)), [2, ControlKind.Lookup, 0]);
  assertEquals(bytes.subarray(35, 51), base.certRef);
  assertEquals(new DataView(bytes.buffer).getBigUint64(51), BigInt(base.timestamp));
  assertEquals(bytes.subarray(59, 75), base.id);
  assertEquals(new DataView(bytes.buffer).getUint32(75), bytes.length - 79 - 3309);
});

Deno.test("control: decoding refuses each malformed message with a WireError saying why", () => {
  const good = encode(SAMPLES[3]!);
  const set = (at: number, value: number) => {
    const b = good.slice();
    b[at] = value;
    return b;
  };
  const bodyStart = 79;
  const cases: [n: number, bytes: Uint8Array, reason: string, text: string][] = [
    [1, new Uint8Array(0), "truncated", "truncated at version"],
    [2, set(0, 1), "version", "version 1"],
    [3, set(1, 0), "type", "unknown kind 0"],
    [4, set(1, 200), "type", "unknown kind 200"],
    [5, set(2, 1), "value", "reserved flags"],
    [6, good.subarray(0, 55), "truncated", "truncated at timestamp"],
    [7, good.subarray(0, good.length - 1), "truncated", "truncated at signature"],
    [8, Uint8Array.of(...good, 0), "trailing", "1 unexpected trailing bytes"],
    [9, set(bodyStart + 16, 9), "value", "signal is 9"], // signal type out of range
    [10, set(75, 0xff), "oversize", "body is"], // declared body length far too large
    [11, new Uint8Array(MAX_CONTROL_MESSAGE_BYTES + 1), "oversize", "limit is 65536"],
    [12, set(51, 0xff), "value", "timestamp exceeds 2^53 - 1"],
  ];
  for (const [n, bytes, reason, text] of cases) {
    const error = assertThrows(() => decodeControl(bytes), WireError, text);
    assertEquals(error.reason, reason, `case ${n}`);
  }
});

Deno.test("control: strings must be valid UTF-8 and bodies must be consumed exactly", () => {
  const signal = encode(SAMPLES[3]!);
  const badUtf8 = signal.slice();
  badUtf8[79 + 16 + 1 + 2] = 0xff; // first byte of the payload, after the session, the type and the length
  assertEquals(assertThrows(() => decodeControl(badUtf8), WireError, "not valid UTF-8").reason, "encoding");

  // A body with a byte more than its fields take: the body length grows by one, the extra byte stays in the body.
  const unsigned = encodeControlUnsigned(SAMPLES[4]!);
  const longer = new Uint8Array(unsigned.length + 1 + 3309);
  longer.set(unsigned);
  new DataView(longer.buffer).setUint32(75, unsigned.length - 79 + 1);
  assertEquals(assertThrows(() => decodeControl(longer), WireError, "trailing").reason, "trailing");
});

Deno.test("control: size limits hold on decode", () => {
  const query = SAMPLES[4]! as ControlFields<ControlKind.Lookup>;
  const bytes = encode(query);
  // The key's length field follows the certificate (2 + 12 bytes) and what (1).
  const tagAt = 79 + 2 + 12 + 1;
  const longTag = bytes.slice();
  new DataView(longTag.buffer).setUint16(tagAt, MAX_TAG_BYTES + 1);
  assertEquals(assertThrows(() => decodeControl(longTag), WireError).reason, "oversize");
  const longCert = bytes.slice();
  new DataView(longCert.buffer).setUint16(79, MAX_CERTIFICATE_BYTES + 1);
  assertEquals(assertThrows(() => decodeControl(longCert), WireError).reason, "oversize");
});

Deno.test("schema: list and item-size limits hold on decode and encode", () => {
  const schema = { addresses: list(bytes(16, [4, 16]), 2) };
  const w = new ByteWriter("test");
  writeRecord(w, schema, { addresses: [new Uint8Array(4), new Uint8Array(16)] });
  const good = w.finish();
  assertEquals(readRecord(new ByteReader(good, "test"), schema).addresses.map((a) => a.length), [4, 16]);
  const tooMany = good.slice();
  new DataView(tooMany.buffer).setUint16(0, 3);
  assertEquals(
    assertThrows(() => readRecord(new ByteReader(tooMany, "test"), schema), WireError, "items").reason,
    "oversize",
  );
  const badSize = good.slice();
  badSize[3] = 5; // the first item claims 5 bytes
  assertEquals(
    assertThrows(() => readRecord(new ByteReader(badSize, "test"), schema), WireError, "4 or 16 bytes")
      .reason,
    "value",
  );
  assertThrows(
    () => writeRecord(new ByteWriter("test"), schema, { addresses: [new Uint8Array(5)] }),
    RangeError,
    "4 or 16 bytes",
  );
});

Deno.test("control: encoding refuses values that break the limits, naming the field", () => {
  const announce = SAMPLES[0]! as ControlFields<ControlKind.Announce>;
  assertThrows(
    () =>
      encodeControlUnsigned({
        ...announce,
        body: { certificate: new Uint8Array(MAX_CERTIFICATE_BYTES + 1), leaving: 0 },
      }),
    RangeError,
    "certificate",
  );
  assertThrows(
    () => encodeControlUnsigned({ ...announce, sender: new Uint8Array(15) }),
    RangeError,
    "sender",
  );
  assertThrows(() => encodeControlUnsigned({ ...announce, timestamp: -1 }), RangeError, "timestamp");
  const query = SAMPLES[4]! as ControlFields<ControlKind.Lookup>;
  assertThrows(
    () =>
      encodeControlUnsigned({ ...query, body: { ...query.body, key: new Uint8Array(MAX_TAG_BYTES + 1) } }),
    RangeError,
    "key",
  );
  assertThrows(
    () => encodeControlUnsigned({ ...query, body: { ...query.body, what: 4 } }),
    RangeError,
    "what",
  );
  const signal = SAMPLES[3]! as ControlFields<ControlKind.TetherSignal>;
  assertThrows(
    () => encodeControlUnsigned({ ...signal, body: { ...signal.body, signal: 0 } }),
    RangeError,
    "signal is 0",
  );
  assertThrows(() => withSignature(new Uint8Array(10), new Uint8Array(3308)), RangeError, "3309");
});

/** The Revoke sample, as sent: from the Guardian to everyone. */
const REVOKE = SAMPLES.find((m) => m.kind === ControlKind.Revoke)! as ControlFields<ControlKind.Revoke>;

Deno.test("control: a Revoke is laid out byte for byte as documented", () => {
  const vectors: [n: number, body: ControlFields<ControlKind.Revoke>["body"], hex: string][] = [
    [1, { conflux: new Uint8Array(16).fill(0xab), before: 0 }, "ab".repeat(16) + "0000000000000000"],
    [
      2,
      { conflux: Uint8Array.from({ length: 16 }, (_, i) => i), before: 1_800_000_000_123 },
      "000102030405060708090a0b0c0d0e0f" + "000001a3185c507b",
    ],
    [3, { conflux: new Uint8Array(16), before: 2 ** 53 - 1 }, "00".repeat(16) + "001fffffffffffff"],
  ];
  for (const [n, body, hex] of vectors) {
    const bytes = encode({ ...REVOKE, body });
    // Version, kind 10, flags; then sender, recipient and certRef, all zero.
    const header = [2, 10, 0, ...new Uint8Array(48)];
    assertEquals(Array.from(bytes.subarray(0, 51)), header, `case ${n}: header`);
    assertEquals(new DataView(bytes.buffer).getUint32(75), 24, `case ${n}: body length`);
    const bodyHex = Array.from(bytes.subarray(79, 79 + 24), (b) => b.toString(16).padStart(2, "0")).join("");
    assertEquals(bodyHex, hex, `case ${n}: body`);
    assertEquals(bytes.length, 79 + 24 + 3309, `case ${n}: length`);
    const decoded = decodeControl(bytes);
    assertEquals(decoded.kind === ControlKind.Revoke && decoded.body, body, `case ${n}: decoded`);
  }
});

Deno.test("control: a Revoke must go to everyone with an all-zero certRef, and its body must be exact", () => {
  const good = encode(REVOKE);
  const set = (at: number, value: number) => {
    const b = good.slice();
    b[at] = value;
    return b;
  };
  const cases: [n: number, bytes: Uint8Array, reason: string, text: string][] = [
    [1, set(19, 1), "value", "must go to everyone"], // a recipient
    [2, set(35 + 15, 1), "value", "all-zero certRef"], // a certRef
    [3, set(79 + 16, 0x20), "value", "before exceeds 2^53 - 1"],
    [4, good.subarray(0, 79 + 23), "truncated", "truncated"],
  ];
  // A body one byte longer than its two fields (the declared length grows, the extra byte stays in the body).
  const unsigned = encodeControlUnsigned(REVOKE);
  const longer = new Uint8Array(unsigned.length + 1 + 3309);
  longer.set(unsigned);
  new DataView(longer.buffer).setUint32(75, 25);
  cases.push([5, longer, "trailing", "trailing"]);
  // One byte short: the body ends inside `before`.
  const shorter = new Uint8Array(unsigned.length - 1 + 3309);
  shorter.set(unsigned.subarray(0, unsigned.length - 1));
  new DataView(shorter.buffer).setUint32(75, 23);
  cases.push([6, shorter, "truncated", "truncated at before"]);
  for (const [n, bytes, reason, text] of cases) {
    const error = assertThrows(() => decodeControl(bytes), WireError, text);
    assertEquals(error.reason, reason, `case ${n}`);
  }
  // The sender is not the decoder's business (the verifier refuses a node's Revoke with its own reason).
  const fromNode = set(3, 1);
  assertEquals(decodeControl(fromNode).kind, ControlKind.Revoke);
  assertThrows(
    () => encodeControlUnsigned({ ...REVOKE, recipient: new Uint8Array(16).fill(2) }),
    RangeError,
    "BROADCAST",
  );
  assertThrows(() => encodeControlUnsigned({ ...REVOKE, certRef: new Uint8Array(16).fill(3) }), RangeError);
  assertThrows(
    () => encodeControlUnsigned({ ...REVOKE, body: { ...REVOKE.body, conflux: new Uint8Array(15) } }),
    RangeError,
    "conflux",
  );
});
