/**
 * Where an address is, by country, from the offline GeoIP country databases Debian ships (package
 * `geoip-database`: GeoIP.dat for IPv4, GeoIPv6.dat for IPv6, in /usr/share/GeoIP), read through libGeoIP
 * (`libgeoip1`) over FFI. With `guardian serve --geoip DIR`, a node the administrator did not place is placed
 * at each login in the region named by the lower-case country code of the address the login came from: what
 * the Guardian's socket saw, not anything the node says.
 * @module
 */

import { GEOIP_MEMORY_CACHE } from "./libgeoip.ts";
import { libgeoip } from "./loader.ts";

/** The country code of an address ("us", "fr"), or undefined when the database does not know it. */
export type CountryOf = (address: string) => string | undefined;

const cString = (s: string) => new TextEncoder().encode(`${s}\0`);

/**
 * Opens the country databases in `dir`. Throws an Error saying what to install when the library or the IPv4
 * database is missing; without GeoIPv6.dat, IPv6 addresses are not placed.
 */
export function openCountryDatabase(dir: string): CountryOf {
  const lib = libgeoip();
  const open = (file: string) => {
    try {
      Deno.statSync(`${dir}/${file}`);
    } catch {
      return null;
    }
    return lib.GeoIP_open(cString(`${dir}/${file}`), GEOIP_MEMORY_CACHE);
  };
  const v4 = open("GeoIP.dat");
  if (v4 === null) {
    throw new Error(`--geoip: no readable GeoIP.dat in ${dir} (Debian: apt-get install geoip-database)`);
  }
  const v6 = open("GeoIPv6.dat");
  return (address) => {
    // Only the characters of an address reach the C library (which parses it with inet_pton).
    const code = /^\d{1,3}(\.\d{1,3}){3}$/.test(address)
      ? lib.GeoIP_country_code_by_addr(v4, cString(address))
      : /^[0-9a-f:.]{2,45}$/i.test(address) && address.includes(":") && v6 !== null
      ? lib.GeoIP_country_code_by_addr_v6(v6, cString(address))
      : null;
    const country = code === null ? undefined : Deno.UnsafePointerView.getCString(code).toLowerCase();
    // Two letters only: not the database's pseudo-countries (A1 anonymous proxy, A2 satellite, "--").
    return country !== undefined && /^[a-z]{2}$/.test(country) ? country : undefined;
  };
}
