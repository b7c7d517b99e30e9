//! Schedules in Redis: one hash each, with two sorted sets (every id, and
//! the unpaused ones by next tick); each write is one script, so the
//! compare-and-set of a tick is atomic between hosts (sch_*.lua).

use super::{Core, backend};
use crate::{ScheduleRecord, ScheduleUpdate, StoreError};

type Row = (String, String, String, String, String, String);

fn record((id, spec, paused, next, state, created): Row) -> ScheduleRecord {
    ScheduleRecord {
        id,
        spec,
        paused: paused == "1",
        next_at: next.parse().unwrap_or(crate::NEVER),
        state,
        created_at: created.parse().unwrap_or(0),
    }
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.into()
}

impl Core {
    pub(super) async fn create_schedule(
        &self,
        s: ScheduleRecord,
        max: usize,
    ) -> Result<(), StoreError> {
        let id = s.id.clone();
        let v = self
            .run_raw(
                &self.scripts.sch_create,
                vec![
                    s.id,
                    s.spec,
                    flag(s.paused),
                    s.next_at.to_string(),
                    s.state,
                    s.created_at.to_string(),
                    max.to_string(),
                ],
            )
            .await?;
        let answer: String = redis::from_redis_value(v).map_err(backend)?;
        match answer.as_str() {
            "ok" => Ok(()),
            "dup" => Err(StoreError::Duplicate(id)),
            full => Err(StoreError::Conflict(format!(
                "the store holds {} schedules, the most DWA_MAX_SCHEDULES allows ({max}): delete one first",
                full.trim_start_matches("full:")
            ))),
        }
    }

    pub(super) async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        self.count();
        let f: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.k(&["sch", id]))
            .arg(&["spec", "paused", "next", "state", "created"])
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        let mut f = f.into_iter();
        let mut next = || f.next().flatten();
        Ok(match (next(), next(), next(), next(), next()) {
            (Some(spec), Some(paused), Some(nxt), Some(state), Some(created)) => {
                Some(record((id.to_owned(), spec, paused, nxt, state, created)))
            }
            _ => None,
        })
    }

    pub(super) async fn schedules(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        let v = self
            .run_raw(
                &self.scripts.sch_list,
                vec![after.unwrap_or("").to_owned(), limit.to_string()],
            )
            .await?;
        let rows: Vec<Row> = redis::from_redis_value(v).map_err(backend)?;
        Ok(rows.into_iter().map(record).collect())
    }

    pub(super) async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        let v = self
            .run_raw(&self.scripts.sch_delete, vec![id.to_owned()])
            .await?;
        let n: i64 = redis::from_redis_value(v).map_err(backend)?;
        Ok(n > 0)
    }

    pub(super) async fn due_schedules(
        &self,
        max: usize,
    ) -> Result<(Vec<ScheduleRecord>, Option<i64>), StoreError> {
        let v = self
            .run_raw(&self.scripts.sch_due, vec![max.to_string()])
            .await?;
        let (rows, next): (Vec<Row>, String) = redis::from_redis_value(v).map_err(backend)?;
        Ok((
            rows.into_iter().map(record).collect(),
            next.parse().ok().filter(|&n| n != crate::NEVER),
        ))
    }

    pub(super) async fn update_schedule(
        &self,
        id: &str,
        u: ScheduleUpdate,
    ) -> Result<bool, StoreError> {
        let v = self
            .run_raw(
                &self.scripts.sch_update,
                vec![
                    id.to_owned(),
                    u.expect.to_string(),
                    u.next_at.to_string(),
                    flag(u.paused),
                    u.state,
                ],
            )
            .await?;
        let n: i64 = redis::from_redis_value(v).map_err(backend)?;
        Ok(n == 1)
    }
}
