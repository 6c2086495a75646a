#!/usr/bin/env bash
# Runs one herald-bench scenario against Herald, the baseline, and whichever peers are
# installed (bench/install-peers.sh puts sockudo and soketi in ~/.cache/herald/peers; the PATH
# is searched too), one after the other, with the same generator and settings. The server gets
# core 0, the generator core 1.
#
#   bench/run.sh fanout --subscribers 1000 --rate 100 --seconds 10
#   bench/run.sh idle --connections 5000
#   bench/run.sh --repeat 5 fanout ...   # five rounds, servers interleaved round by round, then
#                                        # the median and min–max of each figure per server
#   bench/run.sh --repeat 3 idle --connections 5000 + connect --connections 15000 + fanout ...
#                                        # several scenarios (separated by `+`), each against a
#                                        # fresh server, all in every round: the headline run
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked -p herald-server -p herald-bench >/dev/null
bench="$target_dir/release/herald-bench"
port=7300
ulimit -n 20000 2>/dev/null || true

run_against() { # name, command...
  local name=$1; shift
  taskset -c 0 "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  echo "== $name"
  # Another process on the port would be measured instead: refuse to go on.
  sleep 0.3
  if ! kill -0 "$pid" 2>/dev/null; then echo "$name did not start (port $port taken?)"; return 0; fi
  taskset -c 1 "$bench" --target 127.0.0.1:$port --server-pid "$pid" \
    --app-id 1 --key herald-dev-key --secret herald-dev-secret "${SCENARIO[@]}" | tee "$results/$name.$label.$round" || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

repeat=1
if [ "${1:-}" = "--repeat" ]; then repeat=$2; shift 2; fi
# The scenarios, `+` between them, each kept as one line of words.
scenarios=() current=()
for arg in "$@"; do
  if [ "$arg" = + ]; then scenarios+=("${current[*]}"); current=(); else current+=("$arg"); fi
done
[ "${#current[@]}" -gt 0 ] && scenarios+=("${current[*]}")
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

one_round() {
run_against herald "$target_dir/release/herald-server" --bind 127.0.0.1 --port $port --metrics-port 0 \
  --app-id 1 --app-key herald-dev-key --app-secret herald-dev-secret --app-max-presence-members 100000
run_against baseline "$target_dir/release/herald-baseline" --port $port
peers="${HERALD_CACHE:-$HOME/.cache/herald}/peers"
sockudo=$(command -v sockudo || echo "$peers/sockudo/bin/sockudo")
soketi=$(command -v soketi || echo "$peers/soketi/node_modules/.bin/soketi")
if [ -x "$sockudo" ]; then
  QUEUE_DRIVER=none RATE_LIMITER_ENABLED=false HOST=127.0.0.1 PORT=$port SOCKUDO_DEFAULT_APP_ID=1 SOCKUDO_DEFAULT_APP_KEY=herald-dev-key \
    SOCKUDO_DEFAULT_APP_SECRET=herald-dev-secret SOCKUDO_ENABLE_CLIENT_MESSAGES=true \
    SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=1000000 SOCKUDO_DEFAULT_APP_MAX_PRESENCE_MEMBERS_PER_CHANNEL=100000 \
    run_against sockudo "$sockudo"
fi
if [ -x "$soketi" ]; then
  SOKETI_PORT=$port SOKETI_DEFAULT_APP_ID=1 SOKETI_DEFAULT_APP_KEY=herald-dev-key \
    SOKETI_DEFAULT_APP_SECRET=herald-dev-secret SOKETI_DEFAULT_APP_MAX_PRESENCE_MEMBERS_PER_CHANNEL=100000 \
    run_against soketi "$soketi" start
fi
}

for round in $(seq "$repeat"); do
  [ "$repeat" -gt 1 ] && echo "#### round $round of $repeat"
  for index in "${!scenarios[@]}"; do
    read -r -a SCENARIO <<<"${scenarios[$index]}"
    label="$((index + 1))-${SCENARIO[0]}"
    [ "${#scenarios[@]}" -gt 1 ] && echo "### ${SCENARIO[*]}"
    one_round
  done
done
if [ "$repeat" -gt 1 ] || [ "${#scenarios[@]}" -gt 1 ]; then
  # Each run's last line is its JSON report: the median and range of every numeric figure.
  python3 - "$results" "$repeat" <<'PY'
import json, os, statistics, sys
results, repeat = sys.argv[1], int(sys.argv[2])
servers = {}
for name in sorted(os.listdir(results)):
    server, scenario, _ = name.rsplit(".", 2)
    lines = [l for l in open(os.path.join(results, name)) if l.startswith("{")]
    if lines:
        servers.setdefault((scenario, server), []).append(json.loads(lines[-1]))
print(f"\n#### median [min – max] over {repeat} interleaved rounds")
for (scenario, server), runs in sorted(servers.items()):
    print(f"== {scenario}: {server} ({len(runs)} runs)")
    for key in sorted({k for r in runs for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}):
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        print(f"  {key:50} {statistics.median(values):>14.3f}  [{min(values):.3f} – {max(values):.3f}]")
PY
fi
