#!/usr/bin/env bash
# `just bench`: the engine benchmarks (release build), with a throwaway
# redis-server for the Redis scenarios, then BullMQ on the same Redis as the
# yardstick. Numbers depend on the machine: compare ratios, not absolutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-redis.sh >/dev/null
port=$(python3 scripts/free-port.py)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export REDIS_URL="redis://127.0.0.1:$port"
# The transforms' code compiled natively, for the plugin/native ratios.
cargo build --release --manifest-path plugins/Cargo.toml -p dwa-bench-native
# `BENCH key=seconds` lines of dwa and BullMQ, for the ratios at the end.
figures=$(mktemp)
trap 'kill $redis_pid 2>/dev/null || true; rm -f "$figures"' EXIT
cargo bench -p dwa --bench engine -- "$@" | tee -a "$figures"
# Idle memory of a release host, with and without its plugins (#16).
bash bench/idle-memory.sh | tee -a "$figures"
if command -v node >/dev/null 2>&1; then
    (cd bench/bullmq && { [ -d node_modules ] || npm install --no-audit --no-fund --silent; } && node bench.js && BULLMQ_WORKERS=2 node bench.js && BULLMQ_KEEP=1 node bench.js && node flows.js && node latency.js) | tee -a "$figures"
else
    echo "node is missing: BullMQ comparison skipped"
fi
# Two more rounds of the DAG and latency rows, each next to its BullMQ peer:
# the machine's load drifts over a whole run, and the summary takes the
# median of the three pairs (#16 asks for medians of at least three runs).
if command -v node >/dev/null 2>&1; then
    for _ in 2 3; do
        for pair in dag:flows.js latency:latency.js; do
            DWA_BENCH_SCENARIO=${pair%%:*} cargo bench -p dwa --bench engine | tee -a "$figures"
            (cd bench/bullmq && node "${pair#*:}") | tee -a "$figures"
        done
    done
fi
# Ray's chain of 1,000 tasks, the chain's peer (python-setup installed Ray).
.venv/bin/python bench/ray/chain.py | tee -a "$figures"

# The same Redis rows again with an append-only file (fsync every second,
# Redis's durable setting), for dwa and for BullMQ: each row says which.
aof_dir=$(mktemp -d)
aof_port=$(python3 scripts/free-port.py)
redis-server --port "$aof_port" --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec --dir "$aof_dir" >/dev/null &
aof_pid=$!
trap 'kill $redis_pid $aof_pid 2>/dev/null || true; rm -rf "$aof_dir" "$figures"' EXIT
for _ in $(seq 1 100); do redis-cli -p "$aof_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export REDIS_URL="redis://127.0.0.1:$aof_port"
cargo bench -p dwa --bench engine -- redis
if command -v node >/dev/null 2>&1; then
    (cd bench/bullmq && node bench.js)
fi

# #16's targets, each beside its peer from this run (docs/benchmarks.md).
python3 bench/summary.py "$figures"
