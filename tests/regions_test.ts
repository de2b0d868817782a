/**
 * Geo-location control end to end (issue 22): nodes in three regions in namespaces; the realm keeps its traffic
 * in one of them. A relay outside it never carries that traffic, nor does the Master (the backup pipeline), even
 * when it is the only path: then the traffic waits, and `peers` says why.
 */

import { assert, assertEquals } from "./assert.ts";
import { NodeProc, waitFor } from "./harness.ts";
import { Mallory } from "./mallory_client.ts";
import { netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";
import type { PeerStatus } from "../src/agent/status.ts";

Deno.test({
  name:
    "regions: traffic kept in eu takes the eu relay, never the us one nor the us Master, and waits without one",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    // a, c and d are in eu, b in us, and so is the Master; a and c cannot form a tether (UDP cut). Mallory, a
    // member in us too, answers a's route queries whatever it may carry (tests/mallory.ts).
    await using w = await realmOnTestbed(["a", "b", "c", "d"], [], {}, ["m"], {
      guardianFlags: ["--region", "us"],
    });
    await w.bed.cutUdp("a", "c");
    const g = w.guardian;
    for (const [name, region] of [["a", "eu"], ["b", "us"], ["c", "eu"], ["d", "eu"]]) {
      await g.viaApi(["node", "region", name, region!]);
    }
    await g.viaApi(["realm", "regions", "home", "--allow", "eu"]);
    const mNs = w.bed.host("m").ns.name;
    await using malloryNode = new NodeProc("mallory", `${g.dataDir}/../mallory`, { netns: mNs });
    const token = await g.admin(["token", "create", "--realm", "home", "--any-taints", "--region", "us"]);
    await malloryNode.register(g.url, token, ["--taints", "lab"]);
    await using mallory = new Mallory("mallory", mNs);
    const conflux = JSON.parse(await Deno.readTextFile(`${malloryNode.configDir}/conflux.json`))
      .token as string;
    await mallory.do("join", { guardian: g.url, ca: g.ca, token: conflux });
    assert((await mallory.do<{ found: boolean }>("lookup", { tag: "a" })).found, "a did not answer mallory");
    // Each change voids the nodes' certificates; they log in again and carry what was granted.
    for (const name of ["a", "b", "c", "d"]) {
      await waitFor(`${name} to carry its region`, 30_000, async () => {
        const s = (await w.node(name).status()).json;
        return (s.regions as string[] | undefined)?.join() === "eu" && s.region !== undefined;
      });
    }
    const a = w.node("a");
    const status = (await a.status()).json;
    assertEquals([status.region, status.regions, status.masterRegion], ["eu", ["eu"], "us"]);

    const c = await a.find("c");
    const ping = (count: number) =>
      w.bed.host("a").ns.exec("ping", ["-c", String(count), "-i", "0.05", "-W", "2", c.ips[0]!], {
        allowFailure: true,
      });
    const toC = async () => (await a.peers() as unknown as PeerStatus[]).find((p) => p.tag === "c");
    const cId = (await toC())!.nodeId;
    // Mallory answers a's first question about c, at once: "I reach c in 1 ms".
    const forged = mallory.do<{ queryAgeMs: number }>("forgeRouteAnswers", {
      to: "a",
      destination: cId,
      freshMs: 8_000,
      waitMs: 35_000,
    });
    // Both ways: c's answers need a relay of their own (the same d, found the same way).
    await waitFor(
      "a's traffic to c to take the relay in eu, and c's answers to come back",
      45_000,
      async () => {
        const answered = (await ping(1)).success;
        const p = await toC();
        return answered && p?.path === "relay" && p.via === "d";
      },
    );
    console.log(
      `mallory answered a's route query about c ${(await forged).queryAgeMs} ms after it was asked`,
    );
    const refused = await waitFor("a to refuse mallory's answer", 5_000, async () => {
      const d = (await a.status()).json.dropped as Record<string, number>;
      return (d["route:outside-regions"] ?? 0) >= 1 && d;
    });
    assertEquals(refused["route:forbidden-relay"] ?? 0, 0, "refused for another reason than its region");
    const run = await ping(100);
    const drops = async (name: string) => JSON.stringify((await w.node(name).status()).json.dropped);
    assert(
      run.text.includes(" 0% packet loss"),
      `${run.text}\na dropped ${await drops("a")}\nd dropped ${await drops("d")}`,
    );
    const relayedBy = async (name: string) =>
      ((await w.node(name).status()).json.relayed as { messages: number }).messages;
    assert(await relayedBy("d") >= 100, `d relayed ${await relayedBy("d")} messages`);
    assertEquals(await relayedBy("b"), 0, "the relay in us carried traffic kept in eu");
    const backupOf = async () => ((await a.status()).json.backup as { messages: number }).messages;
    assertEquals(await backupOf(), 0, "the Master in us carried traffic kept in eu");
    const toCNow = (await toC())!;
    assertEquals(toCNow.region, "eu");
    assert(
      !toCNow.routes?.some((r) => r.via === "b" || r.via === "mallory"),
      `b or mallory is among a's paths: ${JSON.stringify(toCNow.routes)}`,
    );

    // b itself refuses to carry traffic for c, which keeps its traffic in eu: Mallory sends it 20 messages for c
    // over a tether of her own (b knows c: it pinged it, directly, which no region forbids).
    const bNs = w.bed.host("b").ns;
    await waitFor(
      "b to reach c directly",
      20_000,
      async () => (await bNs.exec("ping", ["-c", "1", "-W", "1", c.ips[0]!], { allowFailure: true })).success,
    );
    assert((await mallory.do<{ found: boolean }>("lookup", { tag: "b" })).found, "b did not answer mallory");
    const bDropsBefore =
      ((await w.node("b").status()).json.dropped as Record<string, number>)["data:relay-forbidden"] ??
        0;
    const sent = await mallory.do<{ tether: boolean; sent: number }>("relay", {
      via: "b",
      destination: cId,
      count: 20,
    });
    assert(sent.tether && sent.sent === 20, JSON.stringify(sent));
    await waitFor("b to refuse all 20", 5_000, async () => {
      const d = (await w.node("b").status()).json.dropped as Record<string, number>;
      return (d["data:relay-forbidden"] ?? 0) - bDropsBefore >= 20;
    });
    assertEquals(await relayedBy("b"), 0, "b carried traffic kept out of its region");

    // Without the eu relay, only b (us) and the Master (us) could carry it: the traffic waits.
    await w.node("d").stop();
    await waitFor("a to see that no allowed path is left", 30_000, async () => {
      await ping(1);
      return (await toC())?.waiting !== undefined;
    });
    const cut = await ping(20);
    assert(cut.text.includes(" 100% packet loss"), cut.text);
    const waiting = (await toC())!;
    console.log(`a's view of c without the eu relay: path ${waiting.path}; ${waiting.waiting}`);
    assertEquals(waiting.path, "none");
    assert(waiting.waiting!.includes("only be in eu"), waiting.waiting);
    assertEquals(await relayedBy("b"), 0, "the relay in us carried traffic kept in eu");
    assertEquals(await backupOf(), 0, "the Master in us carried traffic kept in eu");
    const dropped = (await a.status()).json.dropped as Record<string, number>;
    assert((dropped["data:region"] ?? 0) > 0, JSON.stringify(dropped));

    // The realm lifts the restriction: the same traffic flows again, through b or the Master.
    await g.viaApi(["realm", "regions", "home", "--anywhere"]);
    await waitFor(
      "a to carry no restriction",
      30_000,
      async () => (await a.status()).json.regions === undefined,
    );
    await waitFor("a's traffic to c to flow again", 45_000, async () => (await ping(1)).success);
  },
});
