#!/usr/bin/env bash
# Runs one herald-bench scenario against a Herald cluster — a redis-server and NODES herald
# nodes (default 3) sharing it — then against one node alone, with the same generator and
# settings. Clients are spread over the nodes, the publisher uses the first; server CPU and RSS
# are summed over the nodes and Redis. The servers get core 0, the generator core 1.
#
#   bench/cluster.sh fanout --subscribers 999 --rate 25 --seconds 5 --ramp 1.4
#   NODES=2 bench/cluster.sh presence --members 1000
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked -p herald-server -p herald-bench >/dev/null
bench="$target_dir/release/herald-bench"
nodes=${NODES:-3}
redis_port=7390
ulimit -n 20000 2>/dev/null || true
command -v redis-server >/dev/null || { echo "redis-server is needed (scripts/test installs it)" >&2; exit 1; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

wait_port() { for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

node() { # port, extra args...
  local port=$1; shift
  taskset -c 0 "$target_dir/release/herald-server" --bind 127.0.0.1 --port "$port" --metrics-port 0 \
    --app-id 1 --app-key herald-dev-key --app-secret herald-dev-secret \
    --app-max-presence-members 100000 "$@" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$port"
  sleep 0.3
  # Another process on the port would be measured instead: refuse to go on.
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "node on port $port did not start (port taken?)" >&2; exit 1; }
}

echo "== herald cluster: $nodes nodes + redis"
taskset -c 0 redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis_pid=$!
pids+=($redis_pid)
wait_port $redis_port
targets=() server_pids=(--server-pid "$redis_pid")
for n in $(seq "$nodes"); do
  port=$((7300 + n))
  node "$port" --cluster redis --redis-url "redis://127.0.0.1:$redis_port/0" --node-id "bench-$n"
  targets+=(--target "127.0.0.1:$port")
  server_pids+=(--server-pid "${pids[-1]}")
done
taskset -c 1 "$bench" "${targets[@]}" "${server_pids[@]}" "$@" || true
cleanup
pids=()

echo "== herald single node (embedded backend)"
node 7301
taskset -c 1 "$bench" --target 127.0.0.1:7301 --server-pid "${pids[-1]}" "$@" || true
