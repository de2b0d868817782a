/**
 * What `netcheck` found, as one documented type (`netcheck --json` prints exactly this), and the pure parts of
 * reading it: NAT behaviour from two STUN mappings, ICE candidate lines, and the text a user pastes into a bug
 * report. No I/O here: netcheck.ts measures, this file judges and writes.
 * @module
 */

/** How the NAT in front of this host maps one local UDP socket towards two destinations. */
export type NatBehaviour =
  /** The address STUN saw is one of this host's own: no NAT on the way. */
  | "none"
  /** The same public address and port towards both STUN ports: peers can reach the mapping STUN saw. */
  | "endpoint-independent"
  /** A different public port (or address) per destination (port-randomising, "symmetric"): direct UDP between two
   * such hosts rarely forms; TURN or a relay carries it. */
  | "endpoint-dependent"
  /** Not enough answers to tell (UDP blocked, or only one STUN port answered). */
  | "unknown";

/** One STUN server port asked from the same local socket. */
export interface StunMapping {
  /** "host:port" asked. */
  server: string;
  /** "address:port" it saw, when it answered. */
  mapped?: string;
  rttMs?: number;
}

/** One ICE candidate this host would offer. */
export interface Candidate {
  type: string;
  address: string;
  port: number;
}

/** A TURN server handed out at login, tried on its own. */
export interface TurnCheck {
  /** "turn:host:port" (credentials left out). */
  server: string;
  /** A relay candidate was gathered through it. */
  reachable: boolean;
  /** "address:port" of the relay. */
  relay?: string;
  error?: string;
}

/** The whole report: `netcheck --json`. Fields are only ever added. */
export interface NetcheckReport {
  /** ISO 8601, when the check started. */
  time: string;
  node: { confluxId?: string; guardian: string };
  /** HTTP GET /healthz: the best of a few round trips. */
  guardian: { reachable: boolean; rttMs?: number; error?: string };
  /** A login with a fresh key (a session of its own, for this check only): ICE servers and Master credentials. */
  login: { ok: boolean; error?: string; iceServers: string[] };
  /** A connection with those credentials: connect time and the best PING round trip. */
  master: { reachable: boolean; server?: string; connectMs?: number; rttMs?: number; error?: string };
  /** Whether UDP reaches the STUN server the Guardian hands out first ("host:port"), asked from one socket. */
  udp: { reachable: boolean; stunServer?: string; error?: string };
  /** The public address and port STUN saw, "address:port". */
  publicAddress?: string;
  /** Each STUN port (N and N+1) and what it saw. */
  mappings: StunMapping[];
  nat: NatBehaviour;
  /** What a tether would offer with the handed-out ICE servers. */
  candidates: Candidate[];
  turn: TurnCheck[];
  /** The Guardian and the Master are reachable: the exit status is 0 exactly then. */
  ok: boolean;
}

/** The NAT behaviour shown by `mappings` (asked from one local socket), given this host's own addresses. */
export function natBehaviour(mappings: StunMapping[], localAddresses: string[]): NatBehaviour {
  const seen = mappings.map((m) => m.mapped).filter((m): m is string => m !== undefined);
  if (seen.length === 0) return "unknown";
  if (seen.some((m) => localAddresses.includes(addressOf(m)))) return "none";
  if (seen.length < 2) return "unknown";
  return seen.every((m) => m === seen[0]) ? "endpoint-independent" : "endpoint-dependent";
}

/** The address part of "address:port" or "[v6]:port". */
export function addressOf(endpoint: string): string {
  return endpoint.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
}

/** "address:port", with IPv6 in brackets. */
export function endpoint(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

/** Parses "candidate:FOUNDATION COMPONENT TRANSPORT PRIORITY ADDRESS PORT typ TYPE ..." (with or without "a="). */
export function parseCandidate(line: string): Candidate | undefined {
  const f = line.replace(/^a=/, "").split(" ");
  const port = Number(f[5]);
  if (!f[0]?.startsWith("candidate:") || f[6] !== "typ" || !f[7] || !Number.isInteger(port)) return undefined;
  return { type: f[7], address: f[4]!, port };
}

/** A TURN URL without its credentials: "turn:host:port". */
export function redactTurn(url: string): string {
  return url.replace(/^(turns?:)[^@]*@/, "$1").replace(/\?.*$/, "");
}

const ms = (n: number | undefined) => n === undefined ? "" : ` ${n < 10 ? n.toFixed(1) : Math.round(n)} ms`;

const NAT_TEXT: Record<NatBehaviour, string> = {
  "none": "none: STUN saw one of this host's own addresses",
  "endpoint-independent":
    "endpoint-independent mapping (one public address:port towards both STUN ports): peers can reach it directly",
  "endpoint-dependent": 'endpoint-dependent mapping (a new public port per destination, "symmetric" NAT): ' +
    "direct tethers between two such hosts rarely form; TURN or a relay carries them",
  "unknown": "unknown",
};

/** The report as text a user can paste into a bug report: one `name  value` line per finding. */
export function formatReport(r: NetcheckReport, version: string): string {
  const rows: [string, string][] = [];
  const add = (name: string, value: string) => rows.push([name, value]);
  add("netcheck", `veilnet-conflux ${version}, ${r.time}`);
  add("node", `${r.node.confluxId ?? "(conflux id not saved)"}, Guardian ${r.node.guardian}`);
  add(
    "guardian",
    r.guardian.reachable
      ? `reachable, round trip${ms(r.guardian.rttMs)} (GET /healthz)`
      : `NOT REACHABLE: ${r.guardian.error}`,
  );
  add("login", r.login.ok ? "ok (a session of its own, for this check)" : `FAILED: ${r.login.error}`);
  add(
    "master",
    r.master.reachable
      ? `reachable at ${r.master.server}, round trip${ms(r.master.rttMs)} (connected in${
        ms(r.master.connectMs)
      })`
      : `NOT REACHABLE: ${r.master.error}`,
  );
  add(
    "udp",
    r.udp.reachable
      ? `reaches STUN at ${r.udp.stunServer}`
      : r.udp.stunServer
      ? `BLOCKED: ${r.udp.error}`
      : `not checked: ${r.udp.error}`,
  );
  for (const m of r.mappings) {
    add("stun", `${m.server}: ${m.mapped ? `sees ${m.mapped},${ms(m.rttMs)}` : "no answer"}`);
  }
  if (r.publicAddress) add("public", `${r.publicAddress} (as STUN saw it)`);
  add("nat", NAT_TEXT[r.nat]);
  add(
    "candidates",
    r.candidates.length === 0
      ? "none"
      : r.candidates.map((c) => `${c.type} ${endpoint(c.address, c.port)}`).join(", "),
  );
  if (r.turn.length === 0) add("turn", "none handed out");
  for (const t of r.turn) {
    add("turn", t.reachable ? `${t.server}: relay ${t.relay}` : `${t.server}: NO RELAY: ${t.error}`);
  }
  add("result", resultLine(r));
  const width = Math.max(...rows.map(([n]) => n.length));
  return rows.map(([n, v]) => `${n.padEnd(width)}  ${v}`).join("\n");
}

/** One line: OK, or what failed and what to check. */
export function resultLine(r: NetcheckReport): string {
  if (r.ok) {
    return r.udp.reachable
      ? "OK: the Guardian and the Master are reachable"
      : "OK: the Guardian and the Master are reachable (over TCP); UDP is not, so tethers cannot form from here " +
        "and traffic takes the backup pipeline through the Master";
  }
  if (!r.guardian.reachable) return `FAILED: the Guardian is not reachable (${r.guardian.error})`;
  if (!r.login.ok) return `FAILED: the Guardian refused the login (${r.login.error})`;
  return `FAILED: the Master is not reachable (${r.master.error})`;
}

/** The first `stun:` server handed out, as host and port. */
export function firstStun(iceServers: string[]): { host: string; port: number } | undefined {
  for (const url of iceServers) {
    const m = /^stun:(\[[^\]]+\]|[^:?]+)(?::(\d+))?/.exec(url);
    if (m) return { host: m[1]!, port: Number(m[2] ?? 3478) };
  }
  return undefined;
}
