//! Sub-tasks in Redis: spawn.lua parks the parent's job and creates the
//! child in one script; lib.lua's finish_task wakes the parent's job when
//! a child ends; P:kids:{id} lists a task's children.

use super::scripts::{Creation, create_args};
use super::{Core, backend, job_id};
use crate::{Job, NewTask, StoreError, Transition};

impl Core {
    pub(super) async fn spawn(
        &self,
        job: &Job,
        key: &str,
        child: NewTask,
        until: i64,
    ) -> Result<Transition, StoreError> {
        let mut args = create_args(vec![Creation {
            task: child,
            lease: None,
        }]);
        args.extend([
            job_id(job),
            job.token.to_string(),
            key.to_owned(),
            until.to_string(),
        ]);
        let mut items = self.run(&self.scripts.spawn, args).await?.items.into_iter();
        let mut parked = items
            .next()
            .unwrap_or_else(|| Err(backend("spawn answered no item")))?;
        // The parent was parked; the child is made in the same script.
        let created = items
            .next()
            .unwrap_or_else(|| Err(backend("spawn made no sub-task")))?;
        for q in created.woke {
            if !parked.woke.contains(&q) {
                parked.woke.push(q);
            }
        }
        Ok(parked)
    }

    pub(super) async fn child_of(&self, job: &Job) -> Result<Option<String>, StoreError> {
        self.count();
        let step = job.step.to_string();
        let (key, field) = match job.item {
            None => (self.k(&["t", &job.task_id]), format!("{step}:child")),
            Some(i) => (self.k(&["it", &job.task_id, &step]), format!("{i}:child")),
        };
        redis::cmd("HGET")
            .arg(key)
            .arg(field)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    pub(super) async fn live_children(&self, task_id: &str) -> Result<Vec<String>, StoreError> {
        let v = self
            .run_raw(&self.scripts.kids, vec![task_id.to_owned()])
            .await?;
        redis::from_redis_value(v).map_err(backend)
    }
}
