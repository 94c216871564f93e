#!/usr/bin/env bash
# Compares the tracker's sharing policies with rookery's own agents on loopback.
#
# Every process (origin and agents) is capped at C by librqbit's own rate limiter, which
# stands in for a host's link: loopback itself has no bound. 8 local hosts in
# 2 datacenters x 2 racks receive an S MiB artifact of random bytes with
# `sharing: pipeline` and then `sharing: mesh`. Printed per mode: the slowest host's
# time, its ratio to the physical bound S/C, and the origin's upload in copies of S.
#
#   bench/sharing.sh [SIZE_MIB=256] [CAP_MIB_PER_S=50]
#
# No root needed. The shaped, namespaced benchmark with tc is bench/swarm.sh.
set -euo pipefail
size=${1:-256}
cap=${2:-50}
here=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
bin="$here/target/release/rookery"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
mkdir art
head -c "$((size << 20))" /dev/urandom > art/blob
cat > inv.yml <<INV
cluster: bench
transport: {local: {root: hosts}}
datacenters:
  east: {racks: {e1: {hosts: {e1a: {services: [app]}, e1b: {services: [app]}}},
                 e2: {hosts: {e2a: {services: [app]}, e2b: {services: [app]}}}}}
  west: {racks: {w1: {hosts: {w1a: {services: [app]}, w1b: {services: [app]}}},
                 w2: {hosts: {w2a: {services: [app]}, w2b: {services: [app]}}}}}
INV
printf '%-9s %9s %8s %10s %14s\n' mode slowest "x S/C" "origin up" "from peers"
for mode in pipeline mesh; do
  rm -rf hosts
  cat > pb.yml <<PB
name: bench
artifact: {source: art, destination: /srv/app}
distribution:
  sharing: $mode
  seed_window: 2s
  upload_limit: ${cap}MiB/s
  download_limit: ${cap}MiB/s
services:
  app: {start: "true"}
PB
  "$bin" --json -q distribute -i inv.yml pb.yml > report.json
  python3 - "$mode" "$size" "$cap" <<'PY'
import json, sys
mode, size, cap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = json.load(open("report.json"))
s = r["artifact_bytes"]
slowest = max(h["seconds"] for h in r["hosts"])
bound = size / cap
peers = sum(h["bytes_from_peers"] for h in r["hosts"]) / s
assert all(h["ok"] for h in r["hosts"]), r
print(f'{mode:<9} {slowest:8.1f}s {slowest / bound:8.2f} {r["origin_uploaded_bytes"] / s:9.2f}x {peers:13.2f}x')
PY
  sleep 3 # let the seeders of this round exit
done
