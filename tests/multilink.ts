/**
 * The multi-link testbed, for tests/multilink_test.ts and the bench: A's direct path to B and its paths to two
 * relays, C and D, are each shaped to PATH_MBIT (a tbf of their own on A's underlay; everything else runs free),
 * and C and D have tethers to B, so both answer when A asks for a relay.
 * @module
 */

import { waitFor } from "./harness.ts";
import { type Realm, realmOnTestbed } from "./testbed.ts";
import type { PeerStatus } from "../src/agent/status.ts";

/** Each path's rate (Mbit/s). */
export const PATH_MBIT = 20;

const TRANSFER = new URL("./tcp_transfer.ts", import.meta.url).pathname;

/** One TCP transfer from A to B, as B saw it. */
export interface Transfer {
  /** Every byte arrived, and nothing else. */
  intact: boolean;
  /** From B's first byte to its last. */
  mbit: number;
  longestGapMs: number;
  /** The share of the bytes each relay (C, D) carried. */
  relayed: [number, number];
}

export interface MultilinkRealm extends AsyncDisposable {
  realm: Realm;
  /** A's paths to B as `peers --json` shows them. */
  paths(): Promise<string>;
  /** Sends `bytes` from A to B over TCP on `port`; `during` runs once the transfer has started. */
  transfer(bytes: number, port: number, during?: () => Promise<void>): Promise<Transfer>;
  /** Drops everything between A and B on the underlay (both directions). */
  cutDirect(): Promise<void>;
}

export async function multilinkRealm(): Promise<MultilinkRealm> {
  const realm = await realmOnTestbed(["a", "b", "c", "d"]);
  try {
    const ns = realm.bed.host("a").ns;
    const tc = (...args: string[]) => ns.exec("tc", args);
    await tc("qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10");
    await tc("class", "add", "dev", "eth0", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit");
    for (const [i, name] of ["b", "c", "d"].entries()) {
      const id = `1:${20 + i}`;
      await tc("class", "add", "dev", "eth0", "parent", "1:", "classid", id, "htb", "rate", "10gbit");
      await tc(
        ...`qdisc add dev eth0 parent ${id} tbf rate ${PATH_MBIT}mbit burst 32kb latency 25ms`.split(" "),
      );
      await tc(
        ..."filter add dev eth0 parent 1: protocol ip u32 match ip dst".split(" "),
        `${realm.bed.host(name).address}/32`,
        "flowid",
        id,
      );
    }
    const a = realm.node("a");
    const target = (await a.find("b")).ips[0]!;
    const ping = (from: string) =>
      realm.bed.host(from).ns.exec("ping", ["-c", "1", "-W", "1", target], { allowFailure: true });
    for (const from of ["c", "d"]) {
      await waitFor(`${from}'s tether to b`, 20_000, async () => {
        await ping(from);
        const peers = await realm.node(from).peers() as unknown as PeerStatus[];
        return peers.find((p) => p.tag === "b")?.path === "direct";
      });
    }
    await waitFor("a's first ping to b", 20_000, async () => (await ping("a")).success);

    const deno = (host: string, ...args: string[]) =>
      realm.bed.host(host).ns.exec(Deno.execPath(), ["run", "-A", "--quiet", TRANSFER, ...args]);
    const relayed = () =>
      Promise.all(
        ["c", "d"].map(async (r) => ((await realm.node(r).status()).json.relayed as { bytes: number }).bytes),
      );
    return {
      realm,
      paths: async () =>
        JSON.stringify((await a.peers() as unknown as PeerStatus[]).find((p) => p.tag === "b")!.routes),
      async transfer(bytes, port, during) {
        const sink = deno("b", "serve", String(port));
        await new Promise((r) => setTimeout(r, 1_000));
        const before = await relayed();
        const sending = deno("a", "send", target, String(port), String(bytes));
        await during?.();
        const sent = (await sending).text.trim();
        const got = (await sink).text.trim().split(" ");
        const after = await relayed();
        return {
          intact: got.slice(0, 2).join(" ") === sent,
          mbit: bytes * 8 / (Number(got[3]) / 1000) / 1e6,
          longestGapMs: Number(got[2]),
          relayed: [(after[0]! - before[0]!) / bytes, (after[1]! - before[1]!) / bytes],
        };
      },
      cutDirect: () => realm.bed.cut("a", "b"),
      [Symbol.asyncDispose]: () => realm[Symbol.asyncDispose](),
    };
  } catch (error) {
    await realm[Symbol.asyncDispose]();
    throw error;
  }
}
