import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import { CONTROL_SIGNATURE_CONTEXT } from "../spec.ts";
import {
  BROADCAST,
  type ControlFields,
  ControlKind,
  encodeControlUnsigned,
  GUARDIAN_SENDER,
  LookupKind,
  NO_CERT_REF,
  withSignature,
} from "../wire/control.ts";
import { ControlRejected, ControlVerifier, SeenIds, signControl, signRevocation } from "./control_signing.ts";
import { bytesEqual, domainSeparated, Identity, toHex } from "./identity.ts";
import type { SigningKey } from "./pq.ts";

const NOW = 1_800_000_000_000;
const CERT_REF = new Uint8Array(16).fill(0xcc);

async function setup() {
  const [alice, bob, mallory] = [
    await Identity.generate(),
    await Identity.generate(),
    await Identity.generate(),
  ];
  const known = new Map([alice, bob, mallory].map((i) => [i.id, i.publicKey]));
  const verifier = (seen = new SeenIds()) =>
    new ControlVerifier({ self: bob.nodeId, clock: () => NOW, keys: (s) => known.get(toHex(s)), seen });
  const query = (from: Identity, recipient = BROADCAST, now = NOW) =>
    signControl(from, {
      kind: ControlKind.Lookup,
      recipient,
      certRef: CERT_REF,
      body: { certificate: new Uint8Array(8), what: LookupKind.Tag, key: new TextEncoder().encode("web") },
    }, now);
  return { alice, bob, mallory, known, verifier, query };
}

Deno.test("control signing: a signed broadcast and a message to this node both verify", async () => {
  const { alice, bob, verifier, query } = await setup();
  const v = verifier();
  const m = await v.verify(await query(alice));
  assert(bytesEqual(m.sender, alice.nodeId));
  assertEquals(m.kind === ControlKind.Lookup && new TextDecoder().decode(m.body.key), "web");
  await v.verify(await query(alice, bob.nodeId));
});

Deno.test("control signing: a sender whose known key does not hash to its id is refused", async () => {
  const { alice, mallory, known, verifier, query } = await setup();
  // The directory maps Alice's id to Mallory's key (a bad certificate lookup): the id check catches it.
  known.set(alice.id, mallory.publicKey);
  const error = await assertRejects(async () => verifier().verify(await query(alice)), ControlRejected);
  assertEquals(error.reason, "unknown-sender");
});

Deno.test("control signing: a sender with no known certificate is refused", async () => {
  const { alice, known, verifier, query } = await setup();
  known.delete(alice.id);
  const error = await assertRejects(async () => verifier().verify(await query(alice)), ControlRejected);
  assertEquals(error.reason, "unknown-sender");
});

Deno.test("control signing: no corruption of a signed message is ever accepted (600 hostile variants)", async () => {
  const { alice, verifier, query } = await setup();
  const genuine = await query(alice);
  const reasons = new Map<string, number>();
  for (const { what, bytes } of mutants(genuine, 600, { seed: 3 })) {
    // A fresh verifier each time, so a refusal is never just "replayed".
    const error = await assertRejects(() => verifier().verify(bytes), ControlRejected, undefined).catch(
      (e) => {
        throw new Error(`${what} was accepted`, { cause: e });
      },
    );
    reasons.set(error.reason, (reasons.get(error.reason) ?? 0) + 1);
  }
  assert((reasons.get("bad-signature") ?? 0) > 0 && (reasons.get("malformed") ?? 0) > 0, [...reasons].join());
});

Deno.test("control signing: SeenIds stays within its capacity and forgets expired ids first", () => {
  const seen = new SeenIds(3);
  assert(seen.add("a", 100, 0));
  assert(seen.add("b", 100, 0));
  assert(seen.add("c", 100, 0));
  assertEquals(seen.add("a", 100, 0), false);
  assert(seen.add("d", 100, 0)); // full: the oldest ("a") goes
  assertEquals(seen.size, 3);
  assert(seen.add("a", 100, 0));
  assert(seen.add("e", 300, 150)); // b, c, d, a have all expired at 150
  assertEquals(seen.size, 1);
});

// ---- The Guardian's Revoke ---------------------------------------------------------------------------------------

const CONFLUX = new Uint8Array(16).fill(0x42);

/** Signs `fields` with `key` under the control context, as a sender that bypasses signControl's checks would. */
async function forge(key: SigningKey, fields: Omit<ControlFields, "timestamp" | "id">, now = NOW) {
  const unsigned = encodeControlUnsigned({
    ...fields,
    timestamp: now,
    id: crypto.getRandomValues(new Uint8Array(16)),
  } as ControlFields);
  const context = new TextEncoder().encode(CONTROL_SIGNATURE_CONTEXT);
  return withSignature(unsigned, await key.sign(domainSeparated(context, unsigned)));
}

async function revocationSetup() {
  const base = await setup();
  const realm = await Identity.generate(); // the realm's key pair (the Guardian holds the private half)
  const verifier = (o: { realmKey?: Uint8Array; seen?: SeenIds } = { realmKey: realm.publicKey }) =>
    new ControlVerifier({
      self: base.bob.nodeId,
      clock: () => NOW,
      keys: (s) => base.known.get(toHex(s)),
      realmKey: o.realmKey,
      seen: o.seen,
    });
  const revoke = {
    kind: ControlKind.Revoke,
    recipient: BROADCAST,
    certRef: NO_CERT_REF,
    body: { conflux: CONFLUX, before: NOW - 5 },
  };
  return { ...base, realm, verifier, revoke };
}

Deno.test("control signing: a Revoke signed by the realm key is accepted, with its body", async () => {
  const { realm, verifier } = await revocationSetup();
  const m = await verifier().verify(
    await signRevocation(realm.key, { conflux: CONFLUX, before: NOW - 5 }, NOW),
  );
  assertEquals(m.kind, ControlKind.Revoke);
  assert(m.kind === ControlKind.Revoke && bytesEqual(m.body.conflux, CONFLUX) && m.body.before === NOW - 5);
  assert(bytesEqual(m.sender, GUARDIAN_SENDER) && bytesEqual(m.recipient, BROADCAST));
});

Deno.test("control signing: a Revoke is refused unless the realm key signed it from the all-zero sender", async () => {
  const { alice, realm, verifier, revoke } = await revocationSetup();
  const cases: [n: number, message: Uint8Array, reason: string, verifier?: ControlVerifier][] = [
    // A node signs a Revoke with its own key, claiming to be the Guardian: the realm key does not verify it.
    [1, await forge(alice.key, { ...revoke, sender: GUARDIAN_SENDER }), "bad-signature"],
    // A node signs a Revoke in its own name (its key is known): only the all-zero sender may revoke.
    [2, await forge(alice.key, { ...revoke, sender: alice.nodeId }), "bad-sender"],
    // The realm key's genuine signature, but the message claims a node as its sender.
    [3, await forge(realm.key, { ...revoke, sender: alice.nodeId }), "bad-sender"],
    // Another kind from the all-zero sender, even signed by the realm key.
    [
      4,
      await forge(realm.key, {
        kind: ControlKind.Lookup,
        sender: GUARDIAN_SENDER,
        recipient: BROADCAST,
        certRef: NO_CERT_REF,
        body: { certificate: new Uint8Array(8), what: LookupKind.Tag, key: new Uint8Array(3) },
      }),
      "bad-sender",
    ],
    // Another realm's key.
    [5, await signRevocation((await Identity.generate()).key, revoke.body, NOW), "bad-signature"],
    // A node that knows no realm key accepts no Revoke at all.
    [6, await signRevocation(realm.key, revoke.body, NOW), "unknown-sender", verifier({})],
  ];
  for (const [n, message, reason, v] of cases) {
    const error = await assertRejects(() => (v ?? verifier()).verify(message), ControlRejected);
    assertEquals(error.reason, reason, `case ${n}: ${error.message}`);
  }
});

Deno.test("control signing: a node's code cannot sign a Revoke at all", async () => {
  const { alice, revoke } = await revocationSetup();
  await assertRejects(
    // @ts-expect-error: signControl takes only the kinds a node sends.
    () => signControl(alice, revoke, NOW),
    TypeError,
    "only the Guardian",
  );
});

Deno.test("control signing: a Revoke seen before, or dated outside the skew, is refused", async () => {
  const { realm, verifier, revoke } = await revocationSetup();
  const v = verifier();
  const genuine = await signRevocation(realm.key, revoke.body, NOW);
  await v.verify(genuine);
  assertEquals((await assertRejects(() => v.verify(genuine), ControlRejected)).reason, "replayed");
  for (const at of [NOW - 30_001, NOW + 30_001]) {
    const error = await assertRejects(
      async () => verifier().verify(await signRevocation(realm.key, revoke.body, at)),
      ControlRejected,
    );
    assertEquals(error.reason, "stale", `dated ${at - NOW} ms`);
  }
  // Within the skew, it passes.
  await verifier().verify(await signRevocation(realm.key, revoke.body, NOW - 30_000));
});

Deno.test("control signing: no corruption of a signed Revoke is ever accepted (300 hostile variants)", async () => {
  const { realm, verifier, revoke } = await revocationSetup();
  const genuine = await signRevocation(realm.key, revoke.body, NOW);
  for (const { what, bytes } of mutants(genuine, 300, { seed: 10 })) {
    await assertRejects(() => verifier().verify(bytes), ControlRejected).catch((e) => {
      throw new Error(`${what} was accepted`, { cause: e });
    });
  }
});
