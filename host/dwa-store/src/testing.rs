//! Test support: a throwaway `redis-server` on a free loopback port, so
//! that nothing depends on a Redis already running; and a store wrapper
//! that fails chosen operations on demand, so that how the engine rides out
//! a store failure is tested deterministically rather than by racing a
//! server restart.

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::Value;

use crate::{
    DueEffects, EventFeed, Job, Leased, ListFilter, NewEvent, NewTask, ScheduleRecord,
    ScheduleUpdate, Settled, StepEnd, Store, StoreError, TaskRecord, Transition,
};
use dwa_core::model::TaskEvent;

/// A `redis-server` child process, killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl RedisServer {
    /// Starts a server without persistence; panics with a clear message if it cannot.
    pub fn start() -> RedisServer {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts a server with extra arguments (persistence for restart tests).
    pub fn start_with(args: &[&str]) -> RedisServer {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("dwa-redis-{port}-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        Self::spawn(port, dir, args)
    }

    fn spawn(port: u16, dir: std::path::PathBuf, args: &[&str]) -> RedisServer {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&dir)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (`just test-setup` does: apt-get install redis-server)")
            });
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port, dir }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and folder.
    pub fn restart(&mut self, args: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let fresh = Self::spawn(self.port, self.dir.clone(), args);
        let old = std::mem::replace(self, fresh);
        std::mem::forget(old);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(6390)
}

/// A store that fails chosen operations a set number of times, then behaves
/// as the store it wraps: the engine's handling of store failures is tested
/// without timing a real outage.
pub struct Flaky {
    inner: Arc<dyn Store>,
    faults: Mutex<HashMap<&'static str, u32>>,
    tripped: Mutex<Vec<&'static str>>,
}

impl Flaky {
    /// Wraps `inner`, failing nothing yet.
    pub fn new(inner: Arc<dyn Store>) -> Flaky {
        Flaky {
            inner,
            faults: Mutex::new(HashMap::new()),
            tripped: Mutex::new(Vec::new()),
        }
    }

    /// Makes the next `times` calls of `op` (a [`Store`] method's name) fail.
    pub fn fail_next(&self, op: &'static str, times: u32) {
        if let Ok(mut f) = self.faults.lock() {
            f.insert(op, times);
        }
    }

    /// The operations that failed so far, in order.
    pub fn tripped(&self) -> Vec<&'static str> {
        self.tripped.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn trip(&self, op: &'static str) -> Result<(), StoreError> {
        let Ok(mut faults) = self.faults.lock() else {
            return Ok(());
        };
        match faults.get_mut(op) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if let Ok(mut t) = self.tripped.lock() {
                    t.push(op);
                }
                Err(StoreError::Backend(format!("injected failure of {op}")))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for Flaky {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }

    async fn create_task(&self, task: NewTask) -> Result<Transition, StoreError> {
        self.trip("create_task")?;
        self.inner.create_task(task).await
    }

    async fn create_and_lease(
        &self,
        task: NewTask,
        queue: &str,
        owner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<(Transition, Vec<Job>), StoreError> {
        self.trip("create_task")?;
        self.inner
            .create_and_lease(task, queue, owner, max, lease_ms)
            .await
    }

    async fn lease(
        &self,
        queue: &str,
        owner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<Leased, StoreError> {
        self.trip("lease")?;
        self.inner.lease(queue, owner, max, lease_ms).await
    }

    async fn renew(&self, jobs: &[Job], lease_ms: i64) -> Result<Vec<bool>, StoreError> {
        self.trip("renew")?;
        self.inner.renew(jobs, lease_ms).await
    }

    async fn start_items(
        &self,
        job: &Job,
        items: u32,
        concurrency: u32,
    ) -> Result<Transition, StoreError> {
        self.trip("start_items")?;
        self.inner.start_items(job, items, concurrency).await
    }

    async fn complete(&self, job: &Job, result: Value) -> Result<Transition, StoreError> {
        self.trip("complete")?;
        self.inner.complete(job, result).await
    }

    async fn complete_and_lease(
        &self,
        job: &Job,
        result: Value,
        queue: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<(Transition, Option<Job>), StoreError> {
        self.trip("complete")?;
        self.inner
            .complete_and_lease(job, result, queue, owner, lease_ms)
            .await
    }

    async fn retry(&self, job: &Job, run_at: i64, error: &str) -> Result<Transition, StoreError> {
        self.trip("retry")?;
        self.inner.retry(job, run_at, error).await
    }

    async fn fail(&self, job: &Job, error: &str) -> Result<Transition, StoreError> {
        self.trip("fail")?;
        self.inner.fail(job, error).await
    }

    async fn release(&self, jobs: &[Job]) -> Result<(), StoreError> {
        self.trip("release")?;
        self.inner.release(jobs).await
    }

    async fn cancel(&self, task_id: &str) -> Result<Transition, StoreError> {
        self.trip("cancel")?;
        self.inner.cancel(task_id).await
    }

    async fn park(&self, job: &Job, until: i64, data: Value) -> Result<Transition, StoreError> {
        self.trip("park")?;
        self.inner.park(job, until, data).await
    }

    async fn signal(
        &self,
        task_id: &str,
        step: u32,
        result: Value,
        until: Option<i64>,
    ) -> Result<Transition, StoreError> {
        self.trip("signal")?;
        self.inner.signal(task_id, step, result, until).await
    }

    async fn resume(
        &self,
        task_id: &str,
        spec: Option<String>,
        effects: crate::Lifecycles,
    ) -> Result<Transition, StoreError> {
        self.trip("resume")?;
        self.inner.resume(task_id, spec, effects).await
    }

    async fn reap_expired(&self) -> Result<usize, StoreError> {
        self.trip("reap_expired")?;
        self.inner.reap_expired().await
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.trip("task")?;
        self.inner.task(id).await
    }

    async fn task_summary(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.trip("task_summary")?;
        self.inner.task_summary(id).await
    }

    async fn spec(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.trip("spec")?;
        self.inner.spec(id).await
    }

    async fn step_results(
        &self,
        id: &str,
        steps: &[u32],
    ) -> Result<Vec<Option<Value>>, StoreError> {
        self.trip("step_results")?;
        self.inner.step_results(id, steps).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<TaskRecord>, StoreError> {
        self.trip("list")?;
        self.inner.list(filter).await
    }

    async fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        self.trip("events")?;
        self.inner.events(id, after, limit).await
    }

    async fn append_events(
        &self,
        id: &str,
        events: Vec<NewEvent>,
        cap: u64,
    ) -> Result<Vec<Arc<TaskEvent>>, StoreError> {
        self.trip("append_events")?;
        self.inner.append_events(id, events, cap).await
    }

    async fn claim_effects(
        &self,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<DueEffects>, StoreError> {
        self.trip("claim_effects")?;
        self.inner.claim_effects(max, lease_ms).await
    }

    async fn settle_effects(&self, due: &DueEffects, how: Settled) -> Result<(), StoreError> {
        self.trip("settle_effects")?;
        self.inner.settle_effects(due, how).await
    }

    fn subscribe(&self) -> EventFeed {
        self.inner.subscribe()
    }

    async fn purge_finished(&self, ended_before: i64, limit: usize) -> Result<usize, StoreError> {
        self.trip("purge_finished")?;
        self.inner.purge_finished(ended_before, limit).await
    }

    async fn acquire_slot(
        &self,
        key: &str,
        limit: u32,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        self.trip("acquire_slot")?;
        self.inner.acquire_slot(key, limit, holder, until).await
    }

    async fn release_slot(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.trip("release_slot")?;
        self.inner.release_slot(key, holder).await
    }

    async fn take_rate(
        &self,
        key: &str,
        limit: u32,
        per_ms: u64,
    ) -> Result<Option<i64>, StoreError> {
        self.trip("take_rate")?;
        self.inner.take_rate(key, limit, per_ms).await
    }

    async fn defer(
        &self,
        job: &Job,
        until: i64,
        reason: Option<&str>,
    ) -> Result<Transition, StoreError> {
        self.trip("defer")?;
        self.inner.defer(job, until, reason).await
    }

    async fn spawn(
        &self,
        job: &Job,
        key: &str,
        child: NewTask,
        until: i64,
    ) -> Result<Transition, StoreError> {
        self.trip("spawn")?;
        self.inner.spawn(job, key, child, until).await
    }

    async fn child_of(&self, job: &Job) -> Result<Option<String>, StoreError> {
        self.trip("child_of")?;
        self.inner.child_of(job).await
    }

    async fn live_children(&self, task_id: &str) -> Result<Vec<String>, StoreError> {
        self.trip("live_children")?;
        self.inner.live_children(task_id).await
    }

    async fn end_step(&self, job: &Job, end: StepEnd) -> Result<Transition, StoreError> {
        self.trip("end_step")?;
        self.inner.end_step(job, end).await
    }

    async fn create_schedule(&self, s: ScheduleRecord, max: usize) -> Result<(), StoreError> {
        self.trip("create_schedule")?;
        self.inner.create_schedule(s, max).await
    }

    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        self.trip("schedule")?;
        self.inner.schedule(id).await
    }

    async fn schedules(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.trip("schedules")?;
        self.inner.schedules(after, limit).await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        self.trip("delete_schedule")?;
        self.inner.delete_schedule(id).await
    }

    async fn due_schedules(
        &self,
        max: usize,
    ) -> Result<(Vec<ScheduleRecord>, Option<i64>), StoreError> {
        self.trip("due_schedules")?;
        self.inner.due_schedules(max).await
    }

    async fn update_schedule(&self, id: &str, update: ScheduleUpdate) -> Result<bool, StoreError> {
        self.trip("update_schedule")?;
        self.inner.update_schedule(id, update).await
    }

    async fn queues(&self) -> Result<Vec<String>, StoreError> {
        self.trip("queues")?;
        self.inner.queues().await
    }

    async fn queue_depths(&self, max: usize) -> Result<Vec<crate::QueueDepth>, StoreError> {
        self.trip("queue_depths")?;
        self.inner.queue_depths(max).await
    }

    async fn settled(&self) -> Result<(), StoreError> {
        self.inner.settled().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.trip("ping")?;
        self.inner.ping().await
    }
}
