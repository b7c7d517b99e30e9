//! Runs one try of one step on the backend its placement names: builtin
//! tasks in-process, everything else over the backend protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::backend::HttpBackend;

/// Why a try failed, and whether another try could succeed (apalis' distinction).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    /// What went wrong, as the task's `error` will say.
    pub message: String,
    /// Whether the retry policy may try again.
    pub retryable: bool,
}

impl StepError {
    /// An error that no retry can mend.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: false,
        }
    }

    /// An error that may pass on a later try.
    pub fn transient(message: impl Into<String>) -> Self {
        StepError {
            message: message.into(),
            retryable: true,
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

/// The backends the host can send steps to.
#[derive(Clone, Default)]
pub struct Executor {
    backends: HashMap<String, Arc<HttpBackend>>,
}

impl Executor {
    /// An executor for the given HTTP backends (builtin is always there).
    pub fn new(backends: Vec<Arc<HttpBackend>>) -> Self {
        Executor {
            backends: backends.into_iter().map(|b| (b.name.clone(), b)).collect(),
        }
    }

    /// The configured HTTP backends.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<HttpBackend>> {
        self.backends.values()
    }

    /// Runs one try; the caller enforces the timeout and cancellation.
    pub async fn run(&self, backend: &str, call: StepCall) -> Result<Value, StepError> {
        match backend {
            "builtin" => crate::builtin::run(&call.task, call.input, call.attempt).await,
            other => match self.backends.get(other) {
                Some(b) => b.run(&call).await,
                None => Err(StepError::permanent(format!(
                    "backend {other:?} is not configured on this host"
                ))),
            },
        }
    }
}
