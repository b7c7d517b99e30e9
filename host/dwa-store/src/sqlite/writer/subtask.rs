//! Sub-tasks (docs/tasks.md, "Sub-tasks"): a held job creates its child
//! and parks waiting for it in one transaction; a child that ends makes
//! its parent's job due again in the transaction that ends it.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde_json::json;

use dwa_core::model::TaskEvent;

use super::super::{DELAYED, DUE, item_col};
use super::Writer;
use crate::{Job, NewTask, ParentLink, StoreError, Transition};

impl Writer {
    pub(in crate::sqlite) fn spawn(
        &mut self,
        job: &Job,
        key: &str,
        child: &NewTask,
        until: i64,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.check_lease(job)?;
        let t = self.create(child, now)?;
        let link = ParentLink {
            task_id: job.task_id.clone(),
            step: job.step,
            key: key.to_owned(),
            item: job.item,
        };
        let text = serde_json::to_string(&link)
            .map_err(|e| StoreError::Backend(format!("cannot write the parent link: {e}")))?;
        self.conn
            .prepare_cached("UPDATE tasks SET parent = ?1, parent_task = ?2 WHERE id = ?3")?
            .execute(params![text, job.task_id, child.id])?;
        self.give_back_at(job, until, 0)?;
        self.conn
            .prepare_cached(
                "UPDATE jobs SET child = ?1 WHERE task_id = ?2 AND step = ?3 AND item = ?4",
            )?
            .execute(params![child.id, job.task_id, job.step, item_col(job.item)])?;
        if job.item.is_none() {
            self.conn
                .prepare_cached(
                    "UPDATE steps SET status = 'waiting' WHERE task_id = ?1 AND idx = ?2",
                )?
                .execute(params![job.task_id, job.step])?;
        }
        let row = self.step_row(&job.task_id, job.step)?;
        let data = json!({"taskId": child.id, "item": job.item, "until": until});
        self.emit(&job.task_id, "step:subtask", Some(&row), data, now, ev)?;
        Ok(t)
    }

    /// Makes the job of `child`'s parent (`parent`: the stored link) due now
    /// if it still waits for that child; answers its queue when it did.
    pub(in crate::sqlite) fn wake_parent(
        &mut self,
        child: &str,
        parent: Option<&str>,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let Some(link) = parent.and_then(|p| serde_json::from_str::<ParentLink>(p).ok()) else {
            return Ok(None);
        };
        let queue: Option<String> = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET run_at = ?1, state = ?2, rank = ?1 - prio * ?3
                 WHERE task_id = ?4 AND step = ?5 AND item = ?6 AND child = ?7 AND state = ?8
                 RETURNING queue",
            )?
            .query_row(
                params![
                    now,
                    DUE,
                    crate::PRIORITY_AGING_MS,
                    link.task_id,
                    link.step,
                    item_col(link.item),
                    child,
                    DELAYED
                ],
                |r| r.get(0),
            )
            .optional()?;
        Ok(queue)
    }
}
