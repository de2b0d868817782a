import { assert, assertEquals } from "../../tests/assert.ts";
import { COMMANDS } from "./commands.ts";
import { main } from "./main.ts";
import { VERSION } from "../spec.ts";
import { cli as harnessCli } from "../../tests/harness.ts";
import { TEST_GUARDIAN_OPTIONS } from "../../tests/guardian_fixture.ts";

async function cli(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out: out.join("\n"), err: err.join("\n") };
}

/** Registers nodes with `token` straight into the Guardian's data directory `dir`, as `register` would. */
async function registerIn(dir: string, token: string, ...nodes: { tag: string; taints?: string[] }[]) {
  const { Guardian } = await import("../guardian/guardian.ts");
  const { openStore } = await import("../guardian/server.ts");
  using store = openStore(dir);
  const g = new Guardian(store, TEST_GUARDIAN_OPTIONS);
  for (const node of nodes) await g.register(token, node);
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
      "realm regions",
      "node region",
      "node regions",
    ]
  ) {
    const r = await cli("guardian", ...sub.split(" "), "--help");
    assertEquals(r.code, 0, sub);
    assert(r.out.includes("guardian node taints NODE") && r.out.includes("--any-taints"), sub);
    assert(r.out.includes("guardian node regions NODE") && r.out.includes("--follow-realm"), sub);
    assert(r.out.includes("guardian realm regions NAME") && r.out.includes("[--region NAME]"), sub);
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
    await registerIn(dir, token, { tag: "web", taints: ["lab"] }, { tag: "db" });
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

Deno.test("cli: guardian regions on a data directory: realm regions, node region and regions, token create --region", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vc-cli-regions-" });
  const d = ["--data-dir", dir];
  const run = (...argv: string[]) => cli("guardian", ...argv, ...d);
  const ok = async (...argv: string[]) => {
    const r = await run(...argv);
    assertEquals(r.code, 0, `${argv.join(" ")}: ${r.err}`);
    return r.out;
  };
  try {
    await ok("realm", "create", "home", "--cidr", "10.141.0.0/24");
    const token = await ok("token", "create", "--realm", "home", "--region", "eu-west");
    assertEquals(JSON.parse(await ok("token", "list"))[0].region, "eu-west");
    await registerIn(dir, token, { tag: "web" });
    assert(
      (await ok("node", "list")).split("\n").some((l) =>
        l.startsWith("web ") && l.includes("region eu-west")
      ),
    );
    assert(
      (await ok("realm", "regions", "home", "--allow", "eu-west,eu-north")).includes("eu-west, eu-north"),
    );
    assertEquals(JSON.parse(await ok("realm", "list"))[0].regions, ["eu-west", "eu-north"]);
    const follows = JSON.parse(await ok("node", "show", "web"));
    assertEquals([follows.regions, follows.regions_follow_realm], [["eu-west", "eu-north"], true]);
    assertEquals(JSON.parse(await ok("node", "region", "web", "us-east")).region, "us-east");
    assertEquals(JSON.parse(await ok("node", "region", "web", "--none")).region, "");
    assert(!(await ok("node", "list")).includes("region"));
    const own = JSON.parse(await ok("node", "regions", "web", "--allow", "us-east"));
    assertEquals([own.regions, own.regions_follow_realm], [["us-east"], false]);
    const anywhere = JSON.parse(await ok("node", "regions", "web", "--anywhere"));
    assertEquals([anywhere.regions, anywhere.regions_follow_realm], [[], false]);
    const back = JSON.parse(await ok("node", "regions", "web", "--follow-realm"));
    assertEquals([back.regions, back.regions_follow_realm], [["eu-west", "eu-north"], true]);
    assert((await ok("realm", "regions", "home", "--anywhere")).includes("anywhere"));
    // Refusals: the command line (2), and the Guardian's checks (1, naming the value).
    const refused: [argv: string[], code: number, says: string][] = [
      [["realm", "regions", "home"], 2, "--allow"],
      [["realm", "regions", "home", "--allow", "eu", "--anywhere"], 2, "not --allow and --anywhere"],
      [["realm", "regions", "home", "--allow", ""], 2, "at least one region"],
      [["node", "region", "web"], 2, "--none"],
      [["node", "region", "web", "eu", "--none"], 2, "--none"],
      [["node", "regions", "web"], 2, "--follow-realm"],
      [["node", "regions", "web", "--anywhere", "--follow-realm"], 2, "not --anywhere and --follow-realm"],
      [["node", "tag", "web", "www", "--none"], 2, "--none belongs to node region"],
      [["node", "region", "web", "EU"], 1, 'bad region "EU"'],
      [["node", "regions", "web", "--allow", "eu,eu"], 1, 'region "eu" is in regions twice'],
      [["realm", "regions", "home", "--allow", "a b"], 1, 'bad region "a b"'],
      [["token", "create", "--realm", "home", "--region", "Mars"], 1, 'bad region "Mars"'],
      [["serve", "--region", "Mars"], 2, "--region"],
    ];
    for (const [argv, code, says] of refused) {
      const r = await run(...argv);
      assertEquals(r.code, code, `${argv.join(" ")}: ${r.err}`);
      assert(r.err.includes(says), `${argv.join(" ")}: ${r.err}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: guardian regions through the admin API (--guardian URL)", async () => {
  const { guardianSetup } = await import("../../tests/guardian_fixture.ts");
  const { handler, admin, reg, guardian, store } = await guardianSetup();
  await using server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => handler(req));
  const g = ["--guardian", `http://127.0.0.1:${server.addr.port}`, "--admin-token", admin];
  const ok = async (...argv: string[]) => {
    const r = await cli("guardian", ...argv, ...g);
    assertEquals(r.code, 0, `${argv.join(" ")}: ${r.err}`);
    return r.out;
  };
  const { conflux_id: id } = await guardian.register(reg, { tag: "web" });
  assert((await ok("realm", "regions", "home", "--allow", "eu-west")).includes("eu-west"));
  assertEquals(JSON.parse(await ok("node", "region", "web", "eu-north")).region, "eu-north");
  assertEquals(JSON.parse(await ok("node", "regions", "web", "--allow", "eu-north,eu-west")).regions, [
    "eu-north",
    "eu-west",
  ]);
  assertEquals([store.confluxById(id)!.region, store.confluxById(id)!.regions], ["eu-north", [
    "eu-north",
    "eu-west",
  ]]);
  assertEquals(JSON.parse(await ok("node", "regions", "web", "--follow-realm")).regions_follow_realm, true);
  assertEquals(store.confluxById(id)!.regions, null);
  assertEquals(JSON.parse(await ok("node", "region", "web", "--none")).region, "");
  await ok("token", "create", "--realm", "home", "--region", "us-east");
  assertEquals(store.tokens().at(-1)!.region, "us-east");
  assertEquals(store.realmByName("home")!.regions, ["eu-west"]);
  const bad = await cli("guardian", "node", "region", "web", "EU", ...g);
  assertEquals([bad.code, bad.err.includes('bad region "EU"')], [1, true]);
});
