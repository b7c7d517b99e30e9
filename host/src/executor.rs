//! Runs one try of one step on the backend its placement names: builtin
//! tasks in-process, everything else over the backend protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::backend::HttpBackend;
use crate::plugins::Plugins;
use crate::plugins::runtime::CallError;

/// Whether a plugin failure may pass on another try: the plugin's own word,
/// or, for the host's reasons, whether they may change (a reload, a free slot).
fn step_error(e: CallError) -> StepError {
    let retryable = match &e {
        CallError::Plugin { retryable, .. } => *retryable,
        CallError::Deadline { .. } | CallError::Host { .. } => true,
        CallError::Memory { .. } | CallError::Fuel { .. } | CallError::Trap { .. } => false,
    };
    StepError {
        message: e.to_string(),
        retryable,
    }
}

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
    plugins: Option<Arc<Plugins>>,
}

impl Executor {
    /// An executor for the given HTTP backends (builtin is always there).
    pub fn new(backends: Vec<Arc<HttpBackend>>) -> Self {
        Executor {
            backends: backends.into_iter().map(|b| (b.name.clone(), b)).collect(),
            plugins: None,
        }
    }

    /// Runs `wasm` tasks on these plugins.
    pub fn with_plugins(mut self, plugins: Arc<Plugins>) -> Self {
        self.plugins = Some(plugins);
        self
    }

    /// The configured HTTP backends.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<HttpBackend>> {
        self.backends.values()
    }

    /// Runs one try; the caller enforces the timeout and cancellation.
    pub async fn run(&self, backend: &str, call: StepCall) -> Result<Value, StepError> {
        match backend {
            "builtin" => crate::builtin::run(&call.task, call.input, call.attempt).await,
            "wasm" => match &self.plugins {
                Some(p) => p
                    .run_task(&call.task, &call.input, &call.task_id)
                    .await
                    .map_err(step_error),
                None => Err(StepError::permanent("plugins are disabled on this host")),
            },
            other => match self.backends.get(other) {
                Some(b) => b.run(&call).await,
                None => Err(StepError::permanent(format!(
                    "backend {other:?} is not configured on this host"
                ))),
            },
        }
    }
}
