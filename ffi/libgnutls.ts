/**
 * The GnuTLS functions veilnet-conflux calls, as pure data (the shape `Deno.dlopen` wants), with each parameter's
 * C type beside it: AES-256-GCM through the AEAD interface, one call a message (ffi/aes_gcm.ts). Only
 * ffi/loader.ts opens the library. All calls are synchronous on the calling thread.
 * @module
 */

/** gnutls_aead_cipher_encrypt's and gnutls_aead_cipher_decrypt's parameters: the same, input and output swapped. */
const AEAD_CALL = {
  parameters: [
    "pointer", /* gnutls_aead_cipher_hd_t handle */
    "buffer", /* const void *nonce */
    "usize", /* size_t nonce_len */
    "buffer", /* const void *auth */
    "usize", /* size_t auth_len */
    "usize", /* size_t tag */
    "buffer", /* const void *in: ptext or ctext */
    "usize", /* size_t in_len */
    "buffer", /* void *out: ctext or ptext */
    "buffer", /* size_t *out_len: its room in, what was written out */
  ],
  result: "i32",
} as const;

export const LIBGNUTLS_SYMBOLS = {
  /** int gnutls_aead_cipher_init(gnutls_aead_cipher_hd_t *handle, gnutls_cipher_algorithm_t cipher, const gnutls_datum_t *key) */
  gnutls_aead_cipher_init: {
    parameters: [
      "buffer", /* gnutls_aead_cipher_hd_t *handle (out) */
      "i32", /* gnutls_cipher_algorithm_t cipher */
      "buffer", /* const gnutls_datum_t *key: { unsigned char *data; unsigned int size } */
    ],
    result: "i32",
  },
  /** void gnutls_aead_cipher_deinit(gnutls_aead_cipher_hd_t handle) */
  gnutls_aead_cipher_deinit: { parameters: ["pointer" /* gnutls_aead_cipher_hd_t handle */], result: "void" },
  /**
   * int gnutls_aead_cipher_encrypt(gnutls_aead_cipher_hd_t handle, const void *nonce, size_t nonce_len,
   * const void *auth, size_t auth_len, size_t tag, const void *ptext, size_t ptext_len, void *ctext,
   * size_t *ctext_len): the ciphertext, then the tag
   */
  gnutls_aead_cipher_encrypt: AEAD_CALL,
  /**
   * int gnutls_aead_cipher_decrypt(gnutls_aead_cipher_hd_t handle, const void *nonce, size_t nonce_len,
   * const void *auth, size_t auth_len, size_t tag, const void *ctext, size_t ctext_len, void *ptext,
   * size_t *ptext_len): `ctext` is the ciphertext, then the tag; GNUTLS_E_DECRYPTION_FAILED (negative) when the
   * tag does not match
   */
  gnutls_aead_cipher_decrypt: AEAD_CALL,
} as const satisfies Deno.ForeignLibraryInterface;

/** gnutls_cipher_algorithm_t's value for AES-256-GCM (<gnutls/gnutls.h>). */
export const GNUTLS_CIPHER_AES_256_GCM = 11;
