/**
 * What the Guardian accepts, as pure checks: names, taints, portal subnets and grants, durations, certificate
 * lifetimes, OIDC settings, overlay addresses. Each refusal is a GuardianError carrying the HTTP status the API
 * answers with and a message that says what was expected.
 * @module
 */

import { sha256, toHex } from "../crypto/identity.ts";
import { MAX_CERTIFICATE_TTL_MS } from "../spec.ts";
import { parseCidr } from "../tun/ip.ts";
import { isRegion, MAX_REGION_BYTES, MAX_REGIONS, MAX_SUBNETS, MAX_TAINTS } from "../wire/certificate.ts";
import { contains, formatCidr, overlaps } from "../portal/subnets.ts";
import type { RealmOidc, RealmRow } from "./store.ts";

/** A refused request: `status` is the HTTP status the API answers with. */
export class GuardianError extends Error {
  override name = "GuardianError";
  constructor(readonly status: 400 | 401 | 403 | 404 | 409 | 503, message: string) {
    super(message);
  }
}

// The runtime's own base64 (ES2026): spreading a 2 KiB key into String.fromCharCode and back cost a login ~0.4 ms.
type Base64Bytes = { toBase64(): string };
const Base64Array = Uint8Array as unknown as { fromBase64(text: string): Uint8Array };

export const base64 = (b: Uint8Array): string => (b as unknown as Base64Bytes).toBase64();
export const base64url = (b: Uint8Array): string =>
  base64(b).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
export const randomHex = (n: number): string => toHex(crypto.getRandomValues(new Uint8Array(n)));
export const hashSecret = async (secret: string): Promise<string> =>
  toHex(await sha256(new TextEncoder().encode(secret)));

/** Decodes standard base64; undefined if it is not. */
export function fromBase64(text: string): Uint8Array | undefined {
  try {
    return Base64Array.fromBase64(text);
  } catch {
    return undefined;
  }
}

export const TAINT = /^[A-Za-z0-9_.:-]{1,64}$/;
export const REALM_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

/** The 400 for a value that is not a region name (isRegion), `where` it was found. */
function badRegion(value: unknown, where: string, or = ""): GuardianError {
  return new GuardianError(
    400,
    `bad region ${JSON.stringify(value)}${where}: a-z, 0-9 and inner hyphens, at most ${MAX_REGION_BYTES} ` +
      `characters (e.g. "eu-west")${or}`,
  );
}

/** A region an administrator places a node in: a region name (isRegion), or "" for none. 400 otherwise. */
export function checkRegion(region: unknown): string {
  if (region === "") return "";
  if (typeof region !== "string" || !isRegion(region)) throw badRegion(region, "", ', or "" for none');
  return region;
}

/**
 * Regions a node's traffic may cross a third party in: region names (isRegion), each once, at most MAX_REGIONS;
 * [] for anywhere. 400 naming the bad value otherwise.
 */
export function checkRegions(regions: unknown): string[] {
  if (!Array.isArray(regions)) throw new GuardianError(400, "regions must be a list of region names");
  const seen = new Set<string>();
  for (const r of regions) {
    if (typeof r !== "string" || !isRegion(r)) throw badRegion(r, " in regions");
    if (seen.has(r)) throw new GuardianError(400, `region "${r}" is in regions twice`);
    seen.add(r);
  }
  if (seen.size > MAX_REGIONS) {
    throw new GuardianError(400, `at most ${MAX_REGIONS} regions, got ${seen.size}`);
  }
  return [...seen];
}

export function checkTaints(taints: unknown): string[] {
  if (!Array.isArray(taints) || taints.some((t) => typeof t !== "string" || !TAINT.test(t))) {
    throw new GuardianError(400, "taints must be a list of 1-64 character names (letters, digits, _ . : -)");
  }
  const unique = [...new Set(taints as string[])].sort();
  if (unique.length > MAX_TAINTS) throw new GuardianError(400, `at most ${MAX_TAINTS} taints`);
  return unique;
}

export function ipToInt(bytes: Uint8Array): number {
  return ((bytes[0]! << 24) >>> 0) + (bytes[1]! << 16) + (bytes[2]! << 8) + bytes[3]!;
}

export function intToIp(n: number): Uint8Array {
  return Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** The usable host range of an IPv4 CIDR: first and last address, network and broadcast excluded. */
export function hostRange(cidr4: string): { first: number; last: number; prefix: number } {
  const c = parseCidr(cidr4);
  const size = 2 ** (32 - c.prefix);
  const network = Math.floor(ipToInt(c.address) / size) * size;
  return { first: network + 1, last: network + size - 2, prefix: c.prefix };
}

/** A node's IPv6 address: the realm's /64 with the IPv4 address in the low 32 bits. */
export function ipv6For(realm: RealmRow, ip4: number): Uint8Array {
  const out = parseCidr(realm.cidr6).address.slice();
  out.set(intToIp(ip4), 12);
  return out;
}

/**
 * The subnets a portal may offer, normalised ("10.50.0.7/24" → "10.50.0.0/24"), or a 400 saying why not: CIDRs, at
 * most MAX_SUBNETS, none wider than /8 (IPv4) or /16 (IPv6), so a portal is never an exit to the internet, and
 * none overlapping the realm's own overlay prefixes.
 */
export function checkSubnets(value: unknown, realm: RealmRow): string[] {
  if (!Array.isArray(value) || value.some((s) => typeof s !== "string")) {
    throw new GuardianError(400, "subnets must be a list of CIDR strings");
  }
  if (value.length > MAX_SUBNETS) throw new GuardianError(400, `at most ${MAX_SUBNETS} subnets`);
  const overlay = [parseCidr(realm.cidr4), { ...parseCidr(realm.cidr6), prefix: 64 }];
  const out: string[] = [];
  for (const text of value as string[]) {
    let c;
    try {
      c = parseCidr(text);
    } catch (error) {
      throw new GuardianError(400, (error as Error).message);
    }
    if (c.prefix < (c.version === 4 ? 8 : 16)) {
      throw new GuardianError(
        400,
        `subnet ${text} is too wide: a portal offers networks, never the internet (at least /8, or /16 for IPv6)`,
      );
    }
    if (overlay.some((o) => overlaps(o, c))) {
      throw new GuardianError(400, `subnet ${text} overlaps the realm's overlay addresses`);
    }
    const normal = formatCidr(c);
    if (!out.includes(normal)) out.push(normal);
  }
  return out;
}

/** Parsed duration like "90s", "15m", "24h", "7d" in ms. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(text);
  if (!m) throw new GuardianError(400, `bad duration "${text}": use a number and s, m, h or d (e.g. 24h)`);
  return Number(m[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "s" | "m" | "h" | "d"];
}

/** Whether every subnet of `offered` lies inside one of `granted` (both normalised CIDR strings). */
export function withinGrant(offered: string[], granted: string[]): string[] {
  const grants = granted.map(parseCidr);
  return offered.filter((text) => {
    const c = parseCidr(text);
    return !grants.some((g) => g.version === c.version && g.prefix <= c.prefix && contains(g, c.address));
  });
}

/** The longest and shortest `--cert-ttl` a Guardian accepts. */
export function checkCertTtl(ms: number): number {
  if (ms < 1_000 || ms > MAX_CERTIFICATE_TTL_MS) {
    const most = MAX_CERTIFICATE_TTL_MS / 3_600_000;
    throw new GuardianError(400, `certificate lifetime must be between 1s and ${most}h, got ${ms / 1000} s`);
  }
  return ms;
}

export function tagTaken(tag: string, realm: RealmRow): GuardianError {
  return new GuardianError(
    409,
    `tag "${tag}" is held by another node of realm ${realm.name}: choose another tag`,
  );
}

/**
 * Checks that a JWKS URL is an absolute http(s) URL; the message says what is wrong. Here, not beside `jose` in
 * oidc.ts: a node imports these rules and has no use for `jose`.
 */
export function checkJwksUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`the JWKS URL "${text}" is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new Error(`the JWKS URL must be http(s), got "${text}"`);
  }
  return url;
}

/** Checks a realm's OIDC settings (all three of issuer, JWKS URL and audience; an optional taints claim). */
export function checkOidc(o: RealmOidc): RealmOidc {
  if (!o.issuer || !o.audience || !o.jwksUrl) {
    throw new GuardianError(400, "OIDC needs the issuer, the JWKS URL and the audience together");
  }
  try {
    checkJwksUrl(o.jwksUrl);
  } catch (error) {
    throw new GuardianError(400, (error as Error).message);
  }
  if (o.taintsClaim !== undefined && !TAINT.test(o.taintsClaim)) { // a claim name follows the taint rules
    throw new GuardianError(400, `bad claim name "${o.taintsClaim}"`);
  }
  const admins = [...new Set((o.admins ?? []).map((a) => a.trim()).filter((a) => a !== ""))];
  const bad = admins.find((a) => a.length > 254 || /[\s,]/.test(a));
  if (bad !== undefined) {
    throw new GuardianError(400, `bad administrator "${bad}": a subject or an e-mail address`);
  }
  if (admins.length > MAX_REALM_ADMINS) {
    throw new GuardianError(
      400,
      `at most ${MAX_REALM_ADMINS} administrators per realm, got ${admins.length}`,
    );
  }
  return {
    issuer: o.issuer,
    jwksUrl: o.jwksUrl,
    audience: o.audience,
    ...(o.taintsClaim ? { taintsClaim: o.taintsClaim } : {}),
    ...(admins.length > 0 ? { admins } : {}),
  };
}

/** Administrators one realm's settings may name. */
export const MAX_REALM_ADMINS = 100;
