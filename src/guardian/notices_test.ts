import { assert, assertEquals } from "../../tests/assert.ts";
import { guardianSetup } from "../../tests/guardian_fixture.ts";
import { toHex } from "../crypto/identity.ts";
import { ControlKind, decodeControl } from "../wire/control.ts";
import type { Revocation } from "./nats_auth.ts";
import { type MasterOutlet, masterPresence, RevocationNotices } from "./notices.ts";

/** A Master that records what it is given, and can be made to refuse. */
function recordingMaster() {
  const published: { subject: string; bytes: Uint8Array }[] = [];
  const pushed: Revocation[][] = [];
  let refuse = false;
  const master: MasterOutlet = {
    publish: (subject, bytes) => void published.push({ subject, bytes }),
    revoke: (entries) => {
      if (refuse) return Promise.reject(new Error("the Master is unreachable"));
      pushed.push(entries);
      return Promise.resolve();
    },
    connections: () =>
      Promise.resolve([
        { name: "node-aa", user: "U1", connected: false, lastSeen: 5 },
        { name: "node-aa", user: "U2", connected: true, lastSeen: 9 },
        { name: "guardian", user: "U3", connected: true, lastSeen: 9 },
      ]),
  };
  return { master, published, pushed, refuse: (on: boolean) => refuse = on };
}

Deno.test("notices: every recorded revocation goes to its realm, signed; revoked sessions go to the Master", async () => {
  const { guardian, login, reg, store } = await guardianSetup();
  const bad = await guardian.register(reg, { tag: "bad" });
  const good = await guardian.register(reg, { tag: "good" });
  assertEquals((await login(bad.token)).status, 200);
  assertEquals((await login(good.token)).status, 200);
  const lines: string[] = [];
  const m = recordingMaster();
  using notices = new RevocationNotices({ store, master: m.master, log: (l) => lines.push(l) });
  await notices.tick();
  assertEquals([m.published.length, m.pushed], [0, [[]]]); // at start, the Master gets the (empty) list

  m.refuse(true);
  guardian.revokeNode(bad.conflux_id); // as an admin command on the data directory would
  guardian.setNodeTag(good.conflux_id, "better"); // a change: certificates void, sessions kept
  guardian.setNodeTag((await guardian.register(reg, { tag: "idle" })).conflux_id, "x"); // no certificate: no notice
  await notices.tick();
  const realm = store.realmByName("home")!;
  assertEquals(m.published.map((p) => p.subject), [
    `veilnet.${realm.id}.broadcast`,
    `veilnet.${realm.id}.broadcast`,
  ]);
  const revoke = decodeControl(m.published[0]!.bytes);
  assert(revoke.kind === ControlKind.Revoke);
  assertEquals(toHex(revoke.body.conflux), bad.conflux_id.replaceAll("-", ""));
  assert(lines.some((l) => l.includes("did not take the revocations yet")), lines.join("\n"));
  // The Master was down: the next tick pushes again, with bad's session only; nothing is announced twice.
  m.refuse(false);
  await notices.tick();
  assertEquals(m.published.length, 2);
  assertEquals(m.pushed.at(-1)!.map((e) => e.user), [
    store.sessions(bad.conflux_id, Date.now())[0]!.natsUser,
  ]);
});

Deno.test("notices: presence merges a node user's connections across servers", async () => {
  const presence = await masterPresence(recordingMaster().master)();
  assertEquals([...presence], [["aa", { connected: true, lastSeen: 9 }]]);
});
