# dwa — the two commands are `just serve` and `just test` (see README.md).

set shell := ["bash", "-euo", "pipefail", "-c"]

# Two cores here: keep cargo from starting more jobs than that.
export CARGO_BUILD_JOBS := env_var_or_default("CARGO_BUILD_JOBS", "2")

# List the recipes.
default:
    @just --list

# Build and start the host on the embedded store (PORT, DWA_DATA_DIR, ... from the environment).
serve:
    cargo build --bin dwa
    ./target/debug/dwa serve

# Install what the tests need, then run formatting, lints and every test.
test: test-setup
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    cargo test --workspace --lib --bins --tests

# What the tests need beyond Rust itself (nothing yet for the spine).
test-setup:
    @echo "test setup: nothing to install"

# Benchmarks (release build): engine steps/s and HTTP submissions/s with peak RSS.
bench:
    cargo bench -p dwa --bench engine

# Print the OpenAPI document.
openapi:
    cargo run -q --bin dwa -- openapi
