/**
 * AES-256-GCM on the calling thread through the host's GnuTLS, else OpenSSL's libcrypto: for the batches that
 * src/crypto/stream.ts seals and opens synchronously (all of the data-plane worker's, the main thread's small ones).
 * About 1-3 µs a message when its code is in the CPU's caches, against ~50 µs for node:crypto's Cipheriv, which
 * builds a Node stream for every message. GnuTLS comes first: one call a message, where libcrypto takes five
 * through its provider layers. After a pause, when the CPU's caches hold little of that code (a ping's case), a
 * 100-byte message cost ~20 µs through GnuTLS against ~35 µs (three runs of 100, 50 ms apart), and a ping's round
 * trip was ~5% shorter (one realm alternating each second, three realms); on 64 KiB both sealed ~35 Gbit/s.
 * @module
 */

import { libcrypto, type Libgnutls, libgnutls } from "./loader.ts";
import { EVP } from "./libcrypto.ts";
import { GNUTLS_CIPHER_AES_256_GCM } from "./libgnutls.ts";

const TAG_BYTES = 16;

/** Frees the contexts of a key that is no longer used (its stream was collected). */
const contexts = new FinalizationRegistry<Deno.PointerValue[]>((ctxs) => {
  const c = libcrypto();
  for (const ctx of ctxs) c?.EVP_CIPHER_CTX_free(ctx);
});
/** Frees the GnuTLS handle of a key that is no longer used. */
const handles = new FinalizationRegistry<Deno.PointerValue>((handle) =>
  libgnutls()?.gnutls_aead_cipher_deinit(handle)
);

/**
 * AES-256-GCM under one key (the shape of src/crypto/stream.ts's SyncAesGcm). `out` must have the room: the C
 * libraries write as much as the lengths say, and src/crypto/stream.ts (sealInto, openInto) checks it first.
 */
export interface HostAesGcm {
  seal(nonce: Uint8Array, aad: Uint8Array, plain: Uint8Array, out: Uint8Array): void;
  open(nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array, out: Uint8Array): boolean;
}

/** int outl for every call: the lengths are known beforehand (GCM is a stream mode). One per thread. */
const outl = new Int32Array(1);

/**
 * AES-256-GCM under one key. A class, not an object of closures: every key's `seal` and `open` are then the same
 * functions, so a call site that V8 optimised for one stream's key is not thrown away at the next stream's.
 */
class Aes implements HostAesGcm {
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
export function libcryptoAesGcm(key: Uint8Array): HostAesGcm | undefined {
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

/**
 * size_t for every GnuTLS call's length in and out, as two 32-bit halves (little-endian, as on every platform Deno
 * runs on): no BigInt made per message. One per thread.
 */
const sizeOut = new Uint32Array(2);
const sizeOutBytes = new Uint8Array(sizeOut.buffer);
const TAG_SIZE = BigInt(TAG_BYTES);

/** AES-256-GCM under one key through GnuTLS: a class for the reason Aes is one. */
class GnutlsAes implements HostAesGcm {
  readonly #g: Libgnutls;
  readonly #handle: Deno.PointerObject;

  constructor(g: Libgnutls, handle: Deno.PointerObject) {
    this.#g = g;
    this.#handle = handle;
  }

  seal(nonce: Uint8Array, aad: Uint8Array, plain: Uint8Array, out: Uint8Array): void {
    const sealed = plain.length + TAG_BYTES;
    sizeOut[0] = sealed;
    sizeOut[1] = 0;
    // Two calls of the same shape, to two C functions: each call site stays direct (one target) for V8.
    const status = this.#g.gnutls_aead_cipher_encrypt(
      this.#handle,
      nonce,
      BigInt(nonce.length),
      aad,
      BigInt(aad.length),
      TAG_SIZE,
      plain,
      BigInt(plain.length),
      out,
      sizeOutBytes,
    );
    if (status !== 0 || sizeOut[0] !== sealed || sizeOut[1] !== 0) {
      throw new Error("GnuTLS refused to seal an AES-256-GCM message");
    }
  }

  open(nonce: Uint8Array, aad: Uint8Array, sealed: Uint8Array, out: Uint8Array): boolean {
    const length = sealed.length - TAG_BYTES;
    if (length < 0) return false;
    sizeOut[0] = length;
    sizeOut[1] = 0;
    const status = this.#g.gnutls_aead_cipher_decrypt(
      this.#handle,
      nonce,
      BigInt(nonce.length),
      aad,
      BigInt(aad.length),
      TAG_SIZE,
      sealed,
      BigInt(sealed.length),
      out,
      sizeOutBytes,
    );
    return status === 0 && sizeOut[0] === length && sizeOut[1] === 0;
  }
}

/** AES-256-GCM under `key` (32 bytes) through GnuTLS; undefined when this host has no GnuTLS (or it refuses). */
export function gnutlsAesGcm(key: Uint8Array): HostAesGcm | undefined {
  const g = libgnutls();
  if (!g || key.length !== 32) return undefined;
  // gnutls_datum_t { unsigned char *data; unsigned int size }: the key is copied in, so it need only live here.
  const datum = new BigUint64Array([BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(key))), 32n]);
  const handle = new BigUint64Array(1);
  const key8 = new Uint8Array(datum.buffer);
  if (g.gnutls_aead_cipher_init(new Uint8Array(handle.buffer), GNUTLS_CIPHER_AES_256_GCM, key8) !== 0) {
    return undefined;
  }
  const pointer = Deno.UnsafePointer.create(handle[0]!);
  if (pointer === null) return undefined;
  const aes = new GnutlsAes(g, pointer);
  handles.register(aes, pointer);
  return aes;
}

/** AES-256-GCM under `key` through the host's GnuTLS, else its libcrypto; undefined when it has neither. */
export function hostAesGcm(key: Uint8Array): HostAesGcm | undefined {
  return gnutlsAesGcm(key) ?? libcryptoAesGcm(key);
}

/** Whether this host has GnuTLS or libcrypto: GnuTLS is tried first, and a host with it never loads libcrypto. */
export function hasHostAes(): boolean {
  return libgnutls() !== undefined || libcrypto() !== undefined;
}
