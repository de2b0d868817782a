import { assertEquals } from "../../tests/assert.ts";
import { serveNodeDns } from "./serve.ts";

Deno.test({
  name: "node dns: its counts include upstream_rejected (forged or stray upstream answers), from zero",
  sanitizeOps: true,
  sanitizeResources: true,
  fn: async () => {
    await using dns = await serveNodeDns({
      agent: { lookup: () => Promise.resolve([]), inOverlay: () => false },
      hostname: "127.0.0.1",
      port: 0,
      forward: true,
      resolvConf: "nameserver 192.0.2.53\n",
      log: () => {},
    });
    assertEquals(dns.counts.get("upstream_rejected"), 0);
  },
});
