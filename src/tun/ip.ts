/**
 * Just enough of IPv4/IPv6 for the data plane and the TUN: parse addresses and prefixes, read a packet's version,
 * source and destination, and compute the Internet checksum. Pure.
 * @module
 */

/** An address with its prefix length, as given on the command line ("10.128.0.1/16", "fd00::1/64"). */
export interface Cidr {
  version: 4 | 6;
  /** 4 or 16 bytes, network order. */
  address: Uint8Array;
  prefix: number;
}

function bad(text: string, why: string): SyntaxError {
  return new SyntaxError(`bad address "${text}": ${why} (expected e.g. 10.128.0.1/16 or fd00:128::1/64)`);
}

/** Parses dotted-quad IPv4; undefined if `text` is not one. */
export function parseIPv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > 255) return undefined;
    out[i] = Number(p);
  }
  return out;
}

/** Parses IPv6 text (with "::" and an optional trailing dotted quad); undefined if `text` is not one. */
export function parseIPv6(text: string): Uint8Array | undefined {
  if (text.length > 45 || text.includes("%")) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (s: string): number[] | undefined => {
    if (s === "") return [];
    const out: number[] = [];
    const parts = s.split(":");
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i]!;
      if (i === parts.length - 1 && p.includes(".")) {
        const v4 = parseIPv4(p);
        if (!v4) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(p)) {
        out.push(parseInt(p, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array(missing).fill(0), ...tail];
  const out = new Uint8Array(16);
  all.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

/** The address in `text` (IPv4 or IPv6, no zone), or undefined. */
export function parseAddress(text: string): Uint8Array | undefined {
  return parseIPv4(text) ?? parseIPv6(text);
}

/** Parses "ADDRESS/PREFIX"; throws SyntaxError saying what is wrong. */
export function parseCidr(text: string): Cidr {
  const slash = text.indexOf("/");
  if (slash < 0) throw bad(text, "no /prefix");
  const host = text.slice(0, slash);
  const prefixText = text.slice(slash + 1);
  const v4 = parseIPv4(host);
  const v6 = v4 ? undefined : parseIPv6(host);
  if (!v4 && !v6) throw bad(text, `"${host}" is neither IPv4 nor IPv6`);
  const max = v4 ? 32 : 128;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > max) {
    throw bad(text, `prefix must be 0..${max}`);
  }
  return { version: v4 ? 4 : 6, address: (v4 ?? v6)!, prefix: Number(prefixText) };
}

/** Formats 4 or 16 address bytes (IPv6 compressed per RFC 5952). */
export function formatAddress(address: Uint8Array): string {
  if (address.length === 4) return address.join(".");
  const groups = Array.from({ length: 8 }, (_, i) => (address[2 * i]! << 8) | address[2 * i + 1]!);
  // The longest run of two or more zero groups becomes "::".
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLength).join(":")}`;
}

/** The IP version of a packet (4 or 6), or 0 if it is neither or too short to be one. */
export function ipVersion(packet: Uint8Array): 0 | 4 | 6 {
  const v = (packet[0] ?? 0) >> 4;
  if (v === 4 && packet.length >= 20) return 4;
  if (v === 6 && packet.length >= 40) return 6;
  return 0;
}

/** The address field at `v4` (IPv4) or `v6` (IPv6) bytes into a packet (a view), or undefined if not IP. */
function addressAt(packet: Uint8Array, v4: number, v6: number): Uint8Array | undefined {
  switch (ipVersion(packet)) {
    case 4:
      return packet.subarray(v4, v4 + 4);
    case 6:
      return packet.subarray(v6, v6 + 16);
    default:
      return undefined;
  }
}

/** The destination address of a packet (a view), or undefined for a non-IP packet. */
export function destinationOf(packet: Uint8Array): Uint8Array | undefined {
  return addressAt(packet, 16, 24);
}

/** The source address of a packet (a view), or undefined for a non-IP packet. */
export function sourceOf(packet: Uint8Array): Uint8Array | undefined {
  return addressAt(packet, 12, 8);
}

/** Adds 16-bit big-endian words of `bytes` to `sum` (one's complement, not yet folded). */
export function checksumAdd(bytes: Uint8Array, sum = 0): number {
  let i = 0;
  for (; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (i < bytes.length) sum += bytes[i]! << 8;
  return sum;
}

/** Folds a sum from checksumAdd into the final Internet checksum (RFC 1071). */
export function checksumFinish(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** The Internet checksum of `bytes`. */
export function internetChecksum(bytes: Uint8Array): number {
  return checksumFinish(checksumAdd(bytes));
}
