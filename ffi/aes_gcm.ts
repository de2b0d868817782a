/**
 * AES-256-GCM through OpenSSL's libcrypto, on the calling thread: for the small batches (pings, TCP
 * acknowledgements) that src/crypto/stream.ts seals and opens synchronously. About 3 µs a message against ~50
 * µs for node:crypto's Cipheriv, which builds a Node stream for every message (measured on a node's hot path).
 * Each key keeps one cipher context per direction, its key schedule set once; a message sets only the nonce.
 * @module
 */

import { libcrypto } from "./loader.ts";
import { EVP } from "./libcrypto.ts";

const TAG_BYTES = 16;

/** Frees the contexts of a key that is no longer used (its stream was collected). */
const contexts = new FinalizationRegistry<Deno.PointerValue[]>((ctxs) => {
  const c = libcrypto();
  for (const ctx of ctxs) c?.EVP_CIPHER_CTX_free(ctx);
});

/** AES-256-GCM under one key (the shape of src/crypto/stream.ts's SyncAesGcm). */
export interface LibcryptoAesGcm {
  seal(nonce: Uint8Array, aad: Uint8Array, plain: Uint8Array, out: Uint8Array): void;
  open(nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array, out: Uint8Array): boolean;
}

/** int outl for every call: the lengths are known beforehand (GCM is a stream mode). One per thread. */
const outl = new Int32Array(1);

/**
 * AES-256-GCM under one key. A class, not an object of closures: every key's `seal` and `open` are then the same
 * functions, so a call site that V8 optimised for one stream's key is not thrown away at the next stream's.
 */
class Aes implements LibcryptoAesGcm {
  readonly #c: NonNullable<ReturnType<typeof libcrypto>>;
  readonly #sealer: Deno.PointerObject;
  readonly #opener: Deno.PointerObject;

  constructor(
    c: NonNullable<ReturnType<typeof libcrypto>>,
    sealer: Deno.PointerObject,
    opener: Deno.PointerObject,
  ) {
    this.#c = c;
    this.#sealer = sealer;
    this.#opener = opener;
  }

  seal(nonce: Uint8Array, aad: Uint8Array, plain: Uint8Array, out: Uint8Array): void {
    const c = this.#c, sealer = this.#sealer;
    const tag = out.subarray(plain.length, plain.length + TAG_BYTES);
    if (
      c.EVP_CipherInit_ex(sealer, null, null, null, nonce, -1) !== 1 ||
      c.EVP_CipherUpdate(sealer, null, outl, aad, aad.length) !== 1 ||
      c.EVP_CipherUpdate(sealer, out, outl, plain, plain.length) !== 1 ||
      c.EVP_CipherFinal_ex(sealer, tag, outl) !== 1 ||
      c.EVP_CIPHER_CTX_ctrl(sealer, EVP.CTRL_GCM_GET_TAG, TAG_BYTES, tag) !== 1
    ) throw new Error("libcrypto refused to seal an AES-256-GCM message");
  }

  open(nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array, out: Uint8Array): boolean {
    const c = this.#c, opener = this.#opener;
    const length = sealed.length - TAG_BYTES;
    if (length < 0) return false;
    // SET_TAG takes a writable pointer; the tag is copied in, never written.
    return c.EVP_CipherInit_ex(opener, null, null, null, nonce, -1) === 1 &&
      c.EVP_CipherUpdate(opener, null, outl, aad, aad.length) === 1 &&
      c.EVP_CipherUpdate(opener, out, outl, sealed.subarray(0, length), length) === 1 &&
      c.EVP_CIPHER_CTX_ctrl(opener, EVP.CTRL_GCM_SET_TAG, TAG_BYTES, sealed.subarray(length)) === 1 &&
      c.EVP_CipherFinal_ex(opener, out.subarray(length), outl) === 1;
  }
}

/**
 * AES-256-GCM under `key` (32 bytes) through libcrypto; undefined when this host has no libcrypto (or it
 * refuses the key), so the caller keeps its own.
 */
export function libcryptoAesGcm(key: Uint8Array): LibcryptoAesGcm | undefined {
  const c = libcrypto();
  if (!c || key.length !== 32) return undefined;
  const make = (encrypt: number) => {
    const ctx = c.EVP_CIPHER_CTX_new();
    if (ctx === null) return null;
    if (c.EVP_CipherInit_ex(ctx, c.EVP_aes_256_gcm(), null, key, null, encrypt) !== 1) {
      c.EVP_CIPHER_CTX_free(ctx);
      return null;
    }
    return ctx;
  };
  const [sealer, opener] = [make(1), make(0)];
  if (sealer === null || opener === null) {
    if (sealer !== null) c.EVP_CIPHER_CTX_free(sealer);
    if (opener !== null) c.EVP_CIPHER_CTX_free(opener);
    return undefined;
  }
  const aes = new Aes(c, sealer, opener);
  contexts.register(aes, [sealer, opener]);
  return aes;
}
