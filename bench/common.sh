# Helpers shared by the cluster benchmark scripts (sourced, not run).

# p99 (ms) of a `redis-benchmark --csv` GET line:
# "test","rps","avg","min","p50","p95","p99","max"
p99() { awk -F'"' '/"GET"/ {print $14}'; }

# The median of the numbers in file $1, one a line.
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# preload PORT KEYS VALUE_BYTES: SETs key:0 .. key:KEYS-1 through one node
# with `redis-cli --pipe`.
preload() {
    python3 - "$2" "$3" <<'PY' | redis-cli -p "$1" --pipe > /dev/null
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
val = b"v" * size
for i in range(n):
    k = b"key:%d" % i
    out.write(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, size, val))
PY
}
