#!/usr/bin/env bash
# Failure-handling benchmark: three release-build nodes on loopback (N = 3)
# hold DATA_MB of values. Reports
#   1. anti-entropy cost with the replicas in sync: CPU (user + sys) and
#      bytes read from disk by the three node processes over IDLE_S seconds
#      with no client load, at the default background rate, per GB of data
#      per hour;
#   2. client GET p99 while on-demand repair passes (`ringkv repair`, at
#      anti_entropy.repair_ranges_per_sec_max) run on every node at once,
#      against the p99 without them (median of runs of 50,000 GETs each);
#   3. hint replay rate: one node is killed, HINT_KEYS writes go to the
#      other two (hints for the dead one), the node restarts, and the time
#      until no hint is pending gives keys per second (the configured limit,
#      hints.replay_per_sec_max, is 5,000/s per holder).
#
#   bench/repair/run.sh [DATA_MB]      (default 256; needs redis-tools)
#   IDLE_S=60 HINT_KEYS=100000 bench/repair/run.sh 256
set -euo pipefail
DATA_MB="${1:-256}"
IDLE_S="${IDLE_S:-60}"
HINT_KEYS="${HINT_KEYS:-100000}"
VALUE=1000
KEYS=$((DATA_MB * 1024 * 1024 / VALUE))
ROOT="$(mktemp -d /tmp/ringkv-repair.XXXXXX)"
BIN="$(cd "$(dirname "$0")/../.." && pwd)/target/release/ringkv"
. "$(dirname "$0")/../common.sh"
cargo build --release -q -p ringkv
declare -A PID
cleanup() { for p in "${PID[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$ROOT"; }
trap cleanup EXIT

cat > "$ROOT/ringkv.toml" <<TOML
[cluster]
gossip_interval_ms = 200
TOML

node() { # i [seeds]
    local i=$1 seeds=${2:-}
    local args=(server --config "$ROOT/ringkv.toml" --data-dir "$ROOT/n$i"
        --resp-addr "127.0.0.1:$((18379 + 10 * i))" --http-addr "127.0.0.1:$((18380 + 10 * i))"
        --cluster-addr "127.0.0.1:$((18381 + 10 * i))" --log warn)
    [ -n "$seeds" ] && args+=(--seeds "$seeds")
    "$BIN" "${args[@]}" >> "$ROOT/n$i.log" 2>&1 &
    PID[$i]=$!
}
http() { echo "127.0.0.1:$((18380 + 10 * $1))"; }
alive_count() { curl -s "http://$(http 0)/v1/cluster" | python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin)["nodes"] if n["alive"]))'; }
wait_alive() { until [ "$(alive_count 2>/dev/null || echo 0)" = "$1" ]; do sleep 0.2; done; }
hints_pending() { # total hints held by nodes 0 and 1
    for i in 0 1; do curl -s "http://$(http "$i")/v1/cluster"; echo; done |
        python3 -c 'import json,sys; print(sum(h["count"] for l in sys.stdin if l.strip() for h in json.loads(l)["hints"]["pending"]))'
}
bench_get() { redis-benchmark -p 18379 -t get -n 50000 -c 50 -r "$KEYS" -d "$VALUE" --csv 2>/dev/null | p99; }
# user+sys clock ticks and bytes read of the three nodes.
ticks() { for i in 0 1 2; do awk '{print $14 + $15}' "/proc/${PID[$i]}/stat"; done | awk '{s += $1} END {print s}'; }
read_bytes() { for i in 0 1 2; do awk '/^read_bytes/ {print $2}' "/proc/${PID[$i]}/io"; done | awk '{s += $1} END {print s}'; }

SEED="127.0.0.1:18381"
node 0; sleep 0.5; node 1 "$SEED"; sleep 0.5; node 2 "$SEED"
wait_alive 3
echo "preloading $KEYS keys of $VALUE B ($DATA_MB MB) ..."
preload 18379 "$KEYS" "$VALUE"
# Every replica holds every key before the idle window.
REPAIRS=()
for i in 0 1 2; do "$BIN" repair --http "$(http "$i")" > /dev/null & REPAIRS+=($!); done
wait "${REPAIRS[@]}"

# 1. Anti-entropy in sync, idle.
HZ=$(getconf CLK_TCK)
t0=$(ticks); r0=$(read_bytes)
sleep "$IDLE_S"
t1=$(ticks); r1=$(read_bytes)
python3 - "$t0" "$t1" "$r0" "$r1" "$HZ" "$IDLE_S" "$DATA_MB" <<'PY'
import sys
t0, t1, r0, r1, hz, secs, mb = map(float, sys.argv[1:])
cpu = (t1 - t0) / hz
gb = mb / 1024
print(f"anti-entropy in sync, idle {secs:.0f} s: {cpu:.2f} CPU-s and {(r1 - r0) / 1e6:.1f} MB read by 3 nodes")
print(f"  per GB of data per hour: {cpu / gb * 3600 / secs:.1f} CPU-s, {(r1 - r0) / 1e6 / gb * 3600 / secs:.0f} MB read")
PY

# 2. Client p99 during repair passes, against without.
for _ in 1 2 3 4 5; do bench_get >> "$ROOT/quiet"; done
( while [ ! -f "$ROOT/stop" ]; do
    for i in 0 1 2; do "$BIN" repair --no-wait --http "$(http "$i")" > /dev/null 2>&1 || true; done
    sleep 0.5
  done ) &
REPAIRER=$!
sleep 1
for _ in 1 2 3 4 5; do bench_get >> "$ROOT/repairing"; done
touch "$ROOT/stop"; wait "$REPAIRER" || true
Q=$(median "$ROOT/quiet"); R=$(median "$ROOT/repairing")
echo "client GET p99 without repair: $Q ms ($(sort -n "$ROOT/quiet" | tr '\n' ' '))"
echo "client GET p99 during repair passes: $R ms ($(sort -n "$ROOT/repairing" | tr '\n' ' ')): $(python3 -c "print(f'{$R/$Q:.2f}')")x"

# 3. Hint replay.
kill -KILL "${PID[2]}"; wait "${PID[2]}" 2>/dev/null || true
until [ "$(alive_count 2>/dev/null || echo 3)" = "2" ]; do sleep 0.2; done
redis-benchmark -p 18379 -t set -n "$HINT_KEYS" -c 50 -r 100000000 -d 100 -q > /dev/null 2>&1
HELD=$(hints_pending)
ts=$(date +%s.%N)
node 2 "$SEED"
until [ "$(hints_pending)" = "0" ]; do sleep 0.1; done
te=$(date +%s.%N)
echo "hint replay: $HELD hints delivered in $(python3 -c "print(f'{$te-$ts:.1f}')") s from the restart: $(python3 -c "print(f'{$HELD/($te-$ts):.0f}')") keys/s"
