import { assertEquals } from "../../tests/assert.ts";
import { mayCommunicate } from "./access.ts";

const R1 = new Uint8Array(16).fill(1);
const R2 = new Uint8Array(16).fill(2);

// Each row: taints of a, taints of b, same realm?, may they talk? (The seeds' examples are rows 1-4.)
const TABLE: [n: number, a: string[], b: string[], sameRealm: boolean, expected: boolean][] = [
  [1, ["dev", "stage"], ["dev"], true, true], // staging server talks to a dev server (subset)
  [2, ["dev", "stage"], ["dev", "stage"], true, true],
  [3, ["prod"], ["prod"], true, true],
  [4, ["prod"], ["dev"], true, false],
  [5, ["a", "b"], ["b", "c"], true, false], // overlap is not enough: neither contains the other
  [6, [], ["dev"], true, false], // no taints: no peers
  [7, [], [], true, false],
  [8, ["dev"], ["dev"], false, false], // another realm
  [9, ["dev", "dev"], ["dev"], true, true], // duplicates do not matter
];

Deno.test("access: the taint rule, row by row, holds both ways", () => {
  for (const [n, ta, tb, sameRealm, expected] of TABLE) {
    const a = { realm: R1, taints: ta };
    const b = { realm: sameRealm ? R1 : R2, taints: tb };
    assertEquals(mayCommunicate(a, b), expected, `row ${n}`);
    assertEquals(mayCommunicate(b, a), expected, `row ${n} reversed`);
  }
});
