//! `builtin.wait` steps (docs/tasks.md, "Waiting for a signal"): on its
//! first try a wait step is parked in the store until its timeout, and a
//! `step:wait` event gives its signal name and signed link; a signal in
//! time completes it with its payload; run again, its timeout has passed.

use std::sync::Arc;

use serde_json::{Value, json};

use dwa_core::limits;
use dwa_core::model::TaskView;
use dwa_core::plan::{FieldError, Plan, PlannedStep, wait_name, wait_timeout};
use dwa_core::step::StepError;
use dwa_store::{Job, StoreError};

use super::run::{Outcome, PrepError};
use super::{Engine, EngineError, StoredSpec};

impl Engine {
    /// Parks a wait step on its first try; fails it once its timeout came.
    pub(super) async fn wait(
        self: &Arc<Self>,
        job: &Job,
        step: &PlannedStep,
        input: &Value,
    ) -> Result<Option<Outcome>, PrepError> {
        let name = wait_name(step).unwrap_or_else(|| step.key.clone());
        let timeout = wait_timeout(input);
        if job.attempt > 1 {
            return Ok(Some(Outcome::Failed(StepError::permanent(format!(
                "no signal {name:?} came within {timeout} ms"
            )))));
        }
        let until = self
            .store
            .now_ms()
            .saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX));
        let data = json!({
            "name": name,
            "until": until,
            "timeoutMs": timeout,
            "signalUrl": self.config.signals.link(&job.task_id, job.step, until),
        });
        match self.store.park(job, until, data).await {
            Ok(t) => {
                self.wake(&t);
                Ok(None)
            }
            Err(StoreError::LeaseLost(_)) => Ok(None),
            Err(e) => Err(PrepError::Store(format!("cannot park the wait: {e}"))),
        }
    }

    /// Sends signal `name` to task `id`: the wait step of that name
    /// completes with `payload` as its result.
    pub async fn signal(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        payload: Value,
    ) -> Result<TaskView, EngineError> {
        let plan = self.stored_plan(id).await?;
        let waits: Vec<(String, u32)> = plan
            .steps
            .iter()
            .filter_map(|s| wait_name(s).map(|n| (n, s.idx as u32)))
            .collect();
        let Some((_, step)) = waits.iter().find(|(n, _)| n == name) else {
            let known: Vec<&str> = waits.iter().map(|(n, _)| n.as_str()).collect();
            return Err(EngineError::Invalid(vec![FieldError {
                step: None,
                field: "name".into(),
                message: format!(
                    "task {id} has no builtin.wait step named {name:?} (its signal names: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            }]));
        };
        self.deliver_signal(id, *step, payload, None).await
    }

    /// Sends the signal of a signed link (`POST /api/signals/{token}`): a
    /// link that does not verify is not found.
    pub async fn signal_link(
        self: &Arc<Self>,
        token: &str,
        payload: Value,
    ) -> Result<TaskView, EngineError> {
        let (id, step, until) = self
            .config
            .signals
            .verify(token)
            .ok_or_else(|| EngineError::NotFound("signal link".into()))?;
        self.deliver_signal(&id, step, payload, Some(until)).await
    }

    async fn deliver_signal(
        self: &Arc<Self>,
        id: &str,
        step: u32,
        payload: Value,
        until: Option<i64>,
    ) -> Result<TaskView, EngineError> {
        let l = &self.config.limits;
        limits::check_shape(
            &payload,
            l.max_json_depth,
            l.max_result_bytes,
            "the signal's payload in bytes",
            "DWA_MAX_RESULT_BYTES",
        )
        .map_err(|e| {
            EngineError::Invalid(vec![FieldError {
                step: None,
                field: "payload".into(),
                message: e.to_string(),
            }])
        })?;
        let t = self.store.signal(id, step, payload, until).await?;
        self.wake(&t);
        self.get(id).await
    }

    /// A task's stored form (spec and placements), for a request about it.
    pub(super) async fn stored_spec(&self, id: &str) -> Result<StoredSpec, EngineError> {
        let text = self
            .store
            .spec(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        serde_json::from_str(&text).map_err(|e| {
            EngineError::Internal(format!("task {id}: its stored spec is unreadable: {e}"))
        })
    }

    /// A task's plan as stored, without keeping it (the task may be over).
    pub(super) async fn stored_plan(&self, id: &str) -> Result<Plan, EngineError> {
        let stored = self.stored_spec(id).await?;
        Plan::restore(stored.spec, &stored.placements).map_err(|errs| {
            EngineError::Internal(format!(
                "task {id} no longer plans: {}",
                errs.first().map(|e| e.message.as_str()).unwrap_or("")
            ))
        })
    }
}
