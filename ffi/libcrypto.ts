/**
 * The libcrypto (OpenSSL 3) functions veilnet-conflux calls, as pure data (the shape `Deno.dlopen` wants), with
 * each parameter's C type beside it: AES-256-GCM through the EVP interface, for small batches (ffi/aes_gcm.ts).
 * Only ffi/loader.ts opens the library. All calls are synchronous on the calling thread (about 0.4 µs each).
 * @module
 */

export const LIBCRYPTO_SYMBOLS = {
  /** EVP_CIPHER_CTX *EVP_CIPHER_CTX_new(void) */
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  /** void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx) */
  EVP_CIPHER_CTX_free: { parameters: ["pointer" /* EVP_CIPHER_CTX *ctx */], result: "void" },
  /** const EVP_CIPHER *EVP_aes_256_gcm(void) */
  EVP_aes_256_gcm: { parameters: [], result: "pointer" },
  /** int EVP_CipherInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type, ENGINE *impl, const unsigned char *key, const unsigned char *iv, int enc) */
  EVP_CipherInit_ex: {
    parameters: [
      "pointer", /* EVP_CIPHER_CTX *ctx */
      "pointer", /* const EVP_CIPHER *type (NULL: keep) */
      "pointer", /* ENGINE *impl (NULL) */
      "buffer", /* const unsigned char *key (NULL: keep) */
      "buffer", /* const unsigned char *iv (NULL: keep) */
      "i32", /* int enc: 1 encrypt, 0 decrypt, -1 keep */
    ],
    result: "i32",
  },
  /** int EVP_CipherUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl, const unsigned char *in, int inl) */
  EVP_CipherUpdate: {
    parameters: [
      "pointer", /* EVP_CIPHER_CTX *ctx */
      "buffer", /* unsigned char *out (NULL: `in` is additional authenticated data) */
      "buffer", /* int *outl */
      "buffer", /* const unsigned char *in */
      "i32", /* int inl */
    ],
    result: "i32",
  },
  /** int EVP_CipherFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *outm, int *outl): 0 when a tag does not match */
  EVP_CipherFinal_ex: {
    parameters: [
      "pointer",
      /* EVP_CIPHER_CTX *ctx */ "buffer",
      /* unsigned char *outm */ "buffer", /* int *outl */
    ],
    result: "i32",
  },
  /** int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr) */
  EVP_CIPHER_CTX_ctrl: {
    parameters: [
      "pointer",
      /* EVP_CIPHER_CTX *ctx */ "i32",
      /* int type */ "i32",
      /* int arg */ "buffer", /* void *ptr */
    ],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** Constants used with the calls above (<openssl/evp.h>). */
export const EVP = {
  CTRL_GCM_GET_TAG: 0x10,
  CTRL_GCM_SET_TAG: 0x11,
} as const;
