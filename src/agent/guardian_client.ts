/**
 * The node's side of the Guardian API.
 * @module
 */

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
): Promise<T> {
  let res: Response;
  try {
    res = await fetch(new URL(path, guardian), {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
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
  login: (
    guardian: string,
    token: string,
    publicKey: Uint8Array,
    change: { tag?: string; portal?: boolean; subnets?: string[] } = {},
  ) =>
    guardianRequest<LoginResponse>(guardian, "POST", "/conflux/session/login", token, {
      public_key: btoa(String.fromCharCode(...publicKey)),
      ...change,
    }),
  taints: (guardian: string, token: string, change: { add?: string[]; remove?: string[] }) =>
    guardianRequest<{ taints: string[] }>(guardian, "POST", "/conflux/taints", token, change),
};
