#!/usr/bin/env bash
# Runs one herald-bench scenario against a Herald cluster — a redis-server and NODES herald
# nodes (default 3) sharing it — then against one node alone, with the same generator and
# settings. Clients are spread over the nodes, the publisher uses the first; server CPU and RSS
# are summed over the nodes and Redis. The servers get core 0, the generator core 1.
#
# ALONE=no skips the one-node run (a scenario larger than one node can hold, such as `scale`).
#
# REDIS=cluster runs the nodes on a three-primary Redis Cluster (--redis-mode cluster, sharded
# pub/sub) instead of one redis-server; its three processes are summed as Redis.
#
#   bench/cluster.sh fanout --subscribers 999 --rate 25 --seconds 5 --ramp 1.4
#   NODES=2 bench/cluster.sh presence --members 1000
#   REDIS=cluster bench/cluster.sh --concurrency 32 api --seconds 10 --batch 10
#
# HERALD_SERVER=path runs that herald-server binary instead of this tree's (an older build, for a
# before / after comparison with the same generator).
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked -p herald-server -p herald-bench >/dev/null
bench="$target_dir/release/herald-bench"
server="${HERALD_SERVER:-$target_dir/release/herald-server}"
nodes=${NODES:-3}
redis_port=7390
ulimit -n 20000 2>/dev/null || true
command -v redis-server >/dev/null || { echo "redis-server is needed (scripts/test installs it)" >&2; exit 1; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${shard_dir:-}" ]; then rm -rf "$shard_dir"; fi
}
trap cleanup EXIT

wait_port() { for _ in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

node() { # port, extra args...
  local port=$1; shift
  taskset -c 0 "$server" --bind 127.0.0.1 --port "$port" --metrics-port 0 \
    --app-id 1 --app-key herald-dev-key --app-secret herald-dev-secret \
    --app-max-presence-members 100000 "$@" >/dev/null 2>&1 &
  pids+=($!)
  wait_port "$port"
  sleep 0.3
  # Another process on the port would be measured instead: refuse to go on.
  kill -0 "${pids[-1]}" 2>/dev/null || { echo "node on port $port did not start (port taken?)" >&2; exit 1; }
}

targets=() server_pids=()
if [ "${REDIS:-one}" = cluster ]; then
  echo "== herald cluster: $nodes nodes + a three-primary Redis Cluster"
  shard_dir=$(mktemp -d)
  seeds=""
  for i in 0 1 2; do
    port=$((redis_port + i))
    taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$shard_dir" \
      --cluster-enabled yes --cluster-config-file "$shard_dir/nodes-$port.conf" >/dev/null &
    pids+=($!)
    server_pids+=(--server-pid "$!")
    wait_port "$port"
    seeds="${seeds:+$seeds,}redis://127.0.0.1:$port"
  done
  redis-cli --cluster create 127.0.0.1:$redis_port 127.0.0.1:$((redis_port + 1)) 127.0.0.1:$((redis_port + 2)) \
    --cluster-yes >/dev/null
  until redis-cli -p $redis_port CLUSTER INFO | grep -q cluster_state:ok; do sleep 0.1; done
  redis_args=(--redis-mode cluster --redis-url "$seeds")
else
  echo "== herald cluster: $nodes nodes + redis"
  taskset -c 0 redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  pids+=($!)
  server_pids+=(--server-pid "$!")
  wait_port $redis_port
  redis_args=(--redis-url "redis://127.0.0.1:$redis_port/0")
fi
for n in $(seq "$nodes"); do
  port=$((7300 + n))
  node "$port" --cluster redis "${redis_args[@]}" --node-id "bench-$n"
  targets+=(--target "127.0.0.1:$port")
  server_pids+=(--server-pid "${pids[-1]}")
done
taskset -c 1 "$bench" "${targets[@]}" "${server_pids[@]}" "$@" || true
cleanup
pids=()
[ "${ALONE:-yes}" = no ] && exit 0

echo "== herald single node (embedded backend)"
node 7301
taskset -c 1 "$bench" --target 127.0.0.1:7301 --server-pid "${pids[-1]}" "$@" || true
