/**
 * NATS decentralised JWT auth for the Master: one operator, one account for all realms, and a user JWT per node
 * session whose permissions confine it to its realm's subjects and its own inbox. nats-server checks these
 * offline (resolver MEMORY with the account preloaded), so it refuses a node of realm A any subject of realm B.
 * @module
 */

import * as jwt from "@nats-io/jwt";
import * as nkeys from "@nats-io/nkeys";
import { realmSubjects } from "../control/subjects.ts";

/** The operator and account keys, kept by the Guardian (as nkey seeds). */
export interface NatsKeys {
  operatorSeed: string;
  accountSeed: string;
}

/** Makes a fresh operator and account. */
export function newNatsKeys(): NatsKeys {
  const text = new TextDecoder();
  return {
    operatorSeed: text.decode(nkeys.createOperator().getSeed()),
    accountSeed: text.decode(nkeys.createAccount().getSeed()),
  };
}

/** What a node needs to connect: its user JWT and nkey seed. */
export interface NatsCredentials {
  jwt: string;
  seed: string;
  /** The inbox prefix the node must use (its permissions allow no other). */
  inboxPrefix: string;
}

/** The operator and account JWTs a nats-server needs. */
export async function serverJwts(
  keys: NatsKeys,
): Promise<{ operator: string; account: string; accountKey: string }> {
  const operator = nkeys.fromSeed(new TextEncoder().encode(keys.operatorSeed));
  const account = nkeys.fromSeed(new TextEncoder().encode(keys.accountSeed));
  const operatorJwt = await jwt.encodeOperator("veilnet", operator);
  // Explicit limits: an account JWT with empty limits makes nats-server refuse every connection.
  const limits = {
    conn: -1,
    subs: -1,
    data: -1,
    payload: -1,
    imports: -1,
    exports: -1,
    wildcards: true,
    leaf: -1,
  };
  const accountJwt = await jwt.encodeAccount("realms", account, { limits } as Partial<jwt.Account>, {
    signer: operator,
  });
  return { operator: operatorJwt, account: accountJwt, accountKey: account.getPublicKey() };
}

/** A user JWT for one node session, valid until `expiresAt` (ms). */
export async function nodeCredentials(
  keys: NatsKeys,
  session: { realmId: string; nodeId: string; expiresAt: number },
): Promise<NatsCredentials> {
  const account = nkeys.fromSeed(new TextEncoder().encode(keys.accountSeed));
  const user = nkeys.createUser();
  const subjects = realmSubjects(session.realmId);
  const inboxPrefix = `_INBOX_${session.nodeId}`;
  const token = await jwt.encodeUser(`node-${session.nodeId}`, user, account, {
    pub: { allow: [`${subjects.prefix}.>`] },
    sub: {
      allow: [
        subjects.announce,
        subjects.broadcast,
        subjects.node(session.nodeId),
        subjects.data(session.nodeId),
        `${inboxPrefix}.>`,
      ],
    },
  }, { exp: Math.floor(session.expiresAt / 1000) });
  return { jwt: token, seed: new TextDecoder().decode(user.getSeed()), inboxPrefix };
}

/** nats-server configuration for the Master (one server, or one member of a cluster). */
export async function natsServerConfig(
  keys: NatsKeys,
  options: { host?: string; port: number; cluster?: { name: string; listen: string; routes: string[] } },
): Promise<string> {
  const { operator, account, accountKey } = await serverJwts(keys);
  const lines = [
    "# nats-server configuration written by `veilnet-conflux guardian nats-config`.",
    `host: ${JSON.stringify(options.host ?? "0.0.0.0")}`,
    `port: ${options.port}`,
    `operator: ${operator}`,
    "resolver: MEMORY",
    `resolver_preload: {\n  ${accountKey}: ${account}\n}`,
  ];
  if (options.cluster) {
    lines.push(
      "cluster {",
      `  name: ${JSON.stringify(options.cluster.name)}`,
      `  listen: ${JSON.stringify(options.cluster.listen)}`,
      `  routes: [${options.cluster.routes.map((r) => JSON.stringify(r)).join(", ")}]`,
      "}",
    );
  }
  return lines.join("\n") + "\n";
}
