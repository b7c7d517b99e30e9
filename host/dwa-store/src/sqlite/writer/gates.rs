//! Concurrency slots and rate cells (docs/tasks.md, "Concurrency keys and
//! rate limits"), and deferring a job that waits for one. Written by the
//! writer thread, so each check-and-take is one step of its transaction.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde_json::json;

use dwa_core::model::TaskEvent;

use super::Writer;
use crate::{Job, StoreError, Transition};

/// The writes of gates, applied by the writer thread.
pub(in crate::sqlite) enum GateOp {
    Acquire {
        key: String,
        limit: u32,
        holder: String,
        until: i64,
    },
    Release {
        key: String,
        holder: String,
    },
    TakeRate {
        key: String,
        limit: u32,
        per_ms: u64,
    },
}

/// What a gate op answered: a slot taken or not, a rate's next time.
pub(in crate::sqlite) enum GateReply {
    Slot(bool),
    Rate(Option<i64>),
}

impl Writer {
    pub(in crate::sqlite) fn gate(
        &mut self,
        op: &GateOp,
        now: i64,
    ) -> Result<GateReply, StoreError> {
        match op {
            GateOp::Acquire {
                key,
                limit,
                holder,
                until,
            } => {
                self.conn
                    .prepare_cached("DELETE FROM slots WHERE until < ?1")?
                    .execute([now])?;
                let renewed = self
                    .conn
                    .prepare_cached("UPDATE slots SET until = ?3 WHERE key = ?1 AND holder = ?2")?
                    .execute(params![key, holder, until])?;
                if renewed > 0 {
                    return Ok(GateReply::Slot(true));
                }
                let held: i64 = self
                    .conn
                    .prepare_cached("SELECT COUNT(*) FROM slots WHERE key = ?1")?
                    .query_row([key], |r| r.get(0))?;
                if held >= i64::from(*limit) {
                    return Ok(GateReply::Slot(false));
                }
                self.conn
                    .prepare_cached("INSERT INTO slots (key, holder, until) VALUES (?1, ?2, ?3)")?
                    .execute(params![key, holder, until])?;
                Ok(GateReply::Slot(true))
            }
            GateOp::Release { key, holder } => {
                self.conn
                    .prepare_cached("DELETE FROM slots WHERE key = ?1 AND holder = ?2")?
                    .execute(params![key, holder])?;
                Ok(GateReply::Slot(false))
            }
            GateOp::TakeRate { key, limit, per_ms } => {
                // Cells whose time has passed say nothing more than no cell.
                self.conn
                    .prepare_cached(
                        "DELETE FROM rates WHERE key IN (SELECT key FROM rates WHERE tat < ?1 LIMIT 16)",
                    )?
                    .execute([now as f64])?;
                let tat: Option<f64> = self
                    .conn
                    .prepare_cached("SELECT tat FROM rates WHERE key = ?1")?
                    .query_row([key], |r| r.get(0))
                    .optional()?;
                let (next, at) = dwa_core::plan::gcra(tat, now, *limit, *per_ms);
                if at.is_none() {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO rates (key, tat) VALUES (?1, ?2)
                             ON CONFLICT(key) DO UPDATE SET tat = excluded.tat",
                        )?
                        .execute(params![key, next])?;
                }
                Ok(GateReply::Rate(at))
            }
        }
    }

    pub(in crate::sqlite) fn defer(
        &mut self,
        job: &Job,
        until: i64,
        reason: Option<&str>,
        now: i64,
        ev: &mut Vec<Arc<TaskEvent>>,
    ) -> Result<Transition, StoreError> {
        self.give_back_at(job, until, 0)?;
        if job.item.is_none() {
            self.conn
                .prepare_cached(
                    "UPDATE steps SET status = 'waiting' WHERE task_id = ?1 AND idx = ?2",
                )?
                .execute(params![job.task_id, job.step])?;
            if let Some(reason) = reason {
                let step = self.step_row(&job.task_id, job.step)?;
                let data = json!({"reason": reason, "until": until});
                self.emit(&job.task_id, "step:waiting", Some(&step), data, now, ev)?;
            }
        }
        Ok(Transition {
            woke: Vec::new(),
            finished: None,
            ..Default::default()
        })
    }
}
