//! Steps that end without a result of their own (docs/tasks.md,
//! "Branches"): skipped by their `if` or a failed ancestor, or failed under
//! a policy that lets the task go on. Their dependants are released as a
//! completion would release them.

use std::sync::Arc;

use rusqlite::params;
use serde_json::{Value, json};

use dwa_core::model::TaskEvent;

use super::Writer;
use super::ops::Finish;
use crate::{Job, StepEnd, StoreError, Transition};

impl Writer {
    pub(in crate::sqlite) fn end_step(
        &mut self,
        job: &Job,
        end: &StepEnd,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.take_leased(job)?;
        if job.item.is_some() {
            // The step ends with this item: its other items are dropped
            // (one held elsewhere finds its lease gone).
            self.conn
                .prepare_cached("DELETE FROM jobs WHERE task_id = ?1 AND step = ?2")?
                .execute(params![job.task_id, job.step])?;
            self.conn
                .prepare_cached("DELETE FROM items WHERE task_id = ?1 AND step = ?2")?
                .execute(params![job.task_id, job.step])?;
        }
        let mut t = Transition::default();
        let (result, how) = match end {
            StepEnd::Skipped(reason) => (Value::Null, Finish::Skipped(reason)),
            StepEnd::Failed(error) => (
                json!({"$error": error}),
                Finish::Failed {
                    error,
                    attempt: job.attempt,
                    item: job.item,
                },
            ),
        };
        self.finish_step_as(&job.task_id, job.step, result, &how, now, ev, &mut t)?;
        Ok(t)
    }
}
