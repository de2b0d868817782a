/**
 * The container's pieces that can be checked without a container engine: the entrypoint (with a stand-in
 * `veilnet-conflux` on PATH that records its calls) and the files the Dockerfile copies.
 * @module
 */

import { assert, assertEquals } from "./assert.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const ENTRYPOINT = `${ROOT}container/entrypoint.sh`;

/**
 * Runs the entrypoint with `args` in a fresh HOME; `register` exits with `registerCode`. `calls` are the stand-in's
 * command lines; `tokens` the VEILNET_REGISTRATION_TOKEN each call had in its environment ("-" for none). A
 * `tokenFile` is written in the temporary directory as `token` and named by VEILNET_REGISTRATION_TOKEN_FILE.
 */
async function entrypoint(
  args: string[],
  o: { token?: string; tokenFile?: string; registered?: boolean; registerCode?: number } = {},
): Promise<{ code: number; calls: string[]; tokens: string[]; stderr: string; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "vc-entry-" });
  try {
    await Deno.mkdir(`${dir}/bin`);
    await Deno.mkdir(`${dir}/home/.config/conflux`, { recursive: true });
    if (o.registered) await Deno.writeTextFile(`${dir}/home/.config/conflux/conflux.json`, "{}");
    await Deno.writeTextFile(
      `${dir}/bin/veilnet-conflux`,
      `#!/bin/sh\necho "$*" >> ${dir}/calls\necho "\${VEILNET_REGISTRATION_TOKEN:--}" >> ${dir}/tokens\n` +
        `[ "$1" = register ] && exit ${o.registerCode ?? 0}\nexit 0\n`,
      { mode: 0o755 },
    );
    const env: Record<string, string> = { PATH: `${dir}/bin:/usr/bin:/bin`, HOME: `${dir}/home` };
    if (o.token) env.VEILNET_REGISTRATION_TOKEN = o.token;
    if (o.tokenFile !== undefined) {
      await Deno.writeTextFile(`${dir}/token`, o.tokenFile, { mode: 0o600 });
      env.VEILNET_REGISTRATION_TOKEN_FILE = `${dir}/token`;
    }
    const out = await new Deno.Command("sh", { args: [ENTRYPOINT, ...args], env, clearEnv: true }).output();
    const lines = async (name: string) =>
      (await Deno.readTextFile(`${dir}/${name}`).catch(() => "")).split("\n").filter((l) => l);
    const calls = await lines("calls");
    for (const secret of [o.token, o.tokenFile?.trim()].filter((t) => t)) {
      assert(calls.every((c) => !c.includes(secret!)), `a token on a command line: ${calls.join(" | ")}`);
    }
    return {
      code: out.code,
      calls,
      tokens: await lines("tokens"),
      stderr: new TextDecoder().decode(out.stderr),
      dir,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("container: the first start registers, then runs; the token is in register's environment only", async () => {
  const r = await entrypoint(["run"], { token: "REG-c0ffee" });
  assertEquals([r.code, r.calls, r.stderr], [0, ["register --no-service", "run"], ""]);
  // register reads the variable itself; the node it starts afterwards does not inherit the token.
  assertEquals(r.tokens, ["REG-c0ffee", "-"]);
});

Deno.test("container: VEILNET_REGISTRATION_TOKEN_FILE (a secret) hands register the file, not the token", async () => {
  const r = await entrypoint(["run"], { tokenFile: "REG-secret-77\n", token: "REG-ignored" });
  assertEquals([r.code, r.stderr], [0, ""]);
  assertEquals(r.calls, [`register --no-service --token-file ${r.dir}/token`, "run"]);
  assertEquals(r.tokens, ["REG-ignored", "-"]); // the file wins in register; nothing is left for `run`
  const alone = await entrypoint(["run"], { tokenFile: "REG-secret-78\n" });
  assertEquals(alone.calls, [`register --no-service --token-file ${alone.dir}/token`, "run"]);
  assertEquals(alone.tokens, ["-", "-"]);
});

Deno.test("container: a restart with the registration in the volume does not register again", async () => {
  assertEquals((await entrypoint(["run"], { token: "REG", registered: true })).calls, ["run"]);
});

Deno.test("container: without a token it runs (and `run` says it is not registered)", async () => {
  assertEquals((await entrypoint(["run"])).calls, ["run"]);
});

Deno.test("container: a failed registration does not start the node", async () => {
  const r = await entrypoint(["run"], { token: "REG", registerCode: 1 });
  assertEquals([r.code, r.calls], [1, ["register --no-service"]]);
  assert(r.stderr.includes("registration failed"), r.stderr);
});

Deno.test("container: other commands pass straight through", async () => {
  assertEquals((await entrypoint(["status", "--json"], { token: "REG" })).calls, ["status --json"]);
  // A registration by hand still finds the token where it was given, in the environment.
  const register = await entrypoint(["register", "--no-service"], { token: "REG-by-hand" });
  assertEquals([register.calls, register.tokens], [["register --no-service"], ["REG-by-hand"]]);
});

Deno.test("container: every file the Dockerfile copies exists; compose uses the documented variables", async () => {
  const dockerfile = await Deno.readTextFile(`${ROOT}Dockerfile`);
  const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(" "));
  assert(sources.length >= 6, dockerfile);
  for (const s of sources) await Deno.stat(`${ROOT}${s}`);
  assert(/HEALTHCHECK[\s\S]*\/healthz/.test(dockerfile), "the healthcheck asks /healthz");
  const compose = await Deno.readTextFile(`${ROOT}docker-compose.yml`);
  assert(
    compose.includes("NET_ADMIN") && compose.includes("/dev/net/tun") && !compose.includes("privileged"),
  );
  const example = await Deno.readTextFile(`${ROOT}.env.example`);
  for (const name of ["VEILNET_GUARDIAN", "VEILNET_REGISTRATION_TOKEN", "VEILNET_CONFLUX_TAG"]) {
    assert(example.includes(`${name}=`), name);
  }
});
