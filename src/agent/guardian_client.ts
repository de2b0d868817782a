/**
 * The node's side of the Guardian API. The Guardian may be several (sharing one state): a comma-separated list of
 * URLs, tried in turn while one is unreachable or fails (5xx), never after a refusal (4xx).
 * @module
 */

import type { RealmAnswer } from "../guardian/guardian.ts";
import type { Identity } from "../crypto/identity.ts";
import { signLogin } from "../crypto/login_proof.ts";
import type { LoginResponse } from "../guardian/guardian.ts";
import { pinToHex } from "../guardian/tls.ts";
import { PinMismatch, pinnedCertificate } from "./pinned_tls.ts";

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

/** CAs trusted for Guardians besides the public ones (a realm CA pinned at registration), and their client. */
const trusted = new Set<string>();
let client: Deno.HttpClient | undefined;

/**
 * Trusts `caPem` (a realm CA, pinned at registration) for every Guardian request of this process from now on,
 * beside the public CAs. A process talks to one Guardian (or several sharing one CA): the realm's.
 */
export function trustGuardianCa(caPem: string): void {
  if (trusted.has(caPem)) return;
  trusted.add(caPem);
  client?.close();
  client = Deno.createHttpClient({ caCerts: [...trusted] });
}

/** `fetch` for a Guardian: the CAs trusted by {@link trustGuardianCa} are trusted too. */
export function guardianFetch(url: URL | string, init: RequestInit = {}): Promise<Response> {
  return fetch(url, client ? { ...init, client } as RequestInit : init);
}

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
    res = await guardianFetch(new URL(path, guardian), {
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

/**
 * A registration token as the Guardian checks it (`vreg.<id>.<secret>`), and the pin it may end with: the SHA-256
 * (base64url) of the CA the Guardian's certificate chains to.
 */
export function splitRegistrationToken(token: string): { token: string; pin?: string } {
  const parts = token.split(".");
  if (parts.length !== 4) return { token };
  return { token: parts.slice(0, 3).join("."), pin: parts[3] };
}

/**
 * The CA a pin names, as the Guardian presents it (PEM): from a TLS handshake with the first Guardian of the list
 * that completes one, before any secret is sent. Throws when the pin is malformed, a URL is not https://, no
 * Guardian answers, or one presents no certificate with that SHA-256 (another server: refused at once).
 */
export async function pinnedGuardianCa(guardian: string, pin: string): Promise<string> {
  const hex = pinToHex(pin);
  if (hex === undefined) {
    throw new Error(
      `the registration token ends in "${pin}", which is not a certificate's SHA-256: copy it whole`,
    );
  }
  const urls = guardianUrls(guardian);
  const plain = urls.find((u) => !u.startsWith("https://"));
  if (plain !== undefined) {
    throw new Error(
      `the registration token names the Guardian's certificate, so the Guardian speaks HTTPS: use https://, ` +
        `not ${plain}`,
    );
  }
  const failures: string[] = [];
  for (const url of urls) {
    try {
      return await pinnedCertificate(url, hex);
    } catch (error) {
      if (error instanceof PinMismatch) throw error;
      failures.push((error as Error).message);
    }
  }
  throw new GuardianUnavailable(`cannot verify the Guardian: ${failures.join("; ")}`);
}

export const guardianClient = {
  /**
   * Registers with a registration token. A token that names the Guardian's CA is verified first (the CA is then
   * trusted for this process, see {@link trustGuardianCa}, and returned as `guardian_ca` to be saved).
   */
  register: async (guardian: string, registrationToken: string, body: Record<string, unknown>) => {
    const { token, pin } = splitRegistrationToken(registrationToken);
    const ca = pin === undefined ? undefined : await pinnedGuardianCa(guardian, pin);
    if (ca !== undefined) trustGuardianCa(ca);
    const answer = await guardianRequest<{ conflux_id: string; token: string; realm?: RealmAnswer }>(
      guardian,
      "POST",
      "/conflux/register",
      token,
      body,
    );
    return { ...answer, ...(ca === undefined ? {} : { guardian_ca: ca }) };
  },
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
