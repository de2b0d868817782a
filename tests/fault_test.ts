/**
 * Faults of the control plane under traffic (issue 19): a pings b ten times a second over an open tether while
 * the Master is killed, then the Guardian, and both come back. Liveness of a peer with an open tether comes from
 * the tether, so traffic goes on, and the nodes take up their sessions again without tearing the tether down.
 */

import { assert } from "./assert.ts";
import { Proc, waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";

/** Pings, from `ping -D` output: how many were sent, answered, and the longest run of unanswered ones. */
function pingFigures(output: string): { sent: number; answered: number; longestGap: number } {
  const m = /(\d+) packets transmitted, (\d+) received/.exec(output);
  const seqs = [...output.matchAll(/icmp_seq=(\d+)/g)].map((s) => Number(s[1]));
  let longestGap = 0;
  let last = 0;
  for (const s of seqs) {
    longestGap = Math.max(longestGap, s - last - 1);
    last = s;
  }
  const sent = Number(m?.[1] ?? 0);
  return { sent, answered: Number(m?.[2] ?? 0), longestGap: Math.max(longestGap, sent - last) };
}

/**
 * A realm of a and b in namespaces with a tether between them, and `ping(count)`: a pinging b ten times a second
 * (with `-D` timestamps), as a process whose output the test reads.
 */
async function pingingRealm(guardian: { certTtl?: string } = {}) {
  const realm = await realmOnTestbed(["a", "b"], [], {}, [], guardian);
  const a = realm.node("a");
  const ns = realm.bed.host("a").ns;
  let b;
  try {
    b = (await waitFor("a to find b", 15_000, async () => (await a.resolve("b"))[0]))!;
    const address = b.ips[0]!;
    await waitFor(
      "the tether",
      20_000,
      async () => (await ns.exec("ping", ["-c", "1", "-W", "1", address], { allowFailure: true })).success,
    );
  } catch (error) {
    await realm[Symbol.asyncDispose]();
    throw error;
  }
  const ping = (count: number) =>
    new Proc("ping", "ip", [
      "netns",
      "exec",
      ns.name,
      "ping",
      "-D",
      "-i",
      "0.1",
      "-c",
      String(count),
      "-W",
      "1",
      b.ips[0]!,
    ]);
  return { realm, a, ns, ping };
}

/** Resolves `s` seconds after `started`. */
function at(started: number, s: number): Promise<void> {
  return new Promise((r) => setTimeout(r, Math.max(0, started + s * 1000 - Date.now())));
}

Deno.test({
  name:
    "faults: Master killed at 5 s, Guardian at 15 s, both back at 25 s: a's pings to b go on, the tether stays",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    const { realm, a, ping: pinging } = await pingingRealm();
    await using _realm = realm;
    await waitFor("a to log its tether", 5_000, () => a.proc!.output.includes("tether to b open"));
    const tethersBefore = a.proc!.output.split("tether to b open").length;
    const count = 350; // 35 s at 10 a second
    await using ping = pinging(count);
    const started = Date.now();
    await at(started, 5);
    // The Guardian's embedded Master: killed on its own, as if it crashed.
    const master = await new Deno.Command("pkill", {
      args: ["-KILL", "-f", `${realm.guardian.dataDir}/nats.conf`],
    }).output();
    assert(master.success, "the Master was running");
    await at(started, 15);
    await realm.guardian.proc!.stop("SIGKILL");
    await at(started, 25);
    await realm.guardian.start(); // and its Master with it
    await waitFor("the pings to end", 30_000, () => ping.output.includes("packet loss"));
    const figures = pingFigures(ping.output);
    await waitFor("a to be back on the Master", 20_000, async () => {
      const s = (await a.status()).json as { connected: { master: boolean; guardian: boolean } };
      return s.connected.master && s.connected.guardian;
    });
    const tethersAfter = a.proc!.output.split("tether to b open").length;
    console.log(
      `control-plane outage: ${figures.answered}/${figures.sent} pings answered, longest gap ${figures.longestGap} ` +
        `pings (${figures.longestGap * 100} ms); tether formed again ${tethersAfter - tethersBefore} times`,
    );
    assert(figures.sent === count, ping.output.slice(-500));
    assert(
      figures.answered >= count * 0.99,
      `under 1% loss: ${figures.answered}/${count}\n${a.proc!.output}`,
    );
    assert(tethersAfter === tethersBefore, `the working tether was torn down:\n${a.proc!.output}`);
  },
});

Deno.test({
  name: "faults: a's underlay link down for 10 s and back: a's pings to b resume within 3 s of its return",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    const { realm, a, ns, ping: pinging } = await pingingRealm();
    await using _realm = realm;
    const count = 250; // 25 s at 10 a second: the link goes down at 5 s and comes back at 15 s
    await using ping = pinging(count);
    const started = Date.now();
    await at(started, 5);
    await ns.exec("ip", ["link", "set", "eth0", "down"]);
    await at(started, 15);
    await ns.exec("ip", ["link", "set", "eth0", "up"]);
    await waitFor("the pings to end", 30_000, () => ping.output.includes("packet loss"));
    const figures = pingFigures(ping.output);
    const down = 100; // pings sent while the link was down
    console.log(
      `underlay link down 10 s: ${figures.answered}/${figures.sent} pings answered, longest gap ` +
        `${figures.longestGap} pings (${figures.longestGap * 100} ms, of which ${
          down * 100
        } ms with the link down)`,
    );
    assert(figures.sent === count, ping.output.slice(-500));
    assert(
      figures.longestGap <= down + 30,
      `traffic resumed more than 3 s after the link:\n${a.proc!.output}`,
    );
    assert(figures.answered >= count - down - 30, `${figures.answered}/${count}\n${a.proc!.output}`);
  },
});

Deno.test({
  name: "faults: certificates that expire while the Guardian is down end traffic, and the node says why",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    const { realm, a, ping: pinging } = await pingingRealm({ certTtl: "20s" });
    await using _realm = realm;
    await realm.guardian.proc!.stop("SIGKILL"); // no renewal from now on: every certificate ends within 20 s
    const expires = ((await a.status()).json as { certificateExpiresAt: number }).certificateExpiresAt;
    const count = 350;
    await using ping = pinging(count);
    await waitFor("the pings to end", 60_000, () => ping.output.includes("packet loss"));
    // -D prints when each answer came: the last one, against the certificates' end.
    const answers = [...ping.output.matchAll(/^\[(\d+\.\d+)\].*icmp_seq=/gm)].map((m) => Number(m[1]) * 1000);
    const lastAnswer = answers.at(-1) ?? 0;
    console.log(
      `certificates expiring with the Guardian down: ${answers.length}/${count} pings answered, the last ` +
        `${((lastAnswer - expires) / 1000).toFixed(1)} s after a's certificate ended`,
    );
    assert(answers.length > 0, "traffic flowed while the certificates were valid");
    assert(lastAnswer < expires + 8_000, "traffic ended within 8 s of the certificates' end");
    assert(
      a.proc!.output.includes("certificate expired"),
      `a says why its traffic stopped:\n${a.proc!.output}`,
    );
  },
});
