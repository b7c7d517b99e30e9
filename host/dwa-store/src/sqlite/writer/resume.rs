//! Running a failed or cancelled task again from where it stopped
//! (`Store::resume`; docs/tasks.md, "Re-running a task"): its completed
//! steps keep their results; every other step is pending again, waiting for
//! its dependencies that are not completed, and the ready ones are queued.

use std::sync::Arc;

use rusqlite::params;
use serde_json::json;

use super::Writer;
use crate::{Lifecycles, StoreError, Transition};
use dwa_core::model::{TaskEvent, TaskStatus};

impl Writer {
    pub(super) fn resume(
        &mut self,
        id: &str,
        spec: Option<&str>,
        effects: Lifecycles,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        let status = self.status_of(id)?;
        if !matches!(status, TaskStatus::Failed | TaskStatus::Cancelled) {
            return Err(StoreError::Conflict(format!(
                "task {id} is {}: only a failed or cancelled task can be run again",
                status.as_str()
            )));
        }
        self.forget(id);
        if let Some(spec) = spec {
            self.conn
                .prepare_cached("UPDATE task_specs SET spec = ?1 WHERE id = ?2")?
                .execute(params![spec, id])?;
        }
        // (idx, key, queue, completed, dependants) of every step.
        let steps: Vec<(u32, String, String, bool, Vec<u32>, i32)> = self
            .conn
            .prepare_cached(
                "SELECT idx, key, queue, status = 'completed', dependants, priority FROM steps
                 WHERE task_id = ?1 ORDER BY idx",
            )?
            .query_map(params![id], |r| {
                let deps: String = r.get(4)?;
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    serde_json::from_str(&deps).unwrap_or_default(),
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        // A step waits for each dependency that will run again.
        let mut waiting = vec![0i64; steps.len()];
        for (_, _, _, completed, dependants, _) in &steps {
            if !completed {
                for d in dependants {
                    if let Some(w) = waiting.get_mut(*d as usize) {
                        *w += 1;
                    }
                }
            }
        }
        self.conn
            .prepare_cached("DELETE FROM jobs WHERE task_id = ?1")?
            .execute(params![id])?;
        let mut woke: Vec<String> = Vec::new();
        let mut again = Vec::new();
        for (idx, key, queue, completed, _, priority) in &steps {
            if *completed {
                continue;
            }
            let w = waiting.get(*idx as usize).copied().unwrap_or(0);
            self.conn
                .prepare_cached(
                    "UPDATE steps SET status = 'pending', waiting = ?1, result = NULL, error = NULL,
                        attempts = 0, started_at = NULL, completed_at = NULL, items_total = NULL,
                        items_done = 0, items_next = 0
                     WHERE task_id = ?2 AND idx = ?3",
                )?
                .execute(params![w, id, idx])?;
            self.conn
                .prepare_cached("DELETE FROM items WHERE task_id = ?1 AND step = ?2")?
                .execute(params![id, idx])?;
            if w == 0 {
                self.push_job(id, *idx, None, (queue, *priority), now, 1)?;
                if !woke.contains(queue) {
                    woke.push(queue.clone());
                }
            }
            again.push(key.clone());
        }
        let done = steps.iter().filter(|s| s.3).count() as i64;
        let total = (steps.len() as i64).max(1);
        self.conn
            .prepare_cached(
                "UPDATE tasks SET status = 'pending', error = NULL, result = NULL, completed_at = NULL,
                    steps_done = ?1, progress = ?2
                 WHERE id = ?3",
            )?
            .execute(params![done, done as f64 * 100.0 / total as f64, id])?;
        if effects.on_error {
            // A delivery of the last failure still under way stays as it
            // is; one already made is owed again should this run fail.
            self.conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO outbox (task_id, lifecycle) VALUES (?1, 'onError')",
                )?
                .execute(params![id])?;
        }
        let run: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM events WHERE task_id = ?1 AND kind = 'task:retry'",
            )?
            .query_row(params![id], |r| r.get(0))?;
        self.emit(
            id,
            "task:retry",
            None,
            json!({"run": run + 2, "steps": again, "payloadChanged": spec.is_some()}),
            now,
            ev,
        )?;
        Ok(Transition {
            woke,
            finished: None,
            ..Default::default()
        })
    }
}
