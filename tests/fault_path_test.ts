/**
 * Faults of the paths traffic takes (issue 19): pings ten a second and a paced TCP transfer checked by hash run
 * from a to its peer while a relay dies, the peer's process is killed, a's underlay address changes, or a's
 * link goes down. Each test prints its figures (tests/faults.ts) and holds them to a stated bound.
 */

import { assertEquals } from "./assert.ts";
import { waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { assertBounds, at, describeFigures, Flow, reachingRealm } from "./faults.ts";

const ignore = netnsUnavailable() !== undefined;

type PeerJson = { tag: string; path: string; via?: string };

Deno.test({
  name: "faults: the relay in use is killed: traffic moves to the other relay",
  ignore,
  async fn() {
    const { realm, a, ns, address } = await reachingRealm(["a", "b1", "b2", "c"], {
      to: "c",
      beforeFirstPing: (r) => r.bed.cutUdp("a", "c"),
    });
    await using _realm = realm;
    const via = await waitFor("a's relay to c", 15_000, async () => {
      await ns.exec("ping", ["-c", "1", "-W", "1", address], { allowFailure: true }); // traffic decides the path
      return (await a.peers() as unknown as PeerJson[]).find((p) => p.tag === "c")?.via;
    });
    await using flow = await Flow.start(realm.bed, "a", "c", address, 20);
    await at(flow.started, 5);
    await realm.node(via).proc!.stop("SIGKILL");
    const figures = await flow.figures();
    const now = (await a.peers() as unknown as PeerJson[]).find((p) => p.tag === "c");
    console.log(describeFigures(`relay ${via} killed at 5 s (then via ${now?.via})`, figures));
    assertEquals(now?.via, via === "b1" ? "b2" : "b1");
    assertBounds(figures, 5, a.proc!.output);
  },
});

Deno.test({
  name: "faults: the peer's process is SIGKILLed and started again: traffic resumes, every byte arrives",
  ignore,
  async fn() {
    const { realm, a, address } = await reachingRealm(["a", "b"]);
    await using _realm = realm;
    const b = realm.node("b");
    await using flow = await Flow.start(realm.bed, "a", "b", address, 30);
    await at(flow.started, 5);
    await b.proc!.stop("SIGKILL");
    await at(flow.started, 7);
    await b.start();
    const figures = await flow.figures();
    console.log(describeFigures("b SIGKILLed at 5 s and started at 7 s", figures));
    assertBounds(figures, 7, `${a.proc!.output}\n${b.proc!.output}`);
  },
});

Deno.test({
  name: "faults: a's underlay address changes during a transfer: traffic moves to the new address",
  ignore,
  async fn() {
    const { realm, a, ns, address } = await reachingRealm(["a", "b"]);
    await using _realm = realm;
    const old = realm.bed.host("a").address;
    const next = old.replace(/\d+$/, (n) => String(Number(n) + 100));
    // The new address is added beside the old, which is then removed: the new one takes its place (promoted).
    await ns.exec("sysctl", ["-qw", "net.ipv4.conf.eth0.promote_secondaries=1"]);
    await using flow = await Flow.start(realm.bed, "a", "b", address, 30);
    await at(flow.started, 5);
    await ns.exec("ip", ["addr", "add", `${next}/24`, "dev", "eth0"]);
    await ns.exec("ip", ["addr", "del", `${old}/24`, "dev", "eth0"]);
    const figures = await flow.figures();
    console.log(describeFigures(`a's underlay address ${old} replaced by ${next} at 5 s`, figures));
    assertBounds(figures, 3, a.proc!.output);
  },
});

Deno.test({
  name: "faults: a's underlay link down for 10 s and back: traffic resumes within 3 s of its return",
  ignore,
  async fn() {
    const { realm, a, ns, address } = await reachingRealm(["a", "b"]);
    await using _realm = realm;
    await using flow = await Flow.start(realm.bed, "a", "b", address, 25);
    await at(flow.started, 5);
    await ns.exec("ip", ["link", "set", "eth0", "down"]);
    await at(flow.started, 15);
    await ns.exec("ip", ["link", "set", "eth0", "up"]);
    const figures = await flow.figures();
    console.log(describeFigures("a's underlay link down 5-15 s", figures));
    assertBounds(figures, 13, a.proc!.output);
  },
});
