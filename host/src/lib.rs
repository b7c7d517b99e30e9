//! # dwa — the host
//!
//! A declarative task orchestrator. The map, from request to result:
//!
//! - [`model`]: the task JSON and the API's answers (the wire contract).
//! - [`template`]: `{{ ... }}` templates, parsed once, resolved per step.
//! - [`plan`]: validation and planning into a dependency graph (petgraph);
//!   [`chunking`] first expands chunked steps into split, parts and merge.
//! - [`catalog`]: which tasks exist and which backend serves each; [`schema`]
//!   checks inputs against the JSON Schema a backend announces.
//! - [`store`]: the durable queue and state behind one trait
//!   ([`store::sqlite`] embedded by default).
//! - [`engine`]: worker pools per queue that lease step jobs, run them,
//!   retry with backoff, time out, cancel, and record each transition.
//! - [`executor`], [`backend`], [`builtin`]: where a step runs — the HTTP
//!   backend protocol (Modal, Ray, local) or the builtin diagnostics tasks.
//! - [`plugins`]: the WebAssembly plugin host (wasmtime components, WIT in
//!   `wit/`), and [`effects`]: lifecycle effects run through it.
//! - [`retry`]: backoff arithmetic.
//! - [`visualize`]: mermaid diagrams of a task.
//! - [`api`]: the axum HTTP API, SSE and OpenAPI.
//! - [`discovery`]: reads backend catalogs into the merged catalog.
//! - [`server`]: wires store, engine and router from a [`config::Config`].
//! - [`config`]: settings from the environment.

/// mimalloc instead of the system allocator: the engine allocates many small,
/// short-lived values across threads (events, results, futures), where
/// glibc's malloc was a third of the host's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod backend;
pub mod builtin;
pub mod catalog;
pub mod chunking;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod effects;
pub mod engine;
pub mod executor;
pub mod model;
pub mod plan;
pub mod plugins;
pub mod retry;
pub mod schema;
pub mod server;
pub mod store;
pub mod template;
pub mod visualize;
