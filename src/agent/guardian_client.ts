/**
 * The node's side of the Guardian API. The Guardian may be several (sharing one state): a comma-separated list of
 * URLs, tried in turn while one is unreachable or fails (5xx), never after a refusal (4xx).
 * @module
 */

import type { RealmAnswer } from "../guardian/guardian.ts";
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

/** The URLs of a Guardian list ("http://a:8080,http://b:8080"), in order. */
export function guardianUrls(guardian: string): string[] {
  return guardian.split(",").map((u) => u.trim()).filter((u) => u !== "");
}

/** For each Guardian list, the URL that answered last: it is tried first next time. */
const answering = new Map<string, string>();

/**
 * One JSON request with a Bearer token to the Guardian, or to the first of a list that answers: an unreachable
 * one or a failure (5xx) moves on to the next, a refusal (4xx) is final. Throws GuardianUnavailable with the
 * refusal, or when none answered (with the last one's status, if it had one).
 */
export function guardianRequest<T>(
  guardian: string,
  method: string,
  path: string,
  token: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<T> {
  return firstAnswer(guardian, (url) => requestOne<T>(url, method, path, token, body, headers));
}

/** Runs `request` against each Guardian of the list in turn (see {@link guardianRequest}) until one answers. */
async function firstAnswer<T>(guardian: string, request: (url: string) => Promise<T>): Promise<T> {
  const urls = guardianUrls(guardian);
  if (urls.length === 0) throw new GuardianUnavailable(`no Guardian URL in "${guardian}"`);
  const first = answering.get(guardian);
  const order = first !== undefined && urls.includes(first)
    ? [first, ...urls.filter((u) => u !== first)]
    : urls;
  const failures: GuardianUnavailable[] = [];
  for (const url of order) {
    try {
      const result = await request(url);
      answering.set(guardian, url);
      return result;
    } catch (error) {
      if (!(error instanceof GuardianUnavailable) || !worthRetrying(error.status)) throw error;
      failures.push(error);
    }
  }
  if (failures.length === 1) throw failures[0]!;
  throw new GuardianUnavailable(
    `no Guardian answered: ${failures.map((f) => f.message).join("; ")}`,
    failures.at(-1)!.status,
  );
}

/**
 * Whether a Guardian's failure may pass: no answer (undefined), a failure of its own (5xx), or "too many requests
 * from your address" (429, its rate limit). Any other refusal is final.
 */
export function worthRetrying(status: number | undefined): boolean {
  return status === undefined || status >= 500 || status === 429;
}

/** One JSON request to one Guardian. */
async function requestOne<T>(
  guardian: string,
  method: string,
  path: string,
  token: string,
  body: unknown,
  headers: Record<string, string>,
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
      res.status >= 500
        ? `the Guardian at ${guardian} failed (${res.status}): ${json.error ?? res.statusText}`
        : res.status === 429
        ? `the Guardian at ${guardian} is busy with requests from this address (429); try again in ${
          res.headers.get("retry-after") ?? "a few"
        } s`
        : `the Guardian refused (${res.status}): ${json.error ?? res.statusText}`,
      res.status,
    );
  }
  return json as T;
}

const base64 = (b: Uint8Array) => btoa(String.fromCharCode(...b));

export const guardianClient = {
  register: (guardian: string, registrationToken: string, body: Record<string, unknown>) =>
    guardianRequest<{ conflux_id: string; token: string; realm?: RealmAnswer }>(
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
   * signed with it, bound to the conflux id in `token` (see crypto/login_proof.ts). Each Guardian of a list gets a
   * body of its own: one that failed may have taken the nonce before it went away, and the next would call the
   * same body a replay.
   */
  login: (
    guardian: string,
    token: string,
    identity: Identity,
    change: { tag?: string; portal?: boolean; subnets?: string[] } = {},
  ) =>
    firstAnswer(guardian, async (url) => {
      const body = new TextEncoder().encode(JSON.stringify({
        public_key: base64(identity.publicKey),
        timestamp: Date.now(),
        nonce: Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0"))
          .join(""),
        ...change,
      }));
      const signature = await signLogin(identity, token.split(".")[1] ?? "", body);
      return requestOne<LoginResponse>(url, "POST", "/conflux/session/login", token, body, {
        "veilnet-signature": base64(signature),
      });
    }),
  taints: (guardian: string, token: string, change: { add?: string[]; remove?: string[] }) =>
    guardianRequest<{ taints: string[] }>(guardian, "POST", "/conflux/taints", token, change),
};
