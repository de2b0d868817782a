import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import type { RunResult } from "../service/systemd.ts";
import { type Cidr, parseCidr } from "../tun/ip.ts";
import {
  KernelRoutes,
  openPortal,
  PORTAL_ROUTE_METRIC,
  type PortalHost,
  portalRuleset,
  portalTable,
  UnderlayReader,
} from "./host.ts";
import { formatUnderlay } from "./underlay.ts";

const cidrs = (...texts: string[]): Cidr[] => texts.map((t) => parseCidr(t));
const FORWARD4 = "/proc/sys/net/ipv4/ip_forward";
const FORWARD6 = "/proc/sys/net/ipv6/conf/all/forwarding";

/** A host in memory: records every command and setting write; answers are programmable. */
class FakeHost implements PortalHost {
  readonly calls: { command: string; args: string[]; input?: string }[] = [];
  readonly settings = new Map<string, string>([[FORWARD4, "0\n"], [FORWARD6, "0\n"]]);
  readonly writes: [path: string, value: string][] = [];
  readonly lines: string[] = [];
  /** The result of a command (default: success, no output). */
  answer: (command: string, args: string[]) => Partial<RunResult> = () => ({});
  /** Writing `path` throws when this says so. */
  refuseWrite: (path: string, value: string) => boolean = () => false;

  run = (command: string, args: string[], input?: string): Promise<RunResult> => {
    this.calls.push(input === undefined ? { command, args } : { command, args, input });
    return Promise.resolve({ ok: true, stdout: "", stderr: "", ...this.answer(command, args) });
  };

  readSetting = (path: string): string => {
    const value = this.settings.get(path);
    if (value === undefined) throw new Error(`${path}: No such file or directory`);
    return value;
  };

  writeSetting = (path: string, value: string): void => {
    if (this.refuseWrite(path, value)) throw new Error(`${path}: Permission denied`);
    this.writes.push([path, value]);
    this.settings.set(path, value);
  };

  /** Host names and their addresses; a name not here fails to resolve. */
  readonly names = new Map<string, string[]>();

  resolve = (hostname: string): Promise<string[]> => {
    const found = this.names.get(hostname);
    return found ? Promise.resolve(found) : Promise.reject(new Error(`getaddrinfo ENOTFOUND ${hostname}`));
  };

  log = (line: string): void => {
    this.lines.push(line);
  };

  /** Every command run, as one line each. */
  get commands(): string[] {
    return this.calls.map((c) => [c.command, ...c.args].join(" "));
  }
}

Deno.test("portalTable makes an nft identifier of any interface name", () => {
  assertEquals(portalTable("veilnet0"), "veilnet_portal_veilnet0");
  assertEquals(portalTable("veil-net.0"), "veilnet_portal_veil_net_0");
  assertEquals(portalTable('a"b c;{}'), "veilnet_portal_a_b_c___");
});

Deno.test("portalRuleset: only the offered subnets are forwarded to and masqueraded; the rest from the TUN is dropped", () => {
  assertEquals(
    portalRuleset("veilnet0", cidrs("10.50.0.7/24", "192.168.1.0/24", "fd00:99::/32")),
    [
      "table inet veilnet_portal_veilnet0",
      "delete table inet veilnet_portal_veilnet0",
      "table inet veilnet_portal_veilnet0 {",
      "  set offered4 { type ipv4_addr; flags interval; auto-merge; elements = { 10.50.0.0/24, 192.168.1.0/24 }; }",
      "  set offered6 { type ipv6_addr; flags interval; auto-merge; elements = { fd00:99::/32 }; }",
      "  chain forward {",
      "    type filter hook forward priority filter; policy accept;",
      '    iifname "veilnet0" ip daddr @offered4 accept',
      '    iifname "veilnet0" ip6 daddr @offered6 accept',
      '    iifname "veilnet0" counter drop comment "a portal forwards only to the subnets it offers"',
      "  }",
      "  chain postrouting {",
      "    type nat hook postrouting priority srcnat; policy accept;",
      '    iifname "veilnet0" ip daddr @offered4 masquerade',
      '    iifname "veilnet0" ip6 daddr @offered6 masquerade',
      "  }",
      "}",
      "",
    ].join("\n"),
  );
  // One family: no set, accept or masquerade for the other.
  const four = portalRuleset("veilnet0", cidrs("10.50.0.0/24"));
  assert(!four.includes("ip6") && !four.includes("offered6"), four);
  // Nothing offered: everything from the TUN is dropped.
  const none = portalRuleset("veilnet0", []);
  assert(!none.includes("set ") && !none.includes("accept\n") && !none.includes("masquerade"), none);
  assert(none.includes('iifname "veilnet0" counter drop'), none);
});

Deno.test("portalRuleset: overlapping offered subnets go into auto-merge sets, which nft accepts", () => {
  // Without auto-merge nft refuses the whole script ("conflicting intervals specified") and no portal opens;
  // a routing table with 10.0.0.0/8 via a gateway and a connected 10.50.0.0/16 gives exactly this.
  const script = portalRuleset("veilnet0", cidrs("10.0.0.0/8", "10.50.0.0/16", "fd00::/16", "fd00:1::/32"));
  assert(script.includes("flags interval; auto-merge; elements = { 10.0.0.0/8, 10.50.0.0/16 }"), script);
  assert(script.includes("flags interval; auto-merge; elements = { fd00::/16, fd00:1::/32 }"), script);
});

Deno.test("openPortal applies the rules, switches forwarding on for the offered families only, and puts it back", async () => {
  const host = new FakeHost();
  const portal = await openPortal(host, "veilnet0", ["10.50.0.0/24", "192.168.1.0/24"]);
  assertEquals(host.commands, ["nft -f -"]);
  const script = host.calls[0]!.input!;
  assertEquals(script, portalRuleset("veilnet0", cidrs("10.50.0.0/24", "192.168.1.0/24")));
  assert(script.includes("elements = { 10.50.0.0/24, 192.168.1.0/24 }"), script);
  assert(script.includes('iifname "veilnet0" counter drop'), script);
  assertEquals(host.writes, [[FORWARD4, "1\n"]], "no IPv6 forwarding for IPv4 subnets");

  await portal[Symbol.asyncDispose]();
  assertEquals(host.writes, [[FORWARD4, "1\n"], [FORWARD4, "0\n"]]);
  assertEquals(host.settings.get(FORWARD6), "0\n");
  assertEquals(host.commands, ["nft -f -", "nft delete table inet veilnet_portal_veilnet0"]);

  // Both families.
  const both = new FakeHost();
  await (await openPortal(both, "veilnet0", ["10.50.0.0/24", "fd00:99::/32"]))[Symbol.asyncDispose]();
  assertEquals(both.writes, [[FORWARD4, "1\n"], [FORWARD6, "1\n"], [FORWARD6, "0\n"], [FORWARD4, "0\n"]]);
});

Deno.test("openPortal leaves forwarding that was already on alone, and does not turn it off on close", async () => {
  const host = new FakeHost();
  host.settings.set(FORWARD4, "1\n");
  host.settings.set(FORWARD6, "1"); // no newline: still on
  const portal = await openPortal(host, "veilnet0", ["10.50.0.0/24", "fd00:99::/32"]);
  assertEquals(host.writes, []);
  await portal[Symbol.asyncDispose]();
  assertEquals(host.writes, []);
  assertEquals([host.settings.get(FORWARD4), host.settings.get(FORWARD6)], ["1\n", "1"]);
  assertEquals(host.commands, ["nft -f -", "nft delete table inet veilnet_portal_veilnet0"]);
});

Deno.test("openPortal: a second close puts nothing back twice; a table already gone is logged, not thrown", async () => {
  const host = new FakeHost();
  const portal = await openPortal(host, "veilnet0", ["10.50.0.0/24"]);
  await portal[Symbol.asyncDispose]();
  host.settings.set(FORWARD4, "1\n"); // someone switched it on again since
  host.answer = (_, args) =>
    args[0] === "delete" ? { ok: false, stderr: "Error: No such file or directory" } : {};
  await portal[Symbol.asyncDispose]();
  assertEquals(host.writes, [[FORWARD4, "1\n"], [FORWARD4, "0\n"]]);
  assertEquals(host.settings.get(FORWARD4), "1\n");
  assert(host.lines.some((l) => l.includes("could not delete nftables table")), host.lines.join("\n"));
});

Deno.test("openPortal: nft refusing the rules is an Error naming nft, and no setting is touched", async () => {
  const host = new FakeHost();
  host.answer = () => ({ ok: false, stderr: "Error: Could not process rule: Operation not permitted\n" });
  const error = await assertRejects(
    () => openPortal(host, "veilnet0", ["10.50.0.0/24", "fd00:99::/32"]),
    Error,
    "nft",
  );
  assert(error.message.includes("Operation not permitted"), error.message);
  assertEquals(host.writes, []);
  assertEquals(host.commands, ["nft -f -"]);
});

Deno.test("openPortal: a subnet that is not a CIDR is refused before anything runs", async () => {
  const host = new FakeHost();
  await assertRejects(() => openPortal(host, "veilnet0", ["10.50.0.0/24", "banana"]), SyntaxError, "banana");
  assertEquals([host.calls, host.writes], [[], []]);
});

Deno.test("openPortal: forwarding that cannot be switched on deletes the table again and rejects", async () => {
  const host = new FakeHost();
  host.refuseWrite = () => true;
  await assertRejects(() => openPortal(host, "veilnet0", ["10.50.0.0/24"]), Error, "Permission denied");
  assertEquals(host.commands, ["nft -f -", "nft delete table inet veilnet_portal_veilnet0"]);
  assertEquals(host.writes, []);
  assertEquals(host.settings.get(FORWARD4), "0\n");
});

Deno.test("openPortal: IPv4 switched on but IPv6 refused: IPv4 is put back, the table deleted, and it rejects", async () => {
  const host = new FakeHost();
  host.refuseWrite = (path) => path === FORWARD6;
  await assertRejects(
    () => openPortal(host, "veilnet0", ["10.50.0.0/24", "fd00:99::/32"]),
    Error,
    "could not switch IP forwarding on",
  );
  assertEquals(host.writes, [[FORWARD4, "1\n"], [FORWARD4, "0\n"]]);
  assertEquals(host.commands.at(-1), "nft delete table inet veilnet_portal_veilnet0");

  // No IPv6 in the kernel at all (the setting cannot be read): the same.
  const noSix = new FakeHost();
  noSix.settings.delete(FORWARD6);
  await assertRejects(() => openPortal(noSix, "veilnet0", ["fd00:99::/32"]), Error, "No such file");
  assertEquals(noSix.commands, ["nft -f -", "nft delete table inet veilnet_portal_veilnet0"]);
});

const route = (action: string, subnet: string) =>
  `route ${action} ${subnet} dev veilnet0 metric ${PORTAL_ROUTE_METRIC}`;
/** The routes changed by each `ip -batch` run, one list per process. */
const batches = (host: FakeHost) =>
  host.calls.filter((c) => c.command === "ip" && c.args.includes("-batch")).map((c) =>
    c.input!.trim().split("\n")
  );

Deno.test("KernelRoutes adds what is new, removes what is gone, one process a pass, and removes everything on dispose", async () => {
  const host = new FakeHost();
  const routes = new KernelRoutes(host, "veilnet0");
  await routes.sync(["10.50.0.0/24", "fd00:99::/32"]);
  assertEquals(batches(host), [[route("replace", "10.50.0.0/24"), route("replace", "fd00:99::/32")]]);
  assertEquals(host.calls[0]!.args, ["-force", "-batch", "-"]);
  assertEquals(PORTAL_ROUTE_METRIC, 1000);

  host.calls.length = 0;
  await routes.sync(["fd00:99::/32", "10.60.0.0/16"]);
  assertEquals(batches(host), [[route("del", "10.50.0.0/24"), route("replace", "10.60.0.0/16")]]);

  host.calls.length = 0;
  await routes.sync(["10.60.0.0/16", "fd00:99::/32"]); // the same set: nothing to do, no process
  assertEquals(host.calls, []);

  await routes[Symbol.asyncDispose]();
  assertEquals(batches(host)[0]!.sort(), [route("del", "10.60.0.0/16"), route("del", "fd00:99::/32")].sort());
});

Deno.test("KernelRoutes: a refused route is not recorded, so the next sync tries it again and dispose leaves it", async () => {
  const host = new FakeHost();
  let refuse = true;
  // ip -force -batch goes on after a failed line, names it, and exits 1.
  host.answer = (_, args) =>
    refuse && args.includes("-batch")
      ? { ok: false, stderr: "Error: Nexthop device is not up.\nCommand failed -:2\n" }
      : {};
  const routes = new KernelRoutes(host, "veilnet0");
  await routes.sync(["10.50.0.0/24", "10.60.0.0/16"]);
  assert(host.lines.some((l) => l.includes("no route to 10.60.0.0/16")), host.lines.join("\n"));
  assert(host.lines.some((l) => l.includes("added route 10.50.0.0/24")), host.lines.join("\n"));

  host.calls.length = 0;
  refuse = false;
  await routes.sync(["10.50.0.0/24", "10.60.0.0/16"]);
  assertEquals(batches(host), [[route("replace", "10.60.0.0/16")]]);

  host.calls.length = 0;
  await routes[Symbol.asyncDispose]();
  assertEquals(batches(host), [[route("del", "10.50.0.0/24"), route("del", "10.60.0.0/16")]]);
});

Deno.test("KernelRoutes: lists given while a pass runs collapse into one pass with the latest", async () => {
  const host = new FakeHost();
  const routes = new KernelRoutes(host, "veilnet0");
  const first = routes.sync(["10.1.0.0/16"]);
  for (let i = 2; i < 50; i++) void routes.sync([`10.${i}.0.0/16`]);
  await routes.sync(["10.2.0.0/16", "10.3.0.0/16"]);
  await first;
  assertEquals(batches(host), [[route("replace", "10.2.0.0/16"), route("replace", "10.3.0.0/16")]]);
  await routes[Symbol.asyncDispose]();
});

/** A host's routes, as `ip -j -4 route` prints them (only the gateways matter here). */
const ROUTES4 = JSON.stringify([
  { dst: "default", gateway: "192.168.1.1", dev: "eth0", protocol: "dhcp", metric: 100, flags: [] },
  { dst: "10.20.0.0/16", gateway: "192.168.1.254", dev: "eth0", flags: [] },
  {
    dst: "10.128.0.0/24",
    dev: "veilnet0",
    protocol: "kernel",
    scope: "link",
    prefsrc: "10.128.0.1",
    flags: [],
  },
  { dst: "10.128.0.0/9", gateway: "192.168.1.254", dev: "eth0", flags: [] }, // overlaps the overlay
  { dst: "169.254.0.0/16", dev: "eth0", scope: "link", metric: 1000, flags: [] },
  { dst: "172.17.0.0/16", dev: "docker0", protocol: "kernel", scope: "link", flags: ["linkdown"] },
  { dst: "192.168.1.0/24", dev: "eth0", protocol: "kernel", scope: "link", metric: 100, flags: [] },
  { dst: "192.168.1.77/24", dev: "eth0", flags: [] }, // the same network, host bits set
  { dst: "192.168.1.6/31", dev: "eth2", flags: [] },
  { dst: "203.0.113.9", gateway: "192.168.1.254", dev: "eth0", flags: [] }, // one host
  { type: "blackhole", dst: "198.51.100.0/24", flags: [] },
  { type: "unreachable", dst: "198.18.0.0/15", flags: [] },
  { type: "unicast", dst: "10.30.0.0/16", dev: "eth1", flags: [] },
  { dst: "224.0.0.0/4", dev: "eth0", scope: "link", flags: [] },
  { dst: "8.0.0.0/7", gateway: "192.168.1.254", dev: "eth0", flags: [] }, // wider than /8
  { dst: "11.0.0.0/8", gateway: "192.168.1.254", dev: "eth0", flags: [] },
  { dst: "127.0.0.0/8", dev: "lo", flags: [] },
]);
/** `ip -j -6 route show table main` of the same host. */
const ROUTES6 = JSON.stringify([
  { dst: "::1", dev: "lo", protocol: "kernel", metric: 256, pref: "medium" },
  { dst: "2001:db8:5::/64", dev: "eth0", protocol: "ra", metric: 100, pref: "medium" },
  { dst: "fd12:3456:789a:1::/64", dev: "veilnet0", protocol: "kernel", metric: 256, pref: "medium" },
  { dst: "fd12:3456:789a::/48", dev: "eth1", metric: 1024, pref: "medium" }, // holds the overlay's /64
  { dst: "fe80::/64", dev: "eth0", protocol: "kernel", metric: 256, pref: "medium" },
  { dst: "febf::/16", dev: "eth0", metric: 256 }, // link-local too (fe80::/10)
  { dst: "ff00::/8", dev: "eth0", metric: 256, pref: "medium" },
  { dst: "fd00:99::/32", gateway: "fe80::1", dev: "eth0", metric: 1024, pref: "medium" },
  { dst: "2001::/15", gateway: "fe80::1", dev: "eth0" }, // wider than /16
  { dst: "2a00::/16", gateway: "fe80::1", dev: "eth0" },
  { dst: "2001:db8:5::1", gateway: "fe80::1", dev: "eth0" }, // one host
  { dst: "default", gateway: "fe80::1", dev: "eth0", protocol: "ra", metric: 100, pref: "medium" },
]);
Deno.test("UnderlayReader: this host's addresses and gateways, then the Guardian and the Masters, resolved", async () => {
  const host = new FakeHost();
  host.answer = (_, args) => {
    if (args[1] === "addr") {
      return {
        stdout: JSON.stringify([
          { ifname: "lo", flags: ["LOOPBACK"], addr_info: [{ local: "127.0.0.1" }] },
          { ifname: "eth0", flags: ["UP"], addr_info: [{ local: "192.168.1.7" }] },
          { ifname: "veilnet0", flags: ["UP"], addr_info: [{ local: "10.128.0.1" }] },
        ]),
      };
    }
    return { stdout: args[1] === "-4" ? ROUTES4 : ROUTES6 };
  };
  host.names.set("m1.example", ["203.0.113.5", "2001:db8::5"]);
  const reader = new UnderlayReader(host, "veilnet0");
  const endpoints = {
    guardian: "http://192.168.1.1:8080",
    master: ["nats://m1.example:4222", "nats://m2:4222"],
  };
  const text = formatUnderlay(await reader.read(endpoints));
  assertEquals(host.commands, [
    "ip -j addr show",
    "ip -j -4 route show table all",
    "ip -j -6 route show table all",
  ]);
  assertEquals(
    text,
    "own-address 192.168.1.7, gateway 192.168.1.1, gateway 192.168.1.254, gateway fe80::1, " +
      "guardian 192.168.1.1, master 203.0.113.5, master 2001:db8::5",
  );
  assert(host.lines.some((l) => l.startsWith("portal: could not resolve m2 (")), host.lines.join("\n"));

  // A name that stops resolving keeps its last answer; `ip` failing is an error the caller sees.
  host.names.clear();
  assertEquals(formatUnderlay(await reader.read(endpoints)), text);
  assert(host.lines.some((l) => l.includes("m1.example") && l.includes("keeping its last addresses")));
  host.answer = () => ({ ok: false, stderr: "ip: command not found\n" });
  await assertRejects(() => reader.read(endpoints), Error, "could not read this host's addresses");
});
