/**
 * The web console in a real browser (issue 20): headless Chromium, driven by puppeteer-core, against a real
 * Guardian with its console and real nodes in namespaces. An administrator signs in, creates a token, a node
 * registers with it and forms a tether, the console shows it online and the tether on the live topology; the
 * administrator revokes it there, and its peer drops it. A page of another site cannot make the console act.
 *
 * With VEILNET_SCREENSHOTS=DIR the main pages are saved there as PNG (the README's pictures).
 */

import type { Page } from "puppeteer-core";
import { assert, assertEquals } from "./assert.ts";
import { freePort, NodeProc, waitFor } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { realmOnTestbed } from "./testbed.ts";
import { chromiumMissing, launchBrowser } from "./browser.ts";

const SHOTS = Deno.env.get("VEILNET_SCREENSHOTS");

async function shot(page: Page, name: string): Promise<void> {
  if (SHOTS) {
    await page.screenshot({ path: `${SHOTS}/console-${name}.png` as `${string}.png`, fullPage: true });
  }
}

Deno.test({
  name:
    "console: sign in, create a token, a node registers with it, shows online and tethered; revoked, its peer drops it",
  ignore: netnsUnavailable() !== undefined || chromiumMissing(),
  async fn() {
    // The browser first: the console listens on this host's address as the browser reaches it.
    await using isolated = await launchBrowser();
    const { browser } = isolated;
    const port = freePort();
    const origin = `https://${isolated.host}:${port}`;
    await using realm = await realmOnTestbed(["b"], [], {}, ["a"], {
      guardianFlags: ["--console", `${isolated.host}:${port}`],
    });
    const g = realm.guardian;
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 800 });
    const visit = async (path: string) => {
      const res = await page.goto(`${origin}${path}`, { waitUntil: "load" });
      return res?.status();
    };

    // Signing in: any page sends to the sign-in form first.
    await visit("/nodes");
    assertEquals(new URL(page.url()).pathname, "/signin");
    await page.type("input[name=token]", (await Deno.readTextFile(`${g.dataDir}/admin.token`)).trim());
    await Promise.all([page.waitForNavigation(), page.click("form[action='/signin'] button")]);
    assertEquals(new URL(page.url()).pathname, "/nodes");
    const cookie = (await browser.cookies()).find((c) => c.name === "vc_console")!;
    assertEquals([cookie.httpOnly, cookie.secure, cookie.sameSite], [true, true, "Strict"]);

    // A token, made in the console.
    await visit("/tokens");
    await page.type("form.create input[name=taints]", "lab");
    await Promise.all([page.waitForNavigation(), page.click("form.create button")]);
    const token = await page.$eval("#token", (e) => e.textContent!.trim()).catch(async (e) => {
      throw new Error(`${e}: ${await page.content()}`);
    });
    assert(/^vreg\./.test(token), token);
    const install = await page.$eval("#install", (e) => e.textContent!);
    assert(
      install.includes(`VEILNET_REGISTRATION_TOKEN='${token}'`) && install.includes(`--guardian ${g.url}`),
    );
    await shot(page, "token");

    // A node registers with it (the host a had none) and talks to b.
    const a = new NodeProc("a", `${g.dataDir}/../a`, { netns: realm.bed.host("a").ns.name });
    realm.nodes.set("a", a);
    await a.register(g.url, token, ["--taints", "lab"]);
    await a.start();
    const b = (await waitFor("a to find b", 15_000, async () => (await a.resolve("b"))[0]))!;
    const ns = realm.bed.host("a").ns;
    await waitFor(
      "a's first ping to b",
      20_000,
      async () => (await ns.exec("ping", ["-c", "1", "-W", "1", b.ips[0]!], { allowFailure: true })).success,
    );

    // The console shows it online, and the tether on the topology, which updates itself.
    await waitFor("a online in the console", 15_000, async () => {
      await visit("/nodes");
      return await page.$$eval(
        "tbody tr",
        (rows) => rows.some((r) => r.textContent!.startsWith("a") && r.textContent!.includes("online")),
      );
    });
    await shot(page, "nodes");
    // On a phone: every page fits the screen's width (wide tables scroll inside their own box).
    await page.setViewport({ width: 390, height: 844, isMobile: true, hasTouch: true });
    for (const path of ["/nodes", "/topology", "/tokens", "/realms"]) {
      await visit(path);
      const [scroll, width] = await page.$eval("html", (e) => [e.scrollWidth, e.clientWidth]);
      assert(scroll <= width, `${path} is ${scroll} px wide on a ${width} px screen`);
    }
    await visit("/nodes");
    await shot(page, "phone");
    await page.setViewport({ width: 1100, height: 800 });
    await visit("/topology");
    const tethered = () =>
      page.$$eval(
        "#topology g.edge",
        (edges) =>
          edges.some((e) => [e.getAttribute("data-a"), e.getAttribute("data-b")].sort().join(" ") === "a b"),
      );
    const started = Date.now();
    await waitFor("the tether a-b on the topology, without reloading", 20_000, tethered);
    console.log(
      `the tether appeared on the open topology page ${((Date.now() - started) / 1000).toFixed(1)} s on`,
    );
    await shot(page, "topology");

    // A page of another site posts a revocation of b to the console: the browser sends no cookie with it
    // (SameSite=Strict), and the form has no CSRF token; b stays as it was.
    const bId = (await realm.node("b").status()).json.id as string;
    const evil = await browser.newPage();
    await evil.goto(
      `data:text/html,<form method="post" action="${origin}/nodes/${bId}/revoke"><input name="csrf" value="x"></form>`,
    );
    const attack = await Promise.all([
      evil.waitForResponse((r) => r.url().endsWith("/revoke")),
      evil.$eval("form", (f) => f.submit()),
    ]).then(([res]) => res.status());
    assert(attack === 401 || attack === 403, `the forged revocation was answered ${attack}`);
    await evil.close();
    await page.bringToFront();
    const listed = JSON.parse(await g.admin(["node", "list", "--json"])) as {
      tag: string;
      revoked_at?: number;
    }[];
    assertEquals(
      listed.find((n) => n.tag === "b")?.revoked_at,
      undefined,
      "b was revoked by another site's page",
    );

    // Revoked in the console, a is dropped by its peer.
    await visit("/nodes");
    await Promise.all([
      page.waitForNavigation(),
      page.click("tbody tr a[href^='/nodes/']:not([href*='" + bId + "'])"),
    ]);
    assert((await page.title()).startsWith("Node a"), await page.title());
    await Promise.all([page.waitForNavigation(), page.click("form[action$='/revoke'] button")]);
    assert((await page.content()).includes("revoked"));
    const revoked = Date.now();
    await waitFor("b to drop a", 10_000, async () => !(await realm.node("b").peerTags()).includes("a"));
    console.log(`b dropped a ${((Date.now() - revoked) / 1000).toFixed(1)} s after the console's revoke`);
  },
});
