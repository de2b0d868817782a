import { X509Certificate } from "node:crypto";
import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import {
  certificateFingerprint,
  createRealmCa,
  issueServerCertificate,
  loadRealmCa,
  pemToDer,
  type RealmCa,
  type TlsCertificate,
} from "./tls_cert.ts";

const HOUR = 3_600_000;
const now = new Date();
const validity = { notBefore: new Date(now.getTime() - HOUR), notAfter: new Date(now.getTime() + 24 * HOUR) };

/** `openssl` on PATH, or undefined (then the assertions that need it are skipped with a note). */
const openssl = await (async () => {
  try {
    const out = await new Deno.Command("openssl", { args: ["version"], stdout: "piped", stderr: "null" })
      .output();
    return out.success ? "openssl" : undefined;
  } catch {
    return undefined;
  }
})();

async function opensslVerify(ca: RealmCa, leaf: TlsCertificate): Promise<{ ok: boolean; text: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tls_cert_test" });
  try {
    await Deno.writeTextFile(`${dir}/ca.pem`, ca.certPem);
    await Deno.writeTextFile(`${dir}/leaf.pem`, leaf.certPem);
    const out = await new Deno.Command(openssl!, {
      args: [
        "verify",
        "-x509_strict",
        "-purpose",
        "sslserver",
        "-CAfile",
        `${dir}/ca.pem`,
        `${dir}/leaf.pem`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    return { ok: out.success, text };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** `openssl x509 -noout -text` of a PEM certificate. */
async function opensslText(pem: string): Promise<string> {
  const child = new Deno.Command(openssl!, {
    args: ["x509", "-noout", "-text"],
    stdin: "piped",
    stdout: "piped",
  })
    .spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(pem));
  await writer.close();
  return new TextDecoder().decode((await child.output()).stdout);
}

/** Serves `leaf` (with `ca` appended as the chain) on 127.0.0.1 and counts the requests that reach it. */
function serveTls(leaf: TlsCertificate, ca: RealmCa) {
  const counter = { requests: 0 };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert: leaf.certPem + ca.certPem, key: leaf.keyPem, onListen() {} },
    () => {
      counter.requests++;
      return new Response("hello over tls");
    },
  );
  return { server, counter, url: `https://127.0.0.1:${server.addr.port}/` };
}

/** GET `url` trusting only `caPem`; the body, or the error's text (fetch wraps the TLS reason in `cause`). */
async function fetchTrusting(
  url: string,
  caPem: string,
): Promise<{ ok: true; body: string } | { ok: false; why: string }> {
  using client = Deno.createHttpClient({ caCerts: [caPem] });
  try {
    const response = await fetch(url, { client });
    return { ok: true, body: await response.text() };
  } catch (error) {
    return { ok: false, why: `${error} ${(error as Error).cause ?? ""}` };
  }
}

Deno.test("tls_cert: a realm CA is a self-signed CA:TRUE pathlen 0 certificate that signs certificates", async () => {
  const ca = await createRealmCa({ now });
  const x = new X509Certificate(ca.certPem);
  assert(x.ca, "basicConstraints cA TRUE");
  assert(x.checkIssued(x), "self-issued");
  assert(x.verify(x.publicKey), "self-signed");
  assertEquals(x.subject, "CN=veilnet realm CA");
  assertEquals(x.fingerprint256.replaceAll(":", "").toLowerCase(), ca.fingerprint);
  assertEquals(await certificateFingerprint(ca.der), ca.fingerprint);
  assert(
    new Date(x.validTo).getUTCFullYear() >= now.getUTCFullYear() + 19,
    `long validity, got ${x.validTo}`,
  );
  assert(new Date(x.validFrom).getTime() <= now.getTime(), "backdated for clock skew");
  if (openssl) {
    const text = await opensslText(ca.certPem);
    assert(text.includes("CA:TRUE, pathlen:0"), text);
    assert(text.includes("Certificate Sign"), text);
  } else {
    console.log("note: openssl is not installed; skipped the `openssl x509 -text` check of the CA");
  }
});

Deno.test("tls_cert: a leaf carries its DNS and IP SANs, validity and CA:FALSE, and verifies against the CA", async () => {
  const ca = await createRealmCa();
  const leaf = await issueServerCertificate(ca, {
    dnsNames: ["localhost", "Guardian.Example.org"],
    ips: ["127.0.0.1", "::1", "fd00:128::7", "10.1.2.3"],
    ...validity,
  });
  const x = new X509Certificate(leaf.certPem);
  assertEquals(
    x.subjectAltName,
    "DNS:localhost, DNS:guardian.example.org, IP Address:127.0.0.1, IP Address:::1, " +
      "IP Address:fd00:128::7, IP Address:10.1.2.3",
  );
  assertEquals(x.subject, "CN=localhost");
  assertEquals(x.issuer, "CN=veilnet realm CA");
  assert(!x.ca, "cA FALSE");
  assert(x.checkIssued(new X509Certificate(ca.certPem)), "issued by the CA");
  assert(x.verify(new X509Certificate(ca.certPem).publicKey), "signed by the CA key");
  assertEquals(new Date(x.validFrom).getTime(), Math.floor(validity.notBefore.getTime() / 1000) * 1000);
  assertEquals(new Date(x.validTo).getTime(), Math.floor(validity.notAfter.getTime() / 1000) * 1000);
  assertEquals(x.fingerprint256.replaceAll(":", "").toLowerCase(), leaf.fingerprint);
  if (openssl) {
    const result = await opensslVerify(ca, leaf);
    assert(result.ok, result.text);
    const text = await opensslText(leaf.certPem);
    assert(text.includes("CA:FALSE"), text);
    assert(text.includes("TLS Web Server Authentication, TLS Web Client Authentication"), text);
    assert(text.includes("IP Address:0:0:0:0:0:0:0:1") && text.includes("DNS:guardian.example.org"), text);
  } else {
    console.log(
      "note: openssl is not installed; skipped `openssl verify` and `openssl x509 -text` of the leaf",
    );
  }
});

Deno.test("tls_cert: times from 2050 on are GeneralizedTime and still verify", async () => {
  const ca = await createRealmCa({
    validity: { notBefore: new Date("2026-01-01T00:00:00Z"), notAfter: new Date("2060-06-30T12:34:56Z") },
  });
  assertEquals(new X509Certificate(ca.certPem).validTo, "Jun 30 12:34:56 2060 GMT");
  const leaf = await issueServerCertificate(ca, { ips: ["127.0.0.1"], ...validity });
  if (openssl) {
    const result = await opensslVerify(ca, leaf);
    assert(result.ok, result.text);
  }
});

Deno.test("tls_cert: Deno.serve with leaf + CA answers fetch trusting the CA for a SAN IP, and refuses otherwise", async () => {
  const ca = await createRealmCa();
  const good = await issueServerCertificate(ca, {
    dnsNames: ["localhost"],
    ips: ["127.0.0.1", "::1"],
    ...validity,
  });
  // Same CA, but 127.0.0.1 is not among its SANs.
  const elsewhere = await issueServerCertificate(ca, {
    dnsNames: ["other.example"],
    ips: ["127.0.0.2"],
    ...validity,
  });
  const otherCa = await createRealmCa();
  const foreign = await issueServerCertificate(otherCa, { ips: ["127.0.0.1"], ...validity });

  {
    const { server, counter, url } = serveTls(good, ca);
    await using _ = server;
    assertEquals(await fetchTrusting(url, ca.certPem), { ok: true, body: "hello over tls" });
    assertEquals(counter.requests, 1);
  }
  {
    const { server, counter, url } = serveTls(elsewhere, ca);
    await using _ = server;
    const result = await fetchTrusting(url, ca.certPem);
    assert(!result.ok && result.why.includes("not valid for name"), JSON.stringify(result));
    assertEquals(counter.requests, 0);
  }
  {
    const { server, counter, url } = serveTls(foreign, otherCa);
    await using _ = server;
    const result = await fetchTrusting(url, ca.certPem);
    assert(
      !result.ok && /UnknownIssuer|BadSignature/.test(result.why),
      JSON.stringify(result),
    );
    assertEquals(counter.requests, 0);
  }
  if (openssl) {
    const result = await opensslVerify(ca, foreign);
    assert(!result.ok, `openssl should refuse a leaf of another CA: ${result.text}`);
  }
});

Deno.test("tls_cert: a saved CA (certificate + PKCS#8 key PEM) loads and issues leaves with the same pin", async () => {
  const ca = await createRealmCa();
  const loaded = await loadRealmCa(ca.certPem, ca.keyPem);
  assertEquals(loaded.fingerprint, ca.fingerprint);
  assertEquals(loaded.subjectDer, ca.subjectDer);
  assertEquals(loaded.keyId, ca.keyId);
  assertEquals(loaded.keyPem, ca.keyPem);
  const leaf = await issueServerCertificate(loaded, { ips: ["127.0.0.1"], ...validity });
  assert(new X509Certificate(leaf.certPem).verify(new X509Certificate(ca.certPem).publicKey));
  const { server, url } = serveTls(leaf, loaded);
  await using _ = server;
  assertEquals(await fetchTrusting(url, ca.certPem), { ok: true, body: "hello over tls" });
  if (openssl) {
    const result = await opensslVerify(ca, leaf);
    assert(result.ok, result.text);
  }
});

Deno.test("tls_cert: loading refuses a key of another CA, a non-PEM and a non-certificate", async () => {
  const ca = await createRealmCa();
  const other = await createRealmCa();
  await assertRejects(() => loadRealmCa(ca.certPem, other.keyPem), RangeError, "does not belong");
  await assertRejects(() => loadRealmCa(ca.certPem, "not a pem"), RangeError, "PRIVATE KEY");
  await assertRejects(() => loadRealmCa("junk", ca.keyPem), RangeError, "CERTIFICATE");
  await assertRejects(
    () => loadRealmCa("-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n", ca.keyPem),
    RangeError,
    "realm CA certificate",
  );
  assertEquals(pemToDer("CERTIFICATE", ca.certPem), ca.der);
});

Deno.test("tls_cert: bad input is a RangeError saying what was expected", async () => {
  const ca = await createRealmCa();
  const cases: [string, Parameters<typeof issueServerCertificate>[1], string][] = [
    ["no SANs", { ...validity }, "at least one DNS name or IP"],
    ["empty SAN lists", { dnsNames: [], ips: [], ...validity }, "at least one DNS name or IP"],
    ["IPv4 with a bad octet", { ips: ["256.1.1.1"], ...validity }, 'bad IP address "256.1.1.1"'],
    ["bracketed IPv6", { ips: ["[::1]"], ...validity }, 'bad IP address "[::1]"'],
    ["an IP as a DNS name", { dnsNames: ["10.0.0.1"], ...validity }, "put IP addresses in ips"],
    ["a DNS name with a space", { dnsNames: ["a b.example"], ...validity }, 'bad DNS name "a b.example"'],
    [
      "reversed dates",
      { ips: ["127.0.0.1"], notBefore: validity.notAfter, notAfter: validity.notBefore },
      "must come after",
    ],
    ["equal dates", { ips: ["127.0.0.1"], notBefore: now, notAfter: now }, "must come after"],
    [
      "an invalid Date",
      { ips: ["127.0.0.1"], notBefore: new Date("nope"), notAfter: now },
      "notBefore must be a valid Date",
    ],
    [
      "year 10000",
      { ips: ["127.0.0.1"], notBefore: now, notAfter: new Date("+010000-01-01T00:00:00Z") },
      "1950 to 9999",
    ],
    ["a long common name", { ips: ["127.0.0.1"], commonName: "x".repeat(65), ...validity }, "1 to 64"],
  ];
  for (const [i, [what, options, message]] of cases.entries()) {
    const error = await assertRejects(() => issueServerCertificate(ca, options), RangeError, message);
    assert(error.message.length > 0, `case ${i} (${what})`);
  }
  await assertRejects(
    () => createRealmCa({ validity: { notBefore: now, notAfter: new Date(now.getTime() - 1) } }),
    RangeError,
    "must come after",
  );
});
