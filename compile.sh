#!/usr/bin/env bash
# Compiles veilnet-conflux into one executable per target, with the narrowest permissions the agent needs.
#   bash compile.sh                      # linux x86_64 and aarch64, into dist/
#   bash compile.sh aarch64              # one target
#   DENORT_BIN=/path/to/denort bash compile.sh x86_64
# `deno compile` downloads the Deno runtime (denort) for each target. Where that download is impossible (an
# offline or filtered network), point DENORT_BIN at a denort of the same Deno version and target.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"

command -v deno >/dev/null 2>&1 || { echo "compile: deno is missing: run 'bash setup.sh' first" >&2; exit 1; }
version=$(deno --version | head -n1 | cut -d' ' -f2)

declare -A TRIPLE=([x86_64]=x86_64-unknown-linux-gnu [aarch64]=aarch64-unknown-linux-gnu)
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  if [ -n "${DENORT_BIN:-}" ]; then targets=("$(uname -m)"); else targets=(x86_64 aarch64); fi
fi

if [ -n "${DENORT_BIN:-}" ]; then
  [ -x "$DENORT_BIN" ] || { echo "compile: DENORT_BIN=$DENORT_BIN is not an executable file" >&2; exit 1; }
  [ ${#targets[@]} -eq 1 ] || { echo "compile: DENORT_BIN is one runtime for one target; name exactly one target" >&2; exit 1; }
  export DENORT_BIN
elif ! timeout 10 deno eval --quiet "await fetch('https://dl.deno.land/', { method: 'HEAD' })" >/dev/null 2>&1; then
  cat >&2 <<MSG
compile: cannot download the Deno runtime (denort $version) that 'deno compile' embeds: dl.deno.land is not
reachable from this machine. Either run this on a connected machine, or fetch denort $version for the target
(denort-<triple>.zip from the Deno release) elsewhere and run:  DENORT_BIN=/path/to/denort bash compile.sh <target>
MSG
  exit 1
fi

# What the agent may do, and nothing more: the same list the systemd unit uses (src/service/permissions.ts), with
# the places a compiled binary keeps state: ~/.config/conflux for root, /etc/veilnet, /var/lib/veilnet; and the
# same runtime flags.
mapfile -t PERMISSIONS < <(deno eval --quiet 'import { AGENT_RUNTIME_FLAGS, agentPermissions } from "./src/service/permissions.ts";
console.log([...agentPermissions("/root/.config/conflux,/etc/veilnet,/var/lib/veilnet"), ...AGENT_RUNTIME_FLAGS].join("\n"));')
[ ${#PERMISSIONS[@]} -gt 0 ] || { echo "compile: could not read the permissions from src/service/permissions.ts" >&2; exit 1; }

mkdir -p dist
for t in "${targets[@]}"; do
  triple=${TRIPLE[$t]:-}
  [ -n "$triple" ] || { echo "compile: unknown target '$t' (known: ${!TRIPLE[*]})" >&2; exit 2; }
  out="dist/veilnet-conflux-linux-$t"
  echo "compile: $out ($triple, deno $version)" >&2
  timeout 900 deno compile --quiet --no-check=remote --target "$triple" --output "$out" --include src/lane/worker.ts "${PERMISSIONS[@]}" main.ts
  sha256sum "$out" | sed 's# dist/# #' >"$out.sha256"
done
