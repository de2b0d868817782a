/**
 * Embedding: a program imports mod.ts, starts a node (control plane only, in this process), sees a peer that runs
 * as `veilnet-conflux run` in the testbed, and closes it. Deno's test sanitizers fail the test if anything it
 * opened (timers, sockets, subprocesses) outlives close().
 */

import { assert, assertEquals } from "./assert.ts";
import { cli, tempDir, waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";
import { startConflux } from "../mod.ts";

Deno.test({
  name: "embedding: startConflux from mod.ts finds a peer and closes cleanly",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    await using w = await realmOnTestbed(["b"]);
    await using dir = await tempDir("vc-embed-");
    const token = await w.guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);
    const reg = await cli(
      ["register", "-t", token, "--guardian", w.guardian.url, "--tag", "embedded", "--no-service"],
      { VEILNET_CONFIG_DIR: dir.path },
    );
    assertEquals(reg.code, 0, reg.stderr);
    const saved = JSON.parse(await Deno.readTextFile(`${dir.path}/conflux.json`));

    const logs: string[] = [];
    const abort = new AbortController();
    const node = await startConflux({
      token: saved.token,
      guardianCa: saved.guardian_ca,
      guardian: w.guardian.url,
      taints: ["lab"],
      tun: false,
      signal: abort.signal,
      log: (line) => logs.push(line),
    });
    const status = node.status();
    assertEquals([status.tag, status.taints, status.connected], ["embedded", ["lab"], {
      guardian: true,
      master: true,
    }]);
    // It learns b when it needs it (a name lookup here), and b learns it from the same exchange.
    assertEquals((await node.lookup("b")).length, 1);
    assert(node.peers().some((p) => p.tag === "b"));
    await waitFor(
      "b to see the embedded node",
      15_000,
      async () => (await w.node("b").peerTags()).includes("embedded"),
    );

    abort.abort(); // the signal closes it, as close() and dispose would
    await node.closed;
    await node.close(); // idempotent
    assert(logs.some((l) => l.includes("embedded")), logs.join("\n"));
    await waitFor(
      "b to see it leave",
      15_000,
      async () => !(await w.node("b").peerTags()).includes("embedded"),
    );
  },
});
