import { assert, assertEquals } from "../../tests/assert.ts";
import { identityTag, sharesIdentity } from "./identity_tags.ts";

const key = (n: number) => new Uint8Array(1952).fill(n);
const secret = (n: number) => new Uint8Array(32).fill(n);

Deno.test("identity tags: bound to the identity's secret and to the node's key; recognised only with the secret", () => {
  const team = secret(1);
  const tag = identityTag(team, key(1));
  assertEquals(tag.length, 32);
  assertEquals(identityTag(team, key(1)), tag); // the same for whoever holds the secret
  assert(!identityTag(team, key(2)).every((b, i) => b === tag[i]), "another key, another tag");
  assert(!identityTag(secret(2), key(1)).every((b, i) => b === tag[i]), "another identity, another tag");
  // A peer holding the team recognises it; one without does not.
  assert(sharesIdentity([secret(9), team], { nodeKey: key(1), identities: [tag] }));
  assertEquals(sharesIdentity([secret(9)], { nodeKey: key(1), identities: [tag] }), false);
  // Another node's tag presented with one's own key is worth nothing (bound to the key it was made for).
  assertEquals(sharesIdentity([team], { nodeKey: key(2), identities: [tag] }), false);
  assertEquals(sharesIdentity([], { nodeKey: key(1), identities: [tag] }), false);
});
