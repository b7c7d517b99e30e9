//! The step contract: one try of one step, as every executor receives it
//! (builtin, HTTP backend, wasm), and how a try fails.

use std::time::Duration;

use serde_json::Value;

/// Why a try failed, and whether another try could succeed (apalis' distinction).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// What went wrong, as the task's `error` will say.
    pub message: String,
    /// Whether the retry policy may try again.
    pub retryable: bool,
    /// Set when the backend refused the try because it is saturated (HTTP
    /// 429): the step waits this long and goes again without it counting
    /// as a try (docs/backend-protocol.md, "Back-pressure").
    pub busy_for: Option<std::time::Duration>,
}

impl StepError {
    /// An error that no retry can mend.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: false,
            busy_for: None,
        }
    }

    /// An error that may pass on a later try.
    pub fn transient(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: true,
            busy_for: None,
        }
    }
}

/// One try of one step.
#[derive(Debug, Clone)]
pub struct StepCall {
    /// The task's id.
    pub task_id: String,
    /// The step's id (with `[i]` for a forEach item).
    pub step_id: String,
    /// The catalog task to run.
    pub task: String,
    /// The resolved input.
    pub input: Value,
    /// 1 for the first try.
    pub attempt: u32,
    /// How long the try may take.
    pub timeout: Duration,
    /// Where a streaming task's chunks go (they become `step:progress` events).
    pub progress: Option<tokio::sync::mpsc::UnboundedSender<Value>>,
}
