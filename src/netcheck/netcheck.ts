/**
 * `netcheck`: what this host's network lets a node do, measured the way a node would meet it. It logs in with a
 * fresh key (a session of its own: ICE servers and Master credentials), then, at once: connects to the Master,
 * asks the first STUN server on its port and the next from one socket, gathers ICE candidates with every server
 * handed out, and tries each TURN server on its own.
 * @module
 */

import { guardianClient, guardianFetch, trustGuardianCa } from "../agent/guardian_client.ts";
import { probeNats } from "../control/nats.ts";
import { Identity } from "../crypto/identity.ts";
import type { LoginResponse } from "../guardian/guardian.ts";
import { gatherCandidates } from "../tether/webrtc.ts";
import {
  type Candidate,
  endpoint,
  firstStun,
  natBehaviour,
  type NetcheckReport,
  parseCandidate,
  redactTurn,
  type TurnCheck,
} from "./report.ts";
import { probeStun } from "./stun_probe.ts";

/** What netcheck needs: the saved registration, and this host's own addresses (to tell "no NAT"). */
export interface NetcheckOptions {
  guardian: string;
  token: string;
  /** The Guardian's realm CA (PEM), pinned at registration; undefined for a public certificate. */
  guardianCa?: string;
  confluxId?: string;
  localAddresses: string[];
  /** How long each UDP and ICE check waits (ms). */
  timeoutMs?: number;
}

const message = (error: unknown) => (error as Error).message ?? String(error);

/** The best of `n` sequential GET /healthz round trips (the first one also opens the connection). */
async function guardianRoundTrip(guardian: string, n = 3): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < n; i++) {
    const started = performance.now();
    const res = await guardianFetch(new URL("/healthz", guardian), { signal: AbortSignal.timeout(5_000) });
    await res.body?.cancel();
    if (!res.ok) throw new Error(`GET /healthz answered ${res.status}`);
    best = Math.min(best, performance.now() - started);
  }
  return best;
}

/** Runs every check; never throws for a failed check (the report says what failed). */
export async function netcheck(o: NetcheckOptions): Promise<NetcheckReport> {
  const timeoutMs = o.timeoutMs ?? 5_000;
  if (o.guardianCa !== undefined) trustGuardianCa(o.guardianCa);
  const report: NetcheckReport = {
    time: new Date().toISOString(),
    node: { ...(o.confluxId ? { confluxId: o.confluxId } : {}), guardian: o.guardian },
    guardian: { reachable: false },
    login: { ok: false, iceServers: [] },
    master: { reachable: false },
    udp: { reachable: false },
    mappings: [],
    nat: "unknown",
    candidates: [],
    turn: [],
    ok: false,
  };
  try {
    report.guardian = { reachable: true, rttMs: await guardianRoundTrip(o.guardian) };
  } catch (error) {
    report.guardian.error = `cannot reach ${o.guardian} (${message(error)}): check the Guardian URL in the ` +
      "saved configuration, name resolution, and that TCP to its port is allowed from here";
    report.login.error = "not tried: the Guardian is not reachable";
    report.master.error = "not tried: the Master's address and credentials come from the Guardian";
    report.udp.error = "not tried: the STUN server comes from the Guardian";
    return report;
  }
  let login: LoginResponse;
  try {
    login = await guardianClient.login(o.guardian, o.token, await Identity.generate());
  } catch (error) {
    const status = (error as { status?: number }).status;
    report.login.error = message(error) +
      (status === 401 || status === 403
        ? ": this node's registration was revoked or removed at the Guardian; register again"
        : status === 400
        ? ": check this host's clock"
        : "");
    report.master.error = "not tried: the login failed";
    report.udp.error = "not tried: the login failed";
    return report;
  }
  report.login = { ok: true, iceServers: login.ice_servers.map(redactTurn) };

  const stun = firstStun(login.ice_servers);
  const turnUrls = login.ice_servers.filter((u) => /^turns?:/.test(u));
  // The peer connections first: creating them takes the JavaScript thread for a while (libdatachannel's first
  // certificate), which would otherwise count in the round trips measured next.
  const gathering = gather(login.ice_servers, timeoutMs);
  const turning = Promise.all(turnUrls.map((url) => checkTurn(url, timeoutMs)));
  await new Promise((resolve) => setTimeout(resolve, 0));
  // The STUN round trips before the Master's: connecting signs with the NATS key in JavaScript, which holds the
  // thread for a while and would show up as STUN delay.
  const stunAndMaster = (async () => {
    const mappings = stun
      ? await probeStun(stun.host, {
        ports: [stun.port, stun.port + 1],
        timeoutMs: Math.min(timeoutMs, 2_500),
      })
      : [];
    const master = await probeNats({
      urls: login.nats.urls,
      ca: o.guardianCa,
      credentials: () => ({ jwt: login.nats.jwt, seed: login.nats.seed }),
      inboxPrefix: login.nats.inboxPrefix,
      name: "veilnet-conflux netcheck",
      timeoutMs,
    }).then(
      (p): NetcheckReport["master"] => ({
        reachable: true,
        server: p.server,
        connectMs: p.connectMs,
        rttMs: p.rttMs,
      }),
      (error): NetcheckReport["master"] => ({
        reachable: false,
        error: `cannot connect to ${login.nats.urls.join(", ")} (${message(error)}): check that TCP to the ` +
          "Master's port is allowed from here",
      }),
    );
    return { mappings, master };
  })();
  const [{ master, mappings }, candidates, turn] = await Promise.all([stunAndMaster, gathering, turning]);
  report.master = master;
  report.mappings = mappings;
  report.candidates = candidates.candidates;
  report.turn = turn;
  const first = mappings[0];
  if (!stun) report.udp.error = "no STUN server was handed out (the Guardian runs with --stun-port off)";
  else if (mappings.some((m) => m.mapped)) report.udp = { reachable: true, stunServer: first!.server };
  else {
    report.udp = {
      reachable: false,
      stunServer: first?.server,
      error: `no STUN answer from ${mappings.map((m) => m.server).join(" or ")} within ${
        Math.min(timeoutMs, 2_500) / 1000
      } s: UDP to the Guardian is dropped on the way (a firewall here or at the Guardian)`,
    };
  }
  report.publicAddress = mappings.find((m) => m.mapped)?.mapped;
  report.nat = natBehaviour(mappings, o.localAddresses);
  report.ok = report.guardian.reachable && report.master.reachable;
  return report;
}

/** ICE candidates with every handed-out server, as a tether would gather them. */
async function gather(iceServers: string[], timeoutMs: number): Promise<{ candidates: Candidate[] }> {
  try {
    const lines = await gatherCandidates(iceServers, timeoutMs);
    return { candidates: lines.map(parseCandidate).filter((c): c is Candidate => c !== undefined) };
  } catch {
    return { candidates: [] }; // a server URL libdatachannel refuses: the node itself would fail the same way
  }
}

/** One TURN server on its own: reachable when a relay candidate comes through it. */
async function checkTurn(url: string, timeoutMs: number): Promise<TurnCheck> {
  const server = redactTurn(url);
  try {
    const relay = (await gatherCandidates([url], timeoutMs)).map(parseCandidate).find((c) =>
      c?.type === "relay"
    );
    if (relay) return { server, reachable: true, relay: endpoint(relay.address, relay.port) };
    return {
      server,
      reachable: false,
      error: `no relay candidate within ${timeoutMs / 1000} s: UDP to it is blocked, or it refused the ` +
        "credentials (check that it shares the Guardian's --turn-secret-file secret, and the clocks)",
    };
  } catch (error) {
    return { server, reachable: false, error: message(error) };
  }
}
