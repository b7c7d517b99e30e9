//! Schedules in the embedded store: one row each, written by the writer
//! thread (so a compare-and-set of `next_at` is one statement in the batch's
//! transaction), read on the reader connection.

use rusqlite::{Connection, OptionalExtension, params};

use super::writer::Writer;
use crate::{ScheduleRecord, ScheduleUpdate, StoreError};

/// The writes of schedules, applied by the writer thread.
pub(super) enum ScheduleOp {
    Create(ScheduleRecord, usize),
    Update(String, ScheduleUpdate),
    Delete(String),
}

const COLUMNS: &str = "id, spec, paused, next_at, state, created_at";

fn record(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        id: r.get(0)?,
        spec: r.get(1)?,
        paused: r.get::<_, i64>(2)? != 0,
        next_at: r.get(3)?,
        state: r.get(4)?,
        created_at: r.get(5)?,
    })
}

impl Writer {
    /// Applies a schedule write; answers how many rows it changed.
    pub(super) fn schedule_op(&mut self, op: &ScheduleOp) -> Result<usize, StoreError> {
        match op {
            ScheduleOp::Create(s, max) => {
                let exists: Option<i64> = self
                    .conn
                    .prepare_cached("SELECT 1 FROM schedules WHERE id = ?1")?
                    .query_row([&s.id], |r| r.get(0))
                    .optional()?;
                if exists.is_some() {
                    return Err(StoreError::Duplicate(s.id.clone()));
                }
                let n: i64 = self
                    .conn
                    .prepare_cached("SELECT COUNT(*) FROM schedules")?
                    .query_row([], |r| r.get(0))?;
                if n as usize >= *max {
                    return Err(StoreError::Conflict(format!(
                        "the store holds {n} schedules, the most DWA_MAX_SCHEDULES allows ({max}): delete one first"
                    )));
                }
                Ok(self
                    .conn
                    .prepare_cached(&format!(
                        "INSERT INTO schedules ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                    ))?
                    .execute(params![
                        s.id,
                        s.spec,
                        i64::from(s.paused),
                        s.next_at,
                        s.state,
                        s.created_at
                    ])?)
            }
            ScheduleOp::Update(id, u) => Ok(self
                .conn
                .prepare_cached(
                    "UPDATE schedules SET next_at = ?1, paused = ?2, state = ?3
                     WHERE id = ?4 AND next_at = ?5",
                )?
                .execute(params![
                    u.next_at,
                    i64::from(u.paused),
                    u.state,
                    id,
                    u.expect
                ])?),
            ScheduleOp::Delete(id) => Ok(self
                .conn
                .prepare_cached("DELETE FROM schedules WHERE id = ?1")?
                .execute([id])?),
        }
    }
}

/// A schedule.
pub(super) fn get(c: &Connection, id: &str) -> Result<Option<ScheduleRecord>, StoreError> {
    Ok(
        c.prepare_cached(&format!("SELECT {COLUMNS} FROM schedules WHERE id = ?1"))?
            .query_row([id], record)
            .optional()?,
    )
}

/// A page of schedules in id order.
pub(super) fn list(
    c: &Connection,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<ScheduleRecord>, StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![after.unwrap_or(""), limit as i64], record)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Unpaused schedules due at `now`, and the next due time after it.
pub(super) fn due(
    c: &Connection,
    now: i64,
    max: usize,
) -> Result<(Vec<ScheduleRecord>, Option<i64>), StoreError> {
    let mut stmt = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedules WHERE paused = 0 AND next_at <= ?1 ORDER BY next_at LIMIT ?2"
    ))?;
    let due = stmt
        .query_map(params![now, max as i64], record)?
        .collect::<Result<Vec<_>, _>>()?;
    let next: Option<i64> = c
        .prepare_cached("SELECT MIN(next_at) FROM schedules WHERE paused = 0 AND next_at > ?1")?
        .query_row([now], |r| r.get(0))?;
    Ok((due, next.filter(|&n| n != crate::NEVER)))
}
