/**
 * The Guardian and its Master over TLS, attacked: a registration token names the Guardian's realm CA, so a node
 * verifies the Guardian with nothing else; an impostor with another certificate, or a plain-HTTP URL, gets no
 * byte of the token. An operator's certificate is verified as any HTTPS client does; plain text is an opt-out
 * that says so.
 */

import { assert, assertEquals } from "./assert.ts";
import { cli, freePort, GuardianProc, NodeProc, tempDir, waitFor } from "./harness.ts";
import { probeNats } from "../src/control/nats.ts";
import { pinOf, realmServerTls } from "../src/guardian/tls.ts";
import { Store } from "../src/guardian/store.ts";

/** A server that records every request it gets and answers like a Guardian would (TLS when given). */
function recorder(tls?: { certPem: string; keyPem: string }) {
  const requests: string[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
    ...(tls ? { cert: tls.certPem, key: tls.keyPem } : {}),
  }, (req) => {
    requests.push(`${req.method} ${new URL(req.url).pathname} ${req.headers.get("authorization") ?? ""}`);
    return Response.json({ conflux_id: "x", token: "vcfx.x.y" });
  });
  return {
    requests,
    url: `${tls ? "https" : "http"}://127.0.0.1:${server.addr.port}`,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

Deno.test("TLS: register verifies the Guardian by the CA its token names; impostors and plain HTTP get nothing", async () => {
  await using tmp = await tempDir("vc-tls-");
  await using guardian = new GuardianProc(`${tmp.path}/g`, {
    embeddedMaster: true,
    natsPort: freePort(),
    flags: ["--stun-port", "off"],
  });
  await guardian.start();
  assert(guardian.url.startsWith("https://"));
  await guardian.admin(["realm", "create", "home"]);
  const token = await guardian.admin(["token", "create", "--realm", "home", "--uses", "5"]);
  const parts = token.split(".");
  assertEquals(parts.length, 4, token);
  assertEquals(parts[3], await pinOf(guardian.ca), "the token names the Guardian's realm CA");

  // An impostor at another address, with a certificate from another CA (as anyone can make): refused before any
  // request, so it never sees the token.
  await using impostor = recorder(await realmServerTls(new Store(":memory:"), []));
  const env = (name: string) => ({
    VEILNET_CONFIG_DIR: `${tmp.path}/${name}`,
    VEILNET_REGISTRATION_TOKEN: token,
  });
  const fooled = await cli(["register", "--guardian", impostor.url, "--no-service"], env("fooled"));
  assertEquals(fooled.code, 1, fooled.stderr);
  assert(fooled.stderr.includes("presented no certificate with SHA-256"), fooled.stderr);
  assertEquals(impostor.requests, []);

  // The same token against a plain-HTTP server: refused, nothing sent (a downgrade would show the token).
  await using plain = recorder();
  const downgraded = await cli(["register", "--guardian", plain.url, "--no-service"], env("plain"));
  assertEquals(downgraded.code, 1, downgraded.stderr);
  assert(downgraded.stderr.includes("use https://"), downgraded.stderr);
  assertEquals(plain.requests, []);

  // The real Guardian: the CA is saved with the registration, and the node reaches the Master over TLS with it.
  const node = new NodeProc("honest", `${tmp.path}/honest`);
  await node.register(guardian.url, token);
  const saved = JSON.parse(await Deno.readTextFile(`${tmp.path}/honest/conflux.json`));
  assertEquals(saved.guardian_ca, guardian.ca);
  await using _node = node;
  await node.start();
  await waitFor("the node to reach the Master", 10_000, async () => {
    const s = (await node.status()).json as { connected: { master: boolean } };
    return s.connected.master;
  });

  // The Master presents a certificate of the realm CA: a client trusting another CA is refused.
  const master = [`tls://127.0.0.1:${guardian.options.natsPort}`];
  const other = (await realmServerTls(new Store(":memory:"), [])).caPem!;
  const credentials = () => ({
    jwt: "x",
    seed: "SUAAVTOSP4BMY4LX3WTMZGTQOHFAMJ6GTW2XWNCZMWJ2KHVGT7QLVEUBFY",
  });
  const probe = (ca: string) =>
    probeNats({ urls: master, ca, credentials, inboxPrefix: "_I", name: "probe", timeoutMs: 3_000 }).then(
      () => "connected",
      (error: Error) => `${error.message} ${(error.cause as Error | undefined)?.message ?? ""}`,
    );
  const refused = await probe(other);
  assert(/certificate/i.test(refused), refused);
  const trusted = await probe(guardian.ca);
  assert(!/certificate/i.test(trusted), `with the realm CA the TLS handshake succeeds: ${trusted}`);
});

Deno.test("TLS: an operator's certificate is verified as any HTTPS client does; --plaintext says what it costs", async () => {
  await using tmp = await tempDir("vc-tls-op-");
  // The operator's own CA (not the Guardian's) and a certificate it issued for this host.
  const operatorCa = await realmServerTls(new Store(":memory:"), []);
  await Deno.writeTextFile(`${tmp.path}/cert.pem`, operatorCa.certPem);
  await Deno.writeTextFile(`${tmp.path}/key.pem`, operatorCa.keyPem);
  await Deno.writeTextFile(`${tmp.path}/operator-ca.pem`, operatorCa.caPem!);
  await using guardian = new GuardianProc(`${tmp.path}/g`, {
    flags: ["--stun-port", "off", "--tls-cert", `${tmp.path}/cert.pem`, "--tls-key", `${tmp.path}/key.pem`],
  });
  // The harness trusts DATA_DIR/ca.pem; an operator's Guardian writes none, so it is given the operator's CA.
  await Deno.mkdir(`${tmp.path}/g`, { recursive: true });
  await Deno.copyFile(`${tmp.path}/operator-ca.pem`, `${tmp.path}/g/ca.pem`);
  await guardian.start();
  assert(guardian.proc!.output.includes("operator's certificate"), guardian.proc!.output);
  await guardian.admin(["realm", "create", "home"]);
  const token = await guardian.admin(["token", "create", "--realm", "home", "--uses", "2"]);
  assertEquals(token.split(".").length, 3, "no pin: the operator's certificate is verified by its CA");
  const env = (name: string) => ({
    VEILNET_CONFIG_DIR: `${tmp.path}/${name}`,
    VEILNET_REGISTRATION_TOKEN: token,
  });
  const unknown = await cli(["register", "--guardian", guardian.url, "--no-service"], env("a"));
  assertEquals(unknown.code, 1, "a CA nobody trusts is refused");
  assert(/certificate|UnknownIssuer|fetch failed/i.test(unknown.stderr), unknown.stderr);
  const known = await cli(
    ["register", "--guardian", guardian.url, "--guardian-ca", `${tmp.path}/operator-ca.pem`, "--no-service"],
    env("b"),
  );
  assertEquals(known.code, 0, known.stderr);
  await guardian.stop();

  // Plain text: only when asked, said at every start, and tokens then name no certificate.
  await using plain = new GuardianProc(`${tmp.path}/p`, { flags: ["--stun-port", "off", "--plaintext"] });
  await plain.start();
  assert(plain.url.startsWith("http://"));
  assert(plain.proc!.output.includes("WARNING: --plaintext"), plain.proc!.output);
  await plain.admin(["realm", "create", "home"]);
  const plainToken = await plain.admin(["token", "create", "--realm", "home"]);
  assertEquals(plainToken.split(".").length, 3);
  const r = await cli(["register", "--guardian", plain.url, "--no-service"], {
    VEILNET_CONFIG_DIR: `${tmp.path}/c`,
    VEILNET_REGISTRATION_TOKEN: plainToken,
  });
  assertEquals(r.code, 0, r.stderr);
  assert(r.stderr.includes("WARNING") && r.stderr.includes("plain HTTP"), r.stderr);
});
