import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import { mutants } from "../../tests/fuzz.ts";
import { BROADCAST, ControlKind } from "../wire/control.ts";
import { ControlRejected, ControlVerifier, SeenIds, signControl } from "./control_signing.ts";
import { bytesEqual, Identity, toHex } from "./identity.ts";

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
      kind: ControlKind.DnsQuery,
      recipient,
      certRef: CERT_REF,
      body: { certificate: new Uint8Array(8), tag: "web" },
    }, now);
  return { alice, bob, mallory, known, verifier, query };
}

Deno.test("control signing: a signed broadcast and a message to this node both verify", async () => {
  const { alice, bob, verifier, query } = await setup();
  const v = verifier();
  const m = await v.verify(await query(alice));
  assert(bytesEqual(m.sender, alice.nodeId));
  assertEquals(m.kind === ControlKind.DnsQuery && m.body.tag, "web");
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
