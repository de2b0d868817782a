/**
 * Concurrent multi-link end to end: A's direct path to B and its paths to two relays, C and D, are each shaped to
 * 20 Mbit/s (a tbf of their own on A's underlay). One TCP transfer from A to B uses them together, and loses
 * nothing when the direct path is cut in the middle of it.
 */

import { assert, assertEquals } from "./assert.ts";
import { waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";
import type { PeerStatus } from "../src/agent/status.ts";

const ignore = netnsUnavailable() !== undefined;

/** Each path's rate (Mbit/s), and the least a transfer over the three together must reach (the bar). */
const PATH_MBIT = 20;
const TOGETHER_MBIT = 45;

Deno.test({
  name:
    "multi-link: one TCP transfer spreads over a direct path and two relays, 20 Mbit/s each, and survives the direct path's cut",
  ignore,
  async fn() {
    await using w = await realmOnTestbed(["a", "b", "c", "d"]);
    const ns = w.bed.host("a").ns;
    const tc = (...args: string[]) => ns.exec("tc", args);
    await tc("qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10");
    await tc("class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit");
    for (const [i, name] of ["b", "c", "d"].entries()) {
      const id = `1:${20 + i}`;
      await tc("class", "add", "dev", "eth0", "parent", "1:", "classid", id, "htb", "rate", "10gbit");
      await tc(
        ..."qdisc add dev eth0 parent".split(" "),
        id,
        ...`tbf rate ${PATH_MBIT}mbit burst 32kb latency 25ms`.split(" "),
      );
      await tc(
        ..."filter add dev eth0 parent 1: protocol ip u32 match ip dst".split(" "),
        `${w.bed.host(name).address}/32`,
        "flowid",
        id,
      );
    }

    const a = w.node("a");
    const target = (await a.find("b")).ips[0]!;
    const ping = (from: string) =>
      w.bed.host(from).ns.exec("ping", ["-c", "1", "-W", "1", target], { allowFailure: true });
    // The relays talk to B first, so each has a tether to it and answers A's question for a relay.
    for (const from of ["c", "d"]) {
      await waitFor(`${from}'s tether to b`, 20_000, async () => {
        await ping(from);
        return (await w.node(from).peers() as unknown as PeerStatus[]).find((p) => p.tag === "b")?.path ===
          "direct";
      });
    }
    await waitFor("a's first ping to b", 20_000, async () => (await ping("a")).success);
    const transfer = new URL("./tcp_transfer.ts", import.meta.url).pathname;
    const deno = (host: string, ...args: string[]) =>
      w.bed.host(host).ns.exec(Deno.execPath(), ["run", "-A", "--quiet", transfer, ...args]);
    const relayed = async () =>
      await Promise.all(
        ["c", "d"].map(async (r) => ((await w.node(r).status()).json.relayed as { bytes: number }).bytes),
      );
    const paths = async () =>
      JSON.stringify((await a.peers() as unknown as PeerStatus[]).find((p) => p.tag === "b")!.routes);

    // One transfer, measured against the three paths' capacity.
    const size = 60 * 1024 * 1024;
    let sink = deno("b", "serve", "5204");
    await new Promise((r) => setTimeout(r, 1_000));
    const before = await relayed();
    const sent = await deno("a", "send", target, "5204", String(size));
    const received = (await sink).text.trim().split(" ");
    assertEquals(received.slice(0, 2).join(" "), sent.text.trim(), "bytes differ");
    const seconds = Number(received[3]) / 1000; // from the first byte to the last, as the receiver saw it
    const mbit = size * 8 / seconds / 1e6;
    const shares = (await relayed()).map((bytes, i) => (bytes - before[i]!) / size);
    console.log(`a's paths to b (peers --json): ${await paths()}`);
    console.log(
      `60 MiB A→B in ${seconds.toFixed(1)} s: ${mbit.toFixed(1)} Mbit/s over three paths of ${PATH_MBIT}; ` +
        `relayed by C ${(100 * shares[0]!).toFixed(0)}%, by D ${(100 * shares[1]!).toFixed(0)}%`,
    );
    for (const [i, share] of shares.entries()) {
      assert(share > 0.2, `relay ${"cd"[i]} carried only ${(100 * share).toFixed(0)}%`);
    }
    assert(mbit >= TOGETHER_MBIT, `${mbit.toFixed(1)} Mbit/s, below ${TOGETHER_MBIT}`);

    // Another transfer; two seconds in, everything between A and B is dropped: the relays carry the rest.
    sink = deno("b", "serve", "5205");
    await new Promise((r) => setTimeout(r, 1_000));
    const sending = deno("a", "send", target, "5205", String(40 * 1024 * 1024));
    await new Promise((r) => setTimeout(r, 2_000));
    const b = w.bed.host("b").address;
    const nft = (...args: string[]) => ns.exec("nft", args);
    await nft("add", "table", "inet", "cut");
    await nft("add", "chain", "inet", "cut", "out", "{ type filter hook output priority 0; policy accept; }");
    await nft("add", "chain", "inet", "cut", "in", "{ type filter hook input priority 0; policy accept; }");
    await nft("add", "rule", "inet", "cut", "out", "ip", "daddr", b, "drop");
    await nft("add", "rule", "inet", "cut", "in", "ip", "saddr", b, "drop");
    const cut = Date.now();
    const second = await sending;
    const got = (await sink).text.trim().split(" ");
    assertEquals(got.slice(0, 2).join(" "), second.text.trim(), "bytes differ");
    const after = ((Date.now() - cut) / 1000).toFixed(1);
    console.log(
      `40 MiB A→B with the direct path cut 2 s in: done ${after} s after the cut, the longest wait for data ` +
        `${got[2]} ms; a's paths to b: ${await paths()}`,
    );
  },
});
