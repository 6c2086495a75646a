#!/usr/bin/env bash
# Installs the peers herald-bench compares against, outside the repository (never committed):
#   soketi  from npm (@soketi/soketi; its uWebSockets.js git dependency cannot be fetched here,
#           so package.json overrides it with the registry build @trufflesuite/uws-js-unofficial)
#   sockudo from crates.io (cargo install, local + redis adapters; needs Debian's protobuf-compiler)
# into ~/.cache/herald/peers. bench/run.sh finds them there.
set -euo pipefail
peers="${HERALD_CACHE:-$HOME/.cache/herald}/peers"
mkdir -p "$peers/soketi"

if [ ! -x "$peers/soketi/node_modules/.bin/soketi" ]; then
  cat >"$peers/soketi/package.json" <<'JSON'
{
  "name": "herald-peer-soketi",
  "private": true,
  "dependencies": { "@soketi/soketi": "1.6.1" },
  "overrides": { "uWebSockets.js": "npm:@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0" }
}
JSON
  (cd "$peers/soketi" && npm install --no-audit --no-fund --loglevel=error)
fi

if [ ! -x "$peers/sockudo/bin/sockudo" ]; then
  command -v protoc >/dev/null || { echo "sockudo needs protoc: apt-get install protobuf-compiler" >&2; exit 1; }
  cargo install sockudo --locked --root "$peers/sockudo" --no-default-features --features local,redis
fi
echo "peers in $peers: soketi $(cat "$peers/soketi/node_modules/@soketi/soketi/package.json" | sed -n 's/.*"version": "\(.*\)".*/\1/p'), sockudo $("$peers/sockudo/bin/sockudo" --version 2>/dev/null || echo '?')"
