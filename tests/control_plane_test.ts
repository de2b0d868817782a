/**
 * The control plane end to end, driven through the command line against a real Guardian process and real
 * nats-servers: discovery, access control, NATS isolation between realms, forged announcements, a Master
 * cluster losing a server, and the Guardian going away and coming back.
 */

import { connect, jwtAuthenticator } from "nats";
import { guardianClient } from "../src/agent/guardian_client.ts";
import { issueCertificate } from "../src/crypto/certificate.ts";
import { signControl } from "../src/crypto/control_signing.ts";
import { Identity } from "../src/crypto/identity.ts";
import { realmSubjects } from "../src/control/subjects.ts";
import { fromBase64 } from "../src/guardian/rules.ts";
import { NODE_PAYLOAD_BYTES, NODE_SUBSCRIPTIONS } from "../src/guardian/nats_auth.ts";
import { BROADCAST, ControlKind } from "../src/wire/control.ts";
import { decodeCertificate } from "../src/wire/certificate.ts";
import { certificateRef } from "../src/crypto/certificate.ts";
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { cli, freePort, GuardianProc, natsServer, NodeProc, Proc, tempDir, waitFor } from "./harness.ts";

/** A Guardian with an embedded Master, realm "home", and a registration token. */
async function realmWith(dir: string, options: { certTtl?: string } = {}) {
  const guardian = new GuardianProc(`${dir}/guardian`, {
    embeddedMaster: true,
    natsPort: freePort(),
    ...options,
  });
  await guardian.start();
  const realmLine = await guardian.admin(["realm", "create", "home"]);
  const realmId = /\(([0-9a-f]{32})\)/.exec(realmLine)![1]!;
  const token = await guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);
  return { guardian, realmId, token };
}

async function node(dir: string, tag: string, guardian: GuardianProc, token: string, taints: string) {
  const n = new NodeProc(tag, `${dir}/${tag}`);
  await n.register(guardian.url, token, ["--taints", taints]);
  await n.start();
  return n;
}

/** Logs in as a registered node from this test process: its identity, certificate and NATS connection. */
async function impostor(guardian: GuardianProc, n: NodeProc) {
  const saved = JSON.parse(await Deno.readTextFile(`${n.configDir}/conflux.json`));
  const identity = await Identity.generate();
  const login = await guardianClient.login(guardian.url, saved.token, identity);
  const nc = await connect({
    servers: login.nats.urls,
    authenticator: jwtAuthenticator(login.nats.jwt, new TextEncoder().encode(login.nats.seed)),
    inboxPrefix: login.nats.inboxPrefix,
    tls: { ca: guardian.ca },
  });
  return { identity, login, nc, certificate: fromBase64(login.certificate)! };
}

Deno.test({
  name:
    "control plane: two compatible nodes find each other on demand; an incompatible one and another realm stay out",
  async fn() {
    await using tmp = await tempDir("vc-e2e-");
    const dir = tmp.path;
    const { guardian, realmId, token } = await realmWith(dir);
    await using _g = guardian;
    await using a = await node(dir, "a", guardian, token, "dev");
    await using b = await node(dir, "b", guardian, token, "dev,stage");
    await using c = await node(dir, "c", guardian, token, "prod");
    await guardian.admin(["realm", "create", "away"]);
    const awayToken = await guardian.admin(["token", "create", "--realm", "away", "--any-taints"]);
    await using x = await node(dir, "x", guardian, awayToken, "dev");

    // Nobody announces to everyone: until a node needs another, it knows none.
    await new Promise((r) => setTimeout(r, 1_000));
    assertEquals([await a.peerTags(), await b.peerTags(), await c.peerTags()], [[], [], []]);
    // a looks b up by name (as its DNS would): both know each other after one exchange. c and x never answer.
    const started = performance.now();
    assertEquals((await a.resolve("b")).map((o) => o.tag), ["b"]);
    console.log(`a learned b on demand in ${(performance.now() - started).toFixed(1)} ms`);
    assertEquals(await a.resolve("c"), [], "c's taints do not match a's");
    assertEquals(await a.resolve("x"), [], "x is in another realm");
    await waitFor("b to know a", 5_000, async () => JSON.stringify(await b.peerTags()) === '["a"]');
    assertEquals(await a.peerTags(), ["b"]);
    assertEquals(await b.peerTags(), ["a"]);
    assertEquals(await c.peerTags(), []);
    assertEquals(await x.peerTags(), []);
    const status = await a.status();
    assertEquals(status.code, 0);
    assertEquals(status.json.connected as Record<string, boolean>, { guardian: true, master: true });

    // A node of realm "away" holds credentials that nats-server itself refuses for realm "home".
    const spy = await impostor(guardian, x);
    const home = realmSubjects(realmId);
    const violations: string[] = [];
    (async () => {
      for await (const s of spy.nc.status()) {
        if (s.permissionContext) {
          violations.push(`${s.permissionContext.operation} ${s.permissionContext.subject}`);
        }
      }
    })();
    spy.nc.subscribe(home.portals, { callback: () => {} });
    spy.nc.publish(home.whoTag("a"), new Uint8Array(10));
    await waitFor(
      "nats-server to refuse both",
      10_000,
      () =>
        violations.includes(`subscription ${home.portals}`) &&
        violations.includes(`publish ${home.whoTag("a")}`),
    );
    await spy.nc.close();
    // And a member of "home" may hear only what is for it, and speak only as itself.
    const member = await impostor(guardian, b);
    const mine = realmSubjects(realmId);
    const refused: string[] = [];
    (async () => {
      for await (const s of member.nc.status()) {
        if (s.permissionContext) {
          refused.push(`${s.permissionContext.operation} ${s.permissionContext.subject}`);
        }
      }
    })();
    const aNode = (await a.status()).json.nodeId as string;
    const aConflux = ((await a.status()).json.id as string).replaceAll("-", "");
    const attempts = [
      ["subscription", mine.whoTag("a")], // a's lookups
      ["subscription", mine.node(aNode)], // a's messages
      ["subscription", mine.data(aNode)], // a's backup traffic
      ["subscription", mine.report], // what every node reports to the Guardians: who talks to whom
      ["publish", mine.broadcast], // the Guardian's
      ["publish", mine.peer(aConflux)], // announcing as a
      ["publish", mine.portals], // b is no portal
    ];
    for (const [op, subject] of attempts) {
      if (op === "subscription") member.nc.subscribe(subject!, { callback: () => {} });
      else member.nc.publish(subject!, new Uint8Array(10));
    }
    await waitFor(
      "nats-server to refuse each",
      10_000,
      () => attempts.every(([op, subject]) => refused.includes(`${op} ${subject}`)),
    );
    // Nor can it hold more subscriptions than NODE_SUBSCRIPTIONS, nor publish more than NODE_PAYLOAD_BYTES.
    const errors: string[] = [];
    (async () => {
      for await (const s of member.nc.status()) {
        errors.push(s.data instanceof Error ? s.data.message : String(s.data));
      }
    })();
    // (nats.js reports the server's refusal only as a protocol error, so the limit shows as: none below it, one
    // past it.)
    const subscribe = async (from: number, to: number) => {
      for (let i = from; i < to; i++) member.nc.subscribe(mine.peer(i.toString(16).padStart(32, "0")));
      await member.nc.flush();
      await new Promise((r) => setTimeout(r, 300));
    };
    await subscribe(0, NODE_SUBSCRIPTIONS - 100);
    assertEquals(errors, [], "below the limit");
    await subscribe(NODE_SUBSCRIPTIONS - 100, NODE_SUBSCRIPTIONS + 100);
    await waitFor("the subscription limit", 10_000, () => errors.length > 0);
    // The server tells the client its payload limit (its own is 1 MiB) and refuses more.
    assertEquals(member.nc.info?.max_payload, NODE_PAYLOAD_BYTES);
    assertThrows(
      () => member.nc.publish(mine.node(aNode), new Uint8Array(NODE_PAYLOAD_BYTES + 1)),
      Error,
      "PAYLOAD",
    );
    console.log(
      `a member past ${NODE_SUBSCRIPTIONS} subscriptions: ${errors.length} refused; payload limit ${NODE_PAYLOAD_BYTES}`,
    );
    await member.nc.close();
  },
});

Deno.test({
  name: "control plane: forged, expired and wrongly-signed announcements are dropped and counted",
  async fn() {
    await using tmp = await tempDir("vc-e2e-");
    const dir = tmp.path;
    const { guardian, realmId, token } = await realmWith(dir, { certTtl: "8s" });
    await using _g = guardian;
    await using a = await node(dir, "a", guardian, token, "dev");
    const aId = (await a.status()).json.nodeId as string;
    const forgerNode = new NodeProc("forger", `${dir}/forger`);
    await forgerNode.register(guardian.url, token, ["--taints", "dev"]);
    const f = await impostor(guardian, forgerNode);
    const subjects = realmSubjects(realmId);
    const cert = decodeCertificate(f.certificate);
    const announce = async (o: { identity?: Identity; certificate?: Uint8Array }) => {
      const certificate = o.certificate ?? f.certificate;
      const message = await signControl(o.identity ?? f.identity, {
        kind: ControlKind.Announce,
        recipient: BROADCAST,
        certRef: await certificateRef(certificate),
        body: { certificate, leaving: 0 },
      }, Date.now());
      if (o.identity) message.set(f.identity.nodeId, 3); // claim to be the forger's node id
      f.nc.publish(subjects.node(aId), message); // sent to a directly, as a lookup's answer would be
      await f.nc.flush();
    };
    // 1. A certificate signed by a key that is not the realm's.
    const fakeRealm = await Identity.generate();
    const { signed: _s, signature: _sig, ...fields } = cert;
    await announce({
      certificate: await issueCertificate(fakeRealm.key, { ...fields, tag: "forged-realm" }),
    });
    // 2. The real certificate, in a message signed by another key.
    await announce({ identity: await Identity.generate() });
    // 3. The real certificate with its taints edited.
    const edited = f.certificate.slice();
    edited[edited.indexOf(100, /* "d" of dev */ 100)] = 0x65;
    await announce({ certificate: edited });
    await waitFor("a to count the drops", 10_000, async () => {
      const dropped = (await a.status()).json.dropped as Record<string, number>;
      return (dropped["bad-signature"] ?? 0) >= 3;
    });
    assertEquals(await a.peerTags(), []);

    // 4. The real certificate, once it has expired (8 s lifetime), in a freshly signed message. The forger's
    // NATS credentials expire with it (nats-server would cut the connection, so it is closed first), and it
    // logs in again for a channel only.
    await f.nc.close();
    await new Promise((r) => setTimeout(r, Math.max(0, cert.notAfter - Date.now()) + 200));
    const again = await guardianClient.login(
      guardian.url,
      JSON.parse(
        await Deno.readTextFile(`${forgerNode.configDir}/conflux.json`),
      ).token,
      f.identity,
    );
    f.nc = await connect({
      servers: again.nats.urls,
      authenticator: jwtAuthenticator(again.nats.jwt, new TextEncoder().encode(again.nats.seed)),
      inboxPrefix: again.nats.inboxPrefix,
      tls: { ca: guardian.ca },
    });
    await announce({});
    await waitFor("a to refuse the expired certificate", 10_000, async () => {
      const dropped = (await a.status()).json.dropped as Record<string, number>;
      return (dropped["expired"] ?? 0) >= 1;
    });
    assertEquals(await a.peerTags(), []);

    // The same path with a genuine, valid certificate is believed: the drops above were the checks working.
    await announce({ certificate: fromBase64(again.certificate)! });
    await waitFor("a to list the genuine node", 10_000, async () => (await a.peerTags()).includes("forger"));
    await f.nc.close();
  },
});

Deno.test({
  name:
    "control plane: a node whose Master server dies reconnects to another, keeps its peers, and can be found",
  async fn() {
    await using tmp = await tempDir("vc-e2e-");
    const dir = tmp.path;
    const ports = [freePort(), freePort(), freePort()];
    const routes = [freePort(), freePort(), freePort()];
    const monitor = [freePort(), freePort(), freePort()];
    // The Guardian's keys first (nats-config creates them), then a 3-server cluster configured from them.
    const natsUrls = ports.map((p) => `tls://127.0.0.1:${p}`);
    const guardian = new GuardianProc(`${dir}/guardian`, { master: natsUrls });
    await using _g = guardian;
    const servers: Proc[] = [];
    for (let i = 0; i < 3; i++) {
      const others = routes.filter((_, j) => j !== i).map((r) => `nats-route://127.0.0.1:${r}`);
      servers.push(
        await natsServer(`${dir}/guardian`, `nats${i}`, ports[i]!, {
          configFlags: [
            "--cluster-name",
            "veilnet",
            "--cluster-listen",
            `127.0.0.1:${routes[i]}`,
            "--routes",
            others.join(","),
          ],
          serverFlags: ["-m", String(monitor[i])],
        }),
      );
    }
    try {
      await guardian.start();
      await guardian.admin(["realm", "create", "home"]);
      const token = await guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);
      await waitFor("the cluster to form", 15_000, async () => {
        const routez = await (await fetch(`http://127.0.0.1:${monitor[0]}/routez`)).json();
        return routez.num_routes >= 2;
      }).catch((error) => {
        const outputs = servers.map((s) => `--- ${s.name}:\n${s.output}`).join("\n");
        throw new Error(`${error.message}\n${outputs}\n--- guardian:\n${guardian.proc?.output}`);
      });
      await using a = await node(dir, "a", guardian, token, "dev");
      await using b = await node(dir, "b", guardian, token, "dev");
      assertEquals((await a.resolve("b")).length, 1);
      await waitFor("b to know a", 5_000, async () => (await b.peerTags()).includes("a"));
      const serverOf = async (tag: string) => {
        for (let i = 0; i < 3; i++) {
          const connz = await fetch(`http://127.0.0.1:${monitor[i]}/connz`).then(
            (r) => r.json(),
            () => undefined,
          );
          if ((connz?.connections ?? []).some((c: { name?: string }) => c.name === `veilnet-${tag}`)) {
            return i;
          }
        }
        return undefined;
      };
      const victim = await waitFor("a's server", 5_000, () => serverOf("a"));
      await servers[victim]!.stop("SIGKILL");
      const killedAt = Date.now();
      await waitFor("a to reconnect elsewhere", 10_000, async () => {
        const i = await serverOf("a");
        return i !== undefined && i !== victim;
      });
      const reconnectedAfter = (Date.now() - killedAt) / 1000;
      assert((await b.peerTags()).includes("a"), "b lost a");
      assert((await a.peerTags()).includes("b"), "a lost b");
      assertEquals((await a.status()).json.connected, { guardian: true, master: true });
      // Its subscriptions moved with it: a newcomer finds it by name through another server.
      await using c = await node(dir, "c", guardian, token, "dev");
      assertEquals((await c.resolve("a")).map((o) => o.tag), ["a"]);
      console.log(
        `a reconnected ${reconnectedAfter.toFixed(1)} s after its server was killed, and was found`,
      );
    } finally {
      for (const s of servers) await s.stop("SIGKILL");
    }
  },
});

Deno.test({
  name: "control plane: with the Guardian stopped nodes keep each other; restarted, renewals resume",
  async fn() {
    await using tmp = await tempDir("vc-e2e-");
    const dir = tmp.path;
    const natsPort = freePort();
    // The Master runs on its own here: stopping the Guardian must not take the Master with it.
    const guardian = new GuardianProc(`${dir}/guardian`, {
      master: [`tls://127.0.0.1:${natsPort}`],
      certTtl: "30s",
    });
    await using _g = guardian;
    await using master = await natsServer(`${dir}/guardian`, "nats", natsPort);
    await guardian.start();
    await guardian.admin(["realm", "create", "home"]);
    const token = await guardian.admin(["token", "create", "--realm", "home", "--any-taints"]);
    await using a = await node(dir, "a", guardian, token, "dev");
    await using b = await node(dir, "b", guardian, token, "dev");
    assertEquals((await a.resolve("b")).length, 1);
    await waitFor("b to know a", 5_000, async () => (await b.peerTags()).includes("a"));
    const firstExpiry = (await a.status()).json.certificateExpiresAt as number;

    await guardian.stop();
    // Past the renewal point (20 s of 30): both still listed.
    await new Promise((r) => setTimeout(r, 22_000));
    assertEquals(await a.peerTags(), ["b"]);
    assertEquals(await b.peerTags(), ["a"]);
    assert(a.proc!.output.includes("login failed"), "a did not try to renew");

    await guardian.start();
    await waitFor(
      "a's session to be renewed",
      20_000,
      async () => ((await a.status()).json.certificateExpiresAt as number) > firstExpiry,
    );
    assertEquals(await a.peerTags(), ["b"]);
    void master;
  },
});

Deno.test({
  name: "control plane: taints changed at runtime are followed by both sides within 2 s",
  async fn() {
    await using tmp = await tempDir("vc-e2e-");
    const dir = tmp.path;
    const { guardian, token } = await realmWith(dir);
    await using _g = guardian;
    await using a = await node(dir, "a", guardian, token, "dev");
    await using c = await node(dir, "c", guardian, token, "prod");
    await new Promise((r) => setTimeout(r, 2_000));
    assertEquals([await a.peerTags(), await c.peerTags()], [[], []]);

    const added = await cli(["taint", "add", "dev"], c.env);
    assertEquals([added.code, added.stdout.trim()], [0, "taints: dev,prod"]);
    assertEquals((await a.resolve("c")).map((o) => o.tag), ["c"]);
    await waitFor("c to know a", 2_000, async () => (await c.peerTags()).includes("a"));

    const removed = await cli(["taint", "remove", "dev"], c.env);
    assertEquals([removed.code, removed.stdout.trim()], [0, "taints: prod"]);
    await waitFor(
      "a and c to drop each other",
      2_000,
      async () => (await a.peerTags()).length === 0 && (await c.peerTags()).length === 0,
    );
    assertEquals((await cli(["taint", "list"], c.env)).stdout.trim(), "prod");
  },
});

Deno.test({
  name: "control plane: a restart, a tag change and a leave reach the node that knows it within 2 s",
  async fn() {
    await using tmp = await tempDir("vc-e2e-");
    const dir = tmp.path;
    const { guardian, token } = await realmWith(dir);
    await using _g = guardian;
    await using a = await node(dir, "a", guardian, token, "dev");
    await using b = await node(dir, "b", guardian, token, "dev");
    assertEquals((await a.resolve("b")).length, 1);
    const known = async () => (await a.peers() as unknown as { tag: string; nodeId: string }[])[0];
    const within2s = async (what: string, check: () => Promise<boolean>) => {
      const t = Date.now();
      await waitFor(what, 2_000, check);
      return Date.now() - t;
    };

    // b dies (no goodbye) and starts again with a new key: its announcement replaces the old b at a.
    const oldId = (await known())!.nodeId;
    await b.proc!.stop("SIGKILL");
    await b.start();
    const newId = (await b.status()).json.nodeId as string;
    const join = await within2s("a to take b's new key", async () => (await known())?.nodeId === newId);
    assert(newId !== oldId);

    // The administrator renames b: its certificate is revoked, it logs in again and announces the new one.
    const renamed = await guardian.admin(["node", "tag", "b", "b2"]);
    assert(renamed.includes("b2"), renamed);
    const tag = await within2s("a to know b as b2", async () => (await known())?.tag === "b2");
    // And a node that never knew b finds it by its new name (b listens under it, with credentials that allow it).
    await using c = await node(dir, "c", guardian, token, "dev");
    assertEquals((await c.resolve("b2")).map((o) => o.tag), ["b2"]);

    // b leaves.
    await b.stop();
    const leave = await within2s("a to drop b", async () => (await a.peerTags()).length === 0);
    console.log(
      `restart seen in ${join} ms, tag change in ${tag} ms, leave in ${leave} ms (after each was done)`,
    );
  },
});
