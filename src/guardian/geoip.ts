/**
 * Where an address is, by country, from the offline GeoIP country databases Debian ships (package
 * `geoip-database`: GeoIP.dat for IPv4, GeoIPv6.dat for IPv6, in /usr/share/GeoIP), read through libGeoIP
 * (`libgeoip1`) over FFI. With `guardian serve --geoip DIR`, a node the administrator did not place is placed
 * at each login in the region named by the lower-case country code of the address the login came from: what
 * the Guardian's socket saw, not anything the node says.
 * @module
 */

import { parseIPv4, parseIPv6 } from "../tun/ip.ts";

/** The country code of an address ("us", "fr"), or undefined when the database does not know it. */
export type CountryOf = (address: string) => string | undefined;

const SYMBOLS = {
  GeoIP_open: { parameters: ["buffer", "i32"], result: "pointer" },
  GeoIP_country_code_by_addr: { parameters: ["pointer", "buffer"], result: "pointer" },
  GeoIP_country_code_by_addr_v6: { parameters: ["pointer", "buffer"], result: "pointer" },
} as const;
/** GEOIP_MEMORY_CACHE: the database is read into memory once. */
const MEMORY_CACHE = 1;

const cString = (s: string) => new TextEncoder().encode(`${s}\0`);

/**
 * Opens the country databases in `dir`. Throws an Error saying what to install when the library or the IPv4
 * database is missing; without GeoIPv6.dat, IPv6 addresses are not placed.
 */
export function openCountryDatabase(dir: string): CountryOf {
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen("libGeoIP.so.1", SYMBOLS);
  } catch (cause) {
    throw new Error("--geoip needs libGeoIP (Debian: apt-get install libgeoip1)", { cause });
  }
  const open = (file: string) => {
    try {
      Deno.statSync(`${dir}/${file}`);
    } catch {
      return null;
    }
    return lib.symbols.GeoIP_open(cString(`${dir}/${file}`), MEMORY_CACHE);
  };
  const v4 = open("GeoIP.dat");
  if (v4 === null) {
    lib.close();
    throw new Error(`--geoip: no readable GeoIP.dat in ${dir} (Debian: apt-get install geoip-database)`);
  }
  const v6 = open("GeoIPv6.dat");
  return (address) => {
    // Only well-formed addresses reach the C library.
    const code = parseIPv4(address)
      ? lib.symbols.GeoIP_country_code_by_addr(v4, cString(address))
      : parseIPv6(address) && v6 !== null
      ? lib.symbols.GeoIP_country_code_by_addr_v6(v6, cString(address))
      : null;
    const country = code === null ? undefined : Deno.UnsafePointerView.getCString(code).toLowerCase();
    // Two letters only: not the database's pseudo-countries (A1 anonymous proxy, A2 satellite, "--").
    return country !== undefined && /^[a-z]{2}$/.test(country) ? country : undefined;
  };
}
