/**
 * The node's side of the Guardian API.
 * @module
 */

import type { Identity } from "../crypto/identity.ts";
import { signLogin } from "../crypto/login_proof.ts";
import type { LoginResponse } from "../guardian/guardian.ts";

/** A Guardian that answered with an error, or could not be reached. */
export class GuardianUnavailable extends Error {
  override name = "GuardianUnavailable";
  constructor(message: string, readonly status?: number) {
    super(message);
  }
}

/** One JSON request to a Guardian with a Bearer token; a refusal or an unreachable Guardian throws GuardianUnavailable. */
export async function guardianRequest<T>(
  guardian: string,
  method: string,
  path: string,
  token: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<T> {
  let res: Response;
  try {
    res = await fetch(new URL(path, guardian), {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
      body: body === undefined
        ? undefined
        : body instanceof Uint8Array
        ? body as Uint8Array<ArrayBuffer>
        : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (error) {
    throw new GuardianUnavailable(`cannot reach the Guardian at ${guardian}: ${(error as Error).message}`);
  }
  const json = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new GuardianUnavailable(
      `the Guardian refused (${res.status}): ${json.error ?? res.statusText}`,
      res.status,
    );
  }
  return json as T;
}

const base64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));

export const guardianClient = {
  register: (guardian: string, registrationToken: string, body: Record<string, unknown>) =>
    guardianRequest<{ conflux_id: string; token: string }>(
      guardian,
      "POST",
      "/conflux/register",
      registrationToken,
      body,
    ),
  /** Unregisters the token's own conflux (`confluxId`, when given, must be that one). */
  unregister: (guardian: string, token: string, confluxId?: string) =>
    guardianRequest<unknown>(
      guardian,
      "DELETE",
      `/conflux/unregister${confluxId ? `?conflux_id=${encodeURIComponent(confluxId)}` : ""}`,
      token,
    ),
  /**
   * Logs in with `identity`'s key, proving it holds the key: the body (with a timestamp and a fresh nonce) is
   * signed with it, bound to the conflux id in `token` (see crypto/login_proof.ts).
   */
  login: async (
    guardian: string,
    token: string,
    identity: Identity,
    change: { tag?: string; portal?: boolean; subnets?: string[] } = {},
  ) => {
    const body = new TextEncoder().encode(JSON.stringify({
      public_key: base64(identity.publicKey),
      timestamp: Date.now(),
      nonce: Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0"))
        .join(""),
      ...change,
    }));
    const signature = await signLogin(identity, token.split(".")[1] ?? "", body);
    return guardianRequest<LoginResponse>(guardian, "POST", "/conflux/session/login", token, body, {
      "veilnet-signature": base64(signature),
    });
  },
  taints: (guardian: string, token: string, change: { add?: string[]; remove?: string[] }) =>
    guardianRequest<{ taints: string[] }>(guardian, "POST", "/conflux/taints", token, change),
};
