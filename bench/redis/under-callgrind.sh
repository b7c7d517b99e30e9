# Sourced by bench/redis/callgrind.sh and bench/redis-replay/run.sh.
# under_callgrind CMD...: starts a redis-server under callgrind on a free
# loopback port, runs CMD with that port in $port (its output goes to
# stderr), stops the server and prints the instructions it executed, or
# fails when CMD did.
under_callgrind() {
    local out pid
    port=$(python3 scripts/free-port.py)
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" \
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.2; done
    local status=0
    "$@" >&2 || status=$?
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" || true
    # A count of a run that failed part-way means nothing: no number then.
    if [ "$status" -ne 0 ]; then
        echo "under_callgrind: $* failed ($status)" >&2
        rm -f "$out"
        return "$status"
    fi
    sed -n 's/^summary: //p; s/^totals: //p' "$out" | head -1
    rm -f "$out"
}
