#!/usr/bin/env bash
# Idle memory of a release host (#16, item 4), in three starts: no plugins;
# every first-party plugin with an empty artifact cache (compiled by child
# processes; the host's peak is VmHWM); the same again with the cache warm.
# Each host is read 5 s after it says it listens. Linux only (/proc).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin dwa --quiet
bin="${CARGO_TARGET_DIR:-target}/release/dwa"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
measure() { # label, plugin dir
    PORT=0 DWA_DATA_DIR="$work/data-$1" DWA_PLUGIN_DIR="$2" DWA_PLUGIN_CACHE_DIR="$work/cache" \
        RUST_LOG=warn "$bin" serve >"$work/$1.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 1200); do
        grep -q "listening" "$work/$1.log" && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/$1.log" >&2; exit 1; }
        sleep 0.25
    done
    sleep 5
    local rss hwm
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    printf '%-44s RSS %6.1f MB   peak %6.1f MB   %s\n' "idle host, $1" "$(echo "$rss/1024" | bc -l)" "$(echo "$hwm/1024" | bc -l)" "$3"
    # For scripts/bench.sh's summary.
    printf 'BENCH idle.%s.rss_mb=%.1f\nBENCH idle.%s.peak_mb=%.1f\n' "$4" "$(echo "$rss/1024" | bc -l)" "$4" "$(echo "$hwm/1024" | bc -l)"
}
measure "no plugins" /nonexistent "(a bare host)" bare
measure "all plugins, cold cache" plugins/dist "(target: peak <= 150 MB)" cold
measure "all plugins, warm cache" plugins/dist "(target: RSS <= 50 MB)" warm
