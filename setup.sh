#!/usr/bin/env bash
# Installs what veilnet-conflux needs on a Debian machine, then runs the command given, from the repository root:
#   bash setup.sh deno task demo     # the local demo
#   bash setup.sh deno task ok       # format check, lint, type check and every test
# Installs only what is missing: Deno (from npm); nats-server, iproute2, iputils-ping, dnsutils, nftables, curl and
# coturn (from apt), and for the tests chromium, geoip-database and libgeoip1. Needs root for apt and npm -g; without root it says exactly what is missing instead.
set -euo pipefail

DENO_VERSION=2.9.6
cd "$(dirname "$(readlink -f "$0")")"

say() { printf 'setup: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }

# --- Deno, from the npm registry (the binary ships inside the package) ---
deno_ok() { command -v deno >/dev/null 2>&1 && [ "$(deno --version 2>/dev/null | head -n1 | cut -d' ' -f2)" = "$DENO_VERSION" ]; }
if ! deno_ok; then
  command -v npm >/dev/null 2>&1 || fail "Deno $DENO_VERSION is missing and so is npm to install it: install Node.js and npm first."
  is_root || fail "Deno $DENO_VERSION is missing: run 'npm install -g deno@$DENO_VERSION' as root, or run this script as root."
  say "installing Deno $DENO_VERSION from npm"
  npm install -g --no-fund --no-audit "deno@$DENO_VERSION" >&2
  hash -r
  PATH="$(npm prefix -g)/bin:$PATH"
  deno_ok || fail "npm installed deno@$DENO_VERSION but 'deno --version' does not report it; check $(npm prefix -g)/bin is on PATH."
fi

# --- Debian packages: nats-server (the Master), iproute2 (network namespaces); iputils-ping, dnsutils (dig),
# nftables (the demo's relayed pair), curl (the installer's test) and coturn (a real TURN server for the netcheck
# test) for the end-to-end tests and the demo ---
missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v ping >/dev/null 2>&1 || missing+=(iputils-ping)
command -v dig >/dev/null 2>&1 || missing+=(dnsutils)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v turnserver >/dev/null 2>&1 || missing+=(coturn)
# Only for the tests, not the demo: Chromium (headless) drives the web console's end-to-end test; Debian's
# offline country databases and libGeoIP serve `guardian serve --geoip`'s tests.
case " $* " in
  *" ok "* | *" test "*)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    [ -e /usr/share/GeoIP/GeoIP.dat ] || missing+=(geoip-database)
    ldconfig -p 2>/dev/null | grep -q 'libGeoIP\.so\.1 ' || missing+=(libgeoip1)
    ;;
esac
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || fail "missing: ${missing[*]}. This is not a Debian-like system: install them with your package manager."
  is_root || fail "missing: ${missing[*]}. Run 'apt-get install -y ${missing[*]}' as root, or run this script as root."
  say "installing ${missing[*]} from apt"
  # Debian's coturn starts a system TURN server on UDP 3478, the port a Guardian serves STUN on; the tests run
  # their own. policy-rc.d keeps the packages installed here from starting services, and the unit is disabled.
  no_start=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && no_start=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  if [ -n "$no_start" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
  if [[ " ${missing[*]} " == *" coturn "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now --quiet coturn.service 2>/dev/null || true
  fi
fi

[ $# -gt 0 ] || { say "all set. Give a command to run, e.g. 'bash setup.sh deno task ok'"; exit 0; }
exec "$@"
