/**
 * The container's pieces that can be checked without a container engine: the entrypoint (with a stand-in
 * `veilnet-conflux` on PATH that records its calls) and the files the Dockerfile copies.
 * @module
 */

import { assert, assertEquals } from "./assert.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const ENTRYPOINT = `${ROOT}container/entrypoint.sh`;

/** Runs the entrypoint with `args` in a fresh HOME; `register` exits with `registerCode`. */
async function entrypoint(
  args: string[],
  o: { token?: string; registered?: boolean; registerCode?: number } = {},
): Promise<{ code: number; calls: string[]; stderr: string }> {
  const dir = await Deno.makeTempDir({ prefix: "vc-entry-" });
  try {
    await Deno.mkdir(`${dir}/bin`);
    await Deno.mkdir(`${dir}/home/.config/conflux`, { recursive: true });
    if (o.registered) await Deno.writeTextFile(`${dir}/home/.config/conflux/conflux.json`, "{}");
    await Deno.writeTextFile(
      `${dir}/bin/veilnet-conflux`,
      `#!/bin/sh\necho "$*" >> ${dir}/calls\n[ "$1" = register ] && exit ${o.registerCode ?? 0}\nexit 0\n`,
      { mode: 0o755 },
    );
    const env: Record<string, string> = { PATH: `${dir}/bin:/usr/bin:/bin`, HOME: `${dir}/home` };
    if (o.token) env.VEILNET_REGISTRATION_TOKEN = o.token;
    const out = await new Deno.Command("sh", { args: [ENTRYPOINT, ...args], env, clearEnv: true }).output();
    const calls = (await Deno.readTextFile(`${dir}/calls`).catch(() => "")).split("\n").filter((l) => l);
    return { code: out.code, calls, stderr: new TextDecoder().decode(out.stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("container: the first start registers, then runs", async () => {
  assertEquals(await entrypoint(["run"], { token: "REG" }), {
    code: 0,
    calls: ["register --no-service", "run"],
    stderr: "",
  });
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
