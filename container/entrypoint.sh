#!/bin/sh
# The container's entrypoint: registers once (when the config volume holds no registration and
# VEILNET_REGISTRATION_TOKEN is set), then runs the command given (default `run`). A restarted container finds
# conflux.json in its volume and does not register again.
set -eu
config="${VEILNET_CONFIG_DIR:-${HOME:-/root}/.config/conflux}/conflux.json"
if [ ! -f "$config" ] && [ -n "${VEILNET_REGISTRATION_TOKEN:-}" ] && [ "${1:-run}" = run ]; then
  veilnet-conflux register --no-service || { echo "entrypoint: registration failed; not starting" >&2; exit 1; }
fi
exec veilnet-conflux "$@"
