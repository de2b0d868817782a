/**
 * `netcheck` and the Guardian's STUN and TURN end to end: a Guardian (with its Master) on the testbed's bridge,
 * answering STUN itself and handing out TURN credentials for a real coturn (`use-auth-secret`), and nodes behind
 * three NAT routers in namespaces: a masquerade (endpoint-independent), a port-randomising masquerade, and one
 * that drops UDP. Each node runs `netcheck` with the permissions of the node service.
 */

import { selfCommand } from "../src/service/systemd.ts";
import { turnCredentials, turnUrl } from "../src/guardian/ice.ts";
import type { NetcheckReport } from "../src/netcheck/report.ts";
import { assert, assertEquals } from "./assert.ts";
import { cli, freePort, GuardianProc, tempDir, waitFor } from "./harness.ts";
import { behindNat, coturn, freeUdpPair, type NatKind, turnserverMissing } from "./nat_router.ts";
import { netnsUnavailable, run } from "./netns.ts";
import { Testbed } from "./testbed.ts";

const GATHER = new URL("./gather_probe.ts", import.meta.url).pathname;

/** Runs `netcheck` in `netns` as the node service would run it (its permissions, not -A). */
async function netcheckIn(where: { netns: string; configDir: string }, args: string[]) {
  const { netns, configDir } = where;
  const out = await new Deno.Command("ip", {
    args: ["netns", "exec", netns, ...selfCommand(configDir), "netcheck", ...args],
    env: { VEILNET_CONFIG_DIR: configDir },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

/** The candidates a peer connection in `netns` gathers with `iceServers`. */
async function gatherIn(netns: string, iceServers: string[], ms = 4_000): Promise<string[]> {
  const r = await run("ip", [
    "netns",
    "exec",
    netns,
    Deno.execPath(),
    "run",
    "-A",
    "--quiet",
    GATHER,
    JSON.stringify(iceServers),
    String(ms),
  ]);
  return JSON.parse(r.text);
}

const typed = (candidates: string[], type: string) => candidates.filter((c) => c.includes(` typ ${type}`));

Deno.test({
  name:
    "netcheck: behind masquerade, port-randomising and UDP-dropping routers, with the Guardian's STUN and a real coturn",
  ignore: netnsUnavailable() !== undefined || turnserverMissing(),
  async fn() {
    await using bed = await Testbed.create(["rnat", "rrand", "rdrop"]);
    await using dir = await tempDir("vc-netcheck-");
    const hub = bed.hub;
    const secret = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(24))));
    await Deno.writeTextFile(`${dir.path}/turn.secret`, secret + "\n", { mode: 0o600 });
    const turnPort = await freeUdpPair(hub);
    await using turn = await coturn(dir.path, hub, turnPort, secret);
    await using guardian = new GuardianProc(`${dir.path}/guardian`, {
      embeddedMaster: true,
      natsPort: freePort(),
      listenHost: hub,
      flags: ["--turn", `turn:${hub}:${turnPort}`, "--turn-secret-file", `${dir.path}/turn.secret`],
    });
    await guardian.start();
    // Zero configuration: STUN on the listen host, default port 3478 (and 3479).
    await waitFor(
      "the Guardian's STUN",
      5_000,
      () => guardian.proc!.output.includes(`STUN on UDP ${hub}:3478 and :3479`),
    );
    await guardian.admin(["realm", "create", "home"]);
    const token = await guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);

    const kinds: [name: string, kind: NatKind, lan: number][] = [
      ["rnat", "masquerade", 61],
      ["rrand", "random", 62],
      ["rdrop", "drop-udp", 63],
    ];
    const hosts = new Map<string, Awaited<ReturnType<typeof behindNat>>>();
    try {
      for (const [name, kind, lan] of kinds) {
        hosts.set(name, await behindNat(bed.host(name), kind, lan));
        const r = await cli(
          ["register", "-t", token, "--guardian", guardian.url, "--tag", name, "--no-service"],
          { VEILNET_CONFIG_DIR: `${dir.path}/${name}` },
        );
        assertEquals(r.code, 0, r.stderr);
      }
      const check = (name: string, args: string[]) =>
        netcheckIn({ netns: hosts.get(name)!.ns.name, configDir: `${dir.path}/${name}` }, args);
      const started = performance.now();
      const [nat, rand, drop, dropText] = await Promise.all([
        check("rnat", ["--json"]),
        check("rrand", ["--json"]),
        check("rdrop", ["--json"]),
        check("rdrop", []),
      ]);
      const elapsed = performance.now() - started;
      const report = (r: typeof nat): NetcheckReport => {
        assertEquals(r.code, 0, `${r.stdout}\n${r.stderr}`);
        return JSON.parse(r.stdout);
      };

      // Behind masquerade: UDP works, STUN sees the router, one mapping for both ports, a relay through coturn.
      const n = report(nat);
      const router = hosts.get("rnat")!.publicAddress;
      assertEquals([n.ok, n.guardian.reachable, n.master.reachable, n.udp.reachable], [
        true,
        true,
        true,
        true,
      ]);
      assertEquals(n.login.iceServers, [`stun:${hub}:3478`, `turn:${hub}:${turnPort}`]);
      assert(
        n.publicAddress?.startsWith(`${router}:`),
        `public address ${n.publicAddress}, router ${router}`,
      );
      assertEquals(n.mappings.map((m) => m.server), [`${hub}:3478`, `${hub}:3479`]);
      assertEquals(n.nat, "endpoint-independent");
      // The peer connection's server-reflexive candidate is the router's address too.
      assert(
        n.candidates.some((c) => c.type === "srflx" && c.address === router),
        JSON.stringify(n.candidates),
      );
      assertEquals(n.turn.length, 1);
      assert(n.turn[0]!.reachable && n.turn[0]!.relay?.startsWith(`${hub}:`), JSON.stringify(n.turn));
      assert(!JSON.stringify(n).includes(secret.slice(0, 12)), "nothing secret in the report");

      // Behind a port-randomising router: each destination gets its own public port.
      const r = report(rand);
      assertEquals([r.ok, r.udp.reachable, r.nat], [true, true, "endpoint-dependent"]);
      assert(r.mappings.every((m) => m.mapped?.startsWith(`${hosts.get("rrand")!.publicAddress}:`)));
      assert(r.turn[0]!.reachable, "TURN works through a symmetric NAT");

      // Behind a router that drops UDP: the Guardian and the Master work over TCP, so netcheck exits 0, saying so.
      const d = report(drop);
      assertEquals([d.ok, d.guardian.reachable, d.master.reachable], [true, true, true]);
      assertEquals([d.udp.reachable, d.nat, d.publicAddress, d.turn[0]!.reachable], [
        false,
        "unknown",
        undefined,
        false,
      ]);
      assert(d.udp.error?.includes("UDP to the Guardian is dropped"), d.udp.error);
      assert(!d.candidates.some((c) => c.type !== "host"), JSON.stringify(d.candidates));
      assertEquals(dropText.code, 0, dropText.stderr);
      assert(/^udp\s+BLOCKED: no STUN answer/m.test(dropText.stdout), dropText.stdout);
      assert(/^result\s+OK: .*UDP is not/m.test(dropText.stdout), dropText.stdout);
      console.log(
        `netcheck: three hosts in ${Math.round(elapsed)} ms; behind masquerade:\n${
          (await check("rnat", [])).stdout
        }\nbehind the UDP-dropping router:\n${dropText.stdout}`,
      );

      // A peer connection with the Guardian's STUN alone: its server-reflexive candidate is the router's address.
      const srflx = typed(await gatherIn(hosts.get("rnat")!.ns.name, [`stun:${hub}:3478`]), "srflx");
      assertEquals(srflx.map((c) => c.split(" ")[4]), [router], srflx.join("; "));

      // TURN credentials at coturn: the Guardian's work, a wrong secret and an expired one, from behind the NAT.
      const server = { host: hub, port: turnPort };
      const user = "netcheck-test";
      const later = Date.now() + 600_000;
      const cases: [
        n: number,
        what: string,
        credentials: { username: string; password: string },
        relay: boolean,
      ][] = [
        [1, "valid", await turnCredentials(secret, { user, expiresAt: later }), true],
        [2, "wrong secret", await turnCredentials(secret + "x", { user, expiresAt: later }), false],
        [3, "expired", await turnCredentials(secret, { user, expiresAt: Date.now() - 60_000 }), false],
      ];
      const gathered = await Promise.all(
        cases.map(([, , credentials]) =>
          gatherIn(hosts.get("rnat")!.ns.name, [turnUrl(server, credentials)])
        ),
      );
      for (const [i, [k, what, , relay]] of cases.entries()) {
        assertEquals(typed(gathered[i]!, "relay").length > 0, relay, `case ${k} (${what}): ${gathered[i]}`);
      }
      // The same valid credentials without percent-encoding: libdatachannel cuts the username at its colon.
      const plain = cases[0]![2];
      const raw = `turn:${plain.username}:${plain.password}@${hub}:${turnPort}?transport=udp`;
      assertEquals(typed(await gatherIn(hosts.get("rnat")!.ns.name, [raw]), "relay"), []);
      assert(turn.output.includes("Cannot find credentials of user"), "coturn refused the bad ones");
    } finally {
      for (const h of hosts.values()) await h[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name:
    "netcheck: exits 1 naming what failed when the Guardian or the Master cannot be reached, 2 when not registered",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    await using dir = await tempDir("vc-netcheck-fail-");
    const env = (name: string) => ({ VEILNET_CONFIG_DIR: `${dir.path}/${name}` });

    const none = await cli(["netcheck"], env("none"));
    assertEquals(none.code, 2, none.stderr);
    assert(none.stderr.includes("not registered"), none.stderr);

    const closed = freePort();
    await Deno.mkdir(`${dir.path}/gone`, { recursive: true });
    await Deno.writeTextFile(
      `${dir.path}/gone/conflux.json`,
      JSON.stringify({ guardian: `http://127.0.0.1:${closed}`, token: "vcfx.0.0" }),
    );
    const gone = await cli(["netcheck"], env("gone"));
    assertEquals(gone.code, 1, gone.stdout + gone.stderr);
    assert(
      /^guardian\s+NOT REACHABLE: cannot reach http:\/\/127\.0\.0\.1:\d+ /m.test(gone.stdout),
      gone.stdout,
    );
    assert(/^result\s+FAILED: the Guardian is not reachable/m.test(gone.stdout), gone.stdout);

    // A Guardian whose Master is down: the Guardian answers, the Master does not.
    await using guardian = new GuardianProc(`${dir.path}/guardian`, {
      master: [`nats://127.0.0.1:${closed}`],
    });
    await guardian.start();
    await guardian.admin(["realm", "create", "home"]);
    const token = await guardian.admin(["token", "create", "--realm", "home"]);
    const reg = await cli(["register", "-t", token, "--guardian", guardian.url, "--no-service"], env("node"));
    assertEquals(reg.code, 0, reg.stderr);
    const master = await cli(["netcheck", "--json", "--timeout", "2s"], env("node"));
    assertEquals(master.code, 1, master.stderr);
    const report: NetcheckReport = JSON.parse(master.stdout);
    assertEquals([report.ok, report.guardian.reachable, report.login.ok, report.master.reachable], [
      false,
      true,
      true,
      false,
    ]);
    assert(report.master.error?.includes(`nats://127.0.0.1:${closed}`), report.master.error);
    assert(master.stderr.includes("FAILED: the Master is not reachable"), master.stderr);
  },
});
