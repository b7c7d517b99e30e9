//! One function per operation of the writer (create, lease, renew, start
//! items, complete, retry, fail, release, cancel, reap, purge) and the steps
//! they share (finishing steps and tasks); events are written by `events`.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use dwa_core::model::{TaskEvent, TaskStatus};

use super::super::{DELAYED, DUE, item_col, parse_json};
use super::{StepRow, Writer};
use crate::{Job, Leased, NewTask, StoreError, Transition};

/// How [`Writer::finish_step_as`] ends a step.
pub(super) enum Finish<'a> {
    /// With its result.
    Completed,
    /// Without running: why.
    Skipped(&'a str),
    /// Failed for good, under a policy that lets its dependants go on.
    Failed {
        /// Why.
        error: &'a str,
        /// Its last try.
        attempt: u32,
        /// The forEach item that failed it.
        item: Option<u32>,
    },
}

impl Writer {
    pub(super) fn create(&mut self, t: &NewTask, now: i64) -> Result<Transition, StoreError> {
        if let Some(i) = &t.idempotency {
            self.check_idempotency(i, now)?;
        }
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO tasks (id, type, queue, status, pipeline, created_at, steps_total)
                 VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6)",
            )?
            .execute(params![
                t.id,
                t.task_type,
                t.queue,
                t.is_pipeline as i64,
                t.created_at,
                t.steps.len() as i64
            ]);
        if let Err(rusqlite::Error::SqliteFailure(e, _)) = &inserted
            && e.code == rusqlite::ErrorCode::ConstraintViolation
        {
            return Err(StoreError::Duplicate(t.id.clone()));
        }
        inserted?;
        self.conn
            .prepare_cached("INSERT INTO task_specs (id, spec) VALUES (?1, ?2)")?
            .execute(params![t.id, t.spec])?;
        if let Some(i) = &t.idempotency {
            self.conn
                .prepare_cached(
                    "INSERT OR REPLACE INTO idempotency (key, task_id, body_hash, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![i.key, t.id, i.body_hash, i.expires_at])?;
        }
        // The outbox: onPending is due now, the others once the task ends.
        for (has, lifecycle, due) in [
            (t.effects.on_pending, "onPending", Some(now)),
            (t.effects.on_success, "onSuccess", None),
            (t.effects.on_error, "onError", None),
        ] {
            if has {
                self.conn
                    .prepare_cached(
                        "INSERT INTO outbox (task_id, lifecycle, due_at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![t.id, lifecycle, due])?;
            }
        }
        let mut woke = Vec::new();
        for (i, s) in t.steps.iter().enumerate() {
            let deps = serde_json::to_string(&s.dependants)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            self.conn
                .prepare_cached(
                    "INSERT INTO steps (task_id, idx, key, task, queue, priority, status, waiting, dependants)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8)",
                )?
                .execute(params![
                    t.id,
                    i as i64,
                    s.key,
                    s.task,
                    s.queue,
                    s.priority,
                    s.waiting_for,
                    deps
                ])?;
            if s.waiting_for == 0 {
                let run_at = t.run_at.map_or(now, |at| at.max(now));
                self.push_job(&t.id, i as u32, None, (&s.queue, s.priority), run_at, 1)?;
                if !woke.contains(&s.queue) {
                    woke.push(s.queue.clone());
                }
            }
        }
        Ok(Transition {
            woke,
            finished: None,
            ..Default::default()
        })
    }

    /// Queues a job of a step in its `(queue, priority)`: due now (state 0,
    /// at its rank) or later (state 2, by due time, until a lease promotes it).
    pub(super) fn push_job(
        &mut self,
        task: &str,
        step: u32,
        item: Option<u32>,
        (queue, priority): (&str, i32),
        run_at: i64,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.job_seq += 1;
        let (state, rank) = if run_at <= self.now {
            (DUE, crate::rank(run_at, priority))
        } else {
            self.note_delayed(queue, run_at);
            (DELAYED, run_at)
        };
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO jobs (task_id, step, item, queue, state, run_at, attempt, seq, prio, rank)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                task,
                step,
                item_col(item),
                queue,
                state,
                run_at,
                attempt,
                self.job_seq,
                priority,
                rank
            ])?;
        Ok(())
    }

    pub(super) fn lease(
        &mut self,
        queue: &str,
        owner: &str,
        max: usize,
        lease_ms: i64,
        want_next_due: bool,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Leased, StoreError> {
        let now = self.now;
        self.promote(queue)?;
        let rows: Vec<(String, u32, i64, u32)> = self
            .conn
            .prepare_cached(
                "SELECT task_id, step, item, attempt FROM jobs
                 WHERE queue = ?1 AND state = ?2 ORDER BY rank, seq LIMIT ?3",
            )?
            .query_map(params![queue, DUE, max as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut jobs = Vec::with_capacity(rows.len());
        for (task_id, step, item, attempt) in rows {
            self.token += 1;
            let token = self.token;
            self.conn
                .prepare_cached(
                    "UPDATE jobs SET state = 1, token = ?1, owner = ?2, lease_until = ?3
                     WHERE task_id = ?4 AND step = ?5 AND item = ?6",
                )?
                .execute(params![token, owner, now + lease_ms, task_id, step, item])?;
            if item < 0 {
                // Read, then update: a RETURNING clause would build and drop
                // a temporary table each time, on the writer's hottest path.
                let row = self.step_row(&task_id, step)?;
                self.conn
                    .prepare_cached(
                        "UPDATE steps SET status = 'running', started_at = COALESCE(started_at, ?1),
                            attempts = MAX(attempts, ?2)
                         WHERE task_id = ?3 AND idx = ?4",
                    )?
                    .execute(params![now, attempt, task_id, step])?;
                if !self.activated.contains(&task_id) {
                    self.conn
                        .prepare_cached(
                            "UPDATE tasks SET status = 'active', started_at = COALESCE(started_at, ?1)
                             WHERE id = ?2 AND status = 'pending'",
                        )?
                        .execute(params![now, task_id])?;
                    if self.activated.len() > super::MEMO_TASKS {
                        self.activated.clear();
                    }
                    self.activated.insert(task_id.clone());
                }
                self.emit(
                    &task_id,
                    "step:start",
                    Some(&row),
                    json!({"attempt": attempt}),
                    now,
                    ev,
                )?;
            }
            jobs.push(Job {
                task_id,
                step,
                item: (item >= 0).then_some(item as u32),
                attempt,
                token: token as u64,
            });
        }
        let next_due: Option<i64> = if want_next_due {
            self.conn
                .prepare_cached(
                    "SELECT CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND state = ?2)
                        THEN ?3 ELSE (SELECT MIN(rank) FROM jobs WHERE queue = ?1 AND state = ?4) END",
                )?
                .query_row(params![queue, DUE, now, DELAYED], |r| r.get(0))?
        } else {
            None
        };
        Ok(Leased { jobs, next_due })
    }

    pub(super) fn check_lease(&self, job: &Job) -> Result<(), StoreError> {
        let found: Option<i64> = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM jobs WHERE task_id = ?1 AND step = ?2 AND item = ?3
                 AND state = 1 AND token = ?4",
            )?
            .query_row(
                params![job.task_id, job.step, item_col(job.item), job.token as i64],
                |r| r.get(0),
            )
            .optional()?;
        match found {
            Some(_) => Ok(()),
            None => Err(StoreError::LeaseLost(job.name())),
        }
    }

    /// Deletes the job if the caller still holds its lease: the check and the
    /// removal in one statement, before anything else is written.
    pub(super) fn take_leased(&self, job: &Job) -> Result<(), StoreError> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM jobs WHERE task_id = ?1 AND step = ?2 AND item = ?3
                 AND state = 1 AND token = ?4",
            )?
            .execute(params![
                job.task_id,
                job.step,
                item_col(job.item),
                job.token as i64
            ])?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(job.name()))
        }
    }

    pub(super) fn step_row(&self, task: &str, step: u32) -> Result<StepRow, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT key, task FROM steps WHERE task_id = ?1 AND idx = ?2")?
            .query_row(params![task, step], |r| {
                Ok(StepRow {
                    key: r.get(0)?,
                    task: r.get(1)?,
                })
            })?)
    }

    pub(super) fn start_items(
        &mut self,
        job: &Job,
        items: u32,
        concurrency: u32,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.take_leased(job)?;
        if items == 0 {
            let mut t = Transition::default();
            self.finish_step(
                &job.task_id,
                job.step,
                Value::Array(Vec::new()),
                now,
                ev,
                &mut t,
            )?;
            return Ok(t);
        }
        let first = items.min(concurrency.max(1));
        let (queue, priority): (String, i32) = self
            .conn
            .prepare_cached(
                "UPDATE steps SET items_total = ?1, items_done = 0, items_next = ?2
                 WHERE task_id = ?3 AND idx = ?4 RETURNING queue, priority",
            )?
            .query_row(params![items, first, job.task_id, job.step], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        for i in 0..first {
            self.push_job(&job.task_id, job.step, Some(i), (&queue, priority), now, 1)?;
        }
        Ok(Transition {
            woke: vec![queue],
            finished: None,
            ..Default::default()
        })
    }

    pub(super) fn complete(
        &mut self,
        job: &Job,
        result: &Value,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.take_leased(job)?;
        let mut t = Transition::default();
        match job.item {
            None => self.finish_step(&job.task_id, job.step, result.clone(), now, ev, &mut t)?,
            Some(item) => {
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO items (task_id, step, item, result) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![job.task_id, job.step, item, result.to_string()])?;
                // One statement counts the item done and claims the next item
                // to queue, if any (RETURNING gives the new values).
                let (done, total, next, queue, priority): (u32, u32, u32, String, i32) = self
                    .conn
                    .prepare_cached(
                        "UPDATE steps SET items_done = items_done + 1, items_next = items_next + 1
                         WHERE task_id = ?1 AND idx = ?2
                         RETURNING items_done, items_total, items_next, queue, priority",
                    )?
                    .query_row(params![job.task_id, job.step], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })?;
                // `items_next` counts past the end once every item is queued;
                // below it, `next - 1` is the item this completion claimed.
                if next <= total {
                    let item = next - 1;
                    self.push_job(
                        &job.task_id,
                        job.step,
                        Some(item),
                        (&queue, priority),
                        now,
                        1,
                    )?;
                    t.woke.push(queue);
                }
                if done >= total {
                    let results: Vec<Value> = self
                        .conn
                        .prepare_cached(
                            "SELECT result FROM items WHERE task_id = ?1 AND step = ?2 ORDER BY item",
                        )?
                        .query_map(params![job.task_id, job.step], |r| r.get::<_, String>(0))?
                        .map(|r| r.map(|s| parse_json(Some(&s)).unwrap_or(Value::Null)))
                        .collect::<Result<_, _>>()?;
                    self.conn
                        .prepare_cached("DELETE FROM items WHERE task_id = ?1 AND step = ?2")?
                        .execute(params![job.task_id, job.step])?;
                    self.finish_step(
                        &job.task_id,
                        job.step,
                        Value::Array(results),
                        now,
                        ev,
                        &mut t,
                    )?;
                } else if (done * 100 / total) != ((done - 1) * 100 / total) {
                    let (mut steps_done, steps_total): (f64, f64) = self
                        .conn
                        .prepare_cached("SELECT steps_done, steps_total FROM tasks WHERE id = ?1")?
                        .query_row(params![job.task_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    if let Some((d, _)) = self.done_counts.get(&job.task_id) {
                        steps_done = *d as f64;
                    }
                    // Rounded as Redis's Lua prints it (27.999999999999996 is 28).
                    let progress =
                        ((steps_done + f64::from(done) / f64::from(total)) / steps_total * 100.0)
                            .min(100.0);
                    let progress = (progress * 1e9).round() / 1e9;
                    self.conn
                        .prepare_cached("UPDATE tasks SET progress = ?1 WHERE id = ?2")?
                        .execute(params![progress, job.task_id])?;
                    let row = self.step_row(&job.task_id, job.step)?;
                    self.emit(
                        &job.task_id,
                        "step:progress",
                        Some(&row),
                        json!({"done": done, "total": total, "progress": progress}),
                        now,
                        ev,
                    )?;
                }
            }
        }
        Ok(t)
    }

    pub(super) fn finish_step(
        &mut self,
        task: &str,
        step: u32,
        result: Value,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
        t: &mut Transition,
    ) -> Result<(), StoreError> {
        self.finish_step_as(task, step, result, &Finish::Completed, now, ev, t)
    }

    /// Ends a step as `how` says with `result`, and releases the dependants
    /// it was the last wait of; the task completes with its last step.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_step_as(
        &mut self,
        task: &str,
        step: u32,
        result: Value,
        how: &Finish<'_>,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
        t: &mut Transition,
    ) -> Result<(), StoreError> {
        let text = result.to_string();
        let (status, error) = match how {
            Finish::Completed => ("completed", None),
            Finish::Skipped(reason) => ("skipped", Some(*reason)),
            Finish::Failed { error, .. } => ("failed", Some(*error)),
        };
        // Read, then update (no RETURNING: see `lease`).
        let (key, name, dependants, started): (String, String, String, Option<i64>) = self
            .conn
            .prepare_cached(
                "SELECT key, task, dependants, started_at FROM steps WHERE task_id = ?1 AND idx = ?2",
            )?
            .query_row(params![task, step], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?;
        self.conn
            .prepare_cached(
                "UPDATE steps SET status = ?5, result = ?1, completed_at = ?2, error = COALESCE(?6, error)
                 WHERE task_id = ?3 AND idx = ?4",
            )?
            .execute(params![text, now, task, step, status, error])?;
        let row = StepRow { key, task: name };
        let (done, total) = self.count_done(task)?;
        // Progress is persisted when its whole percent moves, not per step:
        // a 10,000-step DAG writes the task row 100 times, not 10,000.
        if done >= total || (done * 100 / total) != ((done - 1) * 100 / total) {
            self.conn
                .prepare_cached(
                    "UPDATE tasks SET steps_done = ?1, progress = MIN(100.0, ?1 * 100.0 / steps_total)
                     WHERE id = ?2",
                )?
                .execute(params![done, task])?;
        }
        let progress = (done as f64 * 100.0 / total as f64).min(100.0);
        let duration = since(started, now);
        let (kind, data) = match how {
            Finish::Completed => (
                "step:complete",
                json!({"result": result, "progress": progress, "duration": duration}),
            ),
            Finish::Skipped(reason) => (
                "step:skip",
                json!({"reason": reason, "progress": progress, "duration": duration}),
            ),
            Finish::Failed {
                error,
                attempt,
                item,
            } => (
                "step:error",
                json!({"error": error, "attempt": attempt, "item": item, "tolerated": true,
                       "progress": progress, "duration": duration}),
            ),
        };
        self.emit(task, kind, Some(&row), data, now, ev)?;
        let dependants: Vec<u32> = serde_json::from_str(&dependants).unwrap_or_default();
        for d in dependants {
            let (waiting, queue, status, priority): (i64, String, String, i32) = self
                .conn
                .prepare_cached(
                    "SELECT waiting, queue, status, priority FROM steps WHERE task_id = ?1 AND idx = ?2",
                )?
                .query_row(params![task, d], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?;
            self.conn
                .prepare_cached(
                    "UPDATE steps SET waiting = waiting - 1 WHERE task_id = ?1 AND idx = ?2",
                )?
                .execute(params![task, d])?;
            if waiting == 1 && status == "pending" {
                self.push_job(task, d, None, (&queue, priority), now, 1)?;
                if !t.woke.contains(&queue) {
                    t.woke.push(queue);
                }
            }
        }
        if done >= total {
            let final_result = if step as i64 == total - 1 {
                Some(text)
            } else {
                self.conn
                    .prepare_cached("SELECT result FROM steps WHERE task_id = ?1 AND idx = ?2")?
                    .query_row(params![task, total - 1], |r| r.get::<_, Option<String>>(0))?
            };
            let (started, parent): (Option<i64>, Option<String>) = self
                .conn
                .prepare_cached("SELECT started_at, parent FROM tasks WHERE id = ?1")?
                .query_row(params![task], |r| Ok((r.get(0)?, r.get(1)?)))?;
            self.conn
                .prepare_cached(
                    "UPDATE tasks SET status = 'completed', result = ?1, completed_at = ?2, progress = 100
                     WHERE id = ?3",
                )?
                .execute(params![final_result, now, task])?;
            if let Some(q) = self.wake_parent(task, parent.as_deref(), now)? {
                t.woke.push(q);
            }
            self.effects_due(task, "onSuccess", now)?;
            self.emit(
                task,
                "pipeline:complete",
                None,
                json!({"status": "completed", "result": parse_json(final_result.as_deref()),
                       "totalDuration": since(started, now)}),
                now,
                ev,
            )?;
            t.finished = Some(TaskStatus::Completed);
            self.forget(task);
        }
        Ok(())
    }

    /// Counts one more completed step of `task`; answers (done, total).
    fn count_done(&mut self, task: &str) -> Result<(i64, i64), StoreError> {
        if let Some(c) = self.done_counts.get_mut(task) {
            c.0 += 1;
            return Ok(*c);
        }
        // The step just ended is included in the count. In a live task a
        // step is failed or skipped only if it ended under `end_step`.
        let done: i64 = self
            .conn
            .prepare_cached(
                "SELECT COUNT(*) FROM steps WHERE task_id = ?1
                 AND status IN ('completed', 'failed', 'skipped')",
            )?
            .query_row(params![task], |r| r.get(0))?;
        let total: i64 = self
            .conn
            .prepare_cached("SELECT steps_total FROM tasks WHERE id = ?1")?
            .query_row(params![task], |r| r.get(0))?;
        super::remember(&mut self.done_counts, task, (done, total));
        Ok((done, total))
    }

    /// Drops the per-task counters of a finished task (they reload on demand).
    pub(super) fn forget(&mut self, task: &str) {
        self.done_counts.remove(task);
        self.activated.remove(task);
    }

    fn end_task(
        &mut self,
        task: &str,
        status: TaskStatus,
        error: &str,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Vec<String>, StoreError> {
        self.forget(task);
        let (started, parent): (Option<i64>, Option<String>) = self
            .conn
            .prepare_cached(
                "UPDATE tasks SET status = ?1, error = ?2, completed_at = ?3 WHERE id = ?4
                 RETURNING started_at, parent",
            )?
            .query_row(params![status.as_str(), error, now, task], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        // A sub-task's end makes its parent's job due: its queue is woken.
        let woke: Vec<String> = self
            .wake_parent(task, parent.as_deref(), now)?
            .into_iter()
            .collect();
        if status == TaskStatus::Failed {
            self.effects_due(task, "onError", now)?;
        }
        let reason = match status {
            TaskStatus::Cancelled => "cancelled",
            _ => "pipeline failed",
        };
        self.conn
            .prepare_cached(
                "UPDATE steps SET status = 'skipped', completed_at = ?1,
                    error = CASE WHEN status = 'running' THEN ?2 ELSE error END
                 WHERE task_id = ?3 AND status IN ('pending', 'running', 'waiting')",
            )?
            .execute(params![now, format!("aborted: {reason}"), task])?;
        self.conn
            .prepare_cached("DELETE FROM jobs WHERE task_id = ?1")?
            .execute(params![task])?;
        self.conn
            .prepare_cached("DELETE FROM items WHERE task_id = ?1")?
            .execute(params![task])?;
        self.emit(
            task,
            "pipeline:complete",
            None,
            json!({"status": status.as_str(), "error": error, "totalDuration": since(started, now)}),
            now,
            ev,
        )?;
        Ok(woke)
    }

    pub(super) fn fail(
        &mut self,
        job: &Job,
        error: &str,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.check_lease(job)?;
        let row = self.step_row(&job.task_id, job.step)?;
        self.conn
            .prepare_cached(
                "UPDATE steps SET status = 'failed', error = ?1, completed_at = ?2
                 WHERE task_id = ?3 AND idx = ?4",
            )?
            .execute(params![error, now, job.task_id, job.step])?;
        self.emit(
            &job.task_id,
            "step:error",
            Some(&row),
            json!({"error": error, "attempt": job.attempt, "item": job.item}),
            now,
            ev,
        )?;
        let pipeline: i64 = self
            .conn
            .prepare_cached("SELECT pipeline FROM tasks WHERE id = ?1")?
            .query_row(params![job.task_id], |r| r.get(0))?;
        let task_error = if pipeline != 0 {
            format!("step {} ({}) failed: {error}", row.key, row.task)
        } else {
            error.to_owned()
        };
        let woke = self.end_task(&job.task_id, TaskStatus::Failed, &task_error, now, ev)?;
        Ok(Transition {
            woke,
            finished: Some(TaskStatus::Failed),
            ..Default::default()
        })
    }

    /// A task's status; NotFound when there is no such task.
    pub(super) fn status_of(&mut self, id: &str) -> Result<TaskStatus, StoreError> {
        let status: Option<String> = self
            .conn
            .prepare_cached("SELECT status FROM tasks WHERE id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        let Some(status) = status else {
            return Err(StoreError::NotFound(id.to_owned()));
        };
        Ok(TaskStatus::parse(&status).unwrap_or(TaskStatus::Pending))
    }

    pub(super) fn cancel(
        &mut self,
        id: &str,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        let status = self.status_of(id)?;
        if status.is_terminal() {
            return Err(StoreError::Conflict(format!(
                "task {id} is already {}",
                status.as_str()
            )));
        }
        let woke = self.end_task(id, TaskStatus::Cancelled, "cancelled", now, ev)?;
        Ok(Transition {
            woke,
            finished: Some(TaskStatus::Cancelled),
            ..Default::default()
        })
    }

    /// Renews the leases of `jobs` still held with their tokens until `until`.
    pub(super) fn renew(&mut self, jobs: &[Job], until: i64) -> Result<Vec<bool>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE jobs SET lease_until = ?1
             WHERE task_id = ?2 AND step = ?3 AND item = ?4 AND state = 1 AND token = ?5",
        )?;
        let mut held = Vec::with_capacity(jobs.len());
        for j in jobs {
            let n = stmt.execute(params![
                until,
                j.task_id,
                j.step,
                item_col(j.item),
                j.token as i64
            ])?;
            held.push(n == 1);
        }
        Ok(held)
    }

    /// Remembers that `queue` has a delayed job due at `at`.
    fn note_delayed(&mut self, queue: &str, at: i64) {
        // Unknown stays unknown: the next lease looks and learns.
        if let Some(d) = self.delayed_due.get_mut(queue) {
            *d = (*d).min(at);
        }
    }

    /// Ranks the delayed jobs of `queue` that are due among its due jobs,
    /// when one may be due; then learns when the next one is.
    fn promote(&mut self, queue: &str) -> Result<(), StoreError> {
        let now = self.now;
        if self.delayed_due.get(queue).is_some_and(|d| *d > now) {
            return Ok(());
        }
        self.conn
            .prepare_cached(
                "UPDATE jobs SET state = ?1, rank = run_at - prio * ?2
                 WHERE queue = ?3 AND state = ?4 AND rank <= ?5",
            )?
            .execute(params![DUE, crate::PRIORITY_AGING_MS, queue, DELAYED, now])?;
        let next: Option<i64> = self
            .conn
            .prepare_cached("SELECT MIN(rank) FROM jobs WHERE queue = ?1 AND state = ?2")?
            .query_row(params![queue, DELAYED], |r| r.get(0))?;
        self.delayed_due
            .insert(queue.to_owned(), next.unwrap_or(i64::MAX));
        Ok(())
    }

    /// Gives a held job back, due at `run_at`, one attempt on (a retry's
    /// wait, a parked wait step's timeout).
    pub(super) fn give_back_later(&mut self, job: &Job, run_at: i64) -> Result<(), StoreError> {
        self.give_back_at(job, run_at, 1)
    }

    /// Gives a held job back due at `run_at`, `bump` attempts on.
    pub(super) fn give_back_at(
        &mut self,
        job: &Job,
        run_at: i64,
        bump: i64,
    ) -> Result<(), StoreError> {
        self.check_lease(job)?;
        let queue: String = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET run_at = ?1, attempt = attempt + ?9,
                    token = NULL, owner = NULL, lease_until = NULL,
                    state = CASE WHEN ?1 <= ?5 THEN ?6 ELSE ?7 END,
                    rank = CASE WHEN ?1 <= ?5 THEN ?1 - prio * ?8 ELSE ?1 END
                 WHERE task_id = ?2 AND step = ?3 AND item = ?4 RETURNING queue",
            )?
            .query_row(
                params![
                    run_at,
                    job.task_id,
                    job.step,
                    item_col(job.item),
                    self.now,
                    DUE,
                    DELAYED,
                    crate::PRIORITY_AGING_MS,
                    bump
                ],
                |r| r.get(0),
            )?;
        if run_at > self.now {
            self.note_delayed(&queue, run_at);
        }
        Ok(())
    }

    /// Puts a failed try back in its queue for `run_at`, one attempt on.
    pub(super) fn retry(
        &mut self,
        job: &Job,
        run_at: i64,
        error: &str,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.give_back_later(job, run_at)?;
        let step = self.step_row(&job.task_id, job.step)?;
        let queue: String = self
            .conn
            .prepare_cached("SELECT queue FROM steps WHERE task_id = ?1 AND idx = ?2")?
            .query_row(params![job.task_id, job.step], |r| r.get(0))?;
        self.emit(
            &job.task_id,
            "step:retry",
            Some(&step),
            json!({"error": error, "attempt": job.attempt, "nextAttempt": job.attempt + 1,
                   "retryInMs": (run_at - now).max(0), "item": job.item}),
            now,
            ev,
        )?;
        Ok(Transition {
            woke: vec![queue],
            finished: None,
            ..Default::default()
        })
    }

    /// Gives jobs back to their queues untried (shutdown, a store blip).
    pub(super) fn release(&mut self, jobs: &[Job]) -> Result<usize, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE jobs SET state = 0, token = NULL, owner = NULL, lease_until = NULL
             WHERE task_id = ?1 AND step = ?2 AND item = ?3 AND state = 1 AND token = ?4",
        )?;
        let mut n = 0;
        for j in jobs {
            n += stmt.execute(params![j.task_id, j.step, item_col(j.item), j.token as i64])?;
        }
        Ok(n)
    }

    /// Gives back every job whose lease ran out (its host died).
    pub(super) fn reap(&mut self, now: i64) -> Result<usize, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "UPDATE jobs SET state = 0, token = NULL, owner = NULL, lease_until = NULL
                 WHERE state = 1 AND lease_until < ?1",
            )?
            .execute(params![now])?)
    }

    /// Deletes up to `limit` tasks that ended before `before`, with all they own.
    pub(super) fn purge(&mut self, before: i64, limit: usize) -> Result<usize, StoreError> {
        // Expired idempotency keys go with the retention sweep.
        self.conn
            .prepare_cached("DELETE FROM idempotency WHERE expires_at <= ?1")?
            .execute(params![self.now])?;
        let ids: Vec<String> = self
            .conn
            .prepare_cached(
                "SELECT id FROM tasks WHERE completed_at IS NOT NULL AND completed_at < ?1
                 AND status IN ('completed', 'failed', 'cancelled') LIMIT ?2",
            )?
            .query_map(params![before, limit as i64], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        for id in &ids {
            for sql in [
                "DELETE FROM steps WHERE task_id = ?1",
                "DELETE FROM items WHERE task_id = ?1",
                "DELETE FROM events WHERE task_id = ?1",
                "DELETE FROM jobs WHERE task_id = ?1",
                "DELETE FROM task_specs WHERE id = ?1",
                "DELETE FROM outbox WHERE task_id = ?1",
                "DELETE FROM tasks WHERE id = ?1",
            ] {
                self.conn.prepare_cached(sql)?.execute(params![id])?;
            }
            self.event_seqs.remove(id);
            self.capped.remove(id);
        }
        Ok(ids.len())
    }
}

/// Milliseconds from a stored start to `now` (0 when it never started): the
/// seed's `data.duration` and `data.totalDuration`.
fn since(started: Option<i64>, now: i64) -> i64 {
    started.map_or(0, |s| (now - s).max(0))
}
