import { assertEquals } from "../../tests/assert.ts";
import { type HostTools, RESOLVED_SOCKET, routeZone, upstreamsFrom } from "./host.ts";

Deno.test("dns host: upstreams are the resolv.conf nameservers, minus our own address and garbage", () => {
  const conf = [
    "# generated",
    "nameserver 10.0.0.2",
    "  nameserver\t10.128.0.5  ",
    "nameserver fe80::1%eth0",
    "nameserver not-an-address",
    "nameserver",
    "search example.com",
    "options edns0",
    "nameserver 2001:db8::53",
  ].join("\n");
  assertEquals(upstreamsFrom(conf, (a) => a === "10.128.0.5").map((u) => u.hostname), [
    "10.0.0.2",
    "fe80::1",
    "2001:db8::53",
  ]);
  assertEquals(upstreamsFrom("\u0000\uffff garbage\n\n", () => false), []);
});

function tools(resolved: boolean, failing?: string) {
  const calls: string[] = [];
  const logs: string[] = [];
  const t: HostTools = {
    exists: (path) => resolved && path === RESOLVED_SOCKET,
    run: (command, args) => {
      const line = [command, ...args].join(" ");
      calls.push(line);
      return Promise.resolve({ ok: line !== failing, stderr: line === failing ? "Failed to set DNS" : "" });
    },
    log: (line) => logs.push(line),
  };
  return { t, calls, logs };
}

Deno.test("dns host: with systemd-resolved, ~veilnet is routed to us on our link, and reverted on undo", async () => {
  const { t, calls } = tools(true);
  const undo = await routeZone("veilnet", { hostname: "10.128.0.2", port: 53 }, t);
  assertEquals(calls, [
    "resolvectl dns veilnet 10.128.0.2",
    "resolvectl domain veilnet ~veilnet",
    "resolvectl default-route veilnet false",
  ]);
  await undo();
  assertEquals(calls.at(-1), "resolvectl revert veilnet");

  const other = tools(true);
  await routeZone("vn0", { hostname: "10.128.0.2", port: 5353 }, other.t);
  assertEquals(other.calls[0], "resolvectl dns vn0 10.128.0.2:5353");
});

Deno.test("dns host: a failing resolvectl is reverted and logged; the node goes on", async () => {
  const { t, calls, logs } = tools(true, "resolvectl domain veilnet ~veilnet");
  const undo = await routeZone("veilnet", { hostname: "10.128.0.2", port: 53 }, t);
  assertEquals(calls.at(-1), "resolvectl revert veilnet");
  assertEquals(logs.some((l) => l.includes("Failed to set DNS")), true);
  const before = calls.length;
  await undo();
  assertEquals(calls.length, before);
});

Deno.test("dns host: without systemd-resolved nothing runs and the log gives the resolv.conf line", async () => {
  const { t, calls, logs } = tools(false);
  await (await routeZone("veilnet", { hostname: "10.128.0.2", port: 53 }, t))();
  assertEquals(calls, []);
  assertEquals(logs.length, 1);
  assertEquals(logs[0]!.includes('"nameserver 10.128.0.2"'), true);
});
