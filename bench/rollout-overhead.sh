#!/usr/bin/env bash
# rookery's own cost per restarted host, on the local transport and the local store.
#
# N local hosts (default 32) in 2 datacenters x 2 racks run one service whose start is
# instant (`exec sleep`) and that has no health check, so everything a restart takes is
# rookery's: the gate, `agent switch` (stop, symlink, start the supervisor), the
# supervisor's registration, the controller seeing the live entry, the record writes.
# The artifact is distributed first; only `rookery rollout` is timed, twice:
#
#   sequential  max_parallel 1: wall time / N is the overhead of one restart
#   parallel    max_parallel N/4: wall time / N is the amortised overhead per host
#
#   bench/rollout-overhead.sh [N=32]
#
# Target (issue 7): under 50 ms per host. No root needed.
set -euo pipefail
n=${1:-32}
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$here/Cargo.toml" --bin rookery
bin="$here/target/release/rookery"
work=$(mktemp -d)
cleanup() {
  pkill -f "agent run.*$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
mkdir art
echo v1 > art/LABEL

{
  echo "cluster: bench"
  echo "transport: {local: {root: hosts}}"
  echo "coordination: {local: {dir: coord}}"
  echo "datacenters:"
  for dc in east west; do
    echo "  $dc:"
    echo "    racks:"
    for r in 1 2; do
      echo "      r$r:"
      echo "        hosts:"
      for i in $(seq 1 $((n / 4))); do
        echo "          $dc-$r-$i: {services: [svc]}"
      done
    done
  done
} > inv.yml

playbook() {
  cat > pb.yml <<PB
name: bench
artifact: {source: art, destination: /srv/app, keep_releases: 2}
distribution: {seed_window: 1s}
services:
  svc:
    quorum: 1
    max_parallel: $1
    start: "exec sleep 100000"
    min_healthy_time: 0s
PB
}

run() { "$bin" -q "$@" -i inv.yml >/dev/null 2>err.log || { cat err.log >&2; exit 1; }; }
now() { date +%s.%N; }

playbook "$n"
run deploy pb.yml                      # the first release, everything started

printf '%-11s %6s %10s %14s\n' mode hosts "wall (s)" "per host (ms)"
for mode in sequential parallel; do
  if [ "$mode" = sequential ]; then par=1; else par=$((n / 4)); fi
  playbook "$par"
  echo "$mode $RANDOM" > art/LABEL     # a new version to roll to
  run distribute pb.yml
  t0=$(now)
  run rollout pb.yml
  t1=$(now)
  awk -v m="$mode" -v n="$n" -v a="$t0" -v b="$t1" \
    'BEGIN { w = b - a; printf "%-11s %6d %10.2f %14.1f\n", m, n, w, 1000 * w / n }'
done
echo "target: < 50 ms per host"
