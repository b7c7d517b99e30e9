//! Running a failed or cancelled task again from where it stopped
//! (`POST /api/tasks/:id/retry`; docs/tasks.md, "Re-running a task"):
//! completed steps keep their results, the others run again, optionally
//! with a new payload that must plan as the task did.

use std::sync::Arc;

use serde_json::Value;

use dwa_core::model::TaskView;
use dwa_store::Lifecycles;

use super::{Engine, EngineError};

impl Engine {
    /// Re-runs task `id` from its failed (or cancelled) steps; with
    /// `payload`, the task's payload is replaced first and the task checked
    /// again as a submission would be (same steps, new inputs).
    pub async fn rerun(
        self: &Arc<Self>,
        id: &str,
        payload: Option<Value>,
    ) -> Result<TaskView, EngineError> {
        let mut stored = self.stored_spec(id).await?;
        let spec_json = match payload {
            None => None,
            Some(payload) => {
                stored.spec.payload = payload;
                let plan =
                    dwa_core::plan::plan(stored.spec.clone(), &self.catalog(), &self.config.limits)
                        .map_err(EngineError::Invalid)?;
                if plan.steps.len() != stored.placements.len() {
                    return Err(EngineError::Conflict(format!(
                        "with this payload task {id} plans into {} steps, not the {} it ran: submit it as a new task",
                        plan.steps.len(),
                        stored.placements.len()
                    )));
                }
                Some(serde_json::to_string(&stored).map_err(|e| {
                    EngineError::Internal(format!("cannot serialise the task: {e}"))
                })?)
            }
        };
        let effects = Lifecycles {
            on_pending: !stored.spec.on_pending.is_empty(),
            on_success: !stored.spec.on_success.is_empty(),
            on_error: !stored.spec.on_error.is_empty(),
        };
        let t = self.store.resume(id, spec_json, effects).await?;
        // The plan this host kept (and the results it saw) belong to the last run.
        Self::lock(&self.states).remove(id);
        self.wake(&t);
        self.get(id).await
    }
}
