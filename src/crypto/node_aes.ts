/**
 * AES-256-GCM under one key through node:crypto, on the calling thread: where the host has neither GnuTLS nor
 * libcrypto for ffi/aes_gcm.ts. Its own module, so that what imports streams without it (the data-plane worker)
 * does not load Node's compatibility layer.
 * @module
 */

import { createCipheriv, createDecipheriv } from "node:crypto";
import { AEAD_TAG_BYTES } from "../spec.ts";
import type { SyncAesGcm } from "./stream.ts";

/** node:crypto's AES-256-GCM under `key` (a Cipheriv per message). */
export function nodeAesGcm(key: Uint8Array): SyncAesGcm {
  return {
    seal(nonce, aad, plain, out) {
      const cipher = createCipheriv("aes-256-gcm", key, nonce);
      cipher.setAAD(aad);
      out.set(cipher.update(plain));
      cipher.final();
      out.set(cipher.getAuthTag(), plain.length);
    },
    open(nonce, aad, sealed, out) {
      const length = sealed.length - AEAD_TAG_BYTES;
      try {
        const decipher = createDecipheriv("aes-256-gcm", key, nonce);
        decipher.setAAD(aad);
        decipher.setAuthTag(sealed.subarray(length));
        out.set(decipher.update(sealed.subarray(0, length)));
        decipher.final();
        return true;
      } catch {
        return false;
      }
    },
  };
}
