/**
 * Every command that takes a token takes it without a command line: from a file, from standard input (`-`), or
 * from the environment. Run as a user runs them (a process, its stdin piped) against a stand-in Guardian that
 * records the bearer token each request carried, and a stand-in systemctl that records its arguments.
 */

import { assert, assertEquals } from "../../tests/assert.ts";
import { tempDir } from "../../tests/harness.ts";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;

/** A stand-in Guardian: it records each request's path, bearer token and body, and answers what a command needs. */
function standInGuardian() {
  const seen: { path: string; bearer: string; body: Record<string, unknown> }[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = new URL(request.url).pathname;
    const body = await request.json().catch(() => ({}));
    seen.push({ path, bearer: request.headers.get("authorization")?.replace(/^Bearer /, "") ?? "", body });
    if (path === "/conflux/register") return Response.json({ conflux_id: "c-1", token: "CONFLUX-1" });
    if (path === "/admin/realms") return Response.json([]);
    return Response.json({ error: "not here" }, { status: 404 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    seen,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** Runs the CLI with `stdin` piped in and `env` added (the token variables cleared unless given). */
async function veilnet(
  argv: string[],
  o: { stdin?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", MAIN, ...argv],
    env: {
      VEILNET_REGISTRATION_TOKEN: "",
      VEILNET_CONFLUX_TOKEN: "",
      VEILNET_CONFLUX_JWT: "",
      VEILNET_ADMIN_TOKEN: "",
      VEILNET_GUARDIAN: "",
      ...o.env,
    },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(o.stdin ?? ""));
  await writer.close();
  const out = await child.output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: text(out.stdout), stderr: text(out.stderr) };
}

/** A refusal: exit 2 and one line on stderr that says `says`. */
function refused(r: { code: number; stderr: string }, says: string, what: string): void {
  assertEquals(r.code, 2, `${what}: ${r.stderr}`);
  assertEquals(r.stderr.trimEnd().split("\n").length, 1, `${what}: ${r.stderr}`);
  assert(r.stderr.includes(says), `${what}: ${r.stderr}`);
}

Deno.test("register takes the registration token (and --jwt) from a file, standard input or the environment", async () => {
  await using dir = await tempDir("vc-tokens-register-");
  await using guardian = standInGuardian();
  const env = { VEILNET_CONFIG_DIR: `${dir.path}/config`, VEILNET_SYSTEMD_ROOT: `${dir.path}/root` };
  const file = `${dir.path}/reg.token`;
  const jwtFile = `${dir.path}/id.jwt`;
  await Deno.writeTextFile(file, "REG-file\n", { mode: 0o600 });
  await Deno.writeTextFile(jwtFile, "eyJ.jwt-file.sig\n", { mode: 0o600 });
  const g = ["--guardian", guardian.url, "--no-service", "--force"];
  const cases: [
    n: number,
    argv: string[],
    o: { stdin?: string; env?: Record<string, string> },
    bearer: string,
    jwt?: string,
  ][] = [
    [1, ["--token-file", file], {}, "REG-file"],
    [2, ["-t", "-"], { stdin: "REG-stdin\n" }, "REG-stdin"],
    [3, ["--token", "-"], { stdin: "REG-stdin-2" }, "REG-stdin-2"],
    [4, [], { env: { VEILNET_REGISTRATION_TOKEN: "REG-env" } }, "REG-env"],
    [5, ["--token-file", file], { env: { VEILNET_REGISTRATION_TOKEN: "REG-env" } }, "REG-file"],
    [6, ["-t", "REG-flag"], {}, "REG-flag"], // still works, for scripts that cannot change yet
    [
      7,
      ["--token-file", file, "--jwt", "-"],
      { stdin: "eyJ.jwt-stdin.sig\n" },
      "REG-file",
      "eyJ.jwt-stdin.sig",
    ],
    [8, ["-t", "-", "--jwt-file", jwtFile], { stdin: "REG-stdin" }, "REG-stdin", "eyJ.jwt-file.sig"],
    [
      9,
      ["-t", "-"],
      { stdin: "REG-stdin", env: { VEILNET_CONFLUX_JWT: "eyJ.env.sig" } },
      "REG-stdin",
      "eyJ.env.sig",
    ],
  ];
  for (const [n, argv, o, bearer, jwt] of cases) {
    guardian.seen.length = 0;
    const r = await veilnet(["register", ...argv, ...g], { ...o, env: { ...env, ...o.env } });
    assertEquals(r.code, 0, `case ${n}: ${r.stderr}`);
    assertEquals(guardian.seen.map((s) => [s.path, s.bearer, s.body.jwt]), [[
      "/conflux/register",
      bearer,
      jwt,
    ]], `case ${n}`);
  }
  const saved = JSON.parse(await Deno.readTextFile(`${dir.path}/config/conflux.json`));
  assertEquals(saved.token, "CONFLUX-1");
});

Deno.test("register and up refuse an unreadable or empty token file, two sources, and a second stdin reader", async () => {
  await using dir = await tempDir("vc-tokens-refuse-");
  const env = { VEILNET_CONFIG_DIR: `${dir.path}/config`, VEILNET_SYSTEMD_ROOT: `${dir.path}/root` };
  const empty = `${dir.path}/empty`;
  await Deno.writeTextFile(empty, "\n", { mode: 0o600 });
  const g = ["--guardian", "http://127.0.0.1:9", "--no-service"];
  const cases: [n: number, argv: string[], stdin: string, says: string][] = [
    [
      1,
      ["register", "--token-file", `${dir.path}/missing`, ...g],
      "",
      `--token-file ${dir.path}/missing: cannot read`,
    ],
    [2, ["register", "--token-file", empty, ...g], "", "the registration token is empty"],
    [3, ["register", "-t", "-", ...g], "", "-t/--token - (standard input): the registration token is empty"],
    [4, ["register", "-t", "REG", "--token-file", empty, ...g], "", "exclude each other"],
    [5, ["register", "-t", "-", "--jwt", "-", ...g], "REG\nJWT\n", "standard input can hold only one"],
    [6, ["register", "--jwt", "x", "--jwt-file", empty, "-t", "R", ...g], "", "--jwt and --jwt-file exclude"],
    [7, ["register", "-t", "-", ...g], "REG-a\nREG-b\n", "more than one word or line"],
    [8, ["register", ...g], "", "--token-file FILE or VEILNET_REGISTRATION_TOKEN"],
    [9, ["up", "--token-file", `${dir.path}/missing`, ...g], "", "cannot read the conflux token"],
    [10, ["up", "-t", "-", ...g], "\n", "the conflux token is empty"],
    [11, ["up", "-t", "T", "--token-file", empty, ...g], "", "exclude each other"],
    [12, ["up", ...g], "", "--token-file FILE or VEILNET_CONFLUX_TOKEN"],
  ];
  await Promise.all(cases.map(async ([n, argv, stdin, says]) => {
    refused(await veilnet(argv, { stdin, env }), says, `case ${n}: ${argv.join(" ")}`);
  }));
  // Nothing was saved by a refused command.
  assertEquals([...Deno.readDirSync(dir.path)].map((e) => e.name), ["empty"]);
});

Deno.test("up -t - saves the token in up.json alone: the unit and systemctl's arguments carry none", async () => {
  await using dir = await tempDir("vc-tokens-up-");
  const root = `${dir.path}/root`;
  const bin = `${dir.path}/bin`;
  Deno.mkdirSync(`${root}/run/systemd/system`, { recursive: true });
  Deno.mkdirSync(bin);
  await Deno.writeTextFile(`${bin}/systemctl`, `#!/bin/sh\necho "$*" >> ${dir.path}/systemctl\n`, {
    mode: 0o755,
  });
  const r = await veilnet(["up", "-t", "-", "--guardian", "http://127.0.0.1:9"], {
    stdin: "CONFLUX-stdin-5e\n",
    env: {
      VEILNET_CONFIG_DIR: `${dir.path}/config`,
      VEILNET_SYSTEMD_ROOT: root,
      PATH: `${bin}:${Deno.env.get("PATH")}`,
    },
  });
  assertEquals(r.code, 0, r.stderr);
  const upJson = `${dir.path}/config/up.json`;
  assertEquals(JSON.parse(await Deno.readTextFile(upJson)).token, "CONFLUX-stdin-5e");
  assertEquals((Deno.statSync(upJson).mode ?? 0) & 0o777, 0o600);
  const unit = await Deno.readTextFile(`${root}/etc/systemd/system/veilnet.service`);
  assert(/^ExecStart=.* run --config \S+up\.json$/m.test(unit), unit);
  const calls = await Deno.readTextFile(`${dir.path}/systemctl`);
  assertEquals(calls, "daemon-reload\nenable veilnet.service\nstart veilnet.service\n");
  for (const text of [unit, calls, r.stdout, r.stderr]) assert(!text.includes("CONFLUX-stdin-5e"), text);
});

Deno.test("guardian admin over HTTP takes the admin token from a file, standard input or VEILNET_ADMIN_TOKEN", async () => {
  await using dir = await tempDir("vc-tokens-admin-");
  await using guardian = standInGuardian();
  const file = `${dir.path}/admin.token`;
  await Deno.writeTextFile(file, "ADMIN-file\n", { mode: 0o600 });
  const list = ["guardian", "realm", "list", "--guardian", guardian.url];
  const cases: [
    n: number,
    argv: string[],
    o: { stdin?: string; env?: Record<string, string> },
    bearer: string,
  ][] = [
    [1, ["--admin-token-file", file], {}, "ADMIN-file"],
    [2, ["--admin-token", "-"], { stdin: "ADMIN-stdin\n" }, "ADMIN-stdin"],
    [3, [], { env: { VEILNET_ADMIN_TOKEN: "ADMIN-env" } }, "ADMIN-env"],
    [4, ["--admin-token-file", file], { env: { VEILNET_ADMIN_TOKEN: "ADMIN-env" } }, "ADMIN-file"],
    [5, ["--admin-token", "ADMIN-flag"], {}, "ADMIN-flag"],
  ];
  for (const [n, argv, o, bearer] of cases) {
    guardian.seen.length = 0;
    const r = await veilnet([...list, ...argv], o);
    assertEquals([r.code, r.stdout.trim()], [0, "[]"], `case ${n}: ${r.stderr}`);
    assertEquals(guardian.seen.map((s) => s.bearer), [bearer], `case ${n}`);
  }
  const refusals: [n: number, argv: string[], says: string][] = [
    [1, [...list], "--admin-token-file FILE, --admin-token - (standard input), VEILNET_ADMIN_TOKEN"],
    [2, [...list, "--admin-token", "A", "--admin-token-file", file], "exclude each other"],
    [3, [...list, "--admin-token-file", `${dir.path}/missing`], "cannot read the admin token"],
    [
      4,
      ["guardian", "realm", "list", "--data-dir", dir.path, "--admin-token-file", file],
      "goes with --guardian",
    ],
  ];
  guardian.seen.length = 0;
  for (const [n, argv, says] of refusals) refused(await veilnet(argv), says, `refusal ${n}`);
  assertEquals(guardian.seen, [], "a refused command sends nothing");
});

Deno.test("--help names every way to give a token", async () => {
  const help = async (...argv: string[]) => (await veilnet([...argv, "--help"])).stdout;
  for (
    const [command, flags] of [["register", ["-t -", "--token-file", "--jwt -", "--jwt-file"]], ["up", [
      "-t -",
      "--token-file",
    ]]] as const
  ) {
    const text = await help(command);
    for (const flag of flags) assert(text.includes(flag), `${command} --help: ${flag}\n${text}`);
  }
  const guardian = await help("guardian");
  for (const flag of ["--admin-token-file FILE", "--admin-token -", "VEILNET_ADMIN_TOKEN"]) {
    assert(guardian.includes(flag), `guardian --help: ${flag}`);
  }
});
