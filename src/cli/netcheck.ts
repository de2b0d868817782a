/**
 * `netcheck [--json]`: checks what this host's network lets the registered node do (netcheck/netcheck.ts) and
 * prints the report, as text to paste into a bug report or as the documented JSON object. Exits 0 when the
 * Guardian and the Master are reachable.
 * @module
 */

import { netcheck } from "../netcheck/netcheck.ts";
import { formatReport, resultLine } from "../netcheck/report.ts";
import { parse, UsageError } from "./args.ts";
import { registeredAs, savedForRun } from "./node.ts";
import { VERSION } from "../spec.ts";
import { shutdownWebRtc } from "../tether/webrtc.ts";
import type { Output } from "./main.ts";

/** This host's own addresses (to tell a mapped address that is not NATed). */
function localAddresses(): string[] {
  try {
    return Deno.networkInterfaces().map((i) => i.address.replace(/%.*$/, ""));
  } catch {
    return [];
  }
}

/** `netcheck [--json] [--config FILE] [--timeout 5s]`. */
export async function netcheckCommand(args: string[], io: Output): Promise<number> {
  const { values } = parse(args, {
    json: { type: "boolean", default: false },
    config: { type: "string" },
    timeout: { type: "string" },
  });
  const timeout = values.timeout === undefined ? undefined : /^(\d+)(ms|s)$/.exec(values.timeout);
  if (timeout === null) throw new UsageError(`--timeout is like 5s or 800ms, got "${values.timeout}"`);
  const timeoutMs = timeout ? Number(timeout[1]) * (timeout[2] === "s" ? 1000 : 1) : undefined;
  const saved = savedForRun(values.config);
  const reg = { ...registeredAs(saved), ...(saved?.conflux_id ? { confluxId: saved.conflux_id } : {}) };
  const report = await netcheck({ ...reg, localAddresses: localAddresses(), timeoutMs });
  shutdownWebRtc();
  if (values.json) {
    io.out(JSON.stringify(report, null, 2));
    if (!report.ok) io.err(`veilnet-conflux netcheck: ${resultLine(report)}`);
  } else io.out(formatReport(report, VERSION));
  return report.ok ? 0 : 1;
}
