/**
 * The soak's five-minute version (tests/soak.ts; `deno task soak` runs it for an hour): a relayed pair under
 * mixed traffic with tether churn and rekeys, every byte delivered, resources flat, no error logged.
 */

import { netnsUnavailable } from "./netns.ts";
import { describeSoak, soak } from "./soak.ts";

Deno.test({
  name: "soak: five minutes of mixed traffic over a relayed pair with tether churn and rekeys",
  ignore: netnsUnavailable() !== undefined,
  async fn() {
    const report = await soak(5, () => {});
    console.log(describeSoak(report));
    if (report.failures.length > 0) throw new Error(`the soak did not hold:\n${report.failures.join("\n")}`);
  },
});
