#!/usr/bin/env bash
# Runs the storage benchmark: ringkv's engine vs fjall 3 vs RocksDB (Debian's
# librocksdb, linked in seconds instead of built from source), same workloads,
# same settings, one run. Extra arguments go to the benchmark, e.g.
#   ./run.sh --keys 200000 --big-mb 0          # quick
#   ./run.sh --big-mb 2048                     # default: 1M keys + 2 GiB set
#   ./run.sh --engines ringkv,rocksdb --dir /mnt/fast/bench
set -euo pipefail
cd "$(dirname "$0")"

if ! [ -e /usr/lib/x86_64-linux-gnu/librocksdb.so ] || ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1; then
    echo "installing librocksdb-dev and libclang-dev" >&2
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq librocksdb-dev libclang-dev
fi

export ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu
cargo build --release --quiet
exec ./target/release/storage-peers "$@"
