/**
 * The libGeoIP functions veilnet-conflux calls (Debian: libgeoip1), as pure data (the shape `Deno.dlopen`
 * wants), with each parameter's C type beside it. ffi/loader.ts opens the library; ffi/geoip.ts uses it.
 * @module
 */

export const LIBGEOIP_SYMBOLS = {
  /** GeoIP *GeoIP_open(const char *filename, int flags) */
  GeoIP_open: { parameters: ["buffer", /* const char *filename */ "i32" /* int flags */], result: "pointer" },
  /** const char *GeoIP_country_code_by_addr(GeoIP *gi, const char *addr) */
  GeoIP_country_code_by_addr: {
    parameters: ["pointer", /* GeoIP *gi */ "buffer" /* const char *addr */],
    result: "pointer",
  },
  /** const char *GeoIP_country_code_by_addr_v6(GeoIP *gi, const char *addr) */
  GeoIP_country_code_by_addr_v6: {
    parameters: ["pointer", /* GeoIP *gi */ "buffer" /* const char *addr */],
    result: "pointer",
  },
} as const;

/** GEOIP_MEMORY_CACHE: GeoIP_open reads the database into memory once. */
export const GEOIP_MEMORY_CACHE = 1;
