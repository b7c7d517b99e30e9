//! The writer's events: a transition's own (`emit`, each with the task's
//! next seq) and those appended to a task from outside its transitions
//! (effects' and streamed chunks', up to the task's cap).

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use dwa_core::model::TaskEvent;

use super::{StepRow, Writer};
use crate::{EVENTS_CAPPED, NewEvent, StoreError};

impl Writer {
    /// Records an event of `task` in the transition being written, and
    /// gathers it for the subscribers.
    pub(super) fn emit(
        &mut self,
        task: &str,
        kind: &str,
        step: Option<&StepRow>,
        data: Value,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<(), StoreError> {
        let seq = self.last_seq(task)? + 1;
        if let Some(s) = self.event_seqs.get_mut(task) {
            *s = seq;
        }
        let text = data.to_string();
        self.conn
            .prepare_cached(
                "INSERT INTO events (task_id, seq, kind, step_id, step_task, data, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                task,
                seq,
                kind,
                step.map(|s| s.key.as_str()),
                step.map(|s| s.task.as_str()),
                text,
                now
            ])?;
        ev.push(Arc::new(TaskEvent {
            seq: seq as u64,
            kind: kind.to_owned(),
            task_id: task.to_owned(),
            step_id: step.map(|s| s.key.clone()),
            step_task: step.map(|s| s.task.clone()),
            data: data.into(),
            timestamp: now,
        }));
        Ok(())
    }

    /// The seq of the task's last event (0: none yet), remembered.
    fn last_seq(&mut self, task: &str) -> Result<i64, StoreError> {
        if let Some(s) = self.event_seqs.get(task) {
            return Ok(*s);
        }
        let last: i64 = self
            .conn
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE task_id = ?1")?
            .query_row(params![task], |r| r.get(0))?;
        super::remember(&mut self.event_seqs, task, last);
        Ok(last)
    }

    /// Records events of a task that exists (effects' and streamed chunks'),
    /// up to `cap` events on the task (see `Store::append_events`).
    pub(super) fn append(
        &mut self,
        id: &str,
        events: &[NewEvent],
        cap: u64,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<(), StoreError> {
        let exists: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM tasks WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        if exists.is_none() {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        for e in events {
            if self.capped.contains(id) {
                break;
            }
            if self.last_seq(id)? as u64 >= cap {
                self.emit(id, EVENTS_CAPPED, None, json!({"limit": cap}), now, ev)?;
                self.capped.insert(id.to_owned());
                break;
            }
            let step = match e.step {
                Some(s) => Some(self.step_row(id, s)?),
                None => None,
            };
            self.emit(id, &e.kind, step.as_ref(), e.data.clone(), now, ev)?;
        }
        Ok(())
    }
}
