#!/bin/sh
# The container's entrypoint: registers once (when the config volume holds no registration and a registration
# token is given), then runs the command given (default `run`). A restarted container finds conflux.json in its
# volume and does not register again.
# The token comes from VEILNET_REGISTRATION_TOKEN, or from the file VEILNET_REGISTRATION_TOKEN_FILE names (a
# Docker or Compose secret, /run/secrets/...); register reads either itself, so no command line carries it, and
# the node that `run` starts afterwards does not inherit it.
set -eu
config="${VEILNET_CONFIG_DIR:-${HOME:-/root}/.config/conflux}/conflux.json"
token_file=${VEILNET_REGISTRATION_TOKEN_FILE:-}
if [ ! -f "$config" ] && [ -n "${VEILNET_REGISTRATION_TOKEN:-}$token_file" ] && [ "${1:-run}" = run ]; then
  if [ -n "$token_file" ]; then
    veilnet-conflux register --no-service --token-file "$token_file"
  else
    veilnet-conflux register --no-service
  fi || { echo "entrypoint: registration failed; not starting" >&2; exit 1; }
fi
# The node needs the token no longer; other commands (`register` by hand, say) still get it.
[ "${1:-run}" != run ] || unset VEILNET_REGISTRATION_TOKEN VEILNET_REGISTRATION_TOKEN_FILE
exec veilnet-conflux "$@"
