/**
 * Opens a TUN device and reports the outcome on stdout, for tests that need another process (dropped
 * capabilities, a hidden /dev/net/tun, missing permissions). Exit 0 if the device opened.
 * @module
 */

import { LinuxTun } from "../src/tun/linux_tun.ts";

try {
  const tun = await LinuxTun.open({ name: "probe0", addresses: ["10.98.0.1/24"] });
  await tun.close();
  console.log("opened");
} catch (error) {
  console.log(`${(error as Error).name}: ${(error as Error).message}`);
  Deno.exit(1);
}
