//! Schedules (docs/tasks.md, "Schedules"): created, listed, paused and
//! deleted through the API, and fired by a loop on every host.
//!
//! Firing is exactly once per tick across hosts sharing a store, without a
//! leader: the task a tick submits carries the idempotency key
//! `schedule:{id}:{tick}`, so hosts that fire the same tick make one task,
//! and moving the schedule on to its next tick is a compare-and-set of its
//! `next_at`, so one of them records it. A host that dies between the two
//! leaves the tick due; whoever fires it next gets the same task back.

use std::sync::Arc;
use std::time::Duration;

use dwa_core::model::rfc3339;
use dwa_core::plan::FieldError;
use dwa_core::schedule::{
    self, Cadence, Overlap, RunView, ScheduleList, ScheduleSpec, ScheduleState, ScheduleView,
};
use dwa_store::{NEVER, ScheduleRecord, ScheduleUpdate, StoreError};

use super::{Engine, EngineError};

/// Schedules read per pass of the loop.
const DUE_BATCH: usize = 32;

/// The loop's longest sleep: a schedule another host created is seen
/// within this (ticks are whole seconds).
const IDLE_MS: i64 = 1_000;

/// Fields a schedule's task may not set: the schedule decides them.
const SET_BY_THE_SCHEDULE: [(&str, &str); 2] = [
    ("idempotencyKey", "each run's key is schedule:{id}:{tick}"),
    (
        "runAt",
        "a schedule's runs start at its ticks (use `delay` to start later)",
    ),
];

fn bad(field: &str, message: impl Into<String>) -> EngineError {
    EngineError::BadSchedule(FieldError {
        step: None,
        field: field.into(),
        message: message.into(),
    })
}

/// Prefixes the fields of the task's problems with `task.`.
fn in_task(mut e: FieldError) -> FieldError {
    e.field = if e.field == "(body)" {
        "task".into()
    } else {
        format!("task.{}", e.field)
    };
    e
}

/// The API's view of a stored schedule.
fn view(rec: &ScheduleRecord) -> Result<ScheduleView, EngineError> {
    let spec: ScheduleSpec = serde_json::from_str(&rec.spec)
        .map_err(|e| EngineError::Internal(format!("schedule {} is unreadable: {e}", rec.id)))?;
    let state: ScheduleState = serde_json::from_str(&rec.state).unwrap_or_default();
    Ok(ScheduleView {
        id: rec.id.clone(),
        cron: spec.cron,
        timezone: spec.timezone,
        task: spec.task,
        overlap: spec.overlap,
        catch_up: spec.catch_up,
        catch_up_limit: spec.catch_up_limit,
        paused: rec.paused,
        next_run_at: (!rec.paused && rec.next_at != NEVER).then(|| rfc3339(rec.next_at)),
        created_at: rfc3339(rec.created_at),
        runs: state.runs,
        skipped: state.skipped,
        last_error: state.last_error,
        recent: state
            .recent
            .into_iter()
            .map(|r| RunView {
                tick: rfc3339(r.tick),
                task_id: r.task_id,
            })
            .collect(),
    })
}

fn state_json(state: &ScheduleState) -> Result<String, EngineError> {
    serde_json::to_string(state)
        .map_err(|e| EngineError::Internal(format!("cannot serialise a schedule's state: {e}")))
}

impl Engine {
    /// Validates and stores a schedule given as a request body (its task is
    /// planned now, so a schedule that could never run is refused).
    pub async fn create_schedule(&self, body: &[u8]) -> Result<ScheduleView, EngineError> {
        let mut spec: ScheduleSpec =
            dwa_core::plan::parse_json(body).map_err(EngineError::BadSchedule)?;
        let now = self.store.now_ms();
        let cadence = schedule::check(&spec, now).map_err(EngineError::BadSchedule)?;
        let Some(task) = spec.task.as_object() else {
            return Err(bad("task", "must be a task object"));
        };
        for (field, why) in SET_BY_THE_SCHEDULE {
            if task.contains_key(field) {
                return Err(bad(&format!("task.{field}"), why));
            }
        }
        let body = serde_json::to_vec(&spec.task)
            .map_err(|e| EngineError::Internal(format!("cannot serialise the task: {e}")))?;
        let parsed = dwa_core::plan::parse_spec(&body)
            .map_err(|e| EngineError::Invalid(vec![in_task(e)]))?;
        dwa_core::plan::plan(parsed, &self.catalog(), &self.config.limits)
            .map_err(|errs| EngineError::Invalid(errs.into_iter().map(in_task).collect()))?;
        let id = spec
            .id
            .get_or_insert_with(|| uuid::Uuid::now_v7().to_string())
            .clone();
        let rec = ScheduleRecord {
            id: id.clone(),
            spec: serde_json::to_string(&spec).map_err(|e| {
                EngineError::Internal(format!("cannot serialise the schedule: {e}"))
            })?,
            paused: spec.paused,
            next_at: cadence.next_after(now).unwrap_or(NEVER),
            state: state_json(&ScheduleState::default())?,
            created_at: now,
        };
        match self
            .store
            .create_schedule(rec.clone(), self.config.limits.max_schedules)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Duplicate(_)) => {
                return Err(EngineError::Conflict(format!(
                    "schedule {id} exists already (DELETE it first to replace it)"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.schedule_wake.notify_one();
        view(&rec)
    }

    /// A schedule.
    pub async fn schedule(&self, id: &str) -> Result<ScheduleView, EngineError> {
        view(&self.stored_schedule(id).await?)
    }

    async fn stored_schedule(&self, id: &str) -> Result<ScheduleRecord, EngineError> {
        self.store
            .schedule(id)
            .await?
            .ok_or_else(|| EngineError::NoSchedule(id.to_owned()))
    }

    /// Schedules in id order, with a cursor for the next page.
    pub async fn schedules(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScheduleList, EngineError> {
        let mut recs = self.store.schedules(after, limit + 1).await?;
        let more = recs.len() > limit;
        recs.truncate(limit);
        let schedules = recs.iter().map(view).collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if more {
            schedules.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(ScheduleList {
            schedules,
            next_cursor,
        })
    }

    /// Deletes a schedule; the tasks it submitted are left as they are.
    pub async fn delete_schedule(&self, id: &str) -> Result<(), EngineError> {
        if self.store.delete_schedule(id).await? {
            Ok(())
        } else {
            Err(EngineError::NoSchedule(id.to_owned()))
        }
    }

    /// Pauses (`paused`) or resumes a schedule. Resuming starts from the
    /// next tick after now: the ticks of the pause are not caught up.
    pub async fn pause_schedule(
        &self,
        id: &str,
        paused: bool,
    ) -> Result<ScheduleView, EngineError> {
        // Compare-and-set against the loops of every host: a few tries.
        for _ in 0..5 {
            let mut rec = self.stored_schedule(id).await?;
            if rec.paused == paused {
                return view(&rec);
            }
            // Pausing moves next_at too, so that a host firing the schedule
            // right now cannot record its tick over the pause.
            let next_at = if paused {
                NEVER
            } else {
                let spec: ScheduleSpec = serde_json::from_str(&rec.spec).map_err(|e| {
                    EngineError::Internal(format!("schedule {id} is unreadable: {e}"))
                })?;
                Cadence::parse(&spec.cron, &spec.timezone)
                    .map_err(EngineError::BadSchedule)?
                    .next_after(self.store.now_ms())
                    .unwrap_or(NEVER)
            };
            let update = ScheduleUpdate {
                expect: rec.next_at,
                next_at,
                paused,
                state: rec.state.clone(),
            };
            if self.store.update_schedule(id, update).await? {
                (rec.paused, rec.next_at) = (paused, next_at);
                self.schedule_wake.notify_one();
                return view(&rec);
            }
        }
        Err(EngineError::Conflict(format!(
            "schedule {id} kept changing while it was being {}; try again",
            if paused { "paused" } else { "resumed" }
        )))
    }

    /// Fires the schedules that are due; answers when to look again (ms
    /// from now).
    pub(crate) async fn fire_schedules(self: &Arc<Self>) -> Result<i64, StoreError> {
        let (due, next) = self.store.due_schedules(DUE_BATCH).await?;
        if due.len() == DUE_BATCH {
            // More are due than one pass takes.
            for rec in due {
                self.fire(rec).await;
            }
            return Ok(0);
        }
        let mut stuck = false;
        for rec in due {
            stuck |= !self.fire(rec).await;
        }
        let wait = next.map_or(IDLE_MS, |n| n - self.store.now_ms());
        // A schedule left due (the store failed) is tried again, not spun on.
        Ok(if stuck {
            IDLE_MS
        } else {
            wait.clamp(0, IDLE_MS)
        })
    }

    /// Fires one due schedule's ticks and moves it on; answers false when it
    /// was left due to be tried again (the store failed).
    async fn fire(self: &Arc<Self>, rec: ScheduleRecord) -> bool {
        let spec: ScheduleSpec = match serde_json::from_str(&rec.spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(schedule = %rec.id, error = %e, "unreadable schedule; pausing it");
                let state = ScheduleState {
                    last_error: Some(format!("unreadable schedule: {e}")),
                    ..Default::default()
                };
                let update = ScheduleUpdate {
                    expect: rec.next_at,
                    next_at: rec.next_at,
                    paused: true,
                    state: serde_json::to_string(&state).unwrap_or_default(),
                };
                return self.store.update_schedule(&rec.id, update).await.is_ok();
            }
        };
        let mut state: ScheduleState = serde_json::from_str(&rec.state).unwrap_or_default();
        let due = match Cadence::parse(&spec.cron, &spec.timezone) {
            Ok(c) => c.due(
                rec.next_at,
                self.store.now_ms(),
                spec.catch_up,
                spec.catch_up_limit,
            ),
            Err(e) => {
                state.last_error = Some(e.message);
                schedule::Due {
                    fire: Vec::new(),
                    next_at: None,
                }
            }
        };
        for tick in due.fire {
            // Each tick's task is a trace of its own, rooted here.
            let span = tracing::info_span!(target: "dwa_otel", parent: None, "schedule.tick",
                schedule = %rec.id, tick);
            let fired = tracing::Instrument::instrument(
                self.fire_tick(&rec.id, &spec, &mut state, tick),
                span,
            )
            .await;
            match fired {
                Ok(()) => {}
                Err(EngineError::Store(e)) => {
                    tracing::warn!(schedule = %rec.id, error = %e, "cannot fire a schedule now; trying again");
                    return false;
                }
                Err(e) => {
                    tracing::warn!(schedule = %rec.id, error = %e, "a schedule's tick submitted nothing");
                    state.last_error = Some(format!("tick {}: {e}", rfc3339(tick)));
                }
            }
        }
        let Ok(state) = state_json(&state) else {
            return false;
        };
        let update = ScheduleUpdate {
            expect: rec.next_at,
            next_at: due.next_at.unwrap_or(NEVER),
            paused: rec.paused,
            state,
        };
        match self.store.update_schedule(&rec.id, update).await {
            // Not updated: another host recorded this tick first.
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(schedule = %rec.id, error = %e, "cannot move a schedule on; trying again");
                false
            }
        }
    }

    /// Submits one tick's task under the overlap policy.
    async fn fire_tick(
        self: &Arc<Self>,
        id: &str,
        spec: &ScheduleSpec,
        state: &mut ScheduleState,
        tick: i64,
    ) -> Result<(), EngineError> {
        if spec.overlap != Overlap::Allow
            && let Some(last) = state.last_task().map(str::to_owned)
        {
            let running = self
                .store
                .task_summary(&last)
                .await?
                .is_some_and(|t| !t.status.is_terminal());
            if running {
                if spec.overlap == Overlap::Skip {
                    state.skipped += 1;
                    return Ok(());
                }
                match self.cancel(&last).await {
                    // It ended meanwhile: nothing to cancel.
                    Ok(_) | Err(EngineError::Conflict(_)) | Err(EngineError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let body = serde_json::to_vec(&spec.task)
            .map_err(|e| EngineError::Internal(format!("cannot serialise the task: {e}")))?;
        let key = format!("schedule:{id}:{tick}");
        let submitted = self.submit_request(&body, Some(&key)).await?;
        state.ran(tick, submitted.task.id);
        Ok(())
    }

    /// Fires schedules as their ticks come, until the host stops.
    pub(super) async fn schedule_loop(self: Arc<Self>) {
        loop {
            let wait = match self.fire_schedules().await {
                Ok(ms) => ms,
                Err(e) => {
                    tracing::error!(error = %e, "reading due schedules failed; retrying");
                    IDLE_MS
                }
            };
            if wait == 0 {
                tokio::task::yield_now().await;
                if self.stop_leasing.is_cancelled() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                _ = self.schedule_wake.notified() => {}
                _ = self.stop_leasing.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests;
