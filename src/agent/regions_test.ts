import { assertEquals } from "../../tests/assert.ts";
import { allowedBetween, mayCross, type Placed, whyNoPath } from "./regions.ts";

const anywhere: Placed = { region: "us", regions: [] };
const euOnly: Placed = { region: "eu", regions: ["eu"] };
const euOrCh: Placed = { region: "ch", regions: ["eu", "ch"] };

Deno.test("regions: a third party carries traffic only in a region both ends allow; unplaced only where free", () => {
  const cases: [n: number, region: string, a: Placed, b: Placed, may: boolean][] = [
    [1, "us", anywhere, anywhere, true],
    [2, "", anywhere, anywhere, true], // nothing restricted: an unplaced relay is fine
    [3, "eu", euOnly, anywhere, true],
    [4, "us", euOnly, anywhere, false], // one end restricts: it decides
    [5, "us", anywhere, euOnly, false], // the traffic is the other end's too
    [6, "", euOnly, anywhere, false], // unplaced: never inside a restriction
    [7, "ch", euOnly, euOrCh, false], // both must allow it
    [8, "eu", euOnly, euOrCh, true],
  ];
  for (const [n, region, a, b, may] of cases) assertEquals(mayCross(region, a, b), may, `case ${n}`);
});

Deno.test("regions: what is allowed between two nodes, and why traffic waits", () => {
  assertEquals(allowedBetween(anywhere, anywhere), undefined);
  assertEquals(allowedBetween(euOnly, anywhere), ["eu"]);
  assertEquals(allowedBetween(euOrCh, euOnly), ["eu"]);
  assertEquals(allowedBetween({ region: "", regions: ["us"] }, euOnly), []);
  assertEquals(
    whyNoPath(euOnly, euOrCh, "us"),
    "waiting for the direct tether: relays and the backup pipeline may only be in eu, and no relay there " +
      "offered; the Master is in us",
  );
  assertEquals(
    whyNoPath({ region: "", regions: ["us"] }, euOnly, ""),
    "waiting for the direct tether: relays and the backup pipeline may only be in no region (the two nodes' " +
      "lists do not meet), and no relay there offered; the Master has no region",
  );
});
