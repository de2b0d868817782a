/**
 * install.sh end to end, the way a user runs it: `curl -fsSL $BASE/install.sh | sh`, against a local HTTP server
 * that serves a stand-in release (a shell script that records how it was called) and its `.sha256`.
 * @module
 */

import { assert, assertEquals, assertFalse } from "./assert.ts";

const INSTALL_SH = new URL("../install.sh", import.meta.url);
const ARCH = Deno.build.arch; // "x86_64" | "aarch64", the names compile.sh uses
const ASSET = `veilnet-conflux-linux-${ARCH}`;
const USER_PIPE = 'curl -fsSL "$BASE/install.sh" | sh -s -- "$@"';

const STAND_IN = `#!/bin/sh
if [ "\${1:-}" = --version ]; then echo 0.0.0-stand-in; exit 0; fi
printf '%s\\n' "$@" >"$STAND_IN_ARGS"
printf '%s' "\${VEILNET_REGISTRATION_TOKEN-(unset)}" >"$STAND_IN_ARGS.env"
`;

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(bytes)));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

async function list(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

/** What the stand-in recorded (its arguments, one a line), removing the record; undefined if it was not run. */
async function takeArgs(file: string): Promise<string | undefined> {
  if (!(await exists(file))) return undefined;
  const text = await Deno.readTextFile(file);
  await Deno.remove(file);
  return text;
}

/** The stand-in's command line and the VEILNET_REGISTRATION_TOKEN it was given ("(unset)" when none). */
async function takeCall(file: string): Promise<{ argv?: string; token?: string }> {
  return { argv: await takeArgs(file), token: await takeArgs(`${file}.env`) };
}

async function which(tool: string): Promise<string | undefined> {
  const { success, stdout } = await new Deno.Command("sh", { args: ["-c", 'command -v "$1"', "sh", tool] })
    .output();
  return success ? new TextDecoder().decode(stdout).trim() : undefined;
}

interface Run {
  code: number;
  stderr: string;
}

Deno.test("install.sh: curl | sh installs a verified release, idempotently, registers, refuses a bad one", async (t) => {
  assert(await which("curl"), "this test runs install.sh as users do, through curl: apt-get install curl");
  const root = await Deno.makeTempDir({ prefix: "veilnet-install-test-" });
  const www = `${root}/www`;
  const tmp = `${root}/tmp`; // TMPDIR for install.sh: must be empty after every run
  const argsFile = `${root}/stand-in-args`;
  await Deno.mkdir(`${www}/release`, { recursive: true });
  await Deno.mkdir(`${www}/bad`);
  await Deno.mkdir(tmp);

  const release = new TextEncoder().encode(STAND_IN);
  const hex = await sha256(release);
  await Deno.writeFile(`${www}/release/${ASSET}`, release);
  await Deno.writeTextFile(`${www}/release/${ASSET}.sha256`, `${hex}  ${ASSET}\n`);
  // A newer release, tampered with: the binary is not the one its .sha256 promises.
  const promised = await sha256(new TextEncoder().encode(STAND_IN + "# v2\n"));
  await Deno.writeFile(`${www}/bad/${ASSET}`, new TextEncoder().encode(STAND_IN + "# v2, tampered\n"));
  await Deno.writeTextFile(`${www}/bad/${ASSET}.sha256`, `${promised}  ${ASSET}\n`);

  const requests: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    const path = decodeURIComponent(new URL(request.url).pathname);
    requests.push(path);
    try {
      const file = path === "/install.sh" ? INSTALL_SH : `${www}${path}`;
      return new Response(await Deno.readFile(file));
    } catch {
      return new Response("not found\n", { status: 404 });
    }
  });
  const base = `http://127.0.0.1:${server.addr.port}`;

  /** Runs `pipe` in sh with $BASE, the release URL, install dir and TMPDIR set; `args` become "$@". */
  async function install(
    opts: {
      dir: string;
      url?: string;
      args?: string[];
      pipe?: string;
      path?: string;
      env?: Record<string, string>;
    },
  ): Promise<Run> {
    const env: Record<string, string> = {
      PATH: opts.path ?? Deno.env.get("PATH") ?? "/usr/bin:/bin",
      BASE: base,
      VEILNET_RELEASE_URL: opts.url ?? `${base}/release`,
      TMPDIR: tmp,
      STAND_IN_ARGS: argsFile,
      ...opts.env,
    };
    if (opts.dir) env.VEILNET_INSTALL_DIR = opts.dir;
    const { code, stderr } = await new Deno.Command("sh", {
      args: ["-c", opts.pipe ?? USER_PIPE, "sh", ...(opts.args ?? [])],
      clearEnv: true,
      env,
      stdout: "null",
      stderr: "piped",
    }).output();
    const result = { code, stderr: new TextDecoder().decode(stderr) };
    assertEquals(await list(tmp), [], `install.sh left temporary files behind; stderr:\n${result.stderr}`);
    return result;
  }

  /** A failure: non-zero exit, and the last stderr line is one `install: error: ...` line mentioning `includes`. */
  function refused(run: Run, includes: string): void {
    assert(run.code !== 0, `expected a failure, got exit 0; stderr:\n${run.stderr}`);
    const last = run.stderr.trimEnd().split("\n").at(-1) ?? "";
    assert(
      last.startsWith("install: error: ") && last.includes(includes),
      `unexpected stderr:\n${run.stderr}`,
    );
  }

  try {
    const dir = `${root}/bin`;
    const installed = `${dir}/veilnet-conflux`;

    await t.step("installs the release: identical bytes, executable", async () => {
      const run = await install({ dir });
      assertEquals(run.code, 0, run.stderr);
      assert(
        run.stderr.includes(`installed ${installed} (version 0.0.0-stand-in, sha256 ${hex})`),
        run.stderr,
      );
      assertEquals(await Deno.readFile(installed), release);
      assertEquals((await Deno.stat(installed)).mode! & 0o777, 0o755);
      assertEquals(await list(dir), ["veilnet-conflux"]);
      assertEquals(await takeArgs(argsFile), undefined, "installing alone must not run register");
    });

    await t.step("a second run says so and neither downloads nor reinstalls", async () => {
      const before = await Deno.stat(installed);
      requests.length = 0;
      const run = await install({ dir });
      assertEquals(run.code, 0, run.stderr);
      assert(run.stderr.includes("already installed"), run.stderr);
      assertEquals(requests, ["/install.sh", `/release/${ASSET}.sha256`]);
      assertEquals((await Deno.stat(installed)).mtime, before.mtime);
      assertEquals(await Deno.readFile(installed), release);
    });

    await t.step(
      "VEILNET_REGISTRATION_TOKEN registers; register gets the token in its environment only",
      async () => {
        const token = "REG-env-51c2";
        const run = await install({
          dir,
          args: ["--guardian", "http://g", "--tag", "t"],
          env: { VEILNET_REGISTRATION_TOKEN: token },
        });
        assertEquals(run.code, 0, run.stderr);
        assert(run.stderr.includes("already installed"), run.stderr);
        assertEquals(await takeCall(argsFile), { argv: "register\n--guardian\nhttp://g\n--tag\nt\n", token });
        assertFalse(run.stderr.includes(token), "the registration token must not be echoed");
      },
    );

    await t.step("sh -s -- --token REG ... registers with the token moved off the command line", async () => {
      const token = "REG-7f3a";
      const run = await install({ dir, args: ["--token", token, "--guardian", "http://g", "--tag", "t"] });
      assertEquals(run.code, 0, run.stderr);
      assert(run.stderr.includes("already installed"), run.stderr);
      assertEquals(await takeCall(argsFile), { argv: "register\n--guardian\nhttp://g\n--tag\nt\n", token });
      assertFalse(run.stderr.includes(token), "the registration token must not be echoed");

      // --token=T anywhere, on a fresh directory: installs, then registers; then -t T (it beats the variable).
      const fresh = `${root}/bin-register`;
      const again = await install({ dir: fresh, args: ["--tag", "x y", "--token=REG2"] });
      assertEquals(again.code, 0, again.stderr);
      assertEquals(await Deno.readFile(`${fresh}/veilnet-conflux`), release);
      assertEquals(await takeCall(argsFile), { argv: "register\n--tag\nx y\n", token: "REG2" });
      const third = await install({
        dir: fresh,
        args: ["-t", "REG3", "--no-service"],
        env: { VEILNET_REGISTRATION_TOKEN: "REG-other" },
      });
      assertEquals(third.code, 0, third.stderr);
      assertEquals(await takeCall(argsFile), { argv: "register\n--no-service\n", token: "REG3" });
    });

    await t.step("--token-file FILE goes to register as it is; the token stays in the file", async () => {
      const file = `${root}/reg.token`;
      await Deno.writeTextFile(file, "REG-file-9d0e\n", { mode: 0o600 });
      for (const args of [["--token-file", file, "--tag", "t"], [`--token-file=${file}`, "--tag", "t"]]) {
        const run = await install({ dir, args, env: { VEILNET_REGISTRATION_TOKEN: "REG-other" } });
        assertEquals(run.code, 0, run.stderr);
        assertEquals(await takeCall(argsFile), {
          argv: ["register", ...args, ""].join("\n"),
          token: "(unset)",
        });
        assertFalse(run.stderr.includes("REG-file-9d0e"), run.stderr);
      }
      assertEquals(await Deno.readTextFile(file), "REG-file-9d0e\n", "install.sh must leave the file alone");
    });

    await t.step("register flags without a token, or a token flag without a value, are refused", async () => {
      const fresh = `${root}/bin-flags`;
      const file = `${root}/reg2.token`;
      await Deno.writeTextFile(file, "REG\n", { mode: 0o600 });
      const cases: [args: string[], says: string][] = [
        [["--guardian", "http://g"], "need a registration token"],
        [["--token"], "--token needs"],
        [["--token="], "--token needs"],
        [["--token-file"], "--token-file needs"],
        [["--token", "-"], "cannot come from standard input"],
        [["--token-file", "-"], "cannot come from standard input"],
        [["--token", "REG", "--token-file", file], "exclude each other"],
        [["--token-file", `${root}/missing.token`], "cannot read it"],
      ];
      for (const [args, says] of cases) refused(await install({ dir: fresh, args }), says);
      assertFalse(await exists(fresh));
      assertEquals(await takeArgs(argsFile), undefined);
    });

    await t.step("a checksum mismatch is refused and installs nothing", async () => {
      const fresh = `${root}/bin-bad`;
      const run = await install({ dir: fresh, url: `${base}/bad` });
      refused(run, "checksum mismatch");
      assert(
        run.stderr.includes(`expected ${promised}`) && run.stderr.includes("nothing was installed"),
        run.stderr,
      );
      assert(!(await exists(fresh)) || (await list(fresh)).length === 0, "something was installed");

      // Over an existing install the good binary stays, and no half-written file is left beside it.
      refused(await install({ dir, url: `${base}/bad` }), "checksum mismatch");
      assertEquals(await Deno.readFile(installed), release);
      assertEquals(await list(dir), ["veilnet-conflux"]);
    });

    await t.step("download failures: unreachable server, missing release", async () => {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const closed = `http://127.0.0.1:${listener.addr.port}`;
      listener.close();
      const fresh = `${root}/bin-unreachable`;
      refused(await install({ dir: fresh, url: closed }), `cannot download ${closed}/${ASSET}.sha256`);
      refused(await install({ dir: fresh, url: `${base}/nothing-here` }), "404");
      assertFalse(await exists(fresh));
    });

    await t.step("unsupported OS or CPU is refused before downloading", async () => {
      const fake = `${root}/fake-uname`;
      await Deno.mkdir(fake);
      const path = `${fake}:${Deno.env.get("PATH")}`;
      for (
        const [s, m, message] of [["Darwin", "arm64", "unsupported OS Darwin"], [
          "Linux",
          "mips",
          "unsupported CPU mips",
        ]]
      ) {
        await Deno.writeTextFile(`${fake}/uname`, `#!/bin/sh\n[ "$1" = -s ] && echo ${s} || echo ${m}\n`, {
          mode: 0o755,
        });
        requests.length = 0;
        refused(await install({ dir: `${root}/bin-os`, path }), message);
        assertEquals(requests, ["/install.sh"]);
      }
    });

    await t.step("without curl it uses wget; without either it says so", async () => {
      const curl = await which("curl");
      const tools = ["sh", "uname", "id", "sha256sum", "mktemp", "rm", "mkdir", "cp", "chmod", "mv", "cut"];
      const bin = `${root}/no-curl`;
      await Deno.mkdir(bin);
      for (const tool of tools) await Deno.symlink((await which(tool))!, `${bin}/${tool}`);
      // curl fetches install.sh as a user would; install.sh itself runs with a PATH that lacks curl.
      const pipe = `"${curl}" -fsSL "$BASE/install.sh" | sh -s -- "$@"`;
      refused(await install({ dir: `${root}/bin-no-tools`, pipe, path: bin }), "curl or wget is needed");

      const wget = await which("wget");
      if (wget) {
        await Deno.symlink(wget, `${bin}/wget`);
        const fresh = `${root}/bin-wget`;
        const run = await install({ dir: fresh, pipe, path: bin });
        assertEquals(run.code, 0, run.stderr);
        assertEquals(await Deno.readFile(`${fresh}/veilnet-conflux`), release);
        refused(
          await install({ dir: `${root}/bin-wget-bad`, url: `${base}/bad`, pipe, path: bin }),
          "checksum",
        );
      }
    });

    await t.step({
      name: "not root, installing to /usr/local/bin: refused before downloading",
      ignore: Deno.uid() !== 0 || !(await which("setpriv")),
      fn: async () => {
        requests.length = 0;
        const pipe =
          'curl -fsSL "$BASE/install.sh" | setpriv --reuid=65534 --regid=65534 --clear-groups sh -s --';
        refused(await install({ dir: "", pipe }), "installing to /usr/local/bin needs root");
        assertEquals(requests, ["/install.sh"]);
      },
    });
  } finally {
    await server.shutdown();
    await Deno.remove(root, { recursive: true });
  }
});
