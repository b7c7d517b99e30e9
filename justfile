# dwa — the two commands are `just serve` and `just test` (see README.md).

set shell := ["bash", "-euo", "pipefail", "-c"]

# Two cores here: keep cargo from starting more jobs than that.
export CARGO_BUILD_JOBS := env_var_or_default("CARGO_BUILD_JOBS", "2")

# List the recipes.
default:
    @just --list

# Build the plugins and an optimised host, then start it on the embedded store (PORT, DWA_DATA_DIR, ... from the environment).
serve: build-plugins
    cargo run --release --bin dwa -- serve

# `just serve` with the local Python backend beside it on :8000 (the seed's Python tasks run too); both stop together.
serve-all: build-plugins python-setup
    #!/usr/bin/env bash
    set -euo pipefail
    .venv/bin/python -m backends.local --port 8000 &
    backend=$!
    trap 'kill $backend 2>/dev/null || true' EXIT
    # The host reads the backend's catalog as it starts: wait (at most a
    # minute) for the backend to answer first.
    for _ in $(seq 300); do
        curl -sf http://127.0.0.1:8000/health >/dev/null && break
        kill -0 $backend 2>/dev/null || { echo "the Python backend did not start" >&2; exit 1; }
        sleep 0.2
    done
    LOCAL_BACKEND_URL=http://127.0.0.1:8000 cargo run --release --bin dwa -- serve

# Install what the tests need, then run formatting, lints and every test.
test: test-setup
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    .venv/bin/python -m shared.tasks.gen --check
    .venv/bin/python -m pytest -q tests/python
    # The transforms' own code, natively: unit tests of plugins/transforms/*/src.
    cargo test --manifest-path plugins/Cargo.toml -p dwa-bench-native
    cargo test --workspace --lib --tests --no-run
    # Compile every plugin once into the tests' shared artifact cache, so that
    # the tests' hosts do not all compile the same components at once. With
    # the binary the tests run: `cargo run` would build the host crates again
    # without dwa-store's test-support feature.
    DWA_PLUGIN_DIR=plugins/dist DWA_PLUGIN_CACHE_DIR=target/dwa-test-plugin-cache RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/debug/dwa" plugins --load
    cargo test --workspace --lib --tests

# What the tests need beyond Rust itself: the plugins (wasm32-wasip2 target,
# componentize-py, componentize-js), the Python backend environment, the
# TypeScript client, a redis-server binary (the tests start their own), and
# chromium with playwright-core for the dashboard's browser test.
test-setup: build-plugins python-setup build-client
    bash scripts/install-redis.sh
    bash scripts/install-browser.sh

# The TypeScript client (clients/ts): its pinned TypeScript from npm, compiled to clients/ts/dist.
build-client:
    cd clients/ts && npm ci --no-audit --no-fund --loglevel=error && npx tsc -p .

# The backends' Python environment (.venv, backends/requirements.txt).
python-setup:
    bash scripts/python-setup.sh

# The real model runs that `just test` skips (pytest marker `heavy`: Piper,
# faster-whisper, sentence-transformers, RapidOCR, Silero VAD), in their own
# .venv-heavy (torch makes it several GB).
test-heavy:
    bash scripts/python-setup.sh .venv-heavy backends/requirements-heavy.txt
    .venv-heavy/bin/python -m pytest -q tests/python -m heavy

# Regenerate shared/catalog.json and clients/ts/tasks.ts from the @task decorators.
gen-types: python-setup
    .venv/bin/python -m shared.tasks.gen

# Fail when shared/catalog.json or clients/ts/tasks.ts is stale.
check-types: python-setup
    .venv/bin/python -m shared.tasks.gen --check

# The local Python backend (http://127.0.0.1:8000); start the host with LOCAL_BACKEND_URL=http://127.0.0.1:8000.
backend-local: python-setup
    .venv/bin/python -m backends.local --port 8000

# Build every plugin into plugins/dist (and the test plugins into plugins/dist-testing).
build-plugins:
    bash scripts/build-plugins.sh

# Scaffold a plugin that builds and loads as is: `just new-plugin KIND LANG NAME`
# (KIND effect|functions|transform, LANG rust|python|js), or `just new-plugin NAME` (a Rust effect).
new-plugin +ARGS:
    bash scripts/new-plugin.sh {{ARGS}}

# Property-based fuzzing (proptest) of task parsing and planning, templates
# and the JSON Schema checker, from a fresh seed: CASES per property
# (`just test` runs 256 with a fixed seed). A failure prints the smallest
# input that breaks the property and the seed to replay it (DWA_FUZZ_SEED).
fuzz CASES="100000":
    DWA_FUZZ_CASES={{CASES}} DWA_FUZZ_SEED=random cargo test -p dwa-core --test properties

# Benchmarks (release build): engine steps/s, HTTP submissions/s, plugin calls
# and loads, transforms as plugins vs native, template resolutions, the host →
# Python backend hop (local and Ray Serve), Redis with 1 and 2 hosts (and a
# wide DAG and a forEach on Redis), BullMQ on the same Redis, and a release
# host's idle memory with and without its plugins (bench/idle-memory.sh).
bench: build-plugins python-setup
    bash scripts/bench.sh

# Why: timings swing on shared machines; callgrind counts do not (needs valgrind).
# Instructions redis-server spends per task in dwa's Redis scripts.
bench-redis-scripts:
    bash bench/redis/callgrind.sh

# Redis CPU of this tree's scripts against BASE's on the calls of one captured `dag` run; ROUNDS=callgrind counts instructions (docs/benchmarks.md).
bench-redis-replay BASE="HEAD" ROUNDS="5":
    bash bench/redis-replay/run.sh {{BASE}} {{ROUNDS}}

# Load every built plugin (compiling it into the cache) and list what each provides.
check-plugins: build-plugins
    cargo run -q --bin dwa -- plugins --load

# Build the container images (needs a Docker engine): dwa:latest (the host
# with its first-party plugins) and dwa-backend:latest (the local Python
# backend); `docker compose up` runs them with Redis (compose.yaml).
image:
    docker build --target host -t dwa:latest .
    docker build --target backend -t dwa-backend:latest .

# Print the OpenAPI document.
openapi:
    cargo run -q --bin dwa -- openapi
