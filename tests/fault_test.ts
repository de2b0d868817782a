/**
 * Faults of the control plane under traffic (issue 19): pings ten a second and a paced TCP transfer checked by
 * hash run from a to b while the Master or the Guardian fails. Liveness of a peer with an open tether comes from
 * the tether, so traffic goes on, and the nodes take up their sessions again without tearing the tether down.
 * Each test prints its figures (tests/faults.ts) and holds them to a stated bound.
 */

import { assert } from "./assert.ts";
import { Proc, waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { assertBounds, at, describeFigures, Flow, reachingRealm } from "./faults.ts";

const ignore = netnsUnavailable() !== undefined;

Deno.test({
  name:
    "faults: Master killed at 5 s, Guardian at 15 s, both back at 25 s: traffic goes on, the tether stays",
  ignore,
  async fn() {
    const { realm, a, address } = await reachingRealm(["a", "b"]);
    await using _realm = realm;
    await waitFor("a to log its tether", 5_000, () => a.proc!.output.includes("tether to b open"));
    const tethersBefore = a.proc!.output.split("tether to b open").length;
    await using flow = await Flow.start(realm.bed, "a", "b", address, 35);
    await at(flow.started, 5);
    // The Guardian's embedded Master: killed on its own, as if it crashed.
    const master = await new Deno.Command("pkill", {
      args: ["-KILL", "-f", `${realm.guardian.dataDir}/nats.conf`],
    }).output();
    assert(master.success, "the Master was running");
    await at(flow.started, 15);
    await realm.guardian.proc!.stop("SIGKILL");
    await at(flow.started, 25);
    await realm.guardian.start(); // and its Master with it
    const figures = await flow.figures();
    await waitFor("a to be back on the Master", 20_000, async () => {
      const s = (await a.status()).json as { connected: { master: boolean; guardian: boolean } };
      return s.connected.master && s.connected.guardian;
    });
    const tethersAfter = a.proc!.output.split("tether to b open").length;
    console.log(
      describeFigures("Master down 5-25 s, Guardian down 15-25 s", figures) +
        `; tether formed again ${tethersAfter - tethersBefore} times`,
    );
    const { pings, transfer } = figures;
    assert(pings.sent === 350, flow.ping.output.slice(-500));
    assert(pings.answered >= 350 * 0.99, `bound: under 1% of pings lost\n${a.proc!.output}`);
    assert(transfer.intact, `bound: every byte delivered, once\n${a.proc!.output}`);
    assert(tethersAfter === tethersBefore, `the working tether was torn down:\n${a.proc!.output}`);
  },
});

Deno.test({
  name: "faults: with three nats-servers and traffic on the backup pipeline, the server a uses is killed",
  ignore,
  async fn() {
    // UDP between a and b is cut: no tether, so everything a sends b crosses the Master.
    const { realm, a, ns, address } = await reachingRealm(["a", "b"], {
      masters: 3,
      beforeFirstPing: (r) => r.bed.cutUdp("a", "b"),
    });
    await using _realm = realm;
    const server = async () => {
      const ss = await ns.exec("ss", ["-tnH", "state", "established"]);
      const peers = ss.text.split(/\s+/);
      return realm.masters.find((m) => peers.includes(`${realm.bed.hub}:${m.port}`));
    };
    const used = await waitFor("a's server", 5_000, server);
    await using flow = await Flow.start(realm.bed, "a", "b", address, 20);
    await at(flow.started, 5);
    await used.proc.stop("SIGKILL");
    const figures = await flow.figures();
    const now = await waitFor("a on another server", 10_000, server);
    const path = (await a.peers() as unknown as { tag: string; path: string }[]).find((p) => p.tag === "b")
      ?.path;
    console.log(
      describeFigures(
        `nats-server ${realm.masters.indexOf(used)} of 3 killed at 5 s (path ${path})`,
        figures,
      ),
    );
    assert(now !== used);
    assert(path === "backup", `the traffic crossed the Master: path ${path}`);
    assertBounds(figures, 3, a.proc!.output);
  },
});

Deno.test({
  name: "faults: certificates that expire while the Guardian is down end traffic, and the node says why",
  ignore,
  async fn() {
    const { realm, a, ns, address } = await reachingRealm(["a", "b"], { certTtl: "20s" });
    await using _realm = realm;
    await realm.guardian.proc!.stop("SIGKILL"); // no renewal from now on: every certificate ends within 20 s
    const expires = ((await a.status()).json as { certificateExpiresAt: number }).certificateExpiresAt;
    const count = 350;
    await using ping = new Proc("ping", "ip", [
      ..."netns exec".split(" "),
      ns.name,
      ...`ping -D -i 0.1 -W 1 -c ${count} ${address}`.split(" "),
    ]);
    await waitFor("the pings to end", 60_000, () => ping.output.includes("packet loss"));
    // -D prints when each answer came: the last one, against the certificates' end.
    const answers = [...ping.output.matchAll(/^\[(\d+\.\d+)\].*icmp_seq=/gm)].map((m) => Number(m[1]) * 1000);
    const lastAnswer = answers.at(-1) ?? 0;
    console.log(
      `certificates expiring with the Guardian down: ${answers.length}/${count} pings answered, the last ` +
        `${((lastAnswer - expires) / 1000).toFixed(1)} s after a's certificate ended`,
    );
    assert(answers.length > 0, "traffic flowed while the certificates were valid");
    assert(lastAnswer < expires + 8_000, "bound: traffic ended within 8 s of the certificates' end");
    assert(
      a.proc!.output.includes("certificate expired"),
      `a says why its traffic stopped:\n${a.proc!.output}`,
    );
  },
});
