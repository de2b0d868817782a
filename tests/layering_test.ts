/**
 * Architecture rules that code review would otherwise have to catch (STYLE.md): pure modules do no I/O, and each
 * outside dependency is imported by exactly one file.
 */
import { assertEquals } from "./assert.ts";

const root = new URL("../", import.meta.url);

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const entry of Deno.readDir(new URL(dir, root))) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) yield* sources(path);
    else if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) yield path;
  }
}

async function read(path: string): Promise<string> {
  return await Deno.readTextFile(new URL(path, root));
}

Deno.test("layering: pure modules (src/wire, src/crypto, spec, tuning) never use the Deno namespace", async () => {
  const offenders: string[] = [];
  const files = ["src/spec.ts", "src/tuning.ts"];
  for (const dir of ["src/wire", "src/crypto"]) for await (const f of sources(dir)) files.push(f);
  for (const f of files) if (/\bDeno\./.test(await read(f))) offenders.push(f);
  assertEquals(offenders, []);
});

/**
 * Each outside dependency and the one non-test file allowed to import it. `nats` has two: the control channel,
 * and the Guardians' shared state log, the one user of the client's JetStream API.
 */
const OWNERS: Record<string, string | string[]> = {
  "@noble/post-quantum": "src/crypto/pq.ts",
  "node-datachannel": "src/tether/webrtc.ts",
  "nats": ["src/control/nats.ts", "src/guardian/jetstream_log.ts"],
  "node:sqlite": "src/guardian/store.ts",
  "@nats-io/jwt": "src/guardian/nats_auth.ts",
  "@nats-io/nkeys": "src/guardian/nats_auth.ts",
  "jose": "src/guardian/oidc.ts",
  "dns-packet": "src/dns/message.ts",
};

Deno.test("layering: each outside dependency is imported by exactly one file", async () => {
  const importers: Record<string, string[]> = {};
  for await (const f of sources("src")) {
    const text = await read(f);
    for (const dep of Object.keys(OWNERS)) {
      const pattern = new RegExp(`from\\s+["'](npm:)?${dep.replace("/", "\\/")}[@/"']`);
      if (pattern.test(text)) (importers[dep] ??= []).push(f);
    }
  }
  for (const [dep, files] of Object.entries(importers)) {
    assertEquals(files.sort(), [OWNERS[dep]!].flat().sort(), dep);
  }
});

Deno.test("layering: only ffi/ calls Deno.dlopen", async () => {
  const offenders: string[] = [];
  for await (const f of sources("src")) if ((await read(f)).includes("Deno.dlopen")) offenders.push(f);
  assertEquals(offenders, []);
});
