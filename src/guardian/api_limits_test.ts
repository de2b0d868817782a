/**
 * The Guardian's API under abuse: bodies are capped before they are read, tokens are checked before bodies are,
 * and each source has budgets of its own (source_limits.ts). Each test attacks one defence and fails without it.
 */
import { assert, assertEquals } from "../../tests/assert.ts";
import { b64, guardianSetup } from "../../tests/guardian_fixture.ts";
import { Identity } from "../crypto/identity.ts";
import { signLogin } from "../crypto/login_proof.ts";
import { BODY_CAPS, guardianHandler, MAX_BODY_BYTES } from "./api.ts";
import { DEFAULT_SOURCE_LIMITS, SourceLimits, sourceOf } from "./source_limits.ts";

/** A body of `size` bytes (1 MiB: far above any cap) that counts what was pulled; nothing is pulled unasked. */
function countingBody(
  size = 1024 * 1024,
  chunk = 1024,
): { stream: ReadableStream<Uint8Array>; pulled: () => number } {
  let pulled = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pulled >= size) return controller.close();
      const n = Math.min(chunk, size - pulled);
      pulled += n;
      controller.enqueue(new Uint8Array(n).fill(0x20)); // spaces: valid JSON padding, were it parsed
    },
  }, { highWaterMark: 0 });
  return { stream, pulled: () => pulled };
}

const from = (hostname: string) => ({ remoteAddr: { transport: "tcp" as const, hostname, port: 40000 } });

/** The fixture's Guardian behind a handler whose budgets run on a fake clock. */
async function setup(limits: Partial<typeof DEFAULT_SOURCE_LIMITS> = {}) {
  const fixture = await guardianSetup();
  let now = 1_000_000;
  const clock = { advance: (ms: number) => now += ms };
  const table = new SourceLimits(limits, () => now);
  const handler = guardianHandler(fixture.guardian, { limits: table });
  const registered = await fixture.call("POST", "/conflux/register", { token: fixture.reg, body: {} });
  assertEquals(registered.status, 201);
  const node: string = registered.json.token;
  return { ...fixture, handler, clock, table, node };
}

Deno.test("guardian API: a declared body above the route's cap is refused (413) before a byte is read", async () => {
  const { handler, node } = await setup();
  const cap = BODY_CAPS["POST /conflux/session/login"]!;
  const body = countingBody();
  const res = await handler(
    new Request("http://g/conflux/session/login", {
      method: "POST",
      body: body.stream,
      headers: { authorization: `Bearer ${node}`, "content-length": String(cap + 1) },
    }),
    from("192.0.2.1"),
  );
  assertEquals(res.status, 413);
  assert((await res.json()).error.includes(String(cap)));
  assertEquals(body.pulled(), 0);
});

Deno.test("guardian API: a chunked body is cut at the route's cap (413), not read whole", async () => {
  const { handler, node, admin } = await setup();
  const [seen, wanted]: string[][] = [[], []];
  for (
    const [path, token, cap] of [
      ["/conflux/session/login", node, BODY_CAPS["POST /conflux/session/login"]!],
      ["/conflux/taints", node, BODY_CAPS["POST /conflux/taints"]!],
      ["/admin/realms", admin, MAX_BODY_BYTES],
    ] as const
  ) {
    const body = countingBody(); // no Content-Length
    const res = await handler(
      new Request(`http://g${path}`, {
        method: "POST",
        body: body.stream,
        headers: { authorization: `Bearer ${token}` },
      }),
      from("192.0.2.1"),
    );
    await res.body?.cancel();
    seen.push(`${path}: ${res.status}${body.pulled() <= cap + 1024 ? "" : `, ${body.pulled()} bytes read`}`);
    wanted.push(`${path}: 413`);
  }
  assertEquals(seen, wanted);
});

Deno.test("guardian API: a bad token is refused (401) before any byte of its body is read", async () => {
  const { handler, node, reg } = await setup();
  const wrongKind = [
    ["POST", "/conflux/register", node],
    ["POST", "/conflux/session/login", reg],
    ["POST", "/conflux/taints", "vcfx.00000000-0000-0000-0000-000000000000.nope"],
    ["DELETE", "/conflux/unregister", `${node}x`],
    ["POST", "/admin/realms", "vadm.nope"],
    ["POST", "/admin/tokens", undefined],
  ] as const;
  for (const [method, path, token] of wrongKind) {
    const body = countingBody(MAX_BODY_BYTES);
    const res = await handler(
      new Request(`http://g${path}`, {
        method,
        body: body.stream,
        headers: token ? { authorization: `Bearer ${token}` } : {},
      }),
      from("192.0.2.1"),
    );
    assertEquals(res.status, 401, `${method} ${path}: ${JSON.stringify(await res.clone().json())}`);
    await res.body?.cancel();
    assertEquals(body.pulled(), 0, `${method} ${path} read the body of a request with a bad token`);
  }
});

Deno.test("guardian API: a source flooding bad tokens gets 429 with Retry-After, while another source logs in", async () => {
  const { handler, node, clock } = await setup();
  const flood = () =>
    handler(
      new Request("http://g/conflux/session/login", {
        method: "POST",
        body: "{}",
        headers: { authorization: "Bearer vcfx.00000000-0000-0000-0000-000000000000.forged" },
      }),
      from("198.51.100.7"),
    );
  const statuses: Record<number, number> = {};
  let retryAfter: string | null = null;
  for (let i = 0; i < 200; i++) {
    const res = await flood();
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    if (res.status === 429) retryAfter = res.headers.get("retry-after");
    await res.body?.cancel();
  }
  const burst = DEFAULT_SOURCE_LIMITS.failures.burst;
  assertEquals(statuses, { 401: burst, 429: 200 - burst });
  assert(retryAfter !== null && Number(retryAfter) >= 1, `Retry-After: ${retryAfter}`);

  // Another source is untouched: its node logs in, several times, and its own mistake is a plain 401.
  assertEquals(await loginsFrom(handler, node, "203.0.113.9"), [200, 200, 200]);
  const mistake = await handler(
    new Request("http://g/conflux/session/login", {
      method: "POST",
      headers: { authorization: "Bearer typo" },
    }),
    from("203.0.113.9"),
  );
  assertEquals(mistake.status, 401);
  await mistake.body?.cancel();
  // The flooder's budget refills at its rate, and no faster.
  clock.advance(1000 / DEFAULT_SOURCE_LIMITS.failures.perSecond);
  assertEquals((await flood()).status, 401);
  assertEquals((await flood()).status, 429);
});

Deno.test("guardian API: nodes behind a flooding source's address still log in with their valid tokens", async () => {
  const { handler, node } = await setup();
  for (let i = 0; i < 100; i++) {
    const res = await handler(
      new Request("http://g/conflux/taints", {
        method: "POST",
        body: "{}",
        headers: { authorization: "Bearer x" },
      }),
      from("198.51.100.7"),
    );
    await res.body?.cancel();
  }
  assertEquals(await loginsFrom(handler, node, "198.51.100.7"), [200, 200, 200]);
});

Deno.test("guardian API: a source over its request budget gets 429 on every endpoint, others do not", async () => {
  const { handler, clock } = await setup({ requests: { perSecond: 5, burst: 10 } });
  const get = async (path: string, source: string) => {
    const res = await handler(new Request(`http://g${path}`), from(source));
    await res.body?.cancel();
    return res;
  };
  const seen: number[] = [];
  for (let i = 0; i < 12; i++) seen.push((await get("/healthz", "192.0.2.1")).status);
  assertEquals(seen, [...Array(10).fill(200), 429, 429]);
  const refused = await get("/admin/realms", "192.0.2.1");
  assertEquals([refused.status, refused.headers.get("retry-after")], [429, "1"]);
  assertEquals((await get("/healthz", "192.0.2.2")).status, 200);
  clock.advance(1000);
  assertEquals((await get("/healthz", "192.0.2.1")).status, 200);
});

Deno.test("SourceLimits: the table stays bounded, forgetting the source seen least recently", () => {
  let now = 0;
  const limits = new SourceLimits({ maxSources: 3, failures: { perSecond: 1, burst: 1 } }, () => now);
  limits.failure("a");
  for (const s of ["b", "c", "d"]) limits.request(s);
  assertEquals(limits.size, 3);
  // "a" was forgotten: it starts again with a full failure budget.
  assertEquals(limits.failure("a"), 0);
  assertEquals(limits.failure("a"), 1);
  now += 1000;
  assertEquals(limits.failure("a"), 0);
});

Deno.test("sourceOf: IPv4 by address, IPv6 by /64, IPv4-mapped as IPv4", () => {
  const cases: [string, string][] = [
    ["192.0.2.1", "192.0.2.1"],
    ["2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"],
    ["[2001:db8:1:2::9]", "2001:db8:1:2::/64"],
    ["::ffff:192.0.2.7", "192.0.2.7"],
  ];
  for (const [host, source] of cases) assertEquals(sourceOf({ hostname: host }), source, host);
  assertEquals(sourceOf(undefined), "unknown");
});

/** Three logins of `node` through `handler` from `source`, each with a fresh key and signed as a node signs; statuses. */
async function loginsFrom(
  handler: ReturnType<typeof guardianHandler>,
  node: string,
  source: string,
): Promise<number[]> {
  const statuses: number[] = [];
  for (let i = 0; i < 3; i++) {
    const identity = await Identity.generate();
    const body = new TextEncoder().encode(JSON.stringify({
      public_key: b64(identity.publicKey),
      timestamp: Date.now(),
      nonce: crypto.randomUUID().replaceAll("-", ""),
    }));
    const signature = b64(await signLogin(identity, node.split(".")[1]!, body));
    const res = await handler(
      new Request("http://g/conflux/session/login", {
        method: "POST",
        headers: { authorization: `Bearer ${node}`, "veilnet-signature": signature },
        body,
      }),
      from(source),
    );
    statuses.push(res.status);
    await res.body?.cancel();
  }
  return statuses;
}

Deno.test("guardian API over HTTP: a declared oversize body gets 413 while the client has sent 1 KiB of it", async () => {
  const { guardian, node } = await setup();
  const controller = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: controller.signal, onListen: () => {} },
    guardianHandler(guardian),
  );
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    try {
      const head = `POST /conflux/session/login HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer ${node}\r\n` +
        "Content-Length: 10000000\r\n\r\n";
      await conn.write(new TextEncoder().encode(head));
      await conn.write(new Uint8Array(1024).fill(0x20));
      const answer = new Uint8Array(4096);
      // Bounded: without the defence the server waits for the rest of the body, and so would this test.
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        conn.read(answer),
        new Promise<"timeout">((resolve) => timer = setTimeout(() => resolve("timeout"), 5_000)),
      ]);
      clearTimeout(timer);
      assert(typeof n === "number", `no answer to the 1 KiB sent of a 10 MB body (${n})`);
      assert(
        new TextDecoder().decode(answer.subarray(0, n)).startsWith("HTTP/1.1 413"),
        new TextDecoder().decode(answer.subarray(0, n)),
      );
    } finally {
      conn.close();
    }
  } finally {
    controller.abort();
    await server.finished;
  }
});
