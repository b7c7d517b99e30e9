#!/usr/bin/env bash
# Instructions redis-server spends per single-step task in dwa's scripts,
# counted by callgrind (deterministic, unlike timings on a shared machine):
# runs scripts.py with N and 2N tasks and prints the difference per task.
#   bash bench/redis/callgrind.sh [N=1280] [scripts dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1280}
dir=${2:-host/dwa-store/src/redis}
venv=target/bench-redis-venv
[ -x "$venv/bin/python" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "redis==8.1.0"; }
count() {
    local port out
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" redis-server --port "$port" --save '' --appendonly no >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 1 300); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
    "$venv/bin/python" bench/redis/scripts.py --port "$port" --tasks "$1" --dir "$dir" --quiet
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" || true
    sed -n 's/^summary: //p; s/^totals: //p' "$out" | head -1
    rm -f "$out"
}
a=$(count "$n")
b=$(count $((2 * n)))
echo "redis-server instructions per task: $(( (b - a) / n )) ($n vs $((2 * n)) tasks)"
