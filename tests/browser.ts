/**
 * Headless Chromium for the console's tests, in a network namespace of its own. Chromium aborts every request in
 * flight (net::ERR_NETWORK_CHANGED) when the host's addresses change, which other tests running alongside do all
 * the time (their namespaces' veths); in its own namespace it sees none of that. A veth joins the namespace to
 * this host, where the pages under test must listen (`host`); nothing else is reachable, so a page that asks for
 * something from the internet fails at once instead of hanging. Puppeteer talks to it over a pipe.
 * @module
 */

import puppeteer, { type Browser } from "puppeteer-core";
import { Netns, run } from "./netns.ts";

export const CHROMIUM = "/usr/bin/chromium";

/** True when Chromium is missing here (the test is then skipped); in CI a missing Chromium is an error. */
export function chromiumMissing(): boolean {
  try {
    Deno.statSync(CHROMIUM);
    return false;
  } catch {
    if (Deno.env.get("CI")) {
      throw new Error(`the console test needs ${CHROMIUM} in CI (setup.sh installs it)`);
    }
    return true;
  }
}

/** A browser in its own namespace; `host` is this host's address as the browser reaches it. */
export interface IsolatedBrowser extends AsyncDisposable {
  browser: Browser;
  host: string;
}

/**
 * Launches headless Chromium in a new namespace, accepting any certificate (the console's is from a realm CA its
 * throwaway profile does not hold). The host `names` resolve to this host's address for it.
 */
export async function launchBrowser(names: string[] = []): Promise<IsolatedBrowser> {
  const ns = await Netns.create("browser");
  const stack = new AsyncDisposableStack();
  stack.use(ns);
  try {
    // A /30 of 10.251.0.0/16 that no other browser of this process uses: the namespace's name is unique.
    const n = Math.floor(Math.random() * 16_000);
    const host = `10.251.${n >> 6}.${(n & 63) * 4 + 1}`;
    const inside = `10.251.${n >> 6}.${(n & 63) * 4 + 2}`;
    const outer = `vcb${crypto.randomUUID().slice(0, 8)}`;
    await run("ip", ["link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", ns.name]);
    stack.defer(() => run("ip", ["link", "del", outer], { allowFailure: true }).then(() => {}));
    await run("ip", ["addr", "add", `${host}/30`, "dev", outer]);
    await run("ip", ["link", "set", outer, "up"]);
    await ns.exec("ip", ["addr", "add", `${inside}/30`, "dev", "eth0"]);
    await ns.exec("ip", ["link", "set", "eth0", "up"]);
    const wrapper = await Deno.makeTempFile({ prefix: "vc-chromium-", suffix: ".sh" });
    stack.defer(() => Deno.remove(wrapper).catch(() => {}));
    await Deno.writeTextFile(wrapper, `#!/bin/sh\nexec ip netns exec ${ns.name} ${CHROMIUM} "$@"\n`);
    await Deno.chmod(wrapper, 0o755);
    const rules = names.map((name) => `MAP ${name} ${host}`).join(", ");
    const browser = await puppeteer.launch({
      executablePath: wrapper,
      headless: true,
      pipe: true,
      args: ["--no-sandbox", ...(rules ? [`--host-resolver-rules=${rules}`] : [])],
      acceptInsecureCerts: true,
    });
    stack.defer(async () => {
      await browser.close().catch(() => {});
      // Whatever Chromium left in the namespace ends before the namespace goes.
      for (const pid of await ns.pids()) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
    });
    const moved = stack.move();
    return { browser, host, [Symbol.asyncDispose]: () => moved.disposeAsync() };
  } catch (error) {
    await stack.disposeAsync();
    throw error;
  }
}
