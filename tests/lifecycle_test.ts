/**
 * A node's life through the command line, as an operator lives it: register → node up → status → peers →
 * ping → taint add → unregister. Once as a system service (systemd played by a `systemctl` on PATH that records
 * its calls; the node is then started with the unit's own ExecStart line, permissions and all), and once in the
 * foreground on a host without systemd.
 */

import { assert, assertEquals } from "./assert.ts";
import { cli, Proc, waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { type Realm, realmOnTestbed } from "./testbed.ts";
import { guardianFetch } from "../src/agent/guardian_client.ts";

const ignore = netnsUnavailable() !== undefined;
const MAIN = new URL("../main.ts", import.meta.url).pathname;

/** Splits a unit's ExecStart= line (quoted as unitText writes it). */
function execStart(unit: string): string[] {
  const line = unit.split("\n").find((l) => l.startsWith("ExecStart="))!.slice("ExecStart=".length);
  return [...line.matchAll(/"((?:[^"\\]|\\.)*)"|(\S+)/g)].map((m) => m[1]?.replace(/\\(.)/g, "$1") ?? m[2]!);
}

async function lifecycle(w: Realm, mode: "service" | "foreground"): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: `vc-life-${mode}-` });
  const log = `${dir}/systemctl.log`;
  const env: Record<string, string> = {
    VEILNET_CONFIG_DIR: `${dir}/config`,
    VEILNET_SYSTEMD_ROOT: `${dir}/root`,
  };
  if (mode === "service") {
    await Deno.mkdir(`${dir}/root/run/systemd/system`, { recursive: true });
    await Deno.mkdir(`${dir}/bin`);
    await Deno.writeTextFile(
      `${dir}/bin/systemctl`,
      `#!/bin/sh\necho "$*" >> ${log}\n[ "$1" = is-active ] && echo active\nexit 0\n`,
      { mode: 0o755 },
    );
    env.PATH = `${dir}/bin:${Deno.env.get("PATH")}`;
  }
  const calls = async () =>
    (await Deno.readTextFile(log).catch(() => "")).trim().split("\n").filter((l) => l);
  // The operator's shell is on the node's host: its namespace.
  const ns = w.bed.host(mode === "service" ? "a" : "c").ns.name;
  const run = async (...args: string[]) => {
    const r = await cli(args, env, ns);
    return { ...r, text: r.stdout + r.stderr };
  };
  let node: Proc | undefined;
  try {
    // register
    const token = await w.guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);
    const tag = mode === "service" ? "a" : "c";
    const reg = await run(
      "register",
      "-t",
      token,
      "--guardian",
      w.guardian.url,
      "--tag",
      tag,
      "--taints",
      "lab",
    );
    assertEquals(reg.code, 0, reg.text);
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/config/conflux.json`));
    assertEquals((await Deno.stat(`${dir}/config/conflux.json`)).mode! & 0o777, 0o600);
    if (mode === "service") {
      assert(reg.stdout.includes("veilnet.service installed and started"), reg.text);
      assertEquals(await calls(), ["daemon-reload", "enable veilnet.service", "start veilnet.service"]);
    } else {
      assert(
        reg.stdout.includes("systemd does not run this host: start the node with `veilnet-conflux run`"),
      );
    }

    // node up: the service's own command line, or `run` in the foreground
    let command: string[];
    let nodeEnv = env;
    if (mode === "service") {
      const unit = await Deno.readTextFile(`${dir}/root/etc/systemd/system/veilnet.service`);
      command = execStart(unit);
      assertEquals(command.slice(-3), ["run", "--config", `${dir}/config/conflux.json`]);
      assert(!command.includes("-A") && command.includes("--allow-ffi"), unit);
      // The unit's environment, as systemd gives it: the config directory, and no update check by `deno run`
      nodeEnv = Object.fromEntries(
        [...unit.matchAll(/^Environment=(\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]),
      );
      assertEquals(Object.keys(nodeEnv).sort(), ["DENO_NO_UPDATE_CHECK", "VEILNET_CONFIG_DIR"], unit);
    } else {
      command = [Deno.execPath(), "run", "-A", "--quiet", MAIN, "run"];
    }
    node = new Proc(tag, "ip", ["netns", "exec", ns, ...command], nodeEnv);
    await waitFor(`node ${tag} to start`, 20_000, () => node!.output.includes("local API on"))
      .catch((e) => Promise.reject(new Error(`${e.message}\n${node!.output}`)));

    // status
    const status = await run("status");
    assertEquals(status.code, 0, status.text);
    assert(status.stdout.includes("connected") && status.stdout.includes(saved.conflux_id), status.text);

    // ping b by name: resolved to b's address, echoes answered over the overlay, and the path shown
    const bIp = ((await w.node("b").status()).json.ips as string[])[0]!;
    const ping = await run("ping", "b.veilnet", "--count", "3");
    assertEquals(ping.code, 0, ping.text);
    assert(ping.stdout.includes(`PING ${bIp}`) && ping.stdout.includes("3 received"), ping.text);
    assert(/path: (direct|backup|relay)/.test(ping.stdout), ping.text);

    // peers: b, learned when it was looked up for the ping
    await waitFor(`${tag} to list b`, 5_000, async () => (await run("peers")).stdout.includes("\nb "));

    // taint add
    const taint = await run("taint", "add", "dev");
    assertEquals([taint.code, taint.stdout.trim()], [0, "taints: dev,lab"]);
    assertEquals((await run("taint", "list")).stdout.trim().split("\n").sort(), ["dev", "lab"]);

    assert(!/Requires|NotCapable/.test(node.output), `the node lacked a permission:\n${node.output}`);

    // unregister: the Guardian forgets it, the service and the saved config go
    const unreg = await run("unregister");
    assertEquals(unreg.code, 0, unreg.text);
    assert(unreg.stdout.includes(`unregistered ${saved.conflux_id}`), unreg.text);
    await Deno.stat(`${dir}/config/conflux.json`).then(() => assert(false, "conflux.json remains"), () => {});
    if (mode === "service") {
      assertEquals((await calls()).slice(3), [
        "stop veilnet.service",
        "disable veilnet.service",
        "daemon-reload",
      ]);
      assertEquals(
        await Deno.stat(`${dir}/root/etc/systemd/system/veilnet.service`).catch(() => "gone"),
        "gone",
      );
    }
    const again = await cli(["run", "--no-tun"], { VEILNET_CONFLUX_TOKEN: saved.token, ...env }, ns);
    assertEquals(again.code, 2, "not registered without conflux.json");
    const login = await guardianFetch(`${w.guardian.url}/conflux/session/login`, {
      method: "POST",
      headers: { authorization: `Bearer ${saved.token}` },
      body: "{}",
    });
    assertEquals(login.status, 401, "the Guardian no longer knows the token");
    await login.body?.cancel();
  } finally {
    await node?.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "lifecycle: register, node up, status, peers, ping, taint add, unregister (as a service, in the foreground)",
  ignore,
  async fn() {
    await using w = await realmOnTestbed(["b"], [], {}, ["a", "c"]);
    await Promise.all([lifecycle(w, "service"), lifecycle(w, "foreground")]);
  },
});
