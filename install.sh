#!/bin/sh
# Installs the veilnet-conflux binary for this machine, checking its SHA-256, and optionally registers the node:
#   curl -fsSL "$BASE/install.sh" | VEILNET_RELEASE_URL="$BASE" sh
#   curl -fsSL "$BASE/install.sh" | VEILNET_RELEASE_URL="$BASE" sh -s -- --token REG_TOKEN [register flags]
# The release directory holds veilnet-conflux-linux-<arch> and veilnet-conflux-linux-<arch>.sha256 (as written
# by compile.sh). Running it again with the same release changes nothing.
set -eu

BASE_URL="${VEILNET_RELEASE_URL:-}"
PREFIX="${VEILNET_PREFIX:-/usr/local/bin}"
NAME=veilnet-conflux

say() { printf 'install: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

[ -n "$BASE_URL" ] || fail "set VEILNET_RELEASE_URL to the release directory to install from"
[ "$(uname -s)" = Linux ] || fail "only Linux is supported (this is $(uname -s))"
case "$(uname -m)" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) fail "no release for CPU $(uname -m) (x86_64 and aarch64 exist)" ;;
esac
for tool in curl sha256sum install; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is needed and missing"
done

asset="$NAME-linux-$arch"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
say "downloading $BASE_URL/$asset"
curl -fsSL --retry 2 --connect-timeout 15 -o "$tmp/$asset" "$BASE_URL/$asset" || fail "download of $asset failed"
curl -fsSL --retry 2 --connect-timeout 15 -o "$tmp/$asset.sha256" "$BASE_URL/$asset.sha256" ||
  fail "download of $asset.sha256 failed"
expected=$(cut -d' ' -f1 <"$tmp/$asset.sha256")
actual=$(sha256sum "$tmp/$asset" | cut -d' ' -f1)
[ -n "$expected" ] && [ "$expected" = "$actual" ] ||
  fail "checksum mismatch for $asset: expected ${expected:-nothing}, got $actual. Nothing was installed."

target="$PREFIX/$NAME"
if [ -f "$target" ] && [ "$(sha256sum "$target" | cut -d' ' -f1)" = "$actual" ]; then
  say "$target is already this release ($actual)"
else
  mkdir -p "$PREFIX"
  install -m 0755 "$tmp/$asset" "$target.new" && mv -f "$target.new" "$target"
  say "installed $target ($actual)"
fi

if [ $# -gt 0 ]; then
  say "registering: $NAME register $*"
  exec "$target" register "$@"
fi
