/**
 * The CLI's side of the local API: HTTP over the node's unix socket.
 * @module
 */

import { socketPath } from "../agent/config.ts";

/** Calls the running node; a node that is not running gives an Error saying so. */
export async function localApi<T>(method: string, path: string, body?: unknown): Promise<T> {
  const socket = socketPath();
  const client = Deno.createHttpClient(
    { proxy: { transport: "unix", path: socket } } as Deno.CreateHttpClientOptions,
  );
  try {
    let res: Response;
    try {
      res = await fetch(`http://conflux${path}`, {
        method,
        client,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      } as RequestInit);
    } catch (error) {
      throw new Error(
        `no node is running here (cannot reach ${socket}: ${(error as Error).message.split("\n")[0]})`,
      );
    }
    const json = await res.json();
    if (!res.ok) throw new Error(json.error ?? `local API answered ${res.status}`);
    return json as T;
  } finally {
    client.close();
  }
}
