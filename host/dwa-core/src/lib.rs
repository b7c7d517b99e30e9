//! # dwa-core — what a task is and how it is planned
//!
//! Pure logic shared by every other crate of the host: no async runtime, no
//! WebAssembly, no HTTP server, no database (docs/architecture.md).
//!
//! - [`model`]: the task JSON and the API's answers (the wire contract,
//!   docs/tasks.md and docs/api.md).
//! - [`template`]: `{{ ... }}` templates, parsed once, resolved per step;
//!   filters that plugins provide are reached through [`template::Functions`].
//! - [`schema`]: checks a step's input against the JSON Schema its backend
//!   announces.
//! - [`catalog`]: which tasks exist and which backend serves each.
//! - [`chunking`]: expands a chunked step into split, parts and merge.
//! - [`event_data`]: an event's data, parsed only when something reads it.
//! - [`limits`]: the limits every request runs within, and iterative
//!   checks of a value's depth and size.
//! - [`plan`]: validation and planning of a task into a dependency graph.
//! - [`redact`]: credentials out of URLs the host shows.
//! - [`visualize`]: mermaid diagrams of a plan.
//! - [`retry`]: backoff arithmetic of a step's retry policy.
//! - [`schedule`]: cron schedules and which of their ticks are due.
//! - [`step`]: the contract between the engine and whatever runs a step.

pub mod catalog;
pub mod chunking;
pub mod event_data;
pub mod limits;
pub mod model;
pub mod plan;
pub mod redact;
pub mod retry;
pub mod schedule;
pub mod schema;
pub mod step;
pub mod template;
pub mod visualize;
