/**
 * A hostile portal, end to end in the namespace testbed: portal P offers the Guardian's (and Master's) /32 and a
 * subnet holding A's own underlay address, beside a harmless LAN. A refuses the two (a log line each, counted in
 * status and /metrics), keeps its Guardian, Master and tether traffic on the underlay, and routes the LAN.
 */

import { assert, assertEquals } from "./assert.ts";
import { NodeProc, Proc, tempDir, waitFor } from "./harness.ts";
import { Netns, netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";

const ignore = netnsUnavailable() !== undefined;
const METRICS = "127.0.0.1:9464";

Deno.test({
  name: "portal: a node refuses portal subnets covering the Guardian's or its own address, " +
    "stays connected, and routes the portal's other subnets",
  ignore,
  async fn() {
    await using w = await realmOnTestbed(["a"], ["--metrics", METRICS], {}, ["p"]);
    const aNs = w.bed.host("a").ns;
    const pNs = w.bed.host("p").ns;
    const hub = w.bed.hub; // the Guardian and its Master
    const own = w.bed.host("a").address; // 10.201.X.2: its /31 holds P's address too
    const ownSubnet = `${own}/31`;

    // The LAN behind P: 10.60.0.0/24, a web server on 10.60.0.10.
    await using lan = await Netns.create("lan");
    await pNs.exec("ip", ["link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", lan.name]);
    await pNs.exec("ip", ["addr", "add", "10.60.0.1/24", "dev", "lan0"]);
    await pNs.exec("ip", ["link", "set", "lan0", "up"]);
    await lan.exec("ip", ["addr", "add", "10.60.0.10/24", "dev", "eth0"]);
    await lan.exec("ip", ["link", "set", "eth0", "up"]);
    const code =
      `Deno.serve({ hostname: "10.60.0.10", port: 80, onListen: () => console.log("listening") }, ` +
      `() => new Response("hello from the LAN"));`;
    await using web = new Proc("web", "ip", ["netns", "exec", lan.name, Deno.execPath(), "eval", code]);
    await waitFor("the web server", 10_000, () => web.output.includes("listening"));

    // A careless (or fooled) administrator grants P the Guardian's /32 and A's own /31 besides the LAN: every
    // node must refuse those two on its own.
    const token = await w.guardian.admin([
      "token",
      "create",
      "--realm",
      "home",
      "--taints",
      "lab",
      "--subnets",
      `${hub}/32,${ownSubnet},10.60.0.0/24`,
    ]);
    await using dir = await tempDir("vc-portal-underlay-");
    await using p = new NodeProc("p", `${dir.path}/p`, { netns: pNs.name, runFlags: ["--portal"] });
    await p.register(w.guardian.url, token, ["--taints", "lab"]);
    await p.start();

    const a = w.node("a");
    const ownSubnetText = `${own.replace(/\d+$/, (n) => String(Number(n) & ~1))}/31`;
    const lines = [
      `portal p offers ${hub}/32, which covers the Guardian's address ${hub}: refused`,
      `portal p offers ${ownSubnetText}, which covers this node's own address ${own}: refused`,
    ];
    const context = async () =>
      `\n--- a:\n${a.proc!.output}\n--- p:\n${p.proc!.output}\n${JSON.stringify((await a.status()).json)}`;

    // A routes the LAN through P, and only the LAN: in its table and in its kernel's.
    await waitFor(
      "A to route 10.60.0.0/24 through P",
      20_000,
      async () => JSON.stringify((await a.status()).json.subnets).includes('"subnet":"10.60.0.0/24"'),
    ).catch(async (e) => {
      throw new Error(`${e}${await context()}`);
    });
    const s = (await a.status()).json;
    assertEquals(
      (s.subnets as { subnet: string; tag: string }[]).map((r) => `${r.subnet} via ${r.tag}`),
      ["10.60.0.0/24 via p"],
      await context(),
    );
    for (const line of lines) assert(a.proc!.output.includes(`${line}\n`), `no "${line}"${await context()}`);
    assertEquals(
      (s.refusedSubnets as { subnet: string; tag: string; kind: string }[])
        .map((r) => `${r.subnet} ${r.tag} ${r.kind}`).sort(),
      [`${hub}/32 p guardian`, `${ownSubnetText} p own-address`].sort(),
    );
    const dropped = s.dropped as Record<string, number>;
    assertEquals([dropped["portal:covers-guardian"], dropped["portal:covers-own-address"]], [1, 1]);
    await waitFor(
      "the kernel route to the LAN on A",
      5_000,
      async () => (await aNs.exec("ip", ["route", "show", "10.60.0.0/24"])).text.includes("dev veilnet"),
    );
    const kernel = (await aNs.exec("ip", ["route", "show", "dev", "veilnet"])).text;
    assert(!kernel.includes(hub) && !kernel.includes(ownSubnetText), kernel);
    for (const address of [hub, w.bed.host("p").address]) {
      const via = (await aNs.exec("ip", ["route", "get", address])).text;
      assert(via.includes("dev eth0"), `A routes ${address} into the overlay: ${via}`);
    }

    // The counters are in /metrics too.
    const metrics = (await aNs.exec("curl", ["-sS", "--max-time", "3", `http://${METRICS}/metrics`])).text;
    for (const kind of ["guardian", "own-address"]) {
      assert(metrics.includes(`veilnet_dropped_total{reason="portal:covers-${kind}"} 1\n`), metrics);
    }
    assert(metrics.includes("veilnet_portal_subnets_refused 2\n"), metrics);

    // The LAN works through the tether to P (whose underlay address the refused /31 holds).
    const page = await waitFor("A to fetch the LAN page", 20_000, async () => {
      const r = await aNs.exec("curl", ["-sS", "--max-time", "3", "http://10.60.0.10/"], {
        allowFailure: true,
      });
      return r.code === 0 && r.text;
    }).catch(async (e) => {
      throw new Error(`${e}${await context()}`);
    });
    assertEquals(page, "hello from the LAN");

    // A still reaches the Guardian and the Master over the underlay, and stays connected.
    const health = await aNs.exec("curl", [
      "-sS",
      "--max-time",
      "3",
      "--cacert",
      `${w.guardian.dataDir}/ca.pem`,
      `${w.guardian.url}/healthz`,
    ]);
    assertEquals(health.code, 0, health.errors);
    const after = await a.status();
    assertEquals(after.code, 0, await context());
    assertEquals(after.json.connected, { guardian: true, master: true });
    // Each refusal was logged once, however often A rerouted since.
    for (const line of lines) assertEquals(a.proc!.output.split(line).length, 2, line);
  },
});
