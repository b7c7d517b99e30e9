//! # dwa-engine — runs planned tasks
//!
//! Sits on [`dwa_core`] (what a task is), [`dwa_store`] (where it is kept)
//! and [`dwa_plugins`] (the WebAssembly host); the binary wires it to HTTP
//! (docs/architecture.md).
//!
//! - [`engine`]: worker pools per queue that lease step jobs, run them,
//!   retry with backoff, time out, cancel, and record each transition;
//!   [`engine::effects`] fires lifecycle effects through the plugins.
//! - [`executor`]: sends one try of a step where its placement says:
//!   builtin tasks in-process (`builtin`, internal), [`backend`] over the HTTP backend
//!   protocol (Modal, Ray Serve, the local Python server), or a wasm
//!   transform plugin.
//! - [`discovery`]: reads the backends' catalogs into the merged catalog.
//! - [`meters`]: what the engine counts and times for `GET /metrics`.
//! - [`traces`]: a task's trace context, kept with it and handed on.
//! - [`views`]: the task and plan views the API answers with.
//! - `transient` (internal): the host's own retries of a store briefly away.

pub mod backend;
pub mod discovery;
pub mod engine;
pub mod executor;
pub mod meters;
pub mod signals;
pub mod traces;

mod builtin;
mod transient;
pub mod views;
