/**
 * Headless Chromium for the console's tests: where Debian puts it, and whether this machine has it (CI must).
 * @module
 */

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
