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
# shellcheck source=bench/redis/under-callgrind.sh
source bench/redis/under-callgrind.sh
scripts() {
    "$venv/bin/python" bench/redis/scripts.py --port "$port" --tasks "$1" --dir "$dir" --quiet
}
a=$(under_callgrind scripts "$n")
b=$(under_callgrind scripts $((2 * n)))
echo "redis-server instructions per task: $(( (b - a) / n )) ($n vs $((2 * n)) tasks)"
