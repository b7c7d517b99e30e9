//! `builtin.wait` steps on the embedded store (`Store::park`,
//! `Store::signal`): a parked step's job stays in `jobs`, not held, due at
//! the wait's timeout; a signal in time removes it and completes the step.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::Writer;
use crate::{Job, StoreError, Transition};
use dwa_core::model::TaskEvent;

impl Writer {
    pub(super) fn park(
        &mut self,
        job: &Job,
        until: i64,
        data: Value,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.give_back_later(job, until)?;
        self.conn
            .prepare_cached("UPDATE steps SET status = 'waiting' WHERE task_id = ?1 AND idx = ?2")?
            .execute(params![job.task_id, job.step])?;
        let step = self.step_row(&job.task_id, job.step)?;
        self.emit(&job.task_id, "step:wait", Some(&step), data, now, ev)?;
        Ok(Transition {
            woke: Vec::new(),
            finished: None,
            ..Default::default()
        })
    }

    pub(super) fn signal(
        &mut self,
        task: &str,
        step: u32,
        result: Value,
        until: Option<i64>,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        let status = self.status_of(task)?;
        let row: Option<(String, String)> = self
            .conn
            .prepare_cached("SELECT status, key FROM steps WHERE task_id = ?1 AND idx = ?2")?
            .query_row(params![task, step], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((step_status, key)) = row else {
            return Err(StoreError::NotFound(format!("{task} step {step}")));
        };
        if status.is_terminal() || step_status != "waiting" {
            return Err(StoreError::Conflict(format!(
                "step {key:?} of task {task} is not waiting for a signal (the task is {}, the step {step_status})",
                status.as_str()
            )));
        }
        // Not held and not yet due: the wait has not timed out.
        let due: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT run_at FROM jobs WHERE task_id = ?1 AND step = ?2 AND item = -1 AND state IN (0, 2)",
            )?
            .query_row(params![task, step], |r| r.get(0))
            .optional()?;
        match due {
            Some(at) if at > now && until.is_none_or(|u| u == at) => {}
            Some(at) if at > now => {
                return Err(StoreError::Conflict(format!(
                    "this signal link is for an earlier wait of step {key:?}"
                )));
            }
            _ => {
                return Err(StoreError::Conflict(format!(
                    "the wait of step {key:?} timed out"
                )));
            }
        }
        self.conn
            .prepare_cached("DELETE FROM jobs WHERE task_id = ?1 AND step = ?2 AND item = -1")?
            .execute(params![task, step])?;
        let mut t = Transition::default();
        self.finish_step(task, step, result, now, ev, &mut t)?;
        Ok(t)
    }
}
