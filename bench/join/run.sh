#!/usr/bin/env bash
# Join benchmark: three release-build nodes on loopback hold DATA_MB of
# values; a fourth node joins while clients run. Reports the streaming
# throughput, the time to join, client p99 before and during the join, and
# how long the autoscaler takes from sustained overload to a serving new
# node.
#
#   bench/join/run.sh [DATA_MB]        (default 1024; needs redis-tools)
#
# JOIN_RATE=BYTES sets movement.bytes_per_sec_max, JOIN_BATCH=BYTES
# movement.batch_bytes_max; NO_AUTOSCALE=1 skips the autoscaler part.
set -euo pipefail
DATA_MB="${1:-1024}"
VALUE=1000
KEYS=$((DATA_MB * 1024 * 1024 / VALUE))
ROOT="$(mktemp -d /tmp/ringkv-join.XXXXXX)"
BIN="$(cd "$(dirname "$0")/../.." && pwd)/target/release/ringkv"
. "$(dirname "$0")/../common.sh"
cargo build --release -q -p ringkv
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$ROOT"; }
trap cleanup EXIT

cat > "$ROOT/ringkv.toml" <<TOML
[cluster]
gossip_interval_ms = 200
[movement]
cleanup_delay_ms = 10000
${JOIN_RATE:+bytes_per_sec_max = $JOIN_RATE}
${JOIN_BATCH:+batch_bytes_max = $JOIN_BATCH}
TOML

node() { # i seeds
    local i=$1 seeds=${2:-}
    local args=(server --config "$ROOT/ringkv.toml" --data-dir "$ROOT/n$i"
        --resp-addr "127.0.0.1:$((17379 + 10 * i))" --http-addr "127.0.0.1:$((17380 + 10 * i))"
        --cluster-addr "127.0.0.1:$((17381 + 10 * i))" --log warn)
    [ -n "$seeds" ] && args+=(--seeds "$seeds")
    "$BIN" "${args[@]}" > "$ROOT/n$i.log" 2>&1 &
    PIDS+=($!)
}
http() { echo "127.0.0.1:$((17380 + 10 * $1))"; }
normal_count() { curl -s "http://$(http 0)/v1/cluster" | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n["status"]=="NORMAL" and n["alive"]))'; }
wait_normal() { until [ "$(normal_count 2>/dev/null || echo 0)" = "$1" ]; do sleep 0.2; done; }

SEED="127.0.0.1:17381"
node 0; sleep 0.5; node 1 "$SEED"; node 2 "$SEED"
wait_normal 3
echo "preloading $KEYS keys of $VALUE B ($DATA_MB MB) ..."
t0=$(date +%s.%N)
preload 17379 "$KEYS" "$VALUE"
t1=$(date +%s.%N)
echo "preload: $(python3 -c "print(f'{$DATA_MB/($t1-$t0):.1f}')") MB/s"

bench_get() { redis-benchmark -p 17379 -t get -n "$1" -c 50 -r "$KEYS" -d "$VALUE" --csv 2>/dev/null; }
# Before and during are measured alike: p99 of runs of 50,000 GETs, median
# of the runs.
for _ in 1 2 3 4 5 6 7; do bench_get 50000 | p99 >> "$ROOT/before"; done
BEFORE=$(median "$ROOT/before")
echo "client p99 before the join: median of runs $BEFORE ms ($(sort -n "$ROOT/before" | tr '\n' ' '))"

# Join under a GET load; time it.
( while [ ! -f "$ROOT/joined" ]; do bench_get 50000 | p99 >> "$ROOT/during"; done ) &
LOADER=$!
tj=$(date +%s.%N)
node 3 "$SEED"
wait_normal 4
tn=$(date +%s.%N)
touch "$ROOT/joined"; wait "$LOADER" || true
MOV=$(curl -s "http://$(http 3)/v1/movement")
BYTES=$(echo "$MOV" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
MS=$(echo "$MOV" | python3 -c 'import json,sys; m=json.load(sys.stdin); print(m["updated_ms"]-m["started_ms"])')
DURING=$(sort -n "$ROOT/during" | tail -1)
MEDIAN=$(median "$ROOT/during")
echo "join: $(python3 -c "print(f'{$tn-$tj:.1f}')") s to NORMAL; streamed $((BYTES / 1048576)) MB in $((MS / 1000)) s: $(python3 -c "print(f'{$BYTES/1048576/max($MS,1)*1000:.1f}')") MB/s"
echo "client p99 during the join: median of runs $MEDIAN ms, worst run $DURING ms (before: $BEFORE ms)"
# After: the same load on four nodes (the coordinator now holds 3/4 of the
# keys, so a quarter of the reads need two remote answers).
for _ in 1 2 3 4 5 6 7; do bench_get 50000 | p99 >> "$ROOT/after"; done
echo "client p99 after the join: median of runs $(median "$ROOT/after") ms ($(sort -n "$ROOT/after" | tr '\n' ' '))"

[ -n "${NO_AUTOSCALE:-}" ] && exit 0

# Autoscaler: sustained overload to a serving fifth node.
"$BIN" autoscale --http "$(http 0)" --high-ops 3000 --low-ops 0 --window-s 10 \
    --cooldown-s 600 --interval-ms 500 --max-nodes 5 --dir "$ROOT/auto" \
    --node-config "$ROOT/ringkv.toml" > "$ROOT/autoscale.log" 2>&1 &
PIDS+=($!)
sleep 2
ta=$(date +%s.%N)
( while [ ! -f "$ROOT/scaled" ]; do redis-benchmark -p 17379 -t get -n 200000 -c 50 -r "$KEYS" -q > /dev/null 2>&1; done ) &
LOADER=$!
wait_normal 5
tb=$(date +%s.%N)
touch "$ROOT/scaled"; wait "$LOADER" || true
echo "autoscaler: overload to a serving fifth node in $(python3 -c "print(f'{$tb-$ta:.1f}')") s (window 10 s)"
