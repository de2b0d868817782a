/**
 * The tunnel end to end: a Guardian and its Master on a bridge, nodes A and B each in their own network
 * namespace with a real TUN device, IP traffic between them over WebRTC tethers. All through the CLI.
 */

import { assert, assertEquals } from "./assert.ts";
import { type NodeProc, Proc, waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { realmOnTestbed as world, type Testbed } from "./testbed.ts";
import { RTC_RELEASE_MS } from "../src/tuning.ts";

const unavailable = netnsUnavailable();
const ignore = unavailable !== undefined;
const TRANSFER = new URL("./tcp_transfer.ts", import.meta.url).pathname;

interface PeerJson {
  tag: string;
  ips: string[];
  path: string;
  txBytes: number;
  rxBytes: number;
}

/** The process's threads that libdatachannel started ("RTC poll", "RTC worker", "SCTP timer", ...). */
function rtcThreads(pid: number): string[] {
  return [...Deno.readDirSync(`/proc/${pid}/task`)]
    .map((t) => Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/comm`).trim())
    .filter((name) => /^(RTC|SCTP)/.test(name));
}

/** Runs tests/tcp_transfer.ts inside host `name`'s namespace. */
function transfer(w: { bed: Testbed }, name: string, args: string[]): Proc {
  const run = [Deno.execPath(), "run", "-A", "--quiet", TRANSFER, ...args];
  return new Proc(`transfer-${args[0]}`, "ip", ["netns", "exec", w.bed.host(name).ns.name, ...run]);
}

async function peer(n: NodeProc, tag: string): Promise<PeerJson | undefined> {
  return (await n.peers() as unknown as PeerJson[]).find((p) => p.tag === tag);
}

Deno.test({
  name: "tunnel: A pings B over IPv4 and IPv6 without loss, and 200 MB of TCP arrive intact",
  ignore,
  async fn() {
    await using w = await world(["a", "b"]);
    const a = w.node("a");
    const b = w.node("b");
    const target = await a.find("b");
    const [v4, v6] = target.ips;
    // The first packet forms the tether and the stream; from then on nothing may be lost.
    await waitFor(
      "a first ping to go through",
      20_000,
      async () =>
        (await w.bed.host("a").ns.exec("ping", ["-c", "1", "-W", "1", v4!], { allowFailure: true })).success,
    ).catch(
      async (e) => {
        const statuses = JSON.stringify([
          (await a.status()).json,
          (await b.status()).json,
          await a.peers(),
          await b.peers(),
        ]);
        throw new Error(`${e}\n--- a:\n${a.proc!.output}\n--- b:\n${b.proc!.output}\n${statuses}`);
      },
    );
    for (const address of [v4!, v6!]) {
      const ping = await w.bed.host("a").ns.exec("ping", ["-c", "100", "-i", "0.01", "-W", "2", address], {
        allowFailure: true,
      });
      assert(
        ping.text.includes(" 0% packet loss"),
        `ping ${address}:\n${ping.text}${ping.errors}\n--- a:\n${a.proc!.output}\n--- b:\n${
          b.proc!.output
        }\n${
          JSON.stringify([(await a.status()).json, (await b.status()).json, await a.peers(), await b.peers()])
        }`,
      );
    }
    assertEquals((await peer(a, "b"))?.path, "direct");

    const port = 5201;
    const server = transfer(w, "b", ["serve", String(port)]);
    await waitFor("the sink to listen", 10_000, () => server.output.includes("listening"));
    const size = 200 * 1024 * 1024;
    const started = performance.now();
    const sent = await w.bed.host("a").ns.exec(Deno.execPath(), [
      "run",
      "-A",
      "--quiet",
      TRANSFER,
      "send",
      v4!,
      String(port),
      String(size),
    ]);
    const seconds = (performance.now() - started) / 1000;
    await server.done;
    // "<bytes> <sha256>" of each side (the sink adds its longest gap).
    const received = server.output.trim().split("\n").at(-1)!.split(" ").slice(0, 2).join(" ");
    assertEquals(received, sent.text.trim(), "bytes received differ from bytes sent");
    assert(received.startsWith(`${size} `));
    console.log(
      `200 MB through the tunnel in ${seconds.toFixed(1)} s (${
        (size * 8 / seconds / 1e6).toFixed(0)
      } Mbit/s)`,
    );

    const seen = (await peer(a, "b"))!;
    assertEquals(seen.path, "direct");
    // The hosts reach each other over TCP: the tether's data rides its direct TCP connection.
    assertEquals((seen as { link?: string }).link, "tcp");
    assert(seen.txBytes > size, `a counted ${seen.txBytes} bytes to b`);
    assert((await peer(b, "a"))!.rxBytes > size);

    // A reset on the way (a middlebox's) takes the direct connection down: the tether carries on over WebRTC, a
    // new direct connection is made, and the traffic goes back to it.
    const linkToB = async () => ((await peer(a, "b")) as { link?: string } | undefined)?.link;
    const reset = ["-K", "-tn", "state", "established", "dst", w.bed.host("b").address];
    await w.bed.host("a").ns.exec("ss", reset);
    await waitFor("the reset to be seen", 5_000, async () => await linkToB() === "webrtc");
    await waitFor("a new direct connection", 15_000, async () => await linkToB() === "tcp");
    const after = await w.bed.host("a").ns.exec("ping", ["-c", "50", "-i", "0.01", "-W", "2", v4!], {
      allowFailure: true,
    });
    assert(after.text.includes(" 0% packet loss"), `ping after the reset:\n${after.text}${after.errors}`);
    assertEquals(await linkToB(), "tcp");
  },
});

async function ping(w: { bed: Testbed }, from: string, address: string, count = 3) {
  return await w.bed.host(from).ns.exec("ping", ["-c", String(count), "-i", "0.2", "-W", "2", address], {
    allowFailure: true,
  });
}

Deno.test({
  name: "tunnel: an idle tether dissolves, and the next packet forms it again",
  ignore,
  async fn() {
    await using w = await world(["a", "b"], ["--tether-idle", "3s"]);
    const a = w.node("a");
    const address = (await a.find("b")).ips[0]!;
    await waitFor("a first ping", 20_000, async () => (await ping(w, "a", address, 1)).success);
    // The first packets take the backup pipeline while the tether forms; then the tether carries them.
    await waitFor("the direct tether", 10_000, async () => (await peer(a, "b"))?.path === "direct");
    assertEquals((await a.status()).json.tethers, 1);
    await waitFor("the idle tether to dissolve", 10_000, async () => (await a.status()).json.tethers === 0);
    // And it stays dissolved: with no traffic, nothing forms it again (the route upkeep once did, within a second).
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    assertEquals((await a.status()).json.tethers, 0);
    assertEquals(a.proc!.output.match(/tether to b open/g)?.length, 1, a.proc!.output);
    // No tether: "none", or "backup" if a packet met the tether closing and took the control channel.
    assert(["none", "backup"].includes((await peer(a, "b"))!.path), (await peer(a, "b"))!.path);
    // With no peer connection left, libdatachannel's threads stop (its SCTP timer would tick every 10 ms).
    for (const n of [a, w.node("b")]) {
      await waitFor(
        "libdatachannel's threads to stop",
        RTC_RELEASE_MS + 5_000,
        () => !rtcThreads(n.proc!.pid).length,
      );
    }
    // The next ping forms the tether again, and gets its answer at once over the backup pipeline meanwhile.
    const next = await w.bed.host("a").ns.exec("ping", ["-c", "1", "-W", "1", address], {
      allowFailure: true,
    });
    assert(next.success, `${next.text}\n--- a:\n${a.proc!.output}\n--- b:\n${w.node("b").proc!.output}`);
    const again = await ping(w, "a", address, 3);
    assert(again.text.includes(" 0% packet loss"), again.text);
    await waitFor("the direct tether again", 10_000, async () => (await peer(a, "b"))?.path === "direct");
    assert(rtcThreads(a.proc!.pid).includes("SCTP timer"), "libdatachannel started again");
    // Either side may dissolve it first (each has its own idle timer); the other then sees it close.
    const logs = a.proc!.output + w.node("b").proc!.output;
    assert(/tether to [ab] closed \(idle\)/.test(logs), logs);
  },
});

Deno.test({
  name:
    "tunnel: B killed mid-transfer does not crash A, shows offline within seconds, and comes back on restart",
  ignore,
  async fn() {
    await using w = await world(["a", "b"]);
    const a = w.node("a");
    const b = w.node("b");
    const address = (await a.find("b")).ips[0]!;
    await waitFor("a first ping", 20_000, async () => (await ping(w, "a", address, 1)).success);
    await using sink = transfer(w, "b", ["serve", "5202"]);
    await waitFor("the sink to listen", 10_000, () => sink.output.includes("listening"));
    const sender = transfer(w, "a", ["send", address, "5202", String(2 * 1024 * 1024 * 1024)]);
    await waitFor("traffic to flow", 10_000, async () => ((await peer(a, "b"))?.txBytes ?? 0) > 20_000_000);
    await b.proc!.stop("SIGKILL");
    const killed = Date.now();
    await waitFor("a to show b offline", 10_000, async () => (await peer(a, "b"))?.path === "none");
    console.log(`a showed b offline ${((Date.now() - killed) / 1000).toFixed(1)} s after b was killed`);
    assertEquals((await a.status()).code, 0, "a is still up and connected");
    await sender.stop("SIGKILL");

    await b.start();
    await waitFor("b to come back", 20_000, async () => (await ping(w, "a", address, 1)).success);
    const back = await ping(w, "a", address, 5);
    assert(back.text.includes(" 0% packet loss"), back.text);
    assertEquals(await a.peerTags(), ["b"]);
  },
});
