/**
 * Relaying end to end: when two nodes cannot form a tether (UDP between them dropped with nftables), traffic
 * goes through a third node that can reach both, which forwards what it cannot read.
 */

import { assert, assertEquals } from "./assert.ts";
import { waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";
import type { PeerStatus } from "../src/agent/status.ts";

const ignore = netnsUnavailable() !== undefined;

Deno.test({
  name: "relay: with UDP between A and C cut, A reaches C through B without loss, and B cannot read it",
  ignore,
  async fn() {
    await using w = await realmOnTestbed(["a", "b", "c"]);
    await w.bed.cutUdp("a", "c");
    const a = w.node("a");
    const b = w.node("b");
    const c = await a.find("c");
    const address = c.ips[0]!;
    const ping = (count: number) =>
      w.bed.host("a").ns.exec("ping", ["-c", String(count), "-i", "0.05", "-W", "2", address], {
        allowFailure: true,
      });
    // Until the relay carries it (the very first packets may cross the backup pipeline while tethers form).
    await waitFor("a's traffic to c to go through the relay", 30_000, async () => {
      await ping(1);
      return (await a.peers() as unknown as { tag: string; path: string }[]).find((p) => p.tag === "c")
        ?.path ===
        "relay";
    });
    const run = await ping(100);
    assert(run.text.includes(" 0% packet loss"), run.text);

    const seen = (await a.peers() as unknown as PeerStatus[]).find((p) => p.tag === "c")!;
    assertEquals([seen.path, seen.via], ["relay", "b"]);
    // peers --json shows the paths the learner weighs: the relay carried (nearly) everything lately.
    const viaB = seen.routes?.find((r) => r.via === "b");
    assert(viaB && viaB.share > 0.9 && viaB.rttMs !== undefined, JSON.stringify(seen.routes));
    assert(seen.routes?.some((r) => r.via === "direct"), JSON.stringify(seen.routes));
    const relay = (await b.status()).json;
    const relayed = relay.relayed as { messages: number; bytes: number };
    // The very first pings may have crossed the backup pipeline while the relay's tethers formed.
    assert(relayed.messages >= 100, `b relayed ${relayed.messages} messages`);
    // B carried everything and is an endpoint of nothing: it never made or received a stream, so it holds no key.
    assertEquals(relay.streams, 0);
    console.log(`b relayed ${relayed.messages} messages (${relayed.bytes} bytes) between a and c`);
  },
});

Deno.test({
  name:
    "backup: with no tether possible, traffic crosses the control channel; once UDP is back, a tether takes over",
  ignore,
  async fn() {
    await using w = await realmOnTestbed(["a", "b"]);
    await w.bed.cutUdp("a", "b");
    const a = w.node("a");
    const b = await a.find("b");
    const address = b.ips[0]!;
    const ns = w.bed.host("a").ns;
    const ping = (count: number) =>
      ns.exec("ping", ["-c", String(count), "-i", "0.1", "-W", "2", address], { allowFailure: true });
    const pathToB = async () =>
      (await a.peers()).find((p) => p.tag === "b") as unknown as { path: string } | undefined;
    await waitFor("a first ping over the backup pipeline", 30_000, async () => (await ping(1)).success);
    const run = await ping(20);
    assert(run.text.includes(" 0% packet loss"), run.text);
    assertEquals((await pathToB())?.path, "backup");
    const used = ((await a.status()).json.backup as { messages: number }).messages;
    assert(used >= 20, `only ${used} messages went over the backup pipeline`);

    await ns.exec("nft", ["delete", "table", "inet", "cut"]);
    const restored = Date.now();
    await waitFor("a tether to replace the backup pipeline", 40_000, async () => {
      await ping(1);
      return (await pathToB())?.path === "direct";
    });
    console.log(`tether back ${((Date.now() - restored) / 1000).toFixed(1)} s after UDP was allowed again`);
    const before = ((await a.status()).json.backup as { messages: number }).messages;
    const after = await ping(10);
    assert(after.text.includes(" 0% packet loss"), after.text);
    assertEquals(
      ((await a.status()).json.backup as { messages: number }).messages,
      before,
      "backup still in use",
    );
  },
});

Deno.test({
  name: "relay: a bulk transfer over a direct link shaped to 10 Mbit/s moves mostly to an unshaped relay",
  ignore,
  async fn() {
    await using w = await realmOnTestbed(["a", "b", "c"]);
    const ns = w.bed.host("a").ns;
    // Only traffic from A to B's address is shaped; A to C and C to B run free.
    const tc = (...args: string[]) => ns.exec("tc", args);
    await tc("qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10");
    await tc("class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit");
    await tc("class", "add", "dev", "eth0", "parent", "1:", "classid", "1:20", "htb", "rate", "10mbit");
    const bAddress = w.bed.host("b").address;
    await tc(
      "filter",
      "add",
      "dev",
      "eth0",
      "parent",
      "1:",
      "protocol",
      "ip",
      "u32",
      "match",
      "ip",
      "dst",
      `${bAddress}/32`,
      "flowid",
      "1:20",
    );

    const a = w.node("a");
    const target = await a.find("b");
    await waitFor(
      "a first ping",
      20_000,
      async () =>
        (await ns.exec("ping", ["-c", "1", "-W", "1", target.ips[0]!], { allowFailure: true })).success,
    );
    const transfer = new URL("./tcp_transfer.ts", import.meta.url).pathname;
    const sink = w.bed.host("b").ns.exec(Deno.execPath(), [
      "run",
      "-A",
      "--quiet",
      transfer,
      "serve",
      "5203",
    ]);
    await new Promise((r) => setTimeout(r, 1_000));
    const size = 150 * 1024 * 1024;
    const started = Date.now();
    const sent = await ns.exec(Deno.execPath(), [
      "run",
      "-A",
      "--quiet",
      transfer,
      "send",
      target.ips[0]!,
      "5203",
      String(size),
    ]);
    const seconds = (Date.now() - started) / 1000;
    const received = (await sink).text.trim().split(" ").slice(0, 2).join(" "); // without the sink's longest gap
    assertEquals(received, sent.text.trim(), "bytes received differ from bytes sent");

    const viaC = ((await w.node("c").status()).json.relayed as { bytes: number }).bytes;
    const total = (await a.peers() as unknown as { tag: string; txBytes: number }[]).find((p) =>
      p.tag === "b"
    )!.txBytes;
    const share = viaC / total;
    const routes = (await a.peers() as unknown as PeerStatus[]).find((p) => p.tag === "b")!.routes;
    console.log(`a's paths to b at the end (peers --json): ${JSON.stringify(routes)}`);
    console.log(
      `150 MB A→B in ${seconds.toFixed(1)} s (${(size * 8 / seconds / 1e6).toFixed(0)} Mbit/s); ` +
        `${(100 * share).toFixed(0)}% of it relayed by C (direct link shaped to 10 Mbit/s)`,
    );
    assert(share > 0.5, `only ${(100 * share).toFixed(0)}% went through C`);
  },
});
