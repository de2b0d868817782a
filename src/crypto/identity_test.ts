import { assert, assertEquals, assertFalse } from "../../tests/assert.ts";
import { bytesEqual, Identity, nodeIdOf, sha256, toHex } from "./identity.ts";
import { noble } from "./pq.ts";

Deno.test("Identity: the node id is the first 16 bytes of SHA-256 of the public key", async () => {
  const identity = await Identity.generate();
  assertEquals(identity.publicKey.length, 1952);
  assertEquals(identity.nodeId, (await sha256(identity.publicKey)).subarray(0, 16));
  assertEquals(identity.id, toHex(await nodeIdOf(identity.publicKey)));
  assertEquals(identity.id.length, 32);
});

Deno.test("Identity: each start makes a new key pair and so a new id", async () => {
  const [a, b] = [await Identity.generate(), await Identity.generate()];
  assertFalse(bytesEqual(a.nodeId, b.nodeId));
});

Deno.test("Identity: a seeded identity is the same on either backend and signs verifiably", async () => {
  const seed = new Uint8Array(32).fill(3);
  const [fast, reference] = [
    await Identity.generate({ seed }),
    await Identity.generate({ seed, backend: noble }),
  ];
  assertEquals(fast.id, reference.id);
  const message = new TextEncoder().encode("hello");
  assert(await noble.verify(reference.publicKey, message, await fast.sign(message)));
});

Deno.test("bytesEqual compares length and content", () => {
  assert(bytesEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2)));
  assertFalse(bytesEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 3)));
  assertFalse(bytesEqual(Uint8Array.of(1, 2), Uint8Array.of(1, 2, 0)));
});
