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

# Pinned, so figures compare the same peers run after run (docs/benchmarks.md names them).
SOCKUDO_VERSION=5.2.0

if [ ! -x "$peers/sockudo/bin/sockudo" ]; then
  if ! command -v protoc >/dev/null; then
    echo "sockudo needs protoc: installing Debian's protobuf-compiler"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq protobuf-compiler >/dev/null
  fi
  cargo install sockudo --version "$SOCKUDO_VERSION" --locked --root "$peers/sockudo" --no-default-features --features local,redis
fi
echo "peers in $peers: soketi $(cat "$peers/soketi/node_modules/@soketi/soketi/package.json" | sed -n 's/.*"version": "\(.*\)".*/\1/p'), sockudo $("$peers/sockudo/bin/sockudo" --version 2>/dev/null || echo '?')"
