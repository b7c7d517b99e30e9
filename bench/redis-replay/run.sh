#!/usr/bin/env bash
# The Redis scripts' own cost before and after a change to them
# (docs/benchmarks.md, "Redis scripts"): captures the calls one `dag` run of
# this tree's host makes to Redis, then replays them, alternating, with the
# scripts of BASE (a git revision, HEAD by default) and with this tree's.
# Both must take the same arguments: the replay sends the captured ones.
# ROUNDS=callgrind counts redis-server's instructions for each instead
# (valgrind; deterministic, ~1 minute each), as bench/redis/callgrind.sh
# does for single-step tasks.
# usage: bench/redis-replay/run.sh [BASE] [ROUNDS|callgrind]
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${1:-HEAD}
rounds=${2:-5}
bash scripts/install-redis.sh >/dev/null
(cd bench/bullmq && { [ -d node_modules ] || npm install --no-audit --no-fund --silent; })
work=$(mktemp -d)
port=$(python3 scripts/free-port.py)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
redis_pid=$!
monitor_pid=""
trap 'kill $redis_pid $monitor_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
scripts=host/dwa-store/src/redis
mkdir "$work/base"
for f in "$scripts"/*.lua; do
    git show "$base:$f" >"$work/base/$(basename "$f")"
    # Loaded first, so that no call of the capture is a NOSCRIPT the replay would run.
    [ "$(basename "$f")" = lib.lua ] || { cat "$scripts/lib.lua"; echo; cat "$f"; } | redis-cli -p "$port" -x SCRIPT LOAD >/dev/null
done
redis-cli -p "$port" MONITOR >"$work/capture.txt" &
monitor_pid=$!
REDIS_URL="redis://127.0.0.1:$port" DWA_BENCH_SCENARIO=dag cargo bench -p dwa --bench engine | grep '^DAG'
kill "$monitor_pid"
if [ "$rounds" != callgrind ]; then
    node bench/redis-replay/replay.js "$work/capture.txt" "$scripts" "$work/base" "$scripts" "$port" "$rounds" |
        sed "s|$work/base|$base|"
    exit 0
fi
# Each set of scripts on a redis-server of its own under callgrind: two
# replays (replay.js's one round), then its instruction total.
# shellcheck source=bench/redis/under-callgrind.sh
source bench/redis/under-callgrind.sh
replay() {
    node bench/redis-replay/replay.js "$work/capture.txt" "$scripts" "$1" "$1" "$port" 1 | head -1
}
for dir in "$work/base" "$scripts"; do
    echo "$dir: redis-server instructions for two replays: $(under_callgrind replay "$dir")" | sed "s|$work/base|$base|"
done
