/**
 * Concurrent multi-link: one TCP transfer from A to B over three paths shaped to 20 Mbit/s each (the direct one
 * and two relays, tests/multilink.ts), against what the paths can carry together and alone.
 * @module
 */

import { multilinkRealm, PATH_MBIT } from "../tests/multilink.ts";
import { netnsUnavailable } from "../tests/netns.ts";
import type { Figure } from "./crypto.ts";

const RUNS = 3;
const BYTES = 60 * 1024 * 1024;

export async function multilinkBench(): Promise<Figure[]> {
  const why = netnsUnavailable();
  if (why) return [{ name: "multi-link benchmark skipped", value: 0, unit: "", note: why }];
  await using m = await multilinkRealm();
  const figures: Figure[] = [];
  for (let run = 1; run <= RUNS; run++) {
    const t = await m.transfer(BYTES, 5300 + run);
    const shares = `direct ${(100 * (1 - t.relayed[0] - t.relayed[1])).toFixed(0)}%, ` +
      `c ${(100 * t.relayed[0]).toFixed(0)}%, d ${(100 * t.relayed[1]).toFixed(0)}%`;
    figures.push({
      name: `one TCP transfer over 3 x ${PATH_MBIT} Mbit/s, run ${run}`,
      value: t.mbit,
      unit: "Mbit/s",
      note:
        `${(t.mbit / (3 * PATH_MBIT)).toFixed(2)}x the three paths, ${
          (t.mbit / PATH_MBIT).toFixed(2)
        }x one; ` +
        `${shares}${t.intact ? "" : "; BYTES DIFFER"}`,
    });
  }
  return figures;
}
