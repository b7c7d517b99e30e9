//! Concurrency slots and rate cells in Redis (slot_*.lua, rate_take.lua):
//! one script per check-and-take, so hosts sharing the store share the
//! limits exactly.

use super::{Core, backend};
use crate::StoreError;

impl Core {
    pub(super) async fn acquire_slot(
        &self,
        key: &str,
        limit: u32,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        let args = vec![
            key.into(),
            limit.to_string(),
            holder.into(),
            until.to_string(),
        ];
        let v = self.run_raw(&self.scripts.slot_acquire, args).await?;
        let n: i64 = redis::from_redis_value(v).map_err(backend)?;
        Ok(n == 1)
    }

    pub(super) async fn release_slot(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let args = vec![key.into(), holder.into()];
        self.run_raw(&self.scripts.slot_release, args).await?;
        Ok(())
    }

    pub(super) async fn take_rate(
        &self,
        key: &str,
        limit: u32,
        per_ms: u64,
    ) -> Result<Option<i64>, StoreError> {
        let args = vec![key.into(), limit.to_string(), per_ms.to_string()];
        let v = self.run_raw(&self.scripts.rate_take, args).await?;
        let at: i64 = redis::from_redis_value(v).map_err(backend)?;
        Ok((at >= 0).then_some(at))
    }
}
