/**
 * Node reports end to end (issue 20, item 3): each node tells the Guardians what it sees, signed, on a subject
 * only they hear, and `guardian node list` (through the admin API) shows it: a node's version and its peers with
 * their paths.
 */

import { assert, assertEquals } from "./assert.ts";
import { waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { reachingRealm } from "./faults.ts";

Deno.test({
  name: "reports: after a pings b, the Guardian's node list shows a's tether to b, as a reported it",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    const { realm, a } = await reachingRealm(["a", "b"]);
    await using _realm = realm;
    const g = realm.guardian;
    const list = (json: boolean) => g.viaApi(["node", "list", ...(json ? ["--json"] : [])]);
    const bId = ((await realm.node("b").status()).json.id) as string;
    type Listed = {
      tag: string;
      report?: {
        version: string;
        nat?: string;
        publicAddress?: string;
        peers: { id: string; path: string; link?: string }[];
      };
    };
    const started = Date.now();
    // The first packets may cross the backup pipeline while the tether forms, and be reported so: the tether's
    // opening is reported 2 s after it.
    const reported = await waitFor("a's report of its tether to b", 10_000, async () => {
      const nodes = JSON.parse(await list(true)) as Listed[];
      const peer = nodes.find((n) => n.tag === "a")?.report?.peers.find((p) => p.id === bId);
      return peer?.path === "direct" && peer;
    });
    console.log(
      `a's tether to b reported within ${((Date.now() - started) / 1000).toFixed(1)} s of the first ping`,
    );
    assert(reported.link === "tcp" || reported.link === "webrtc", JSON.stringify(reported));
    // Its NAT as the Guardian's STUN server saw it: none here, a's own address on the testbed.
    const own = realm.bed.host("a").address;
    const nat = await waitFor("a's NAT in its report", 10_000, async () => {
      const r = (JSON.parse(await list(true)) as Listed[]).find((n) => n.tag === "a")?.report;
      return r?.nat !== undefined && r;
    }).catch((e) => {
      throw new Error(`${e.message}\n${a.proc!.output}`);
    });
    assertEquals([nat.nat, nat.publicAddress?.split(":")[0]], ["none", own]);
    const line = (await list(false)).split("\n").find((l) => l.startsWith("a "));
    assert(line?.includes("v0.1.0 peers 1 direct"), `node list shows a's report: ${line}\n${a.proc!.output}`);
  },
});
