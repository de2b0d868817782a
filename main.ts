/**
 * veilnet-conflux: the composition root. Parses the command line and hands over; nothing else lives here.
 * @module
 */

import { main } from "./src/cli/main.ts";

if (import.meta.main) {
  const code = await main(Deno.args, {
    out: (line) => console.log(line),
    err: (line) => console.error(line),
  });
  Deno.exit(code);
}
