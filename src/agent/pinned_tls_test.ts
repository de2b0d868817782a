import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import {
  createRealmCa,
  issueServerCertificate,
  type RealmCa,
  type TlsCertificate,
} from "../guardian/tls_cert.ts";
import { pinnedCertificate } from "./pinned_tls.ts";

const HOUR = 3_600_000;
const validity = { notBefore: new Date(Date.now() - HOUR), notAfter: new Date(Date.now() + 24 * HOUR) };

/** An HTTPS server on 127.0.0.1 serving `leaf` + `ca` as its chain, counting the HTTP requests that reach it. */
function serveTls(leaf: TlsCertificate, ca: RealmCa) {
  const counter = { requests: 0 };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert: leaf.certPem + ca.certPem, key: leaf.keyPem, onListen() {} },
    () => {
      counter.requests++;
      return new Response("guardian");
    },
  );
  return { server, counter, url: `https://127.0.0.1:${server.addr.port}/` };
}

async function realm() {
  const ca = await createRealmCa();
  const leaf = await issueServerCertificate(ca, { dnsNames: ["localhost"], ips: ["127.0.0.1"], ...validity });
  return { ca, leaf };
}

Deno.test("pinnedCertificate: the realm CA's fingerprint yields the CA PEM, which then works as caCerts", async () => {
  const { ca, leaf } = await realm();
  const { server, counter, url } = serveTls(leaf, ca);
  await using _ = server;
  const pem = await pinnedCertificate(url, ca.fingerprint.toUpperCase());
  assertEquals(pem, ca.certPem);
  assertEquals(counter.requests, 0, "pinning sends no HTTP request");
  using client = Deno.createHttpClient({ caCerts: [pem] });
  const response = await fetch(url, { client });
  assertEquals(await response.text(), "guardian");
  assertEquals(counter.requests, 1);
});

Deno.test("pinnedCertificate: the leaf's own fingerprint (colon-separated) yields the leaf PEM", async () => {
  const { ca, leaf } = await realm();
  const { server, url } = serveTls(leaf, ca);
  await using _ = server;
  const colons = leaf.fingerprint.match(/../g)!.join(":");
  assertEquals(await pinnedCertificate(new URL(url), colons), leaf.certPem);
});

Deno.test("pinnedCertificate: a wrong fingerprint throws, naming what was seen, and no HTTP request reaches the server", async () => {
  const { ca, leaf } = await realm();
  const stranger = await createRealmCa();
  const { server, counter, url } = serveTls(leaf, ca);
  await using _ = server;
  const error = await assertRejects(
    () => pinnedCertificate(url, stranger.fingerprint),
    Error,
    stranger.fingerprint,
  );
  assert(error.message.includes(leaf.fingerprint) && error.message.includes(ca.fingerprint), error.message);
  // Give a stray request time to arrive, had one been sent.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assertEquals(counter.requests, 0);
});

Deno.test("pinnedCertificate: a closed port fails fast, and a silent listener fails at the timeout", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = closed.addr.port;
  closed.close();
  const fp = "ab".repeat(32);
  let started = performance.now();
  await assertRejects(
    () => pinnedCertificate(`https://127.0.0.1:${closedPort}/`, fp, { timeoutMs: 2_000 }),
    Error,
  );
  assert(performance.now() - started < 2_000, "a refused connection is reported before the timeout");

  // Accepts TCP but never answers the ClientHello.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) accepted.push(conn);
  })();
  started = performance.now();
  await assertRejects(
    () => pinnedCertificate(`https://127.0.0.1:${silent.addr.port}/`, fp, { timeoutMs: 300 }),
    Error,
    "did not finish within 300 ms",
  );
  const elapsed = performance.now() - started;
  assert(elapsed >= 250 && elapsed < 2_000, `timed out after ${elapsed} ms`);
  silent.close();
  await accepting.catch(() => {});
  for (const conn of accepted) conn.close();
});

Deno.test("pinnedCertificate: an aborted signal stops the attempt", async () => {
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of silent) accepted.push(conn);
  })();
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 50);
  await assertRejects(
    () =>
      pinnedCertificate(`https://127.0.0.1:${silent.addr.port}/`, "ab".repeat(32), {
        signal: controller.signal,
      }),
    Error,
    "aborted",
  );
  silent.close();
  await accepting.catch(() => {});
  for (const conn of accepted) conn.close();
});

Deno.test("pinnedCertificate: a malformed fingerprint or a non-https URL is a RangeError before any connection", async () => {
  await assertRejects(() => pinnedCertificate("https://127.0.0.1:1/", "abc"), RangeError, "64 hex digits");
  await assertRejects(
    () => pinnedCertificate("http://127.0.0.1:1/", "ab".repeat(32)),
    RangeError,
    "https://",
  );
});
