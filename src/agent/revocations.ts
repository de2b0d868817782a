/**
 * The realm's revocations as this node knows them: per conflux, the time at or before which its certificates
 * were issued is void. Learned from the Guardian's signed Revoke broadcasts and from the list in every login
 * answer; the peer table consults it before it believes any certificate.
 * @module
 */

import { fromHex, toHex } from "../crypto/identity.ts";
import { MAX_CERTIFICATE_TTL_MS } from "../spec.ts";

/**
 * Most revocations kept at once. Only the realm key adds entries (a node cannot), so this bounds memory against a
 * runaway Guardian, not an attacker; when full, the entry that would expire first gives way.
 */
export const MAX_REVOCATIONS = 16_384;

/** Conflux id (hex) → the latest `before` (ms) heard for it. */
export class Revocations {
  readonly #before = new Map<string, number>();

  constructor(readonly capacity: number = MAX_REVOCATIONS) {}

  /** Revocations held now. */
  get size(): number {
    return this.#before.size;
  }

  /**
   * Records that certificates of `conflux` (16 bytes) issued at or before `before` are void. Kept until
   * `before + MAX_CERTIFICATE_TTL_MS`, when no certificate it voids can still be valid; a revocation already that
   * old is ignored. Returns true when this voids more than was known.
   */
  add(conflux: Uint8Array, before: number, now: number): boolean {
    if (conflux.length !== 16) throw new RangeError(`a conflux id is 16 bytes, got ${conflux.length}`);
    const key = toHex(conflux);
    if (!Number.isSafeInteger(before) || expiry(before) <= now) return false;
    const known = this.#before.get(key);
    if (known !== undefined && known >= before) return false;
    if (known === undefined && this.#before.size >= this.capacity) {
      this.expire(now);
      if (this.#before.size >= this.capacity) this.#before.delete(this.#soonest());
    }
    this.#before.set(key, before);
    return true;
  }

  /** Whether `cert` is void: of a revoked conflux, and issued (notBefore) at or before its revocation. */
  voids(cert: { conflux: Uint8Array; notBefore: number }): boolean {
    const before = this.#before.get(toHex(cert.conflux));
    return before !== undefined && cert.notBefore <= before;
  }

  /** Forgets revocations that no valid certificate can fall under any more. */
  expire(now: number): void {
    for (const [key, before] of this.#before) if (expiry(before) <= now) this.#before.delete(key);
  }

  #soonest(): string {
    let soonest: [string, number] | undefined;
    for (const entry of this.#before) if (!soonest || entry[1] < soonest[1]) soonest = entry;
    return soonest![0];
  }
}

const expiry = (before: number) => before + MAX_CERTIFICATE_TTL_MS;

/** A conflux id as the Guardian writes it (UUID text, "0f1e2d3c-…") or as 32 hex digits, as 16 bytes. */
export function confluxIdBytes(id: string): Uint8Array {
  const hex = id.replaceAll("-", "");
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new RangeError(`not a conflux id: "${id.slice(0, 40)}"`);
  return fromHex(hex);
}
