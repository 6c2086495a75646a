#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions (default 1,000,000) from the committed seeds and
# prints libFuzzer's final line for each. Needs the nightly toolchain and cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")"
runs=${RUNS:-1000000}
for t in $(cargo +nightly fuzz list); do
  mkdir -p "target/corpus/$t"
  out=$(cargo +nightly fuzz run -O "$t" "target/corpus/$t" "corpus/$t" -- \
    -runs="$runs" -max_len=4096 -rss_limit_mb=1024 -malloc_limit_mb=256 -print_final_stats=1 2>&1) || {
    echo "$t: FAILED"; echo "$out" | tail -30; exit 1; }
  echo "$t: $(echo "$out" | grep -E '^Done [0-9]+ runs' | tail -1) $(echo "$out" | grep -E 'stat::peak_rss_mb' | tail -1)"
done
