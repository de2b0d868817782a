import { assert, assertEquals } from "../../tests/assert.ts";
import { COMMANDS } from "./commands.ts";
import { main } from "./main.ts";
import { VERSION } from "../spec.ts";
import { cli as harnessCli } from "../../tests/harness.ts";

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

Deno.test("cli: --help lists every contract command with its usage; COMMAND --help its flags", async () => {
  const { code, out } = await cli("--help");
  assertEquals(code, 0);
  for (const c of COMMANDS) {
    assert(out.includes(`usage: veilnet-conflux ${c.usage}`), c.name);
    const own = await cli(c.name, "--help");
    assertEquals(own.code, 0, c.name);
    for (const d of c.details ?? []) assert(own.out.includes(d), `${c.name}: ${d}`);
  }
  // Every flag a usage line names is explained (when the command has details).
  for (const c of COMMANDS.filter((c) => c.details)) {
    for (const flag of c.usage.match(/--[a-z-]+/g) ?? []) {
      assert(c.details!.some((d) => d.includes(flag)), `${c.name} ${flag}`);
    }
  }
});

Deno.test("cli: --version prints the version", async () => {
  assertEquals(await cli("-V"), { code: 0, out: VERSION, err: "" });
});

Deno.test("cli: bad command lines exit non-zero with one clear line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vc-cli-" });
  const env = { VEILNET_CONFIG_DIR: `${dir}/config`, VEILNET_SYSTEMD_ROOT: `${dir}/root` };
  const g = ["--guardian", "https://127.0.0.1:9"];
  const cases: [argv: string[], code: number, says: string][] = [
    [["register"], 2, "registration token"],
    [["register", "-t", "x"], 2, "Guardian's URL"],
    [["register", "-t", "x", "--guardian", "guardian.example"], 2, "must be a URL"],
    [["register", "-t", "x", ...g, "--subnets", "10.0.0.0/33"], 2, "--subnets"],
    [["register", "-t", "x", ...g, "--ip", "10.0.0"], 2, "--ip"],
    [["register", "-t", "x", ...g, "--tag", "Bad_Tag"], 2, "--tag"],
    [["register", "-t", "x", ...g, "--no-service"], 1, "cannot reach the Guardian"],
    [["register", "--frob"], 2, "--frob"],
    [["run"], 2, "not registered"],
    [["run", "--metrics", "0.0.0.0:9464"], 2, "loopback"],
    [["run", "--config", `${dir}/nope.json`], 2, "no such file"],
    [["run", "--subnets", "10.50.0.0/24"], 2, "goes with --portal"],
    [["run", "--portal", "--subnets", "10.50.0.0"], 2, "--subnets"],
    [["ping"], 2, "missing argument"],
    [["ping", "b", "--count", "0"], 2, "--count"],
    [["ping", "b"], 1, "no node is running"],
    [["up"], 2, "conflux token"],
    [["unregister"], 1, "not registered here"],
    [["start"], 1, "systemd does not run this host"],
    [["status"], 1, "no node is running"],
  ];
  try {
    await Promise.all(cases.map(async ([argv, code, says]) => {
      const r = await harnessCli(argv, env);
      assertEquals(r.code, code, `${argv.join(" ")}: ${r.stderr}`);
      assertEquals(r.stderr.trimEnd().split("\n").length, 1, `${argv.join(" ")}: ${r.stderr}`);
      assert(r.stderr.includes(says), `${argv.join(" ")}: ${r.stderr}`);
    }));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: unknown commands and flags exit 2 with one clear line", async () => {
  const unknown = await cli("frobnicate");
  assertEquals([unknown.code, unknown.err], [
    2,
    'veilnet-conflux: unknown command "frobnicate" (see --help)',
  ]);
  const flag = await cli("--frob");
  assertEquals(flag.code, 2);
  assert(flag.err.includes("--frob") && flag.err.includes("see --help"), flag.err);
});

Deno.test("cli: COMMAND --help prints that command's usage", async () => {
  const { code, out } = await cli("peers", "--help");
  assertEquals(code, 0);
  assert(out.startsWith("usage: veilnet-conflux peers [--json]"), out);
});

Deno.test("cli: every guardian subcommand answers --help", async () => {
  for (
    const sub of [
      "serve",
      "realm create",
      "realm oidc",
      "token create",
      "token list",
      "node list",
      "node revoke",
    ]
  ) {
    const r = await cli("guardian", ...sub.split(" "), "--help");
    assertEquals(r.code, 0, sub);
    assert(r.out.includes("guardian node taints NODE") && r.out.includes("--any-taints"), sub);
  }
});

Deno.test("cli: guardian node administration on a data directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vc-cli-admin-" });
  const d = ["--data-dir", dir];
  const ok = async (...argv: string[]) => {
    const r = await cli("guardian", ...argv, ...d);
    assertEquals(r.code, 0, `${argv.join(" ")}: ${r.err}`);
    return r.out;
  };
  try {
    await ok("realm", "create", "home", "--cidr", "10.140.0.0/24");
    const token = await ok(
      "token",
      "create",
      "--realm",
      "home",
      "--taints",
      "lab,ops",
      "--subnets",
      "10.50.0.0/16",
    );
    const { Guardian } = await import("../guardian/guardian.ts");
    const { openStore } = await import("../guardian/server.ts");
    {
      using store = openStore(dir);
      const g = new Guardian(store, {
        certTtlMs: 60_000,
        natsUrls: [],
        natsPort: 0,
        iceServers: [],
        clock: Date.now,
      });
      await g.register(token, { tag: "web", taints: ["lab"] });
      await g.register(token, { tag: "db" });
    }
    assert(
      (await ok("node", "list")).split("\n").some((l) => l.startsWith("web ") && l.includes("taints lab")),
    );
    assertEquals(JSON.parse(await ok("node", "taints", "web", "ops")).taints, ["ops"]);
    const taken = await cli("guardian", "node", "tag", "web", "db", ...d);
    assertEquals(taken.code, 1);
    assert(taken.err.includes(`tag "db" is held by another node`), taken.err);
    assertEquals(JSON.parse(await ok("node", "tag", "web", "www")).tag, "www");
    assertEquals(JSON.parse(await ok("node", "subnets", "www", "10.50.1.0/24")).granted_subnets, [
      "10.50.1.0/24",
    ]);
    assert(JSON.parse(await ok("node", "revoke", "www")).revoked_at > 0);
    assertEquals(JSON.parse(await ok("node", "list", "--json")).map((n: { tag: string }) => n.tag), [
      "www",
      "db",
    ]);
    await ok("node", "remove", "db");
    const gone = await cli("guardian", "node", "show", "db", ...d);
    assertEquals([gone.code, gone.err.includes('no node "db"')], [1, true]);
    const bad = await cli("guardian", "node", "frob", ...d);
    assertEquals(bad.code, 2);
    const ttl = await cli("guardian", "serve", "--cert-ttl", "2d", ...d);
    assertEquals([ttl.code, ttl.err.includes("--cert-ttl")], [2, true]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
