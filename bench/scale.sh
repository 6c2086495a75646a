#!/usr/bin/env bash
# How a three-node cluster on one Redis grows: `herald-bench scale` (bench/cluster.sh, the
# sockets held by several generator processes) at each size in SIZES, then a markdown table on
# stdout and a plot of each figure against the socket count (bench/growth.py).
#
#   bench/scale.sh                                  # 5,000 to 54,000 sockets, 4 generator processes
#   SIZES="5000 54000" bench/scale.sh --rate 100 --seconds 10
#   REDIS=cluster bench/scale.sh                    # on a three-primary Redis Cluster
#
# Extra arguments go to the `scale` scenario. PLOT names the SVG written (default
# docs/scale-growth.svg).
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=${SIZES:-"5000 9000 18000 27000 36000 45000 54000"}
plot=${PLOT:-docs/scale-growth.svg}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for n in $sizes; do
  echo "#### $n sockets"
  ALONE=no bench/cluster.sh scale --sockets "$n" "$@" | tee "$work/run"
  grep '^{' "$work/run" >> "$work/results" || echo "no report at $n sockets" >&2
done
python3 bench/growth.py "$work/results" "$plot"
