//! The Redis store (`REDIS_URL`): the same [`Store`] contract as the
//! embedded one, shared by many hosts.
//!
//! Every transition is one Lua script (`*.lua` beside this file, each
//! prefixed with `lib.lua`), so two hosts finishing sibling steps at once can
//! neither lose nor double-release a dependant. Leased jobs sit in a sorted
//! set by lease expiry; any host's reaper returns expired ones to their queue
//! (failing a step that stalled too often). Delayed retries are jobs whose
//! due time is in the future, so a restart loses none. Events go to a list
//! per task (replay) and a pub/sub channel, which every host forwards to its
//! local subscribers: an SSE client on host A sees steps run on host B.
//!
//! Reads (task, list, events) are plain commands; they need no atomicity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value as RValue};
use serde_json::Value;
use tokio::sync::broadcast;

use super::{
    Job, Leased, ListFilter, NewEvent, NewTask, StepRecord, Store, StoreError, TaskRecord,
    Transition,
};
use crate::clock::{Clock, SystemClock};
use crate::model::{StepStatus, TaskEvent, TaskStatus};

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(include_str!("lib.lua"), "\n", include_str!($file)))
    };
}

struct Scripts {
    create: Script,
    lease: Script,
    renew: Script,
    complete: Script,
    start_items: Script,
    retry: Script,
    fail: Script,
    release: Script,
    cancel: Script,
    reap: Script,
    append: Script,
    sweep: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            create: script!("create.lua"),
            lease: script!("lease.lua"),
            renew: script!("renew.lua"),
            complete: script!("complete.lua"),
            start_items: script!("start_items.lua"),
            retry: script!("retry.lua"),
            fail: script!("fail.lua"),
            release: script!("release.lua"),
            cancel: script!("cancel.lua"),
            reap: script!("reap.lua"),
            append: script!("append.lua"),
            sweep: script!("sweep.lua"),
        }
    }
}

/// Settings of the Redis store.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `REDIS_URL`.
    pub url: String,
    /// Key prefix (`DWA_REDIS_PREFIX`, default `dwa`).
    pub prefix: String,
    /// Expired leases a job may have before its step fails (`DWA_MAX_STALLED`).
    pub max_stalled: u32,
}

/// The Redis store.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    max_stalled: u32,
    clock: Arc<dyn Clock>,
    scripts: Scripts,
    events: broadcast::Sender<Arc<TaskEvent>>,
    listener: tokio::task::JoinHandle<()>,
    round_trips: std::sync::atomic::AtomicU64,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

/// Maps a script's error reply (`LEASE_LOST job`, ...) to the store's errors.
fn script_error(e: redis::RedisError) -> StoreError {
    let text = e.to_string();
    let detail = e.detail().unwrap_or("").to_owned();
    let find = |code: &str| text.contains(code) || e.code() == Some(code);
    if find("LEASE_LOST") {
        StoreError::LeaseLost(detail)
    } else if find("DUPLICATE") {
        StoreError::Duplicate(detail)
    } else if find("NOT_FOUND") {
        StoreError::NotFound(detail)
    } else if find("CONFLICT") {
        StoreError::Conflict(detail)
    } else {
        backend(text)
    }
}

fn job_id(j: &Job) -> String {
    format!("{}|{}|{}", j.task_id, j.step, j.item.map_or(-1, i64::from))
}

fn parse_job(id: &str, attempt: &str, token: &str) -> Option<Job> {
    let mut parts = id.rsplitn(3, '|');
    let item: i64 = parts.next()?.parse().ok()?;
    let step: u32 = parts.next()?.parse().ok()?;
    let task_id = parts.next()?.to_owned();
    Some(Job {
        task_id,
        step,
        item: u32::try_from(item).ok(),
        attempt: attempt.parse().ok()?,
        token: token.parse().ok()?,
    })
}

/// The common reply of the scripts: {woke, finished, events, jobs, number}.
struct ScriptReply {
    woke: Vec<String>,
    finished: Option<TaskStatus>,
    events: Vec<Arc<TaskEvent>>,
    jobs: Vec<Job>,
    number: i64,
}

fn parse_reply(v: RValue) -> Result<ScriptReply, StoreError> {
    let (woke, finished, events, jobs, number): (
        Vec<String>,
        String,
        Vec<String>,
        Vec<String>,
        i64,
    ) = redis::from_redis_value(v).map_err(backend)?;
    let events = events
        .iter()
        .map(|e| serde_json::from_str::<TaskEvent>(e).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| backend(format!("bad event from script: {e}")))?;
    let mut parsed = Vec::with_capacity(jobs.len() / 3);
    for c in jobs.chunks(3) {
        if let [id, attempt, token] = c {
            parsed.push(
                parse_job(id, attempt, token)
                    .ok_or_else(|| backend(format!("bad job id {id:?}")))?,
            );
        }
    }
    Ok(ScriptReply {
        woke,
        finished: TaskStatus::parse(&finished),
        events,
        jobs: parsed,
        number,
    })
}

impl ScriptReply {
    fn transition(&self) -> Transition {
        Transition {
            woke: self.woke.clone(),
            finished: self.finished,
            events: self.events.clone(),
        }
    }
}

impl RedisStore {
    /// Connects (the connection manager reconnects by itself) and starts the
    /// event listener.
    pub async fn connect(opts: &RedisOptions) -> Result<RedisStore, StoreError> {
        Self::connect_with_clock(opts, Arc::new(SystemClock)).await
    }

    /// Connects with a given clock (tests move a manual one).
    pub async fn connect_with_clock(
        opts: &RedisOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(opts.url.as_str())
            .map_err(|e| backend(format!("bad REDIS_URL: {e}")))?;
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| backend(format!("cannot connect to {}: {e}", opts.url)))?;
        let (events, _) = broadcast::channel(16_384);
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let listener = tokio::spawn(listen(
            client,
            format!("{}:events", opts.prefix),
            events.clone(),
            ready,
        ));
        // Events published before the subscription would be missed live.
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .map_err(|_| backend("could not subscribe to the event channel within 10 s"))?
            .map_err(|_| backend("event listener stopped"))?;
        Ok(RedisStore {
            conn,
            prefix: opts.prefix.clone(),
            max_stalled: opts.max_stalled,
            clock,
            scripts: Scripts::new(),
            events,
            listener,
            round_trips: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn k(&self, parts: &[&str]) -> String {
        let mut s = self.prefix.clone();
        for p in parts {
            s.push(':');
            s.push_str(p);
        }
        s
    }

    /// Requests sent to Redis so far (a script call or a pipeline is one), for benchmarks.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count(&self) {
        self.round_trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    async fn run(&self, script: &Script, args: Vec<String>) -> Result<ScriptReply, StoreError> {
        self.count();
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix).arg(self.clock.now_ms());
        for a in args {
            inv.arg(a);
        }
        let v: RValue = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(script_error)?;
        parse_reply(v)
    }

    async fn hgetall(&self, key: &str) -> Result<HashMap<String, String>, StoreError> {
        self.count();
        self.conn.clone().hgetall(key).await.map_err(backend)
    }
}

/// Forwards the shared event channel to local subscribers, reconnecting forever.
async fn listen(
    client: redis::Client,
    channel: String,
    events: broadcast::Sender<Arc<TaskEvent>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut ps) => match ps.subscribe(&channel).await {
                Ok(()) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                    let mut stream = ps.on_message();
                    while let Some(msg) = stream.next().await {
                        let Ok(payload) = msg.get_payload::<String>() else {
                            continue;
                        };
                        // One message carries every event of one script, in order.
                        match serde_json::from_str::<Vec<TaskEvent>>(&payload) {
                            Ok(list) => {
                                for e in list {
                                    let _ = events.send(Arc::new(e));
                                }
                            }
                            Err(e) => tracing::warn!(error = %e, "unreadable events on {channel}"),
                        }
                    }
                    tracing::warn!("redis event subscription ended; reconnecting");
                }
                Err(e) => tracing::warn!(error = %e, "cannot subscribe to {channel}; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "redis pub/sub unavailable; retrying"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn opt_i64(m: &HashMap<String, String>, k: &str) -> Option<i64> {
    m.get(k)
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as i64)
}

fn json_field(m: &HashMap<String, String>, k: &str) -> Option<Value> {
    m.get(k).and_then(|v| serde_json::from_str(v).ok())
}

fn record(id: &str, m: &HashMap<String, String>, spec: String) -> TaskRecord {
    TaskRecord {
        id: id.to_owned(),
        task_type: m.get("type").cloned().unwrap_or_default(),
        queue: m.get("queue").cloned().unwrap_or_default(),
        status: m
            .get("status")
            .and_then(|s| TaskStatus::parse(s))
            .unwrap_or(TaskStatus::Pending),
        spec,
        is_pipeline: m.get("pipeline").is_some_and(|p| p == "1"),
        progress: m
            .get("progress")
            .and_then(|p| p.parse().ok())
            .unwrap_or(0.0),
        result: json_field(m, "result"),
        error: m.get("error").cloned(),
        created_at: opt_i64(m, "created").unwrap_or(0),
        started_at: opt_i64(m, "started"),
        completed_at: opt_i64(m, "completed"),
        steps: Vec::new(),
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn create_task(&self, task: NewTask) -> Result<Transition, StoreError> {
        let mut args = vec![
            task.id.clone(),
            task.task_type.clone(),
            task.queue.clone(),
            if task.is_pipeline { "1" } else { "0" }.into(),
            task.created_at.to_string(),
            task.spec.clone(),
            task.steps.len().to_string(),
        ];
        for s in &task.steps {
            args.push(s.key.clone());
            args.push(s.task.clone());
            args.push(s.queue.clone());
            args.push(s.waiting_for.to_string());
            args.push(serde_json::to_string(&s.dependants).map_err(backend)?);
        }
        Ok(self.run(&self.scripts.create, args).await?.transition())
    }

    async fn lease(
        &self,
        queue: &str,
        owner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<Leased, StoreError> {
        let r = self
            .run(
                &self.scripts.lease,
                vec![
                    queue.into(),
                    owner.into(),
                    max.to_string(),
                    lease_ms.to_string(),
                    "1".into(),
                ],
            )
            .await?;
        Ok(Leased {
            jobs: r.jobs,
            next_due: (r.number >= 0).then_some(r.number),
        })
    }

    async fn renew(&self, jobs: &[Job], lease_ms: i64) -> Result<Vec<bool>, StoreError> {
        self.count();
        let mut inv = self.scripts.renew.prepare_invoke();
        inv.arg(&self.prefix).arg(self.clock.now_ms()).arg(lease_ms);
        for j in jobs {
            inv.arg(job_id(j)).arg(j.token.to_string());
        }
        let held: Vec<i64> = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(script_error)?;
        Ok(held.into_iter().map(|h| h == 1).collect())
    }

    async fn start_items(
        &self,
        job: &Job,
        items: u32,
        concurrency: u32,
    ) -> Result<Transition, StoreError> {
        let args = vec![
            job_id(job),
            job.token.to_string(),
            items.to_string(),
            concurrency.to_string(),
        ];
        Ok(self
            .run(&self.scripts.start_items, args)
            .await?
            .transition())
    }

    async fn complete(&self, job: &Job, result: Value) -> Result<Transition, StoreError> {
        let args = vec![
            job_id(job),
            job.token.to_string(),
            result.to_string(),
            String::new(),
            String::new(),
            "0".into(),
        ];
        Ok(self.run(&self.scripts.complete, args).await?.transition())
    }

    async fn complete_and_lease(
        &self,
        job: &Job,
        result: Value,
        queue: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<(Transition, Option<Job>), StoreError> {
        let args = vec![
            job_id(job),
            job.token.to_string(),
            result.to_string(),
            queue.into(),
            owner.into(),
            lease_ms.to_string(),
        ];
        let mut r = self.run(&self.scripts.complete, args).await?;
        let next = r.jobs.pop();
        Ok((r.transition(), next))
    }

    async fn retry(&self, job: &Job, run_at: i64, error: &str) -> Result<Transition, StoreError> {
        let args = vec![
            job_id(job),
            job.token.to_string(),
            run_at.to_string(),
            error.into(),
        ];
        Ok(self.run(&self.scripts.retry, args).await?.transition())
    }

    async fn fail(&self, job: &Job, error: &str) -> Result<Transition, StoreError> {
        let args = vec![job_id(job), job.token.to_string(), error.into()];
        Ok(self.run(&self.scripts.fail, args).await?.transition())
    }

    async fn release(&self, jobs: &[Job]) -> Result<(), StoreError> {
        let mut args = Vec::new();
        for j in jobs {
            args.push(job_id(j));
            args.push(j.token.to_string());
        }
        self.run(&self.scripts.release, args).await.map(|_| ())
    }

    async fn cancel(&self, task_id: &str) -> Result<Transition, StoreError> {
        Ok(self
            .run(&self.scripts.cancel, vec![task_id.into()])
            .await?
            .transition())
    }

    async fn reap_expired(&self) -> Result<usize, StoreError> {
        let r = self
            .run(&self.scripts.reap, vec![self.max_stalled.to_string()])
            .await?;
        Ok(r.number.max(0) as usize)
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let m = self.hgetall(&self.k(&["t", id])).await?;
        if m.is_empty() {
            return Ok(None);
        }
        let spec: Option<String> = self
            .conn
            .clone()
            .get(self.k(&["spec", id]))
            .await
            .map_err(backend)?;
        let mut rec = record(id, &m, spec.unwrap_or_default());
        let total: usize = m.get("total").and_then(|t| t.parse().ok()).unwrap_or(0);
        let mut pipe = redis::pipe();
        for i in 0..total {
            pipe.hgetall(self.k(&["s", id, &i.to_string()]));
        }
        let steps: Vec<HashMap<String, String>> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        for (i, s) in steps.into_iter().enumerate() {
            rec.steps.push(StepRecord {
                idx: i as u32,
                key: s.get("key").cloned().unwrap_or_default(),
                task: s.get("task").cloned().unwrap_or_default(),
                status: s
                    .get("status")
                    .and_then(|v| StepStatus::parse(v))
                    .unwrap_or(StepStatus::Pending),
                result: json_field(&s, "result"),
                error: s.get("error").cloned(),
                attempts: s.get("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
                started_at: opt_i64(&s, "started"),
                completed_at: opt_i64(&s, "completed"),
            });
        }
        Ok(Some(rec))
    }

    async fn task_summary(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let m = self.hgetall(&self.k(&["t", id])).await?;
        Ok((!m.is_empty()).then(|| record(id, &m, String::new())))
    }

    async fn spec(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.count();
        self.conn
            .clone()
            .get(self.k(&["spec", id]))
            .await
            .map_err(backend)
    }

    async fn step_results(
        &self,
        id: &str,
        steps: &[u32],
    ) -> Result<Vec<Option<Value>>, StoreError> {
        self.count();
        let mut pipe = redis::pipe();

        for s in steps {
            pipe.cmd("HMGET")
                .arg(self.k(&["s", id, &s.to_string()]))
                .arg("status")
                .arg("result");
        }
        let rows: Vec<(Option<String>, Option<String>)> = pipe
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(status, result)| match status.as_deref() {
                Some("completed") => result.and_then(|r| serde_json::from_str(&r).ok()),
                _ => None,
            })
            .collect())
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let index = match (&filter.status, &filter.queue) {
            (Some(s), _) => self.k(&["idx", "s", s.as_str()]),
            (None, Some(q)) => self.k(&["idx", "q", q]),
            (None, None) => self.k(&["idx"]),
        };
        let mut out = Vec::new();
        let mut before = filter.before.clone();
        // Page through the index; a second filter (queue with status) is applied here.
        while out.len() < filter.limit {
            let max = before.as_ref().map_or("+".to_owned(), |b| format!("({b}"));
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                .arg(&index)
                .arg(&max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(filter.limit.max(50))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(backend)?;
            if ids.is_empty() {
                break;
            }
            before = ids.last().cloned();
            for id in ids {
                let m = self.hgetall(&self.k(&["t", &id])).await?;
                if m.is_empty() {
                    continue;
                }
                let rec = record(&id, &m, String::new());
                if filter.queue.as_ref().is_some_and(|q| q != &rec.queue) {
                    continue;
                }
                out.push(rec);
                if out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        let start = after as isize;
        let stop = start + limit as isize - 1;
        let raw: Vec<String> = self
            .conn
            .clone()
            .lrange(self.k(&["ev", id]), start, stop)
            .await
            .map_err(backend)?;
        raw.iter()
            .map(|e| serde_json::from_str(e).map_err(|e| backend(format!("bad event: {e}"))))
            .collect()
    }

    async fn append_events(
        &self,
        id: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Arc<TaskEvent>>, StoreError> {
        let mut args = vec![id.to_owned()];
        for e in events {
            args.push(e.kind);
            args.push(e.step.map_or("-1".into(), |s| s.to_string()));
            args.push(e.data.to_string());
        }
        Ok(self.run(&self.scripts.append, args).await?.events)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<TaskEvent>> {
        self.events.subscribe()
    }

    async fn purge_finished(&self, ended_before: i64, limit: usize) -> Result<usize, StoreError> {
        let r = self
            .run(
                &self.scripts.sweep,
                vec![ended_before.to_string(), limit.to_string()],
            )
            .await?;
        Ok(r.number.max(0) as usize)
    }

    async fn queues(&self) -> Result<Vec<String>, StoreError> {
        self.conn
            .clone()
            .smembers(self.k(&["queues"]))
            .await
            .map_err(backend)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let server = crate::store::testing::RedisServer::start();
        let url = server.url();
        crate::store::conformance::run_all(|clock: Arc<ManualClock>| {
            let url = url.clone();
            async move {
                let opts = RedisOptions {
                    url,
                    prefix: format!("t{}", uuid::Uuid::now_v7().simple()),
                    max_stalled: 3,
                };
                Arc::new(RedisStore::connect_with_clock(&opts, clock).await.unwrap())
                    as Arc<dyn Store>
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_stalls_too_often_fails_its_step() {
        let server = crate::store::testing::RedisServer::start();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let opts = RedisOptions {
            url: server.url(),
            prefix: "stall".into(),
            max_stalled: 2,
        };
        let s = RedisStore::connect_with_clock(&opts, clock.clone())
            .await
            .unwrap();
        let t = crate::store::conformance::chain_task(1);
        let id = t.id.clone();
        s.create_task(t).await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                s.lease("default", "w", 1, 1000).await.unwrap().jobs.len(),
                1
            );
            clock.advance(1001);
            assert_eq!(s.reap_expired().await.unwrap(), 1);
        }
        assert_eq!(
            s.lease("default", "w", 1, 1000).await.unwrap().jobs.len(),
            1
        );
        clock.advance(1001);
        s.reap_expired().await.unwrap();
        let rec = s.task(&id).await.unwrap().unwrap();
        assert_eq!(rec.status, TaskStatus::Failed);
        assert!(rec.error.unwrap().contains("stalled 3 times"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finished_tasks_are_swept_after_retention() {
        let server = crate::store::testing::RedisServer::start();
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let opts = RedisOptions {
            url: server.url(),
            prefix: "sweep".into(),
            max_stalled: 3,
        };
        let s = RedisStore::connect_with_clock(&opts, clock.clone())
            .await
            .unwrap();
        let t = crate::store::conformance::chain_task(2);
        let id = t.id.clone();
        s.create_task(t).await.unwrap();
        for _ in 0..2 {
            let j = s.lease("default", "w", 1, 1000).await.unwrap().jobs;
            s.complete(&j[0], serde_json::json!(1)).await.unwrap();
        }
        let cutoff = |c: &ManualClock| c.now_ms() - 3_600_000;
        assert_eq!(
            s.purge_finished(cutoff(&clock), 500).await.unwrap(),
            0,
            "kept within retention"
        );
        clock.advance(3_600_001);
        assert_eq!(s.purge_finished(cutoff(&clock), 500).await.unwrap(), 1);
        assert!(s.task(&id).await.unwrap().is_none());
        let mut conn = s.conn.clone();
        let keys: Vec<String> = conn.keys("sweep:*").await.unwrap();
        let left: Vec<&String> = keys
            .iter()
            .filter(|k| !k.ends_with(":token") && !k.ends_with(":queues"))
            .collect();
        assert!(left.is_empty(), "nothing of the task is left: {left:?}");
    }
}
