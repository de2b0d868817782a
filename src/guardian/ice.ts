/**
 * The ICE servers a login hands out: the Guardian's own STUN service first (at the host the node used to reach
 * the Guardian), then each TURN server with credentials made for this login, then the administrator's `--ice`.
 *
 * TURN credentials follow coturn's `use-auth-secret` scheme (the "TURN REST API" draft): the username is
 * `<expiry, unix seconds>:<conflux id>` and the password is base64(HMAC-SHA1(shared secret, username)); coturn
 * recomputes the password from the username and refuses it once the expiry has passed. The expiry is the
 * certificate's, so a node's TURN access ends with its session, and a revoked node gets no new credentials.
 *
 * libdatachannel takes TURN credentials only inside the URL (`turn:USER:PASS@host:port`) and percent-decodes the
 * user and password (v0.17.2 and later). The username holds a colon and base64 holds `+ / =`, so both are
 * percent-encoded: unencoded, libdatachannel would cut the username at its colon.
 * @module
 */

/** A TURN server as the administrator names it (`--turn`): host (IPv6 in brackets) and port. */
export interface TurnServer {
  host: string;
  port: number;
}

/** TURN servers sharing one secret with the Guardian. */
export interface TurnConfig {
  servers: TurnServer[];
  secret: string;
}

/** The default TURN port (RFC 5766). */
const TURN_PORT = 3478;

/**
 * Parses a `--turn` URL: `turn:host[:port][?transport=udp]`. Refuses credentials in it (the Guardian makes them),
 * and TCP or TLS transports (libjuice, which nodes use, speaks TURN over UDP only). Throws a RangeError saying so.
 */
export function parseTurnServer(text: string): TurnServer {
  const m = /^turn:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?(\?transport=udp)?$/.exec(text);
  if (!m) {
    const why = /^turns:|transport=(tcp|tls)/i.test(text)
      ? ": nodes speak TURN over UDP only (libjuice), so use turn:host:port"
      : text.includes("@")
      ? ": leave the credentials out, the Guardian makes them for each login"
      : "";
    throw new RangeError(`a TURN server looks like turn:host:3478, got "${text}"${why}`);
  }
  const port = m[2] === undefined ? TURN_PORT : Number(m[2]);
  if (port < 1 || port > 65535) throw new RangeError(`TURN port must be 1..65535, got "${text}"`);
  return { host: m[1]!, port };
}

const base64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));

/** coturn `use-auth-secret` credentials for `user`, valid until `expiresAt` (ms). */
export async function turnCredentials(
  secret: string,
  o: { user: string; expiresAt: number },
): Promise<{ username: string; password: string }> {
  const username = `${Math.floor(o.expiresAt / 1000)}:${o.user}`;
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-1" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(username));
  return { username, password: base64(new Uint8Array(mac)) };
}

/** A TURN URL with credentials, as libdatachannel reads it (user and password percent-encoded). */
export function turnUrl(server: TurnServer, credentials: { username: string; password: string }): string {
  const user = encodeURIComponent(credentials.username);
  const password = encodeURIComponent(credentials.password);
  return `turn:${user}:${password}@${server.host}:${server.port}?transport=udp`;
}

/** The host part of an HTTP Host header ("h:8080" → "h", "[::1]:8080" → "[::1]", "h" → "h"). */
export function hostOf(hostHeader: string): string {
  if (hostHeader.startsWith("[")) return hostHeader.replace(/:\d+$/, "");
  return hostHeader.includes(":") ? hostHeader.slice(0, hostHeader.lastIndexOf(":")) : hostHeader;
}

/** What a login's ICE servers depend on. */
export interface IceOptions {
  /** The Guardian's STUN port (it also answers on the next one); undefined when it serves none. */
  stunPort?: number;
  turn?: TurnConfig;
  /** The administrator's extra servers (`--ice`), handed out as given. */
  iceServers: string[];
}

/**
 * The ICE servers for one login: `stun:<host>:<port>` (the host the node used to reach the Guardian), then each
 * TURN server with credentials for `user` until `expiresAt` (ms), then the `--ice` servers.
 */
export async function loginIceServers(
  o: IceOptions,
  login: { host: string; user: string; expiresAt: number },
): Promise<string[]> {
  const out: string[] = [];
  if (o.stunPort !== undefined) out.push(`stun:${hostOf(login.host)}:${o.stunPort}`);
  if (o.turn && o.turn.servers.length > 0) {
    const credentials = await turnCredentials(o.turn.secret, login);
    for (const server of o.turn.servers) out.push(turnUrl(server, credentials));
  }
  return [...out, ...o.iceServers];
}
