import { assertEquals, assertThrows } from "../tests/assert.ts";
import { openCountryDatabase } from "./geoip.ts";

Deno.test({
  name: "geoip: Debian's country databases (setup.sh installs them) place public addresses, and nothing else",
  fn() {
    const countryOf = openCountryDatabase("/usr/share/GeoIP");
    const cases: [address: string, country: string | undefined][] = [
      ["8.8.8.8", "us"],
      ["81.2.69.160", "gb"],
      ["193.51.224.1", "fr"],
      ["2001:4860:4860::8888", "us"],
      ["10.1.2.3", undefined], // private: nowhere
      ["fd00::1", undefined],
      ["127.0.0.1", undefined],
      ["not an address", undefined], // never handed to the C library
      ["8.8.8.8\0", undefined],
    ];
    for (const [address, country] of cases) assertEquals(countryOf(address), country, address);
  },
});

Deno.test("geoip: a directory without the database says what to install", () => {
  assertThrows(() => openCountryDatabase("/nonexistent"), Error, "apt-get install");
});
