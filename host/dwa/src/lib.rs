//! # dwa — the host binary's library
//!
//! The top of the crate graph (docs/architecture.md): it wires the layers
//! below into a running host and puts HTTP in front of them.
//!
//! - [`config`]: settings from the environment (docs/configuration.md).
//! - [`server`]: opens the store, loads plugins and backends, builds the
//!   catalog and the engine, and serves [`api`].
//! - [`api`]: the axum HTTP API, SSE and OpenAPI (docs/api.md).
//! - [`followers`]: the limits on event-stream clients.
//! - [`telemetry`]: log lines, and traces exported over OTLP.
//! - [`taskfile`]: JSON and YAML task files for the CLI.
//! - [`validate`]: the host's validation offline (`dwa validate`).
//!
//! Below it: `dwa_engine` runs tasks, `dwa_plugins` hosts WebAssembly
//! plugins, `dwa_store` keeps the queue and state, and `dwa_core` says what
//! a task is and how it is planned.

/// mimalloc instead of the system allocator: the engine allocates many small,
/// short-lived values across threads (events, results, futures), where
/// glibc's malloc was a third of the host's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod config;
pub mod followers;
pub mod server;
pub mod taskfile;
pub mod telemetry;
pub mod validate;
