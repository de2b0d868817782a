/**
 * Signing in to the console as a realm's administrator through the realm's OIDC issuer (issue 20, item 1): a real
 * issuer (oidc-provider, with its development login pages), a real Guardian with its console, and headless
 * Chromium going through the whole authorization code flow. The administrator sees and changes their realm only;
 * someone the realm does not name is refused; a return to the console that this browser did not start is refused.
 */

import Provider from "oidc-provider";
import type { Page } from "puppeteer-core";
import { assert, assertEquals } from "./assert.ts";
import { freePort, GuardianProc, tempDir } from "./harness.ts";
import { netnsUnavailable } from "./netns.ts";
import { chromiumMissing, launchBrowser } from "./browser.ts";

/** A real OIDC issuer at `host` (another site than the console's), whose users are the login names. */
async function issuer(consoleOrigin: string, host: string) {
  const port = freePort();
  const url = `http://${host}:${port}`;
  const provider = new Provider(url, {
    clients: [{
      client_id: "veilnet-console",
      token_endpoint_auth_method: "none",
      redirect_uris: [`${consoleOrigin}/signin/return`],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    }],
    claims: { openid: ["sub"], email: ["email", "email_verified"] },
    // The e-mail address in the identity token itself, not only at the userinfo endpoint.
    conformIdTokenClaims: false,
    ttl: { Interaction: 600, Session: 600, Grant: 600, AccessToken: 600, IdToken: 600 },
    findAccount: (_ctx: unknown, sub: string) => ({
      accountId: sub,
      claims: () => ({ sub, email: `${sub}@example.com`, email_verified: true }),
    }),
  });
  const server = provider.listen(port, host);
  await new Promise((resolve) => server.once("listening", resolve));
  return {
    url,
    [Symbol.asyncDispose]: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Signs in at the issuer's development pages as `login`, and gives consent. */
async function signInAtIssuer(page: Page, login: string): Promise<void> {
  await page.waitForSelector("input[name=login]");
  await page.type("input[name=login]", login);
  await page.type("input[name=password]", "any");
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  if (await page.$("button[autofocus], form button[type=submit]")) {
    await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  }
}

Deno.test({
  name:
    "console: a realm's administrator signs in through the realm's issuer and administers that realm only",
  ignore: netnsUnavailable() !== undefined || chromiumMissing(),
  async fn() {
    // The console by name, the issuer by address: two sites, as in the field.
    await using isolated = await launchBrowser(["console.test"]);
    const { browser, host } = isolated;
    const consolePort = freePort();
    const origin = `https://console.test:${consolePort}`;
    await using idp = await issuer(origin, host);
    await using dir = await tempDir("console-oidc");
    await using g = new GuardianProc(`${dir.path}/guardian`, {
      embeddedMaster: true,
      natsPort: freePort(),
      flags: ["--console", `${host}:${consolePort}`],
    });
    await g.start();
    await g.admin([
      "realm",
      "create",
      "home",
      "--oidc-issuer",
      idp.url,
      "--oidc-jwks-url",
      `${idp.url}/jwks`,
      "--oidc-audience",
      "veilnet-console",
      "--oidc-admins",
      "alice@example.com",
    ]);
    await g.admin(["realm", "create", "lab", "--cidr", "10.129.0.0/16"]);
    await g.admin(["token", "create", "--realm", "lab"]);

    /** Signs in as `login` at the issuer, in a browser context of its own (its own cookies at both sites). */
    const signIn = async (login: string) => {
      const context = await browser.createBrowserContext();
      const page = await context.newPage();
      await page.goto(`${origin}/signin`);
      await page.type("input[name=realm]", "home");
      await page.click("form[action='/signin/oidc'] button");
      await page.waitForFunction((to) => location.href.startsWith(to), {}, idp.url);
      await signInAtIssuer(page, login);
      await page.waitForFunction(() => location.pathname !== "/signin/return", { timeout: 10_000 })
        .catch(() => {});
      return { page, cookies: () => context.cookies() };
    };

    // Someone the realm does not name signs in at the issuer, and is refused by the console.
    const mallory = await signIn("mallory");
    assertEquals(new URL(mallory.page.url()).pathname, "/signin/return");
    const refused = await mallory.page.$eval("main", (m) => m.textContent!);
    assert(refused.includes("administers no realm"), refused);
    assertEquals((await mallory.cookies()).filter((c) => c.name === "vc_console"), []);

    // Alice, named by her verified address, comes back signed in, and sees realm home only.
    const { page, cookies } = await signIn("alice");
    assertEquals(new URL(page.url()).pathname, "/nodes");
    assert((await page.$eval("nav .who", (e) => e.textContent!)).includes("alice@example.com"));
    const cookie = (await cookies()).find((c) => c.name === "vc_console")!;
    assertEquals([cookie.httpOnly, cookie.secure, cookie.sameSite], [true, true, "Strict"]);
    await page.goto(`${origin}/realms`);
    assertEquals(
      await page.$$eval("tbody tr td:first-child", (c) => c.map((e) => e.childNodes[0]!.textContent)),
      ["home"],
    );
    await page.goto(`${origin}/tokens`);
    assertEquals(await page.$$eval("tbody tr", (rows) => rows.length), 0, "lab's token is not shown");
    assertEquals(await page.$$eval("select[name=realm] option", (o) => o.map((e) => e.textContent)), [
      "home",
    ]);
    await Promise.all([page.waitForNavigation(), page.click("form.create button")]);
    assert(/^vreg\./.test(await page.$eval("#token", (e) => e.textContent!.trim())));
    const tokens = JSON.parse(await g.admin(["token", "list"])) as { realm: string }[];
    assertEquals(tokens.map((t) => t.realm).sort(), ["home", "lab"]);
    // A realm of her own is the Guardian administrator's to create.
    await page.goto(`${origin}/realms`);
    await page.type("form.create input[name=name]", "mine");
    await Promise.all([page.waitForNavigation(), page.click("form.create button")]);
    assertEquals(JSON.parse(await g.admin(["realm", "list"])).length, 2);

    // A user of the realm (not an administrator) signs in the same way and manages their own teams only.
    for (const user of ["ben", "james"]) {
      await g.admin(["user", "create", user, "--realm", "home", "--issuer", idp.url, "--subject", user]);
    }
    const ben = await signIn("ben");
    assertEquals(new URL(ben.page.url()).pathname, "/teams");
    await ben.page.type("form.create input[name=name]", "lab");
    await Promise.all([ben.page.waitForNavigation(), ben.page.click("form.create button")]);
    await ben.page.type("form[action$='/members'] input[name=user]", "james");
    await Promise.all([ben.page.waitForNavigation(), ben.page.click("form[action$='/members'] button")]);
    const teams = JSON.parse(await g.admin(["team", "list", "--realm", "home"])) as {
      name: string;
      owner: string;
      members: string[];
    }[];
    assertEquals(teams.map((t) => [t.name, t.owner, t.members]), [["lab", "ben", ["james"]]]);
    assertEquals(
      (await ben.page.goto(`${origin}/nodes`))?.status(),
      401,
      "a user sees no administrator's page",
    );

    // Login CSRF: alice starts a sign-in and stops her browser at the return to the console; the return URL (a
    // valid code and state) opened in another browser, which did not start that sign-in, is refused.
    const context = await browser.createBrowserContext();
    const start = await context.newPage();
    await start.setRequestInterception(true);
    const caught = new Promise<string>((resolve) =>
      start.on("request", (req) => {
        if (req.url().startsWith(`${origin}/signin/return`)) {
          resolve(req.url());
          void req.abort();
        } else void req.continue();
      })
    );
    await start.goto(`${origin}/signin/oidc?realm=home`);
    await start.waitForFunction((to) => location.href.startsWith(to), {}, idp.url);
    await signInAtIssuer(start, "alice").catch(() => {}); // the return is aborted: no navigation ends
    const returnUrl = await caught;
    const victim = await (await browser.createBrowserContext()).newPage();
    const forged = await victim.goto(returnUrl);
    assertEquals(forged?.status(), 400, "another browser was signed in with alice's return");
    const said = await victim.$eval("main", (m) => m.textContent!);
    assert(said.includes("not started here"), said);
    assertEquals(new URL(victim.url()).pathname, "/signin/return");
  },
});
