/**
 * The fuzz targets: each parser that takes bytes from the network, with valid seed inputs and the error type that
 * is its honest refusal. See fuzz.ts.
 * @module
 */

import { mutants } from "../tests/fuzz.ts";
import { guardianSetup } from "../tests/guardian_fixture.ts";
import { guardianHandler } from "../src/guardian/api.ts";
import { nodeCertificateFields } from "../tests/certificates.ts";
import { PeerTable } from "../src/agent/peers.ts";
import { issueCertificate, verifyCertificate } from "../src/crypto/certificate.ts";
import { signControl, signRevocation } from "../src/crypto/control_signing.ts";
import { Identity } from "../src/crypto/identity.ts";
import { Responder } from "../src/dns/message.ts";
import { WireError } from "../src/wire/bytes.ts";
import { decodeCertificate } from "../src/wire/certificate.ts";
import { BROADCAST, ControlKind, decodeControl, LookupKind, TetherSignalType } from "../src/wire/control.ts";
import {
  BatchBuilder,
  DATA_HEADER_BYTES,
  DataType,
  readDataHeader,
  unpackBatch,
  writeDataHeader,
} from "../src/wire/envelope.ts";
import { answerBinding, bindingRequest } from "../src/wire/stun.ts";
import { filterCandidates } from "../src/tether/webrtc.ts";
import ndc from "node-datachannel";

/** What a run found. */
export interface FuzzResult {
  inputs: number;
  /** Inputs the parser accepted (the rest it refused, as it should). */
  accepted: number;
  failure?: { what: string; bytes: Uint8Array; error: string };
}

/** One parser under fuzzing. */
export interface FuzzTarget {
  name: string;
  run(count: number): Promise<FuzzResult>;
}

/**
 * Feeds `count` mutants, spread over the seeds, to `parse`; an error that `refusal` does not accept is a failure.
 * `parse` may be async; it resolves to whether the input was accepted.
 */
async function feed(
  seeds: Uint8Array[],
  count: number,
  parse: (bytes: Uint8Array) => boolean | Promise<boolean>,
  refusal: (error: unknown) => boolean = (e) => e instanceof WireError,
): Promise<FuzzResult> {
  let inputs = 0;
  let accepted = 0;
  const each = Math.ceil(count / seeds.length);
  for (const [i, seed] of seeds.entries()) {
    for (
      const m of mutants(seed, Math.min(each, count - inputs), { seed: i + 1, maxLength: seed.length * 2 })
    ) {
      inputs++;
      try {
        if (await parse(m.bytes)) accepted++;
      } catch (error) {
        if (!refusal(error)) {
          return { inputs, accepted, failure: { what: m.what, bytes: m.bytes, error: String(error) } };
        }
      }
    }
  }
  return { inputs, accepted };
}

const REALM = new Uint8Array(16).fill(7);

/** A realm with two nodes and signed messages of every kind, as seeds. */
async function signedSeeds() {
  const realmKey = await Identity.generate();
  const now = Date.now();
  const node = async (n: number) => {
    const identity = await Identity.generate();
    const bytes = await issueCertificate(
      realmKey.key,
      nodeCertificateFields(n, {
        realm: REALM,
        nodeKey: identity.publicKey,
        notBefore: now - 1_000,
        notAfter: now + 3_600_000,
        portal: 1,
        subnets: [Uint8Array.of(10, 50, 0, 0, 24)],
      }),
    );
    return {
      identity,
      cert: await verifyCertificate(bytes, { realm: REALM, realmKey: realmKey.publicKey, now }),
    };
  };
  const [a, b] = [await node(1), await node(2)];
  const base = { certRef: b.cert.ref, recipient: a.identity.nodeId };
  const messages = await Promise.all([
    signControl(b.identity, {
      ...base,
      recipient: BROADCAST,
      kind: ControlKind.Announce,
      body: { certificate: b.cert.bytes, leaving: 0 },
    }, now),
    signControl(b.identity, {
      ...base,
      kind: ControlKind.Lookup,
      body: { certificate: b.cert.bytes, what: LookupKind.Address, key: a.cert.ipv4 },
    }, now),
    signControl(b.identity, {
      ...base,
      kind: ControlKind.Found,
      body: { query: new Uint8Array(16), certificate: b.cert.bytes },
    }, now),
    signControl(b.identity, {
      ...base,
      kind: ControlKind.TetherSignal,
      body: {
        session: new Uint8Array(16),
        signal: TetherSignalType.Offer,
        payload: "v=0\r\no=- 1 1 IN IP4 0.0.0.0",
      },
    }, now),
    signControl(b.identity, {
      ...base,
      kind: ControlKind.RouteAnswer,
      body: { destination: new Uint8Array(16), rttMs: 3 },
    }, now),
    signRevocation(realmKey.key, { conflux: new Uint8Array(16).fill(9), before: now }, now),
  ]);
  return { realmKey, a, b, messages };
}

/** Every target. */
export async function targets(): Promise<FuzzTarget[]> {
  const signed = await signedSeeds();
  const packet = new Uint8Array(60).fill(0x45);
  const batch = new BatchBuilder();
  for (let i = 0; i < 3; i++) batch.push(packet);
  const envelope = new Uint8Array(DATA_HEADER_BYTES + 40);
  writeDataHeader(envelope, {
    type: DataType.Packets,
    destination: new Uint8Array(16).fill(1),
    stream: new Uint8Array(8).fill(2),
    counter: 5,
    ttl: 8,
  });
  const dnsQuery = Uint8Array.from(atob("q80BAAABAAAAAAAAA3dlYgd2ZWlsbmV0AAABAAE="), (c) => c.charCodeAt(0));
  const responder = new Responder({
    lookup: (tag) =>
      Promise.resolve(
        tag === "web" ? [{ tag, ipv4: Uint8Array.of(10, 128, 0, 2), ipv6: new Uint8Array(16) }] : [],
      ),
  });
  return [
    {
      name: "control",
      run: (n) => feed(signed.messages, n, (b) => (decodeControl(b), true)),
    },
    {
      name: "certificate",
      run: (n) => feed([signed.a.cert.bytes, signed.b.cert.bytes], n, (b) => (decodeCertificate(b), true)),
    },
    {
      name: "envelope",
      run: (n) =>
        feed([envelope, batch.plaintext().slice()], n, (b) => {
          // The header of a received message, and a batch as it comes out of a stream's opener.
          try {
            readDataHeader(b);
          } catch (error) {
            if (!(error instanceof WireError)) throw error;
          }
          return unpackBatch(b).length >= 0;
        }),
    },
    {
      name: "stun",
      run: (n) =>
        feed([bindingRequest(new Uint8Array(12).fill(3))], n, (b) => {
          answerBinding(b, { address: Uint8Array.of(198, 51, 100, 9), port: 5 });
          return true;
        }),
    },
    {
      name: "dns",
      // The responder never throws: every input gets an answer, a refusal, or silence.
      run: (n) =>
        feed([dnsQuery], n, async (b) => {
          const answer = await responder.respond(b, "udp");
          if (answer && answer.length > 4096) throw new Error(`an answer of ${answer.length} bytes`);
          return answer !== undefined;
        }, () => false),
    },
    {
      name: "sdp",
      // A peer's offer and candidates go to libdatachannel as they came (a native parser: a crash would end the
      // node), after our own candidate filter. Refusal: the Error it throws. (The caller releases libdatachannel:
      // shutdownWebRtc.)
      run: async (n) => {
        const offerer = new ndc.PeerConnection("fuzz-seed", { iceServers: [] });
        const offer = await new Promise<string>((resolve) => {
          offerer.onLocalDescription((sdp) => resolve(sdp));
          offerer.createDataChannel("seed");
        });
        offerer.close();
        const candidate = "a=candidate:1 1 UDP 2122317823 192.0.2.7 50000 typ host";
        const text = new TextDecoder();
        return await feed(
          [new TextEncoder().encode(offer), new TextEncoder().encode(candidate)],
          n,
          (b) => {
            const sdp = text.decode(b);
            filterCandidates(sdp, () => false);
            const pc = new ndc.PeerConnection("fuzz", { iceServers: [] });
            try {
              pc.setRemoteDescription(sdp.startsWith("a=candidate") ? offer : sdp, "offer");
              if (sdp.startsWith("a=candidate")) pc.addRemoteCandidate(sdp.slice(2), "0");
              return true;
            } finally {
              pc.close();
            }
          },
          (e) => e instanceof Error && !(e instanceof TypeError),
        );
      },
    },
    {
      name: "api",
      // The Guardian's HTTP API with valid tokens, so that hostile bodies get past authentication to the parsing
      // and checking of each endpoint: every answer is a 2xx or a 4xx with a reason, never a 5xx or a throw.
      run: async (n) => {
        const g = await guardianSetup();
        const unlimited = { perSecond: 1e12, burst: 1e12 };
        const handler = guardianHandler(g.guardian, { limits: { requests: unlimited, failures: unlimited } });
        const node =
          (await g.call("POST", "/conflux/register", { token: g.reg, body: { tag: "web" } })).json.token;
        const endpoints: [method: string, path: string, token: string, body: unknown][] = [
          ["POST", "/conflux/register", g.reg, {
            tag: "db",
            taints: ["dev"],
            portal: true,
            subnets: ["10.50.0.0/24"],
          }],
          ["POST", "/conflux/session/login", node, {
            public_key: "AAAA",
            timestamp: Date.now(),
            nonce: "00".repeat(16),
            tag: "web",
            portal: false,
            subnets: [],
          }],
          ["POST", "/conflux/taints", node, { add: ["dev"], remove: ["prod"] }],
          ["POST", "/admin/realms", g.admin, { name: "lab", cidr: "10.200.0.0/24" }],
          ["PUT", "/admin/realms/home/oidc", g.admin, {
            issuer: "https://id.example",
            jwks_url: "https://id.example/jwks",
            audience: "veilnet",
            taints_claim: "groups",
          }],
          ["POST", "/admin/tokens", g.admin, {
            realm: "home",
            uses: 3,
            ttl: "1h",
            taints: ["dev"],
            subnets: ["10.50.0.0/24"],
          }],
          ["PUT", "/admin/nodes/web/taints", g.admin, { taints: ["dev"], any: false }],
          ["PUT", "/admin/nodes/web/tag", g.admin, { tag: "www" }],
          ["PUT", "/admin/nodes/web/subnets", g.admin, { subnets: ["10.50.0.0/24"] }],
        ];
        const encoder = new TextEncoder();
        let i = 0;
        return await feed(
          endpoints.map(([, , , body]) => encoder.encode(JSON.stringify(body))),
          n,
          async (b) => {
            // The seeds are taken in turn by feed; each mutant goes to the endpoint of its seed.
            const [method, path, token] =
              endpoints[Math.min(endpoints.length - 1, Math.floor(i++ / Math.ceil(n / endpoints.length)))]!;
            const res = await handler(
              new Request(`http://guardian.test:8080${path}`, {
                method,
                headers: { authorization: `Bearer ${token}`, host: "guardian.test:8080" },
                body: new Uint8Array(b),
              }),
            );
            await res.body?.cancel();
            if (res.status >= 500) throw new Error(`${method} ${path} answered ${res.status}`);
            return res.status < 400;
          },
          () => false,
        );
      },
    },
    {
      name: "peer-table",
      // The whole receiving path of a control message (decode, cheap checks, certificate, signature, access):
      // it never throws for bad input, it drops and counts.
      run: (n) => {
        const table = new PeerTable({
          self: () => signed.a.cert,
          realm: REALM,
          realmKey: signed.realmKey.publicKey,
          clock: Date.now,
        });
        return feed(signed.messages, n, async (b) => (await table.receive(b)) !== undefined, () => false);
      },
    },
  ];
}
