import dgram from "node:dgram";
import { assert, assertEquals, assertRejects } from "../../tests/assert.ts";
import { Netns, netnsUnavailable, run } from "../../tests/netns.ts";
import { echoReply, isEchoRequest } from "../../tests/packets.ts";
import { type HostReceiver, tunConformance, type TunHarness, within } from "../../tests/tun_conformance.ts";
import { formatAddress, internetChecksum, parseIPv4, parseIPv6 } from "./ip.ts";
import { LinuxTun } from "./linux_tun.ts";

const unavailable = netnsUnavailable();
const ignore = unavailable !== undefined;
if (ignore) console.warn(`LinuxTun tests skipped: ${unavailable}`);

const LOCAL = { 4: parseIPv4("10.99.0.1")!, 6: parseIPv6("fd99::1")! };
const REMOTE = { 4: parseIPv4("10.99.0.2")!, 6: parseIPv6("fd99::2")! };

/** A namespace with this thread inside, and a device in it with 10.99.0.1/24 and fd99::1/64. */
async function realHarness(label: string): Promise<TunHarness & { ns: Netns }> {
  const ns = await Netns.create(label);
  ns.enter();
  let tun: LinuxTun;
  try {
    tun = await LinuxTun.open({ name: "vt0", addresses: ["10.99.0.1/24", "fd99::1/64"] });
  } catch (error) {
    await ns[Symbol.asyncDispose]();
    throw error;
  }
  const sockets: dgram.Socket[] = [];
  const socket = (version: 4 | 6) => {
    const s = dgram.createSocket(version === 4 ? "udp4" : "udp6");
    sockets.push(s);
    return s;
  };
  return {
    ns,
    tun,
    local: LOCAL,
    remote: REMOTE,
    async hostSend(version, port, data) {
      const s = socket(version);
      await new Promise<void>((resolve, reject) =>
        s.send(data, port, formatAddress(REMOTE[version]), (e) => e ? reject(e) : resolve())
      );
    },
    async hostListen(version, port): Promise<HostReceiver> {
      const s = socket(version);
      const queue: Uint8Array[] = [];
      let wake: (() => void) | undefined;
      s.on("message", (m: Uint8Array) => {
        queue.push(new Uint8Array(m));
        wake?.();
      });
      await new Promise<void>((resolve, reject) => {
        s.once("error", reject);
        s.bind(port, formatAddress(LOCAL[version]), () => {
          s.off("error", reject);
          resolve();
        });
      });
      return {
        async next() {
          while (queue.length === 0) await new Promise<void>((resolve) => wake = resolve);
          return queue.shift()!;
        },
      };
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
      await tun.close();
      await ns[Symbol.asyncDispose]();
    },
  };
}

tunConformance("LinuxTun", () => realHarness("conf"), { ignore });

for (const version of [4, 6] as const) {
  Deno.test({
    name:
      `LinuxTun: an IPv${version} ping into the prefix arrives as an echo request, and the reply written back completes it`,
    ignore,
    async fn() {
      await using h = await realHarness(`ping${version}`);
      const target = formatAddress(REMOTE[version]);
      const ping = h.ns.exec("ping", [`-${version}`, "-c", "3", "-i", "0.2", "-W", "3", target], {
        allowFailure: true,
      });
      let done = false;
      const finished = ping.then((out) => {
        done = true;
        return out;
      });
      const bufs = Array.from({ length: 8 }, () => new Uint8Array(h.tun.mtu));
      const sizes = new Array<number>(8).fill(0);
      let requests = 0;
      while (!done) {
        const n = await within(
          5_000,
          "echo request",
          Promise.race([h.tun.readBatch(bufs, sizes, 0), finished.then(() => 0)]),
        );
        for (let i = 0; i < n; i++) {
          const packet = bufs[i]!.subarray(0, sizes[i]);
          if (!isEchoRequest(packet)) continue;
          requests++;
          if (version === 4) {
            assertEquals(internetChecksum(packet.subarray(0, 20)), 0, "IPv4 header checksum");
            assertEquals([packet.subarray(12, 16), packet.subarray(16, 20)], [LOCAL[4], REMOTE[4]]);
          } else {
            assertEquals([packet.subarray(8, 24), packet.subarray(24, 40)], [LOCAL[6], REMOTE[6]]);
          }
          assertEquals(h.tun.writeBatch([echoReply(packet)], 0), 1);
        }
      }
      const out = await finished;
      assertEquals(out.code, 0, out.text + out.errors);
      assert(out.text.includes("3 received"), out.text);
      assertEquals(requests, 3);
    },
  });
}

Deno.test({
  name: "LinuxTun: the device exists while open and disappears on close; closing twice is harmless",
  ignore,
  async fn() {
    await using h = await realHarness("life");
    const shown = await h.ns.exec("ip", ["-o", "addr", "show", "dev", "vt0"]);
    assert(shown.text.includes("10.99.0.1/24") && shown.text.includes("fd99::1/64"), shown.text);
    assert((await h.ns.exec("ip", ["-o", "link", "show", "dev", "vt0"])).text.includes("mtu 1500"));
    await h.tun.close();
    await h.tun.close();
    const gone = await h.ns.exec("ip", ["link", "show", "dev", "vt0"], { allowFailure: true });
    assert(!gone.success, "vt0 still exists after close");
  },
});

Deno.test({
  name: "LinuxTun: the device has no link-local address, and the kernel sends nothing into it as it comes up",
  ignore,
  async fn() {
    await using h = await realHarness("quiet");
    const shown = (await h.ns.exec("ip", ["-o", "-6", "addr", "show", "dev", "vt0"])).text;
    assert(!shown.includes("fe80:"), shown);
    // With a link-local address the kernel sends router solicitations at once, which the node could only drop.
    const bufs = [new Uint8Array(2048)];
    const sizes = [0];
    const read = h.tun.readBatch(bufs, sizes, 0);
    const quiet = await Promise.race([
      read.then(() => false),
      new Promise((r) => setTimeout(() => r(true), 1_500)),
    ]);
    assert(quiet, `the device carried a packet of ${sizes[0]} bytes, IP version ${bufs[0]![0]! >> 4}`);
    await h.tun.close();
    await read;
  },
});

Deno.test({
  name: "LinuxTun: opening a name already in use, or the name of a non-TUN interface, says so",
  ignore,
  async fn() {
    await using h = await realHarness("busy");
    await assertRejects(
      () => LinuxTun.open({ name: "vt0" }),
      Error,
      'interface "vt0" is in use by another process',
    );
    await assertRejects(
      () => LinuxTun.open({ name: "lo" }),
      Error,
      'an interface named "lo" exists and is not a TUN device',
    );
    // The failed attempts left the working device alone.
    assertEquals(h.tun.closed, false);
  },
});

Deno.test({
  name: "LinuxTun: bad names, MTUs and addresses are refused before anything is created",
  ignore,
  async fn() {
    await using ns = await Netns.create("bad");
    ns.enter();
    await assertRejects(() => LinuxTun.open({ name: "a-name-too-long-x" }), RangeError, "bad interface name");
    await assertRejects(() => LinuxTun.open({ name: "a/b" }), RangeError, "bad interface name");
    await assertRejects(() => LinuxTun.open({ name: "vt1", mtu: 100 }), RangeError, "bad MTU 100");
    await assertRejects(
      () => LinuxTun.open({ name: "vt1", addresses: ["10.0.0.300/8"] }),
      SyntaxError,
      '"10.0.0.300/8"',
    );
    await assertRejects(
      () => LinuxTun.open({ name: "vt1", addresses: ["10.0.0.1"] }),
      SyntaxError,
      "no /prefix",
    );
    await assertRejects(
      () => LinuxTun.open({ name: "vt1", addresses: ["fd00::1/129"] }),
      SyntaxError,
      "prefix must be 0..128",
    );
    assertEquals((await ns.exec("ip", ["-o", "link"])).text.includes("vt1"), false);
  },
});

/** Runs tests/tun_probe.ts (opens a device, prints the outcome) under `wrapper`, inside a fresh namespace. */
async function probe(wrapper: string[], denoFlags = ["--allow-ffi"]): Promise<string> {
  await using ns = await Netns.create("probe");
  const script = new URL("../../tests/tun_probe.ts", import.meta.url).pathname;
  const out = await run("ip", [
    "netns",
    "exec",
    ns.name,
    ...wrapper,
    Deno.execPath(),
    "run",
    "--quiet",
    "--no-config",
    ...denoFlags,
    script,
  ], {
    allowFailure: true,
  });
  return (out.text + out.errors).trim();
}

Deno.test({
  name: "LinuxTun: without CAP_NET_ADMIN the error names the capability",
  ignore,
  async fn() {
    const text = await probe(["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"]);
    assert(text.includes("needs CAP_NET_ADMIN"), text);
  },
});

Deno.test({
  name: "LinuxTun: without /dev/net/tun the error says how to get it",
  ignore,
  async fn() {
    const text = await probe([
      "unshare",
      "--mount",
      "sh",
      "-c",
      'mount -t tmpfs none /dev/net && exec "$0" "$@"',
    ]);
    assert(text.includes("/dev/net/tun does not exist: load the tun module"), text);
  },
});

Deno.test({
  name: "LinuxTun: without --allow-ffi the error names the flag",
  ignore,
  async fn() {
    const text = await probe([], []);
    assert(text.includes("run deno with --allow-ffi"), text);
  },
});

Deno.test({
  name: "LinuxTun: opening and closing devices, with reads pending, leaves no file descriptor behind",
  ignore,
  async fn() {
    await using ns = await Netns.create("fds");
    ns.enter();
    // File descriptors are per process and other test files run alongside: count only TUN devices.
    const openFds = () =>
      [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
        try {
          return Deno.readLinkSync(`/proc/self/fd/${e.name}`) === "/dev/net/tun";
        } catch {
          return false; // closed meanwhile
        }
      }).length;
    const before = openFds();
    for (let i = 0; i < 20; i++) {
      const tun = await LinuxTun.open({ name: `vf${i % 3}`, addresses: ["10.96.0.1/24", "fd96::1/64"] });
      const pending = tun.readBatch([new Uint8Array(tun.mtu)], [0], 0);
      await tun.close();
      await pending;
    }
    assertEquals(openFds(), before);
  },
});
