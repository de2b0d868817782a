/**
 * The node's Guardian client over a list of Guardians: it moves on from an unreachable or failing (5xx) one,
 * never from a refusal (4xx), and goes first to the one that answered last.
 */
import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import { guardianRequest, GuardianUnavailable, guardianUrls, worthRetrying } from "./guardian_client.ts";

/** A Guardian double answering every request with `status`, counting requests. */
function guardian(status: number) {
  const seen = { count: 0 };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    seen.count++;
    return Response.json(status < 400 ? { ok: true } : { error: `status ${status}` }, { status });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, seen, close: () => server.shutdown() };
}

Deno.test("guardian client: a list is split on commas, blanks dropped", () => {
  assertEquals(guardianUrls(" http://a:1, ,http://b:2 "), ["http://a:1", "http://b:2"]);
});

Deno.test("guardian client: an unreachable or failing Guardian passes the request on; the one answering is tried first", async () => {
  const failing = guardian(503);
  const ok = guardian(200);
  try {
    const list = `http://127.0.0.1:9,${failing.url},${ok.url}`;
    assertEquals(await guardianRequest(list, "GET", "/x", "t"), { ok: true });
    assertEquals([failing.seen.count, ok.seen.count], [1, 1]);
    await guardianRequest(list, "GET", "/x", "t");
    assertEquals([failing.seen.count, ok.seen.count], [1, 2], "the one that answered goes first");
  } finally {
    await Promise.all([failing.close(), ok.close()]);
  }
});

Deno.test("guardian client: a refusal (4xx) is final, and none answering says why with the last status", async () => {
  const refusing = guardian(403);
  const failing = guardian(500);
  const ok = guardian(200);
  try {
    const refused = await assertRejects(
      () => guardianRequest(`${refusing.url},${ok.url}`, "GET", "/x", "t"),
      GuardianUnavailable,
      "refused (403)",
    );
    assertEquals([(refused as GuardianUnavailable).status, ok.seen.count], [403, 0]);
    const none = await assertRejects(
      () => guardianRequest(`http://127.0.0.1:9,${failing.url}`, "GET", "/x", "t"),
      GuardianUnavailable,
      "no Guardian answered",
    );
    assertEquals((none as GuardianUnavailable).status, 500);
  } finally {
    await Promise.all([refusing.close(), failing.close(), ok.close()]);
  }
});

Deno.test("guardian client: a Guardian rate-limiting this address (429) passes the request on, and says so", async () => {
  const busy = guardian(429);
  const ok = guardian(200);
  try {
    assertEquals(await guardianRequest(`${busy.url},${ok.url}`, "GET", "/x", "t"), { ok: true });
    assertEquals([busy.seen.count, ok.seen.count], [1, 1]);
    const alone = await assertRejects(
      () => guardianRequest(busy.url, "GET", "/x", "t"),
      GuardianUnavailable,
      "(429)",
    );
    assertEquals((alone as GuardianUnavailable).status, 429);
    assert(worthRetrying(429) && worthRetrying(503) && worthRetrying(undefined) && !worthRetrying(403));
  } finally {
    await Promise.all([busy.close(), ok.close()]);
  }
});
