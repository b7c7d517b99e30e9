//! `builtin.subtask` steps (docs/tasks.md, "Sub-tasks"): on its first run a
//! step's job plans its child (the step's input merged into the child's
//! payload) and spawns it, parked until the step's timeout; the store makes
//! the job due again when the child ends, and the step then ends as the
//! child did. A parent that ends otherwise cancels its live children.

use std::sync::Arc;

use serde_json::Value;

use dwa_core::model::TaskStatus;
use dwa_core::plan::PlannedStep;
use dwa_core::step::StepError;
use dwa_store::{Job, StoreError};

use super::run::{Outcome, PrepError};
use super::submit::{Built, prepare};
use super::{Engine, TaskState};

/// The child's payload: the step's input over the sub-task's own payload
/// (key by key when both are objects).
fn payload_for(own: Value, input: Value) -> Value {
    match (own, input) {
        (Value::Object(mut own), Value::Object(input)) => {
            own.extend(input);
            Value::Object(own)
        }
        (own, Value::Object(input)) if input.is_empty() => own,
        (_, input) => input,
    }
}

impl Engine {
    /// Runs a sub-task step's job: spawns its child, or ends as its child did.
    pub(super) async fn subtask(
        self: &Arc<Self>,
        job: &Job,
        step: &PlannedStep,
        state: &TaskState,
        input: Value,
    ) -> Result<Option<Outcome>, PrepError> {
        let store_failed = |e: StoreError| PrepError::Store(format!("sub-task: {e}"));
        if let Some(child) = self.store.child_of(job).await.map_err(store_failed)? {
            return self.child_outcome(&child).await.map(Some);
        }
        let spec = step
            .subtask
            .as_deref()
            .ok_or_else(|| StepError::permanent("the step has no subtask"))?;
        let lineage = state.lineage.saturating_add(1);
        if lineage > self.config.limits.max_lineage_depth {
            return Err(StepError::permanent(format!(
                "the chain of tasks made by other tasks would be {lineage} long; DWA_MAX_LINEAGE_DEPTH is {}",
                self.config.limits.max_lineage_depth
            ))
            .into());
        }
        let mut spec = spec.clone();
        spec.payload = payload_for(std::mem::take(&mut spec.payload), input);
        let plan =
            dwa_core::plan::plan(spec, &self.catalog(), &self.config.limits).map_err(|errs| {
                let first = errs
                    .first()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .unwrap_or_default();
                StepError::permanent(format!("the sub-task does not plan: {first}"))
            })?;
        let prepared = prepare(plan, lineage, crate::traces::current())
            .map_err(|e| StepError::permanent(e.to_string()))?;
        let Built {
            new,
            plan,
            lineage,
            trace,
            created,
        } = self
            .build(prepared)
            .map_err(|e| StepError::permanent(e.to_string()))?;
        let pending = self.adopt(&created.id, plan, lineage, trace);
        let until = self
            .store
            .now_ms()
            .saturating_add(i64::try_from(step.placement.timeout_ms).unwrap_or(i64::MAX));
        match self.store.spawn(job, &step.key, new, until).await {
            Ok(t) => {
                self.wake(&t);
                if pending {
                    self.outbox_wake.notify_one();
                }
                Ok(None)
            }
            Err(e) => {
                self.forget(&created.id);
                match e {
                    StoreError::LeaseLost(_) => Ok(None),
                    e => Err(store_failed(e)),
                }
            }
        }
    }

    /// How the step ends given its child: with its result, its failure, or
    /// (the step's timeout came first) cancelled and failed.
    async fn child_outcome(self: &Arc<Self>, child: &str) -> Result<Outcome, PrepError> {
        let rec = self
            .store
            .task_summary(child)
            .await
            .map_err(|e| PrepError::Store(format!("sub-task {child}: {e}")))?;
        Ok(match rec {
            Some(t) if t.status == TaskStatus::Completed => {
                Outcome::Done(t.result.unwrap_or(Value::Null))
            }
            Some(t) if t.status.is_terminal() => Outcome::Failed(StepError::permanent(format!(
                "sub-task {child} {}: {}",
                t.status.as_str(),
                t.error.unwrap_or_default()
            ))),
            Some(_) => {
                self.cancel_quietly(child).await;
                Outcome::Failed(StepError::permanent(format!(
                    "sub-task {child} did not end within the step's timeout (resources.timeout); it was cancelled"
                )))
            }
            None => Outcome::Failed(StepError::permanent(format!(
                "sub-task {child} is no longer kept"
            ))),
        })
    }

    /// Cancels a task without answering its view; one that ended already is fine.
    async fn cancel_quietly(self: &Arc<Self>, id: &str) {
        match self.store.cancel(id).await {
            Ok(t) => {
                self.finished(id, TaskStatus::Cancelled);
                self.wake(&t);
            }
            Err(StoreError::Conflict(_) | StoreError::NotFound(_)) => {}
            Err(e) => tracing::warn!(task = %id, error = %e, "could not cancel a sub-task"),
        }
    }

    /// Cancels the live children of a task that ended other than completed
    /// (each child's own end cancels its children in turn).
    pub(super) fn cancel_children(self: &Arc<Self>, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let children = match me.store.live_children(&id).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "could not list the sub-tasks to cancel");
                    return;
                }
            };
            for child in children {
                me.cancel_quietly(&child).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::payload_for;

    #[test]
    fn the_input_goes_over_the_subtasks_own_payload() {
        assert_eq!(
            payload_for(json!({"a": 1, "b": 1}), json!({"b": 2})),
            json!({"a": 1, "b": 2})
        );
        assert_eq!(payload_for(json!({"a": 1}), json!({})), json!({"a": 1}));
        assert_eq!(payload_for(json!({"a": 1}), json!([1])), json!([1]));
    }
}
