//! The writer's operations beside a task's own transitions: the outbox of
//! lifecycle effects (due in the transition that ends a task, claimed and
//! settled by the engine) and idempotency keys (checked as a task is made).

use rusqlite::{OptionalExtension, params};

use super::Writer;
use crate::{DueEffects, Idempotency, Settled, StoreError};

impl Writer {
    /// Makes a task's `lifecycle` effects due (when it has any), in the
    /// transition that ends the task.
    pub(super) fn effects_due(
        &mut self,
        task: &str,
        lifecycle: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET due_at = ?1 WHERE task_id = ?2 AND lifecycle = ?3 AND due_at IS NULL",
            )?
            .execute(params![now, task, lifecycle])?;
        Ok(())
    }

    /// Claims due deliveries: each is hidden until `now + lease`.
    pub(super) fn claim_effects(
        &mut self,
        max: usize,
        now: i64,
        lease: i64,
    ) -> Result<Vec<DueEffects>, StoreError> {
        let due: Vec<(String, String)> = self
            .conn
            .prepare_cached(
                "SELECT task_id, lifecycle FROM outbox WHERE due_at IS NOT NULL AND due_at <= ?1
                 ORDER BY due_at LIMIT ?2",
            )?
            .query_map(params![now, max as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(due.len());
        for (task_id, lifecycle) in due {
            let (attempt, token, delivered): (i64, i64, i64) = self
                .conn
                .prepare_cached(
                    "UPDATE outbox SET due_at = ?1, attempt = attempt + 1, token = token + 1
                     WHERE task_id = ?2 AND lifecycle = ?3 RETURNING attempt, token, delivered",
                )?
                .query_row(params![now + lease, task_id, lifecycle], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            out.push(DueEffects {
                task_id,
                lifecycle,
                attempt: attempt as u32,
                token,
                delivered: delivered as u64,
            });
        }
        Ok(out)
    }

    /// Settles a claimed delivery, if the claim is still the caller's.
    pub(super) fn settle_effects(
        &mut self,
        due: &DueEffects,
        how: &Settled,
    ) -> Result<(), StoreError> {
        let changed = match how {
            Settled::Done => self
                .conn
                .prepare_cached(
                    "DELETE FROM outbox WHERE task_id = ?1 AND lifecycle = ?2 AND token = ?3",
                )?
                .execute(params![due.task_id, due.lifecycle, due.token])?,
            Settled::Retry { at, delivered } => self
                .conn
                .prepare_cached(
                    "UPDATE outbox SET due_at = ?1, delivered = ?2
                     WHERE task_id = ?3 AND lifecycle = ?4 AND token = ?5",
                )?
                .execute(params![
                    at,
                    *delivered as i64,
                    due.task_id,
                    due.lifecycle,
                    due.token
                ])?,
        };
        if changed == 0 {
            return Err(StoreError::LeaseLost(format!(
                "{} {} (token {})",
                due.task_id, due.lifecycle, due.token
            )));
        }
        Ok(())
    }

    /// Refuses a key that a live earlier submission holds (an expired one
    /// is forgotten here).
    pub(super) fn check_idempotency(
        &mut self,
        i: &Idempotency,
        now: i64,
    ) -> Result<(), StoreError> {
        let held: Option<(String, String, i64)> = self
            .conn
            .prepare_cached(
                "SELECT task_id, body_hash, expires_at FROM idempotency WHERE key = ?1",
            )?
            .query_row(params![i.key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        match held {
            Some((task_id, hash, expires)) if expires > now => Err(StoreError::Idempotent {
                task_id,
                same_body: hash == i.body_hash,
            }),
            _ => Ok(()),
        }
    }
}
