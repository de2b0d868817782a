/**
 * Post-quantum primitives behind one small interface, with two implementations:
 * - `webcrypto`: the runtime's own ML-DSA-65 / ML-KEM-768 (about 10x faster here; the hot path);
 * - `noble`: `@noble/post-quantum`, the independent reference, and the fallback where the runtime lacks them;
 *   loaded on first use only (a node runs on WebCrypto, and the library costs it memory).
 * Both follow FIPS 203/204, so keys made from the same seed are identical and either side can verify or
 * decapsulate what the other produced (pq_test.ts proves it).
 *
 * Verification never throws: a malformed key or signature is simply "not valid".
 * @module
 */

import { bytesEqual } from "../wire/bytes.ts";

/** An ML-DSA-65 private key that can sign; the private half never leaves memory. */
export interface SigningKey {
  /** Raw FIPS 204 public key (1952 bytes). */
  readonly publicKey: Uint8Array;
  sign(message: Uint8Array): Promise<Uint8Array>;
}

/** An ML-KEM-768 decapsulation key with its public (encapsulation) key. */
export interface KemKeyPair {
  /** Raw FIPS 203 encapsulation key (1184 bytes). */
  readonly publicKey: Uint8Array;
  decapsulate(ciphertext: Uint8Array): Promise<Uint8Array>;
}

/** One implementation of the post-quantum algorithms. */
export interface PqBackend {
  readonly name: "webcrypto" | "noble";
  /** A fresh key pair; with `seed` (32 bytes, FIPS 204 ξ) a deterministic one. */
  signingKey(seed?: Uint8Array): Promise<SigningKey>;
  verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean>;
  /** A fresh key pair; with `seed` (64 bytes, FIPS 203 d || z) a deterministic one. */
  kemKeyPair(seed?: Uint8Array): Promise<KemKeyPair>;
  encapsulate(publicKey: Uint8Array): Promise<{ ciphertext: Uint8Array; sharedSecret: Uint8Array }>;
}

// Deno's lib types predate the WICG "modern algorithms" additions, so the few members used are typed here.
type ModernSubtle = SubtleCrypto & {
  encapsulateBits(
    algorithm: Algorithm,
    key: CryptoKey,
  ): Promise<{ ciphertext: ArrayBuffer; sharedKey: ArrayBuffer }>;
  decapsulateBits(algorithm: Algorithm, key: CryptoKey, ciphertext: BufferSource): Promise<ArrayBuffer>;
  getPublicKey(key: CryptoKey, usages: string[]): Promise<CryptoKey>;
};
const subtle = crypto.subtle as ModernSubtle;
const DSA = { name: "ML-DSA-65" };
const KEM = { name: "ML-KEM-768" };
// "raw-public" / "raw-seed" are key formats from the same additions.
const RAW_PUBLIC = "raw-public" as unknown as "raw";
const RAW_SEED = "raw-seed" as unknown as "raw";

async function exportPublic(key: CryptoKey): Promise<Uint8Array> {
  return new Uint8Array(await subtle.exportKey(RAW_PUBLIC, key));
}

/** The runtime's WebCrypto implementation. */
export const webcrypto: PqBackend = {
  name: "webcrypto",
  async signingKey(seed) {
    let privateKey: CryptoKey;
    let publicKey: Uint8Array;
    if (seed) {
      privateKey = await subtle.importKey(RAW_SEED, seed as BufferSource, DSA, false, ["sign"]);
      publicKey = await exportPublic(await subtle.getPublicKey(privateKey, ["verify"]));
    } else {
      const pair = await subtle.generateKey(DSA, true, ["sign", "verify"]) as CryptoKeyPair;
      privateKey = pair.privateKey;
      publicKey = await exportPublic(pair.publicKey);
    }
    return {
      publicKey,
      async sign(message) {
        return new Uint8Array(await subtle.sign(DSA, privateKey, message as BufferSource));
      },
    };
  },
  async verify(publicKey, message, signature) {
    try {
      const key = await subtle.importKey(RAW_PUBLIC, publicKey as BufferSource, DSA, false, ["verify"]);
      return await subtle.verify(DSA, key, signature as BufferSource, message as BufferSource);
    } catch {
      return false;
    }
  },
  async kemKeyPair(seed) {
    let privateKey: CryptoKey;
    let publicKey: Uint8Array;
    if (seed) {
      privateKey = await subtle.importKey(
        RAW_SEED,
        seed as BufferSource,
        KEM,
        false,
        ["decapsulateBits"] as never,
      );
      publicKey = await exportPublic(await subtle.getPublicKey(privateKey, ["encapsulateBits"]));
    } else {
      const pair = await subtle.generateKey(
        KEM,
        true,
        ["encapsulateBits", "decapsulateBits"] as never,
      ) as CryptoKeyPair;
      privateKey = pair.privateKey;
      publicKey = await exportPublic(pair.publicKey);
    }
    return {
      publicKey,
      async decapsulate(ciphertext) {
        return new Uint8Array(await subtle.decapsulateBits(KEM, privateKey, ciphertext as BufferSource));
      },
    };
  },
  async encapsulate(publicKey) {
    const key = await subtle.importKey(
      RAW_PUBLIC,
      publicKey as BufferSource,
      KEM,
      false,
      ["encapsulateBits"] as never,
    );
    const { ciphertext, sharedKey } = await subtle.encapsulateBits(KEM, key);
    return { ciphertext: new Uint8Array(ciphertext), sharedSecret: new Uint8Array(sharedKey) };
  },
};

const nobleDsa = async () => (await import("@noble/post-quantum/ml-dsa.js")).ml_dsa65;
const nobleKem = async () => (await import("@noble/post-quantum/ml-kem.js")).ml_kem768;

/** The `@noble/post-quantum` implementation (pure JavaScript). */
export const noble: PqBackend = {
  name: "noble",
  async signingKey(seed) {
    const ml_dsa65 = await nobleDsa();
    const { publicKey, secretKey } = ml_dsa65.keygen(seed);
    return { publicKey, sign: (message: Uint8Array) => Promise.resolve(ml_dsa65.sign(message, secretKey)) };
  },
  async verify(publicKey, message, signature) {
    const ml_dsa65 = await nobleDsa();
    try {
      return ml_dsa65.verify(signature, message, publicKey);
    } catch {
      return false;
    }
  },
  async kemKeyPair(seed) {
    const ml_kem768 = await nobleKem();
    const { publicKey, secretKey } = ml_kem768.keygen(seed);
    return {
      publicKey,
      decapsulate: (ciphertext: Uint8Array) => Promise.resolve(ml_kem768.decapsulate(ciphertext, secretKey)),
    };
  },
  async encapsulate(publicKey) {
    const { cipherText, sharedSecret } = (await nobleKem()).encapsulate(publicKey);
    return { ciphertext: cipherText, sharedSecret };
  },
};

/** Whether the runtime has both algorithms, seeded keys and their public halves (getPublicKey) included. */
async function webcryptoWorks(): Promise<boolean> {
  try {
    const key = await webcrypto.signingKey(crypto.getRandomValues(new Uint8Array(32)));
    const kem = await webcrypto.kemKeyPair(crypto.getRandomValues(new Uint8Array(64)));
    const { ciphertext, sharedSecret } = await webcrypto.encapsulate(kem.publicKey);
    const opened = await kem.decapsulate(ciphertext); // a wrong public half gives another secret, not an error
    if (!bytesEqual(opened, sharedSecret)) return false;
    return await webcrypto.verify(key.publicKey, new Uint8Array(1), await key.sign(new Uint8Array(1)));
  } catch {
    return false;
  }
}

let chosen: Promise<PqBackend> | undefined;

/** The fastest backend this runtime supports: WebCrypto when it has both algorithms, else noble. */
export function pq(): Promise<PqBackend> {
  chosen ??= webcryptoWorks().then((ok) => ok ? webcrypto : noble);
  return chosen;
}
