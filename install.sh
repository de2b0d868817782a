#!/bin/sh
# Installs the veilnet-conflux binary for this machine, checking its SHA-256, and optionally registers the node:
#   curl -fsSL "$BASE/install.sh" | VEILNET_RELEASE_URL="$BASE" sh
#   curl -fsSL "$BASE/install.sh" | VEILNET_RELEASE_URL="$BASE" VEILNET_REGISTRATION_TOKEN="$REG" sh -s -- \
#     [register flags]
# Given a registration token it then runs `veilnet-conflux register [register flags]`, for example
#   ... | VEILNET_RELEASE_URL="$BASE" VEILNET_REGISTRATION_TOKEN="$REG" sh -s -- --guardian https://g:8080 --tag web
# The token stays off command lines (every user of the host reads those in `ps`): give it in
# VEILNET_REGISTRATION_TOKEN, which register inherits, or in a file (--token-file FILE, passed on to register,
# which reads it; the file is left as it is). --token REG (-t REG, --token=REG) still works but shows the token in
# `ps` while this script runs; register then gets it in its environment, not in its arguments.
# $BASE holds veilnet-conflux-linux-<arch> and veilnet-conflux-linux-<arch>.sha256 as compile.sh writes them
# (arch: x86_64 or aarch64). Needs curl or wget, and sha256sum. Environment:
#   VEILNET_RELEASE_URL  the release directory (required)
#   VEILNET_INSTALL_DIR  where the binary goes (default /usr/local/bin, which needs root)
#   VEILNET_REGISTRATION_TOKEN  register with this token once installed
#   TMPDIR               where the download waits until it is verified (default /tmp; always removed)
# Running it again is harmless: a binary that already matches the release's checksum is left alone (and the node
# is still registered if asked). Every failure is one line on stderr and a non-zero exit; a checksum mismatch
# installs nothing.
set -eu

NAME=veilnet-conflux

say() { printf 'install: %s\n' "$*" >&2; }
fail() {
  say "error: $*"
  exit 1
}

# get URL FILE: downloads with curl or wget, failing with the downloader's own reason.
get() {
  reason=$(fetch "$1" "$2") || fail "cannot download $1${reason:+: $reason}"
}

main() {
  # The token: --token T, -t T or --token=T (taken out here), --token-file FILE (left for `register`), else
  # VEILNET_REGISTRATION_TOKEN. Every other argument goes to `register` as it is.
  token=${VEILNET_REGISTRATION_TOKEN:-} file='' wants='' flag='' has_file=''
  for arg; do
    shift
    case $wants in
      token) token=$arg ;;
      file) file=$arg ;;
    esac
    if [ -n "$wants" ]; then
      [ "$wants" = token ] || set -- "$@" "$arg"
      wants=''
      continue
    fi
    case $arg in
      -t | --token) wants=token flag=yes ;;
      --token=*) token=${arg#--token=} flag=yes ;;
      --token-file) wants=file has_file=yes ;;
      --token-file=*) file=${arg#--token-file=} has_file=yes ;;
    esac
    case $arg in
      -t | --token | --token=*) ;;
      *) set -- "$@" "$arg" ;;
    esac
  done
  case $wants in
    token) fail "--token needs a registration token" ;;
    file) fail "--token-file needs a file holding the registration token" ;;
  esac
  [ -z "$flag" ] || [ -n "$token" ] || fail "--token needs a registration token"
  [ "$token" != - ] && [ "$file" != - ] ||
    fail "the token cannot come from standard input (this script does): use VEILNET_REGISTRATION_TOKEN or --token-file FILE"
  [ -z "$flag" ] || [ -z "$has_file" ] || fail "--token and --token-file exclude each other: give the token once"
  [ -z "$has_file" ] || [ -r "$file" ] || fail "--token-file ${file:-''}: cannot read it"
  [ -n "$token$has_file" ] || [ $# -eq 0 ] ||
    fail "register flags ($*) need a registration token: VEILNET_REGISTRATION_TOKEN, --token-file FILE or --token REG"

  base=${VEILNET_RELEASE_URL:-}
  base=${base%/}
  dir=${VEILNET_INSTALL_DIR:-/usr/local/bin}
  [ -n "$base" ] || fail "set VEILNET_RELEASE_URL to the release directory to install from"
  [ "$(uname -s)" = Linux ] || fail "unsupported OS $(uname -s): releases exist for Linux only"
  case $(uname -m) in
    x86_64 | amd64) arch=x86_64 ;;
    aarch64 | arm64) arch=aarch64 ;;
    *) fail "unsupported CPU $(uname -m): releases exist for x86_64 and aarch64" ;;
  esac
  if command -v curl >/dev/null 2>&1; then
    fetch() { curl -fsSL --retry 2 --connect-timeout 15 -o "$2" "$1" 2>&1; }
  elif command -v wget >/dev/null 2>&1; then
    fetch() { wget -q -T 15 -O "$2" "$1" 2>&1; }
  else
    fail "curl or wget is needed to download the release: install one of them"
  fi
  command -v sha256sum >/dev/null 2>&1 || fail "sha256sum is needed to verify the release: install coreutils"
  [ "$dir" != /usr/local/bin ] || [ "$(id -u)" -eq 0 ] ||
    fail "installing to /usr/local/bin needs root: pipe into 'sudo sh', or set VEILNET_INSTALL_DIR"

  asset=$NAME-linux-$arch
  target=$dir/$NAME
  new=$dir/.$NAME.new.$$
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/veilnet-install.XXXXXX") || fail "cannot create a temporary directory"
  trap 'rm -rf "$tmp" "$new"' EXIT
  trap 'exit 1' HUP INT TERM

  say "checking $base/$asset.sha256"
  get "$base/$asset.sha256" "$tmp/sha256"
  read -r expected _ <"$tmp/sha256" || true
  if [ -f "$target" ] && [ "$(sha256sum <"$target" | cut -d' ' -f1)" = "$expected" ]; then
    say "$target is already installed and matches this release (sha256 $expected)"
  else
    say "downloading $base/$asset"
    get "$base/$asset" "$tmp/$asset"
    actual=$(sha256sum <"$tmp/$asset" | cut -d' ' -f1)
    [ "$actual" = "$expected" ] ||
      fail "checksum mismatch for $asset: expected ${expected:-nothing}, got $actual; nothing was installed"
    { mkdir -p "$dir" && [ -w "$dir" ]; } 2>/dev/null || fail "cannot write to $dir: run as root"
    cp "$tmp/$asset" "$new"
    chmod 0755 "$new"
    version=$("$new" --version 2>&1) || fail "the downloaded $asset does not run on this machine: $version"
    mv -f "$new" "$target"
    say "installed $target (version $version, sha256 $actual)"
  fi

  rm -rf "$tmp"
  trap - EXIT HUP INT TERM
  [ -n "$token$has_file" ] || return 0
  if [ -n "$has_file" ]; then
    say "registering: $NAME register $* (it reads the token from $file)"
    unset VEILNET_REGISTRATION_TOKEN # the file wins anyway; no copy of a token left unused
  else
    say "registering: $NAME register $* (the token in its environment, not on its command line)"
    VEILNET_REGISTRATION_TOKEN=$token
    export VEILNET_REGISTRATION_TOKEN
  fi
  exec "$target" register "$@"
}

main "$@"
