/**
 * Portal mode end to end, in the namespace testbed. Nodes P and Q are portals for the same "LAN" namespace
 * (10.50.0.0/24 on a bridge, a web server on 10.50.0.10); behind P there is also an "internet" namespace
 * (203.0.113.0/24) that P does not offer. A (compatible taints) fetches the LAN page through the overlay, through
 * the portal every node chooses (the lowest conflux id), and through the other once that one leaves; X
 * (incompatible taints) cannot; A cannot reach the internet address even with a route of its own into the overlay;
 * and a portal that exits leaves its host's nftables rules and forwarding setting as they were.
 */

import { assert, assertEquals, assertFalse } from "./assert.ts";
import { NodeProc, Proc, tempDir, waitFor } from "./harness.ts";
import { Netns, netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";

const ignore = netnsUnavailable() !== undefined;

/** A web server in a namespace that answers `text` and prints "request from ADDRESS" for each request. */
function webServer(ns: Netns, address: string, text: string): Proc {
  const code = `Deno.serve({ hostname: "${address}", port: 80, onListen: () => console.log("listening") }, ` +
    `(_req, info) => { console.log("request from " + info.remoteAddr.hostname); ` +
    `return new Response(${JSON.stringify(text)}); });`;
  return new Proc(`web ${address}`, "ip", ["netns", "exec", ns.name, Deno.execPath(), "eval", code]);
}

/** The web servers of both tests: the LAN's on 10.50.0.10 and the internet's on 203.0.113.10, listening. */
async function webServers(lan: Netns, inet: Netns) {
  const servers = {
    lan: webServer(lan, "10.50.0.10", "hello from the LAN"),
    inet: webServer(inet, "203.0.113.10", "hello from the internet"),
    async [Symbol.asyncDispose]() {
      await servers.lan[Symbol.asyncDispose]();
      await servers.inet[Symbol.asyncDispose]();
    },
  };
  await waitFor(
    "web servers",
    10_000,
    () => servers.lan.output.includes("listening") && servers.inet.output.includes("listening"),
  );
  return servers;
}

/** GETs `url` from inside `ns` (failing after `seconds`). */
function curl(ns: Netns, url: string, seconds: number) {
  return ns.exec("curl", ["-sS", "--max-time", String(seconds), url], { allowFailure: true });
}

/** What a portal changes on its host: the nftables ruleset and IPv4 forwarding. */
async function hostState(ns: Netns) {
  return {
    rules: (await ns.exec("nft", ["list", "ruleset"])).text,
    forwarding: (await ns.exec("cat", ["/proc/sys/net/ipv4/ip_forward"])).text.trim(),
  };
}

/**
 * Links namespace `inner` to `outer` with a veth: the outer end gets `outerCidr`; the inner end gets `innerCidr`,
 * or without it joins the inner namespace's bridge br0.
 */
async function link(outer: Netns, inner: Netns, name: string, outerCidr: string, innerCidr?: string) {
  const innerName = innerCidr ? "eth0" : `${name}in`;
  await outer.exec("ip", [
    "link",
    "add",
    name,
    "type",
    "veth",
    "peer",
    "name",
    innerName,
    "netns",
    inner.name,
  ]);
  await outer.exec("ip", ["addr", "add", outerCidr, "dev", name]);
  await outer.exec("ip", ["link", "set", name, "up"]);
  if (innerCidr) await inner.exec("ip", ["addr", "add", innerCidr, "dev", innerName]);
  else await inner.exec("ip", ["link", "set", innerName, "master", "br0"]);
  await inner.exec("ip", ["link", "set", innerName, "up"]);
}

Deno.test({
  name: "portal: permitted peers reach the LAN behind portals (one chosen, the other on standby); " +
    "a forbidden one and the internet do not; exit restores the host",
  ignore,
  async fn() {
    await using w = await realmOnTestbed(["a", "x"], [], { x: ["--taints", "other"] }, ["p", "q"]);
    await using lan = await Netns.create("lan");
    await using inet = await Netns.create("inet");
    await lan.exec("ip", ["link", "add", "br0", "type", "bridge"]);
    await lan.exec("ip", ["addr", "add", "10.50.0.10/24", "dev", "br0"]);
    await lan.exec("ip", ["link", "set", "br0", "up"]);
    const ns = (name: string) => w.bed.host(name).ns;
    await link(ns("p"), lan, "lan0", "10.50.0.1/24");
    await link(ns("q"), lan, "lan1", "10.50.0.2/24");
    await link(ns("p"), inet, "inet0", "203.0.113.1/24", "203.0.113.10/24");
    await using web = await webServers(lan, inet);
    const [lanWeb, inetWeb] = [web.lan, web.inet];

    const before: Record<string, unknown> = { p: await hostState(ns("p")), q: await hostState(ns("q")) };

    // The administrator grants the LAN (and only it) to the portals' token.
    const token = await w.guardian.admin([
      "token",
      "create",
      "--realm",
      "home",
      "--taints",
      "lab",
      "--subnets",
      "10.50.0.0/24",
    ]);
    await using dir = await tempDir("vc-portal-");
    const portal = (name: string) =>
      new NodeProc(name, `${dir.path}/${name}`, {
        netns: ns(name).name,
        runFlags: ["--portal", "--subnets", "10.50.0.0/24"],
      });
    await using p = portal("p");
    await using q = portal("q");
    for (const node of [p, q]) {
      await node.register(w.guardian.url, token, ["--taints", "lab"]);
      await node.start();
    }
    assertEquals((await p.status()).json.portal, ["10.50.0.0/24"]);
    const [chosen, standby] = (await p.status()).json.id! < (await q.status()).json.id! ? [p, q] : [q, p];
    const lanAddress: Record<string, string> = { p: "10.50.0.1", q: "10.50.0.2" };

    // A routes the subnet to the chosen portal, in its table (the other shown on standby) and its kernel's.
    const a = w.node("a");
    const aNs = ns("a");
    const routes = async () =>
      ((await a.status()).json.subnets as { subnet: string; tag: string; shadowed: string[] }[])
        .map((r) => `${r.subnet} via ${r.tag} (${r.shadowed.join()})`);
    await waitFor(
      `A to route 10.50.0.0/24 to ${chosen.tag}`,
      15_000,
      async () => (await routes()).join() === `10.50.0.0/24 via ${chosen.tag} (${standby.tag})`,
    );
    await waitFor(
      "the kernel route on A",
      5_000,
      async () => (await aNs.exec("ip", ["route", "show", "10.50.0.0/24"])).text.includes("dev veilnet"),
    );
    const during = await hostState(ns(chosen.tag));
    assertEquals(during.forwarding, "1");
    assert(
      during.rules.includes("veilnet_portal_veilnet") && during.rules.includes("masquerade"),
      during.rules,
    );

    // A fetches the page through the overlay, masqueraded at the chosen portal (the LAN needs no route back).
    const page = await curl(aNs, "http://10.50.0.10/", 4);
    assertEquals([page.code, page.text], [0, "hello from the LAN"], page.errors);
    assert(lanWeb.output.endsWith(`request from ${lanAddress[chosen.tag]}\n`), lanWeb.output);

    // X may not talk to the portals: it has no route, and one forced into its TUN goes nowhere.
    const xNs = ns("x");
    assertEquals((await w.node("x").status()).json.subnets, []);
    await xNs.exec("ip", ["route", "add", "10.50.0.0/24", "dev", "veilnet"]);
    assertFalse((await curl(xNs, "http://10.50.0.10/", 4)).code === 0, "X reached the LAN");

    // The internet behind P is not offered: even with a route into the overlay, A's traffic goes nowhere.
    await aNs.exec("ip", ["route", "add", "203.0.113.0/24", "dev", "veilnet"]);
    assertFalse(
      (await curl(aNs, "http://203.0.113.10/", 4)).code === 0,
      "A reached the internet through a portal",
    );
    assertFalse(inetWeb.output.includes("request"), "the internet server saw a request");
    assertEquals(lanWeb.output.match(/request/g)?.length, 1, "only A's request reached the LAN");

    // The chosen portal exits: its host is as before, and the other portal carries A's traffic.
    await chosen.stop();
    assertEquals(await hostState(ns(chosen.tag)), before[chosen.tag]);
    await waitFor(
      `A to route through ${standby.tag}`,
      15_000,
      async () => (await routes()).join() === `10.50.0.0/24 via ${standby.tag} ()`,
    );
    const again = await curl(aNs, "http://10.50.0.10/", 4);
    assertEquals([again.code, again.text], [0, "hello from the LAN"], again.errors);
    assert(lanWeb.output.endsWith(`request from ${lanAddress[standby.tag]}\n`), lanWeb.output);

    // The other exits too: A forgets the subnet and its kernel route.
    await standby.stop();
    assertEquals(await hostState(ns(standby.tag)), before[standby.tag]);
    await waitFor(
      "A to drop the route",
      15_000,
      async () => !(await aNs.exec("ip", ["route", "show", "10.50.0.0/24"])).text.includes("dev veilnet"),
    );
  },
});

Deno.test({
  name:
    "portal: the host's rules forward from the overlay interface to the offered subnets only, and go on exit",
  ignore,
  async fn() {
    // R plays the portal's host: its "veilnet" is a veth to S, which plays the overlay.
    await using r = await Netns.create("router");
    await using s = await Netns.create("overlay");
    await using lan = await Netns.create("lan");
    await using inet = await Netns.create("inet");
    await link(r, s, "veilnet", "10.128.0.1/16", "10.128.0.5/16");
    await link(r, lan, "lan0", "10.50.0.1/24", "10.50.0.10/24");
    await link(r, inet, "inet0", "203.0.113.1/24", "203.0.113.10/24");
    await s.exec("ip", ["route", "add", "default", "via", "10.128.0.1"]);
    await inet.exec("ip", ["route", "add", "default", "via", "203.0.113.1"]); // it could answer, if asked
    await using web = await webServers(lan, inet);
    const inetWeb = web.inet;

    // Control: plain forwarding on R would carry S to the internet.
    await r.exec("sh", ["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
    assertEquals((await curl(s, "http://203.0.113.10/", 3)).text, "hello from the internet");
    await r.exec("sh", ["-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"]);
    const before = await hostState(r);

    const host = new URL("../src/portal/host.ts", import.meta.url).href;
    const script = `import { openPortal, portalHost } from "${host}";
      const portal = await openPortal(portalHost(console.log), "veilnet", ["10.50.0.0/24"]);
      console.log("portal open");
      await new Promise((resolve) => Deno.addSignalListener("SIGTERM", () => resolve(undefined)));
      await portal[Symbol.asyncDispose]();
      console.log("portal closed");
      Deno.exit(0);`;
    await using portal = new Proc("portal", "ip", ["netns", "exec", r.name, Deno.execPath(), "eval", script]);
    await waitFor("the portal's rules", 10_000, () => portal.output.includes("portal open"));
    assertEquals((await hostState(r)).forwarding, "1");

    const page = await curl(s, "http://10.50.0.10/", 3);
    assertEquals([page.code, page.text], [0, "hello from the LAN"], page.errors);
    const internet = await curl(s, "http://203.0.113.10/", 3);
    assertFalse(internet.code === 0, "the portal forwarded to the internet");
    assertEquals(
      inetWeb.output.match(/request/g)?.length,
      1,
      "only the control request reached the internet",
    );
    assert((await hostState(r)).rules.includes("a portal forwards only to the subnets it offers"));

    await portal.stop();
    assert(portal.output.includes("portal closed"), portal.output);
    assertEquals(await hostState(r), before);
  },
});
