//! The crate graph of docs/architecture.md, checked with `cargo tree`:
//! dependencies point one way, and each crate is free of what it must not
//! touch (dwa-core: no async runtime, WebAssembly, HTTP server or
//! database).

use std::process::Command;

/// The crates and features `package` is built with, one per line.
fn tree(package: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal,features",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run cargo tree: {e}"),
    };
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails naming every crate in `forbidden` that `package` depends on.
fn assert_free_of(package: &str, forbidden: &[&str]) {
    let tree = tree(package);
    let found: Vec<&str> = forbidden
        .iter()
        .copied()
        .filter(|name| {
            let (crate_line, feature_line) = (format!("{name} v"), format!("{name} feature "));
            tree.lines()
                .any(|l| l.starts_with(&crate_line) || l.starts_with(&feature_line))
        })
        .collect();
    assert!(
        found.is_empty(),
        "{package} must not depend on {found:?} (docs/architecture.md)"
    );
}

#[test]
fn core_has_no_runtime_wasm_http_server_or_database() {
    assert_free_of(
        "dwa-core",
        &[
            "wasmtime",
            "axum",
            "hyper",
            "rusqlite",
            "redis",
            "reqwest",
            "mio",
            "dwa-store",
            "dwa-plugins",
            "dwa-engine",
        ],
    );
    // tokio is there for the channel type of the step contract only.
    let tree = tree("dwa-core");
    assert!(
        !tree.lines().any(|l| l.starts_with("tokio feature \"rt")),
        "dwa-core must not build tokio's runtime:\n{tree}"
    );
}

#[test]
fn store_knows_nothing_of_plugins_engine_or_http_serving() {
    assert_free_of(
        "dwa-store",
        &["wasmtime", "axum", "dwa-plugins", "dwa-engine"],
    );
}

#[test]
fn plugins_know_nothing_of_stores_or_the_engine() {
    assert_free_of(
        "dwa-plugins",
        &["rusqlite", "redis", "axum", "dwa-store", "dwa-engine"],
    );
}

#[test]
fn engine_serves_no_http() {
    assert_free_of("dwa-engine", &["axum"]);
}

#[test]
fn the_client_is_http_and_wire_types_only() {
    assert_free_of(
        "dwa-client",
        &[
            "wasmtime",
            "axum",
            "rusqlite",
            "redis",
            "dwa-store",
            "dwa-plugins",
            "dwa-engine",
        ],
    );
}
