/**
 * Access by teams end to end (issue 21): real nodes in namespaces, a realm whose access is by teams. James's node
 * cannot reach Ben's until Ben makes a team, adds James, and both nodes ask for it; then it can. Mallory's node
 * asks for the team too and does not get it. Removing James cuts his node off within seconds.
 */

import { connect, jwtAuthenticator } from "nats";
import { guardianCredentials } from "../src/guardian/nats_auth.ts";
import { assert, assertEquals } from "./assert.ts";
import { NodeProc, waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";

Deno.test({
  name:
    "teams: James reaches Ben's node only through a team both hold; removed, he is cut off; Mallory never",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    await using realm = await realmOnTestbed([], [], {}, ["j", "b", "m"]);
    const g = realm.guardian;
    await g.admin(["realm", "access", "home", "teams"]);
    // Everything said on the realm's control channel from now on, as the Guardians hear it (a user of the realms
    // account subscribed to all of it): a superset of what any member sees.
    const keys = JSON.parse(await g.admin(["nats-keys", "export"]));
    const { realms } = await guardianCredentials(keys);
    const nc = await connect({
      servers: `tls://${realm.bed.hub}:${g.options.natsPort}`,
      authenticator: jwtAuthenticator(realms.jwt, new TextEncoder().encode(realms.seed)),
      inboxPrefix: realms.inboxPrefix,
      tls: { ca: g.ca },
    });
    const captured: Uint8Array[] = [];
    nc.subscribe("veilnet.>", { callback: (_, m) => captured.push(m.data) });
    const nodes: Record<string, NodeProc> = {};
    for (const [host, user] of [["j", "james.wood"], ["b", "ben.smith"], ["m", "mallory.jones"]] as const) {
      await g.admin(["user", "create", user, "--realm", "home"]);
      const token = await g.admin(["token", "create", "--realm", "home", "--user", user]);
      const node = new NodeProc(host, `${g.dataDir}/../${host}`, { netns: realm.bed.host(host).ns.name });
      realm.nodes.set(host, node);
      await node.register(g.url, token, ["--teams", "skunkworks"]);
      await node.start();
      nodes[host] = node;
    }
    const { j, b, m } = nodes as { j: NodeProc; b: NodeProc; m: NodeProc };
    const ns = realm.bed.host("j").ns;
    const bAddress = "10.128.0.2"; // b registered second
    const ping = async () =>
      (await ns.exec("ping", ["-c", "1", "-W", "1", bAddress], { allowFailure: true })).success;

    // No team yet: each node says it does not hold the team, and James's node finds and reaches nothing of Ben's.
    await waitFor(
      "j to say skunkworks is ignored",
      10_000,
      () => j.proc!.output.includes("teams ignored: skunkworks"),
    );
    assertEquals(await j.resolve("b"), []);
    assertEquals(await ping(), false);
    const access = async () => (await j.status()).json.access;
    assertEquals(await access(), { model: "teams", identities: 1, ignoredTeams: ["skunkworks"] });

    // Ben makes the team and adds James: both nodes log in again, and James reaches Ben.
    await g.admin(["team", "create", "skunkworks", "--owner", "ben.smith", "--realm", "home"]);
    const added = Date.now();
    await g.admin(["team", "add", "skunkworks", "james.wood", "--realm", "home"]);
    await waitFor("j to reach b through the team", 20_000, async () => (await j.resolve("b")).length === 1);
    await waitFor("j's first ping to b", 20_000, ping);
    console.log(
      `j reached b ${((Date.now() - added) / 1000).toFixed(1)} s after James was added to the team`,
    );
    assertEquals(await access(), { model: "teams", identities: 2, ignoredTeams: [] });

    // Mallory's node asked for the team too: it holds it not, and finds neither.
    assert(m.proc!.output.includes("teams ignored: skunkworks"), m.proc!.output);
    assertEquals(await m.resolve("b"), []);
    assertEquals(await m.resolve("j"), []);
    // DNS answers follow too: b.veilnet is known to James's node and not to Mallory's.
    const dig = async (host: string, own: string) =>
      (await realm.bed.host(host).ns.exec("dig", [`@${own}`, "b.veilnet", "+short", "+tries=1", "+time=3"]))
        .text.trim();
    assertEquals(await dig("j", "10.128.0.1"), bAddress);
    assertEquals(await dig("m", "10.128.0.3"), "");

    // James removed from the team: his node is cut off from Ben's.
    const pinging = ns.exec("ping", ["-D", "-i", "0.1", "-c", "60", "-W", "1", bAddress], {
      allowFailure: true,
    });
    await new Promise((r) => setTimeout(r, 1_000));
    const removed = Date.now();
    await g.admin(["team", "remove", "skunkworks", "james.wood", "--realm", "home"]);
    const out = (await pinging).text;
    const replies = [...out.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from/gm)].map((r) => Number(r[1]) * 1000);
    const last = Math.max(...replies);
    const cut = (last - removed) / 1000;
    console.log(
      `the last reply came ${
        cut.toFixed(1)
      } s after James was removed from the team (${replies.length} replies)`,
    );
    assert(replies.length >= 5, `pings answered before the removal:\n${out}`);
    assert(cut <= 2, `b still answered ${cut.toFixed(1)} s after the removal\n${out}\n${b.proc!.output}`);
    assertEquals(await j.resolve("b"), []);

    // On the control channel: neither the team's name nor its members' (nor Mallory's).
    await nc.flush();
    await nc.close();
    const bytes = captured.reduce((n, m) => n + m.length, 0);
    const text = captured.map((m) => new TextDecoder("latin1").decode(m)).join("\n");
    console.log(`captured ${captured.length} control messages (${bytes} bytes)`);
    assert(captured.length > 20, "the capture heard the realm");
    // It sees what certificates say in the clear (the realm's name, a node's address), not their identities.
    const ben = new TextDecoder("latin1").decode(Uint8Array.of(10, 128, 0, 2));
    assert(text.includes("home") && text.includes(ben), "the capture holds certificates");
    for (const name of ["skunkworks", "james.wood", "ben.smith", "mallory.jones"]) {
      assert(!text.includes(name), `"${name}" was said on the control channel`);
    }
  },
});

Deno.test({
  name:
    "teams: a relay carries only between peers it shares an identity with, and carries between them when it does",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    await using realm = await realmOnTestbed([], [], {}, ["j", "b", "x", "r"]);
    const g = realm.guardian;
    await g.admin(["realm", "access", "home", "teams"]);
    for (const user of ["james.wood", "ben.smith"]) {
      await g.admin(["user", "create", user, "--realm", "home"]);
    }
    await g.admin(["team", "create", "skunkworks", "--owner", "ben.smith", "--realm", "home"]);
    await g.admin(["team", "add", "skunkworks", "james.wood", "--realm", "home"]);
    // j and b share the team; x is James's with no team (it shares only James with j); r is Ben's in the team.
    const start = async (host: string, user: string, teams: string[]) => {
      const token = await g.admin(["token", "create", "--realm", "home", "--user", user]);
      const node = new NodeProc(host, `${g.dataDir}/../${host}`, { netns: realm.bed.host(host).ns.name });
      realm.nodes.set(host, node);
      await node.register(g.url, token, teams.length ? ["--teams", teams.join(",")] : []);
      await node.start();
      return node;
    };
    const j = await start("j", "james.wood", ["skunkworks"]);
    await start("b", "ben.smith", ["skunkworks"]);
    const x = await start("x", "james.wood", []);
    await realm.bed.cutUdp("j", "b");
    const found = await j.find("b");
    assertEquals((await x.resolve("b")).length, 0, "x does not share an identity with b");
    const ns = realm.bed.host("j").ns;
    const ping = (count: number) =>
      ns.exec("ping", ["-c", String(count), "-i", "0.1", "-W", "2", found.ips[0]!], { allowFailure: true });
    const pathToB = async () =>
      ((await j.peers()) as unknown as { tag: string; path: string; via?: string }[]).find((p) =>
        p.tag === "b"
      );
    // Only x could relay: it may not (it does not know b), so the traffic takes the backup pipeline.
    const backup = await ping(20);
    assert(backup.text.includes(" 0% packet loss"), backup.text);
    assertEquals((await pathToB())?.path, "backup");
    assertEquals(((await x.status()).json.relayed as { messages: number }).messages, 0);
    // r shares the team with j and Ben with b: it relays.
    const r = await start("r", "ben.smith", ["skunkworks"]);
    await waitFor("j's traffic to b to go through r", 30_000, async () => {
      await ping(1);
      const p = await pathToB();
      return p?.path === "relay" && p.via === "r";
    });
    const relayed = await ping(20);
    assert(relayed.text.includes(" 0% packet loss"), relayed.text);
    assert(((await r.status()).json.relayed as { messages: number }).messages > 0);
    assertEquals(((await x.status()).json.relayed as { messages: number }).messages, 0);
  },
});
