/**
 * DNS end to end, in the namespace testbed: `<tag>.veilnet` from each node's own DNS server on its overlay
 * address, asked with dig and used by ping through the namespace's resolv.conf.
 */

import { assert, assertEquals } from "./assert.ts";
import { NodeProc, waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";

const ignore = netnsUnavailable() !== undefined;

Deno.test({
  name: "dns: b.veilnet, a tag nobody may squat, a forbidden node, a retag, and ping by name",
  ignore,
  async fn() {
    await using w = await realmOnTestbed(["a", "b", "web1", "c"], [], {
      web1: ["--tag", "web"],
      c: ["--taints", "other"],
    });
    const a = w.node("a");
    const ns = w.bed.host("a").ns;
    const ip = async (node: string) => ((await w.node(node).status()).json.ips as string[])[0]!;
    const [aIp, bIp, webIp] = [await ip("a"), await ip("b"), await ip("web1")];
    const dig = async (name: string, type = "A") => {
      const r = await ns.exec("dig", [`@${aIp}`, name, type, "+tries=1", "+time=3"]);
      const status = /status: (\w+)/.exec(r.text)?.[1];
      const answers = r.text.split("\n").filter((l) => /\tIN\t(A|AAAA)\t/.test(l)).map((l) =>
        l.split("\t").at(-1)!
      );
      return { status, answers: answers.sort() };
    };

    assertEquals(await dig("b.veilnet"), { status: "NOERROR", answers: [bIp] });
    const v6 = await dig("b.veilnet", "AAAA");
    assertEquals([v6.status, v6.answers.length], ["NOERROR", 1]);
    assertEquals(await dig("a.veilnet"), { status: "NOERROR", answers: [aIp] });
    // Tags are unique in the realm: a second node cannot register as web, so web.veilnet is web1's alone.
    const squat = new NodeProc("web", `${w.guardian.dataDir}/../squatter`);
    const token = await w.guardian.admin(["token", "create", "--realm", "home", "--taints", "lab"]);
    const refused = await squat.register(w.guardian.url, token, ["--taints", "lab"]).then(
      () => "",
      (e) => `${e}`,
    );
    assert(refused.includes(`tag "web" is held by another node`), refused);
    await waitFor("web.veilnet", 10_000, async () => (await dig("web.veilnet")).answers.length === 1);
    assertEquals((await dig("web.veilnet")).answers, [webIp]);
    // c exists (and is tagged c), but a may not reach it: it does not exist for a.
    assertEquals(await dig("c.veilnet"), { status: "NXDOMAIN", answers: [] });
    assertEquals(await dig("nobody.veilnet"), { status: "NXDOMAIN", answers: [] });

    // Ping by name through the namespace's resolver configuration.
    await ns.resolvConf(`nameserver ${aIp}\n`);
    const ping = await ns.exec("ping", ["-4", "-c", "2", "-i", "0.2", "-W", "3", "b.veilnet"], {
      allowFailure: true,
    });
    assert(ping.success && ping.text.includes(`(${bIp})`), ping.text + ping.errors);

    // b restarts as b2: the next query sees it.
    const b = w.node("b");
    await b.stop();
    const b2 = new NodeProc("b", b.configDir, { netns: w.bed.host("b").ns.name, runFlags: ["--tag", "b2"] });
    w.nodes.set("b", b2);
    await b2.start();
    assertEquals(await dig("b2.veilnet"), { status: "NOERROR", answers: [bIp] });
    assertEquals(await dig("b.veilnet"), { status: "NXDOMAIN", answers: [] });
    assertEquals((await a.peerTags()).includes("b2"), true);
  },
});
