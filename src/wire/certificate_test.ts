import { assertEquals, assertThrows } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import { ML_DSA_65_PUBLIC_KEY_BYTES, ML_DSA_65_SIGNATURE_BYTES } from "../spec.ts";
import { WireError } from "./bytes.ts";
import {
  CERTIFICATE_VERSION,
  type CertificateFields,
  decodeCertificate,
  encodeCertificateUnsigned,
  identityProblem,
  MAX_EMAIL_BYTES,
  MAX_SUBJECT_BYTES,
} from "./certificate.ts";
import { withSignature } from "./control.ts";

const SIGNATURE = new Uint8Array(ML_DSA_65_SIGNATURE_BYTES).fill(0x5a);
const NODE_KEY = new Uint8Array(ML_DSA_65_PUBLIC_KEY_BYTES).fill(0x4b);

/** A certificate of a realm that asks for no identity. */
const BASE: CertificateFields = {
  serial: new Uint8Array(16).fill(1),
  conflux: new Uint8Array(16).fill(2),
  realm: new Uint8Array(16).fill(3),
  realmName: "home",
  tag: "web",
  ipv4: Uint8Array.of(10, 128, 0, 7),
  prefix4: 16,
  ipv6: new Uint8Array(16).fill(0xfd),
  prefix6: 64,
  taints: ["dev", "stage"],
  portal: 1,
  subnets: [Uint8Array.of(10, 50, 0, 0, 24), new Uint8Array(17).fill(0xfd)],
  subject: "",
  email: "",
  access: 0,
  identities: [],
  region: "",
  regions: [],
  nodeKey: NODE_KEY,
  notBefore: 1_800_000_000_000,
  notAfter: 1_800_003_600_000,
};

const ALICE = { subject: "248289761001", email: "alice@example.com" };

const encode = (fields: CertificateFields) => withSignature(encodeCertificateUnsigned(fields), SIGNATURE);

/** Offset of `subject` in an encoding of BASE with `identity`: right before nodeKey, notBefore and notAfter. */
function subjectOffset(bytes: Uint8Array, identity: { subject: string; email: string }): number {
  const utf8 = (s: string) => new TextEncoder().encode(s).length;
  // From the end: signature, validity, node key, empty regions and region (4), access and no identities (3).
  return bytes.length - SIGNATURE.length - 16 - NODE_KEY.length - 4 - 3 - (2 + utf8(identity.subject)) -
    (2 + utf8(identity.email));
}

Deno.test("certificate wire: round-trips field for field, with and without an identity", () => {
  const cases: [n: number, identity: { subject: string; email: string }][] = [
    [1, { subject: "", email: "" }],
    [2, ALICE],
    [3, { subject: "248289761001", email: "" }], // an issuer that gives no email
    [4, { subject: "s".repeat(MAX_SUBJECT_BYTES), email: `${"e".repeat(MAX_EMAIL_BYTES - 12)}@example.com` }],
    [5, { subject: "ü".repeat(127), email: "jürgen@example.de" }], // 254 bytes of UTF-8
  ];
  for (const [n, identity] of cases) {
    const fields = { ...BASE, ...identity };
    const bytes = encode(fields);
    const { signed, signature, ...decoded } = decodeCertificate(bytes);
    assertEquals(decoded, fields, `case ${n}`);
    assertEquals(signature, SIGNATURE, `case ${n}`);
    assertEquals(signed, bytes.subarray(0, bytes.length - SIGNATURE.length), `case ${n}`);
  }
});

Deno.test("certificate wire: the layout is as documented (version 4, subject, email, access, identities, regions)", () => {
  const bytes = encode({ ...BASE, ...ALICE });
  assertEquals(bytes[0], CERTIFICATE_VERSION);
  assertEquals(CERTIFICATE_VERSION, 4);
  // version, serial, conflux, realm, then realmName as a u16 length and UTF-8.
  assertEquals(bytes.subarray(1, 17), BASE.serial);
  assertEquals(Array.from(bytes.subarray(49, 55)), [0, 4, ...new TextEncoder().encode("home")]);
  // subnets end with the IPv6 one (17 bytes), then subject and email, then the node key.
  const at = subjectOffset(bytes, ALICE);
  assertEquals(bytes.subarray(at - 17, at), BASE.subnets[1]);
  const view = new DataView(bytes.buffer);
  assertEquals(view.getUint16(at), ALICE.subject.length);
  assertEquals(new TextDecoder().decode(bytes.subarray(at + 2, at + 2 + 12)), ALICE.subject);
  assertEquals(view.getUint16(at + 14), ALICE.email.length);
  assertEquals(new TextDecoder().decode(bytes.subarray(at + 16, at + 16 + 17)), ALICE.email);
  // access (taints: 0), then no identities (a zero count), no region, no regions, then the node key.
  assertEquals(Array.from(bytes.subarray(at + 33, at + 40)), [0, 0, 0, 0, 0, 0, 0]);
  assertEquals(bytes.subarray(at + 40, at + 40 + NODE_KEY.length), NODE_KEY);
  // A region and the regions the node's traffic may cross: a string, then a list of strings.
  const placed = encode({ ...BASE, ...ALICE, region: "eu-west", regions: ["eu-west", "eu-north"] });
  assertEquals(Array.from(placed.subarray(at + 36, at + 45)), [0, 7, ...new TextEncoder().encode("eu-west")]);
  assertEquals(Array.from(placed.subarray(at + 45, at + 47)), [0, 2]);
  const { signed: _p, signature: _q, ...placedFields } = decodeCertificate(placed);
  assertEquals([placedFields.region, placedFields.regions], ["eu-west", ["eu-west", "eu-north"]]);
  // By teams, with two identity tags: 32 bytes each after their count.
  const tags = [new Uint8Array(32).fill(7), new Uint8Array(32).fill(8)];
  const teams = encode({ ...BASE, ...ALICE, access: 1, identities: tags });
  assertEquals(Array.from(teams.subarray(at + 33, at + 36)), [1, 0, 2]);
  assertEquals(teams.subarray(at + 36, at + 68), tags[0]);
  const { signed: _s, signature: _g, ...decoded } = decodeCertificate(teams);
  assertEquals([decoded.access, decoded.identities], [1, tags]);
  // Without an identity, the two fields are two zero lengths.
  const none = encode(BASE);
  const at0 = subjectOffset(none, BASE);
  assertEquals(Array.from(none.subarray(at0, at0 + 4)), [0, 0, 0, 0]);
  assertEquals(none.length, bytes.length - 29);
});

Deno.test("certificate wire: encoding refuses an identity out of its limits with a RangeError naming it", () => {
  const cases: [n: number, identity: { subject: string; email: string }, text: string][] = [
    [1, { subject: "s".repeat(MAX_SUBJECT_BYTES + 1), email: "" }, "subject is 256 bytes, the limit is 255"],
    [2, { subject: "ü".repeat(128), email: "" }, "subject is 256 bytes"],
    [3, { subject: "s", email: "e".repeat(MAX_EMAIL_BYTES + 1) }, "email is 255 bytes, the limit is 254"],
    [4, { subject: "", email: "alice@example.com" }, "an email needs a subject"],
    [5, { subject: "alice\u001b[2J", email: "" }, "subject contains a control character"],
    [6, { subject: "s", email: "alice@example.com\n" }, "email contains a control character"],
    [7, { subject: "s\u009b", email: "" }, "subject contains a control character"],
  ];
  for (const [n, identity, text] of cases) {
    assertThrows(() => encodeCertificateUnsigned({ ...BASE, ...identity }), RangeError, text);
    assertEquals(identityProblem(identity)?.includes(text), true, `case ${n}`);
  }
  assertEquals(identityProblem(ALICE), undefined);
  assertEquals(identityProblem({ subject: "", email: "" }), undefined);
});

Deno.test("certificate wire: decoding refuses each malformed certificate with a WireError saying why", () => {
  const good = encode({ ...BASE, ...ALICE });
  const at = subjectOffset(good, ALICE);
  const edit = (from: Uint8Array, f: (b: Uint8Array, view: DataView) => void) => {
    const b = from.slice();
    f(b, new DataView(b.buffer));
    return b;
  };
  // A genuine version 1 layout: no subject and no email between subnets and nodeKey.
  const none = encode(BASE);
  const at0 = subjectOffset(none, BASE);
  const version1 = Uint8Array.of(1, ...none.subarray(1, at0), ...none.subarray(at0 + 4));
  // The subject's length raised past the limit (the bytes after it are read as the subject).
  const longSubject = edit(good, (_, v) => v.setUint16(at, MAX_SUBJECT_BYTES + 1));
  const longEmail = edit(good, (_, v) => v.setUint16(at + 14, MAX_EMAIL_BYTES + 1));
  // An email with an empty subject: the subject's 12 bytes removed and its length zeroed.
  const emailOnly = Uint8Array.of(...good.subarray(0, at), 0, 0, ...good.subarray(at + 14));
  const escape = edit(good, (b) => b[at + 2] = 0x1b);
  const placed = encode({ ...BASE, ...ALICE, region: "eu", regions: ["us"] });
  const upperRegion = edit(placed, (b) => b[at + 38] = 0x45); // "Eu"
  const upperInList = edit(placed, (b) => b[at + 44] = 0x55); // "Us"
  const badUtf8 = edit(good, (b) => b[at + 16] = 0xff);
  const cases: [n: number, bytes: Uint8Array, reason: string, text: string][] = [
    [1, version1, "version", "version 1 is no longer read, this node reads only version 4"],
    [2, edit(good, (b) => b[0] = 5), "version", "version 5 is newer than this node reads (version 4)"],
    [3, edit(good, (b) => b[0] = 0), "version", "version 0 is no longer read"],
    [4, longSubject, "oversize", "subject is 256 bytes, the limit is 255"],
    [5, longEmail, "oversize", "email is 255 bytes, the limit is 254"],
    [6, emailOnly, "value", "an email needs a subject"],
    [7, escape, "value", "subject contains a control character"],
    [8, badUtf8, "encoding", "email is not valid UTF-8"],
    [9, good.subarray(0, at + 1), "truncated", "truncated at subject"],
    [10, Uint8Array.of(...good, 0), "trailing", "1 unexpected trailing bytes"],
    [11, new Uint8Array(0), "truncated", "truncated at version"],
    [12, upperRegion, "value", 'bad region "Eu"'],
    [13, upperInList, "value", 'bad region "Us" in regions'],
  ];
  for (const [n, bytes, reason, text] of cases) {
    const error = assertThrows(() => decodeCertificate(bytes), WireError, text);
    assertEquals(error.reason, reason, `case ${n}: ${error.message}`);
  }
});

Deno.test("certificate wire: decoding is total over 3000 hostile inputs, with and without an identity", () => {
  for (const [seed, fields] of [[31, { ...BASE, ...ALICE }], [32, BASE]] as const) {
    for (const { what, bytes } of mutants(encode(fields), 1500, { seed })) {
      try {
        decodeCertificate(bytes);
      } catch (error) {
        if (!(error instanceof WireError)) throw new Error(`${what}: ${error}`);
      }
    }
  }
});
