/**
 * `deno task bench`: runs every benchmark section and prints its figures. Speed is measured here, never asserted
 * in tests. `deno task bench -- crypto` runs one section.
 * @module
 */

import { controlBench } from "./control.ts";
import { controlSimBench } from "./control_sim.ts";
import { cryptoBench, type Figure } from "./crypto.ts";
import { guardianBench } from "./guardian.ts";
import { multilinkBench } from "./multilink.ts";
import { tunBench } from "./tun.ts";
import { tunnelBench } from "./tunnel.ts";

const SECTIONS: Record<string, () => Promise<Figure[]>> = {
  crypto: () => cryptoBench(),
  tun: () => tunBench(),
  tunnel: () => tunnelBench(),
  multilink: () => multilinkBench(),
  control: () => controlBench(),
  "control-sim": () => controlSimBench(),
  guardian: () => guardianBench(),
};

const wanted = Deno.args.length > 0 ? Deno.args : Object.keys(SECTIONS);
for (const name of wanted) {
  const section = SECTIONS[name];
  if (!section) {
    console.error(`bench: unknown section "${name}"; sections: ${Object.keys(SECTIONS).join(", ")}`);
    Deno.exit(2);
  }
  console.log(`\n== ${name}`);
  for (const f of await section()) {
    const value = f.value >= 100 ? f.value.toFixed(0) : f.value.toFixed(2);
    console.log(`${f.name.padEnd(44)} ${value.padStart(10)} ${f.unit.padEnd(7)} ${f.note ?? ""}`);
  }
}
