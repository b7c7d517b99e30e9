//! Runs one try of one step on the backend its placement names: builtin
//! tasks in-process, everything else over the backend protocol.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

use dwa_core::step::{StepCall, StepError};
use dwa_plugins::Plugins;
use dwa_plugins::runtime::CallError;

use crate::backend::HttpBackend;

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
        busy_for: None,
    }
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
