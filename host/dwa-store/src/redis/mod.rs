//! The Redis store (`REDIS_URL`): the same [`Store`] contract as the
//! embedded one, shared by many hosts.
//!
//! Every transition is one Lua script (`*.lua` beside this file, each
//! prefixed with `lib.lua`, which documents the keys), so two hosts
//! finishing sibling steps at once can neither lose nor double-release a
//! dependant. A task and its steps are one hash; leased jobs sit in a
//! sorted set by lease expiry; any host's reaper returns expired ones to
//! their queue (failing a step that stalled too often). Delayed retries are
//! jobs whose due time is in the future, so a restart loses none. Events go
//! to the task's hash (replay) and a pub/sub channel, which every host
//! forwards to its local subscribers: an SSE client on host A sees steps run
//! on host B. Pub/sub drops what is published while a host resubscribes, so
//! each resubscription is announced and followers see [`crate::Feed::Missed`]:
//! they re-read the stored events.
//!
//! Creations and completions, the two calls made once per step, go through
//! `batch::Batcher`s: under load many of them share one script run, which
//! is what lets one Redis core carry several hosts. Reads (task, list,
//! events) are plain commands; they need no atomicity.
//!
//! This file is longer than the others on purpose: it is the one
//! implementation of the [`Store`] contract, a method per call (the
//! outbox's claim and settle included), each turning arguments into a
//! script's and its reply back; the logic lives in the scripts.

mod batch;
mod decode;
mod gates;
mod handout;
mod schedules;
mod scripts;
mod subtask;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script, Value as RValue};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::clock::{Clock, SystemClock};
use crate::{
    DueEffects, EventFeed, Job, Leased, Lifecycles, ListFilter, NewEvent, NewTask, ScheduleRecord,
    ScheduleUpdate, Settled, StepEnd, Store, StoreError, TaskRecord, Transition,
};
use batch::Batcher;
use decode::{ScriptReply, fields_map, parse_reply, record, step_record};
use dwa_core::model::{TaskEvent, TaskStatus};
use handout::Handout;
use scripts::{Creation, LeaseAsk, Scripts, create_args};

/// How big a batched script may grow: Redis runs nothing else while a
/// script runs, so other hosts' calls must not wait behind a huge one. Two
/// in flight per kind: one runs while the next fills.
const BATCH: batch::Limits = batch::Limits {
    items: 256,
    bytes: 1 << 20,
    parallel: 2,
};
/// Fields of the task hash that make a summary (not the spec, not the steps).
const SUMMARY_FIELDS: [&str; 11] = [
    "type",
    "queue",
    "status",
    "pipeline",
    "progress",
    "result",
    "error",
    "created",
    "started",
    "completed",
    "parent",
];

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

/// What the store and its batchers share: the connection and the scripts.
struct Core {
    conn: ConnectionManager,
    prefix: String,
    clock: Arc<dyn Clock>,
    scripts: Scripts,
    round_trips: AtomicU64,
}

/// A job's completion, as queued for the completion batcher.
struct Completion {
    job: String,
    token: String,
    result: String,
    /// The queue to lease the worker's next job from ('' for none).
    next_from: String,
    /// How long that lease lasts.
    lease_ms: i64,
}

/// The Redis store.
pub struct RedisStore {
    core: Arc<Core>,
    max_stalled: u32,
    events: broadcast::Sender<Arc<TaskEvent>>,
    resets: tokio::sync::watch::Sender<u64>,
    listener: tokio::task::JoinHandle<()>,
    creates: Batcher<Creation, (Transition, Vec<Job>)>,
    completions: Batcher<Completion, (Transition, Option<Job>)>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

fn job_id(j: &Job) -> String {
    format!("{}|{}|{}", j.task_id, j.step, j.item.map_or(-1, i64::from))
}

/// Bytes of script arguments a creation takes (its spec, ~64 per step).
fn task_size(c: &Creation) -> usize {
    c.task.spec.len() + 64 * (c.task.steps.len() + 1)
}

/// Bytes of script arguments a completion takes (its result).
fn completion_size(c: &Completion) -> usize {
    c.result.len() + c.job.len() + 32
}

impl Core {
    fn k(&self, parts: &[&str]) -> String {
        let mut s = self.prefix.clone();
        for p in parts {
            s.push(':');
            s.push_str(p);
        }
        s
    }

    fn count(&self) {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
    }

    async fn run(&self, script: &Script, args: Vec<String>) -> Result<ScriptReply, StoreError> {
        parse_reply(self.run_raw(script, args).await?)
    }

    /// Runs a script whose answer is its own (not the transition reply).
    async fn run_raw(&self, script: &Script, args: Vec<String>) -> Result<RValue, StoreError> {
        self.count();
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix).arg(self.clock.now_ms());
        for a in args {
            inv.arg(a);
        }
        inv.invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    async fn create_batch(
        &self,
        tasks: Vec<Creation>,
    ) -> Result<Vec<Result<(Transition, Vec<Job>), StoreError>>, StoreError> {
        let asks: Vec<(Option<(String, usize)>, bool)> = tasks
            .iter()
            .map(|c| {
                let ask = c.lease.as_ref().map(|l| (l.queue.clone(), l.max));
                (ask, c.task.run_at.is_some())
            })
            .collect();
        let r = self.run(&self.scripts.create, create_args(tasks)).await?;
        let mut handout = Handout::new(r.jobs);
        // Per queue, what the created tasks asked for and what was leased:
        // a queue that gave fewer is empty, for every item of the run.
        let mut asked: HashMap<String, usize> = HashMap::new();
        for ((ask, _), item) in asks.iter().zip(&r.items) {
            if let (Some((q, max)), Ok(_)) = (ask, item) {
                *asked.entry(q.clone()).or_default() += max;
            }
        }
        let leased: Vec<(String, usize, usize)> = asked
            .into_iter()
            .map(|(q, n)| {
                let got = handout.left(&q);
                (q, n, got)
            })
            .collect();
        Ok(r.items
            .into_iter()
            .zip(asks)
            .map(|(item, (ask, delayed))| {
                item.map(|mut t| {
                    for (q, n, got) in &leased {
                        t.leased_dry(q, *n, *got, delayed);
                    }
                    let jobs = ask.map_or_else(Vec::new, |(q, max)| handout.take(&q, max));
                    (t, jobs)
                })
            })
            .collect())
    }

    async fn complete_batch(
        &self,
        done: Vec<Completion>,
        lease_ms: i64,
    ) -> Result<Vec<Result<(Transition, Option<Job>), StoreError>>, StoreError> {
        let mut args = Vec::with_capacity(2 + done.len() * 4);
        args.push(lease_ms.to_string());
        args.push(done.len().to_string());
        let mut wants = Vec::with_capacity(done.len());
        for c in done {
            args.push(c.job);
            args.push(c.token);
            args.push(c.result);
            wants.push(c.next_from.clone());
            args.push(c.next_from);
        }
        let r = self.run(&self.scripts.complete, args).await?;
        let mut handout = Handout::new(r.jobs);
        Ok(r.items
            .into_iter()
            .zip(wants)
            .map(|(item, want)| item.map(|t| (t, handout.take(&want, 1).pop())))
            .collect())
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
        let resets = tokio::sync::watch::Sender::new(0u64);
        let (ready, subscribed) = tokio::sync::oneshot::channel();
        let listener = tokio::spawn(listen(
            client,
            format!("{}:events", opts.prefix),
            events.clone(),
            resets.clone(),
            ready,
        ));
        // Events published before the subscription would be missed live.
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .map_err(|_| backend("could not subscribe to the event channel within 10 s"))?
            .map_err(|_| backend("event listener stopped"))?;
        let core = Arc::new(Core {
            conn,
            prefix: opts.prefix.clone(),
            clock,
            scripts: Scripts::new(),
            round_trips: AtomicU64::new(0),
        });
        core.run(&core.scripts.upgrade, Vec::new()).await?;
        let c = core.clone();
        let creates = Batcher::new(BATCH, task_size, move |tasks| {
            let c = c.clone();
            async move { c.create_batch(tasks).await }
        });
        let completions = {
            let c = core.clone();
            // One batch serves every lease length; the engine uses one.
            Batcher::new(BATCH, completion_size, move |done: Vec<Completion>| {
                let c = c.clone();
                async move {
                    let lease_ms = done.iter().map(|d| d.lease_ms).max().unwrap_or(30_000);
                    c.complete_batch(done, lease_ms).await
                }
            })
        };
        Ok(RedisStore {
            core,
            max_stalled: opts.max_stalled,
            events,
            resets,
            listener,
            creates,
            completions,
        })
    }

    /// Requests sent to Redis so far (a script call or a pipeline is one), for benchmarks.
    pub fn round_trips(&self) -> u64 {
        self.core.round_trips.load(Ordering::Relaxed)
    }

    async fn finish(
        &self,
        job: &Job,
        result: Value,
        next_from: &str,
        lease_ms: i64,
    ) -> Result<(Transition, Option<Job>), StoreError> {
        let c = Completion {
            job: job_id(job),
            token: job.token.to_string(),
            result: result.to_string(),
            next_from: next_from.to_owned(),
            lease_ms,
        };
        self.completions.call(c).await
    }

    async fn summary_fields(
        &self,
        id: &str,
    ) -> Result<Option<HashMap<String, String>>, StoreError> {
        self.core.count();
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.core.k(&["t", id]))
            .arg(&SUMMARY_FIELDS[..])
            .query_async(&mut self.core.conn.clone())
            .await
            .map_err(backend)?;
        Ok(fields_map(&SUMMARY_FIELDS, values))
    }
}

/// The fields an HMGET found, by name; None when the hash does not exist.
async fn listen(
    client: redis::Client,
    channel: String,
    events: broadcast::Sender<Arc<TaskEvent>>,
    resets: tokio::sync::watch::Sender<u64>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        match client.get_async_pubsub().await {
            Ok(mut ps) => match ps.subscribe(&channel).await {
                Ok(()) => {
                    match ready.take() {
                        Some(r) => {
                            let _ = r.send(());
                        }
                        None => {
                            tracing::info!("redis event subscription restored");
                            resets.send_modify(|n| *n += 1);
                        }
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

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn now_ms(&self) -> i64 {
        self.core.clock.now_ms()
    }

    async fn create_task(&self, task: NewTask) -> Result<Transition, StoreError> {
        let creation = Creation { task, lease: None };
        Ok(self.creates.call(creation).await?.0)
    }

    async fn create_and_lease(
        &self,
        task: NewTask,
        queue: &str,
        _owner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<(Transition, Vec<Job>), StoreError> {
        let lease = (max > 0).then(|| LeaseAsk {
            queue: queue.to_owned(),
            max,
            lease_ms,
        });
        self.creates.call(Creation { task, lease }).await
    }

    // The owner is not stored: the token fences a job, and the lease set
    // says when it expires, whoever holds it.
    async fn lease(
        &self,
        queue: &str,
        _owner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<Leased, StoreError> {
        let r = self
            .core
            .run(
                &self.core.scripts.lease,
                vec![queue.into(), max.to_string(), lease_ms.to_string()],
            )
            .await?;
        Ok(Leased {
            jobs: r.jobs.into_iter().map(|(_, j)| j).collect(),
            next_due: (r.number >= 0).then_some(r.number),
        })
    }

    async fn renew(&self, jobs: &[Job], lease_ms: i64) -> Result<Vec<bool>, StoreError> {
        let mut args = vec![lease_ms.to_string()];
        for j in jobs {
            args.push(job_id(j));
            args.push(j.token.to_string());
        }
        let r = self.core.run(&self.core.scripts.renew, args).await?;
        Ok(r.items.iter().map(Result::is_ok).collect())
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
        self.core
            .run(&self.core.scripts.start_items, args)
            .await?
            .single()
    }

    async fn complete(&self, job: &Job, result: Value) -> Result<Transition, StoreError> {
        Ok(self.finish(job, result, "", 0).await?.0)
    }

    async fn complete_and_lease(
        &self,
        job: &Job,
        result: Value,
        queue: &str,
        _owner: &str,
        lease_ms: i64,
    ) -> Result<(Transition, Option<Job>), StoreError> {
        self.finish(job, result, queue, lease_ms).await
    }

    async fn retry(&self, job: &Job, run_at: i64, error: &str) -> Result<Transition, StoreError> {
        let args = vec![
            job_id(job),
            job.token.to_string(),
            run_at.to_string(),
            error.into(),
        ];
        self.core
            .run(&self.core.scripts.retry, args)
            .await?
            .single()
    }

    async fn acquire_slot(
        &self,
        key: &str,
        limit: u32,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError> {
        self.core.acquire_slot(key, limit, holder, until).await
    }

    async fn release_slot(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.core.release_slot(key, holder).await
    }

    async fn take_rate(
        &self,
        key: &str,
        limit: u32,
        per_ms: u64,
    ) -> Result<Option<i64>, StoreError> {
        self.core.take_rate(key, limit, per_ms).await
    }

    async fn defer(
        &self,
        job: &Job,
        until: i64,
        reason: Option<&str>,
    ) -> Result<Transition, StoreError> {
        let args = vec![
            job_id(job),
            job.token.to_string(),
            until.to_string(),
            reason.unwrap_or("").to_owned(),
        ];
        self.core
            .run(&self.core.scripts.defer, args)
            .await?
            .single()
    }

    async fn spawn(
        &self,
        job: &Job,
        key: &str,
        child: NewTask,
        until: i64,
    ) -> Result<Transition, StoreError> {
        self.core.spawn(job, key, child, until).await
    }

    async fn child_of(&self, job: &Job) -> Result<Option<String>, StoreError> {
        self.core.child_of(job).await
    }

    async fn live_children(&self, task_id: &str) -> Result<Vec<String>, StoreError> {
        self.core.live_children(task_id).await
    }

    async fn end_step(&self, job: &Job, end: StepEnd) -> Result<Transition, StoreError> {
        let (how, message) = match end {
            StepEnd::Skipped(reason) => ("skipped", reason),
            StepEnd::Failed(error) => ("failed", error),
        };
        let args = vec![job_id(job), job.token.to_string(), how.into(), message];
        self.core
            .run(&self.core.scripts.end_step, args)
            .await?
            .single()
    }

    async fn fail(&self, job: &Job, error: &str) -> Result<Transition, StoreError> {
        let args = vec![job_id(job), job.token.to_string(), error.into()];
        self.core.run(&self.core.scripts.fail, args).await?.single()
    }

    async fn release(&self, jobs: &[Job]) -> Result<(), StoreError> {
        let mut args = Vec::new();
        for j in jobs {
            args.push(job_id(j));
            args.push(j.token.to_string());
        }
        self.core
            .run(&self.core.scripts.release, args)
            .await
            .map(|_| ())
    }

    async fn cancel(&self, task_id: &str) -> Result<Transition, StoreError> {
        self.core
            .run(&self.core.scripts.cancel, vec![task_id.into()])
            .await?
            .single()
    }

    async fn resume(
        &self,
        task_id: &str,
        spec: Option<String>,
        effects: Lifecycles,
    ) -> Result<Transition, StoreError> {
        let on_error = if effects.on_error { "1" } else { "0" };
        self.core
            .run(
                &self.core.scripts.resume,
                vec![task_id.into(), spec.unwrap_or_default(), on_error.into()],
            )
            .await?
            .single()
    }

    async fn park(&self, job: &Job, until: i64, data: Value) -> Result<Transition, StoreError> {
        self.core
            .run(
                &self.core.scripts.park,
                vec![
                    job_id(job),
                    job.token.to_string(),
                    until.to_string(),
                    data.to_string(),
                ],
            )
            .await?
            .single()
    }

    async fn signal(
        &self,
        task_id: &str,
        step: u32,
        result: Value,
        until: Option<i64>,
    ) -> Result<Transition, StoreError> {
        self.core
            .run(
                &self.core.scripts.signal,
                vec![
                    task_id.into(),
                    step.to_string(),
                    result.to_string(),
                    until.map(|u| u.to_string()).unwrap_or_default(),
                ],
            )
            .await?
            .single()
    }

    async fn reap_expired(&self) -> Result<usize, StoreError> {
        let r = self
            .core
            .run(&self.core.scripts.reap, vec![self.max_stalled.to_string()])
            .await?;
        Ok(r.number.max(0) as usize)
    }

    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.core.count();
        let mut m: HashMap<String, String> = self
            .core
            .conn
            .clone()
            .hgetall(self.core.k(&["t", id]))
            .await
            .map_err(backend)?;
        if !m.contains_key("status") {
            return Ok(None);
        }
        let spec = m.remove("spec").unwrap_or_default();
        let mut rec = record(id, &m, spec);
        let total: usize = m.get("total").and_then(|t| t.parse().ok()).unwrap_or(0);
        rec.steps = (0..total).map(|i| step_record(i, &m)).collect();
        Ok(Some(rec))
    }

    async fn task_summary(&self, id: &str) -> Result<Option<TaskRecord>, StoreError> {
        Ok(self
            .summary_fields(id)
            .await?
            .map(|m| record(id, &m, String::new())))
    }

    async fn spec(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.core.count();
        self.core
            .conn
            .clone()
            .hget(self.core.k(&["t", id]), "spec")
            .await
            .map_err(backend)
    }

    async fn step_results(
        &self,
        id: &str,
        steps: &[u32],
    ) -> Result<Vec<Option<Value>>, StoreError> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        self.core.count();
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.core.k(&["t", id]));
        for s in steps {
            cmd.arg(format!("{s}:status")).arg(format!("{s}:result"));
        }
        let values: Vec<Option<String>> = cmd
            .query_async(&mut self.core.conn.clone())
            .await
            .map_err(backend)?;
        Ok(values
            .chunks(2)
            .map(|pair| match pair {
                // A step ended without a result of its own (skipped, or
                // failed under a tolerant policy) left one for its dependants.
                [Some(status), Some(result)]
                    if matches!(status.as_str(), "completed" | "failed" | "skipped") =>
                {
                    serde_json::from_str(result).ok()
                }
                _ => None,
            })
            .collect())
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<TaskRecord>, StoreError> {
        let index = match (&filter.status, &filter.queue) {
            (Some(TaskStatus::Pending | TaskStatus::Active), _) => self.core.k(&["idx", "live"]),
            (Some(s), _) => self.core.k(&["idx", "s", s.as_str()]),
            (None, Some(q)) => self.core.k(&["idx", "q", q]),
            (None, None) => self.core.k(&["idx"]),
        };
        let mut out = Vec::new();
        let mut before = filter.before.clone();
        // Page through the index; the filters it does not cover are applied here.
        while out.len() < filter.limit {
            let max = before.as_ref().map_or("+".to_owned(), |b| format!("({b}"));
            self.core.count();
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                .arg(&index)
                .arg(&max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(filter.limit.max(50))
                .query_async(&mut self.core.conn.clone())
                .await
                .map_err(backend)?;
            if ids.is_empty() {
                break;
            }
            before = ids.last().cloned();
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HMGET")
                    .arg(self.core.k(&["t", id]))
                    .arg(&SUMMARY_FIELDS[..]);
            }
            self.core.count();
            let rows: Vec<Vec<Option<String>>> = pipe
                .query_async(&mut self.core.conn.clone())
                .await
                .map_err(backend)?;
            for (id, values) in ids.iter().zip(rows) {
                let Some(m) = fields_map(&SUMMARY_FIELDS, values) else {
                    continue;
                };
                let rec = record(id, &m, String::new());
                if filter.queue.as_ref().is_some_and(|q| q != &rec.queue)
                    || filter.status.is_some_and(|s| s != rec.status)
                {
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
        let key = self.core.k(&["t", id]);
        self.core.count();
        let seq: Option<u64> = self
            .core
            .conn
            .clone()
            .hget(&key, "seq")
            .await
            .map_err(backend)?;
        let last = seq.unwrap_or(0).min(after.saturating_add(limit as u64));
        if last <= after {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&key);
        for s in after + 1..=last {
            cmd.arg(format!("e{s}"));
        }
        self.core.count();
        let raw: Vec<Option<String>> = cmd
            .query_async(&mut self.core.conn.clone())
            .await
            .map_err(backend)?;
        // A task swept meanwhile has no events left.
        raw.into_iter()
            .flatten()
            .map(|e| serde_json::from_str(&e).map_err(|e| backend(format!("bad event: {e}"))))
            .collect()
    }

    async fn append_events(
        &self,
        id: &str,
        events: Vec<NewEvent>,
        cap: u64,
    ) -> Result<Vec<Arc<TaskEvent>>, StoreError> {
        let mut args = vec![id.to_owned(), cap.to_string()];
        for e in events {
            args.push(e.kind);
            args.push(e.step.map_or("-1".into(), |s| s.to_string()));
            args.push(e.data.to_string());
        }
        let mut reply = self.core.run(&self.core.scripts.append, args).await?;
        let events = std::mem::take(&mut reply.events);
        reply.single()?;
        events
            .iter()
            .map(|e| serde_json::from_str(e).map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(|e| backend(format!("bad event from script: {e}")))
    }

    fn subscribe(&self) -> EventFeed {
        EventFeed::new(self.events.subscribe(), Some(self.resets.subscribe()))
    }

    async fn purge_finished(&self, ended_before: i64, limit: usize) -> Result<usize, StoreError> {
        let r = self
            .core
            .run(
                &self.core.scripts.sweep,
                vec![ended_before.to_string(), limit.to_string()],
            )
            .await?;
        Ok(r.number.max(0) as usize)
    }

    async fn claim_effects(
        &self,
        max: usize,
        lease_ms: i64,
    ) -> Result<Vec<DueEffects>, StoreError> {
        let v = self
            .core
            .run_raw(
                &self.core.scripts.fx_claim,
                vec![max.to_string(), lease_ms.to_string()],
            )
            .await?;
        let rows: Vec<(String, String, i64, i64, String)> =
            redis::from_redis_value(v).map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|(task_id, lifecycle, attempt, token, done)| DueEffects {
                task_id,
                lifecycle,
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                token,
                delivered: done.parse().unwrap_or(0),
            })
            .collect())
    }

    async fn settle_effects(&self, due: &DueEffects, how: Settled) -> Result<(), StoreError> {
        let (at, delivered) = match how {
            Settled::Done => (-1, due.delivered),
            Settled::Retry { at, delivered } => (at, delivered),
        };
        let v = self
            .core
            .run_raw(
                &self.core.scripts.fx_settle,
                vec![
                    due.task_id.clone(),
                    due.lifecycle.clone(),
                    due.token.to_string(),
                    at.to_string(),
                    delivered.to_string(),
                ],
            )
            .await?;
        let settled: i64 = redis::from_redis_value(v).map_err(backend)?;
        if settled == 0 {
            return Err(StoreError::LeaseLost(format!(
                "{} {} (token {})",
                due.task_id, due.lifecycle, due.token
            )));
        }
        Ok(())
    }

    async fn create_schedule(&self, s: ScheduleRecord, max: usize) -> Result<(), StoreError> {
        self.core.create_schedule(s, max).await
    }

    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        self.core.schedule(id).await
    }

    async fn schedules(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.core.schedules(after, limit).await
    }

    async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError> {
        self.core.delete_schedule(id).await
    }

    async fn due_schedules(
        &self,
        max: usize,
    ) -> Result<(Vec<ScheduleRecord>, Option<i64>), StoreError> {
        self.core.due_schedules(max).await
    }

    async fn update_schedule(&self, id: &str, update: ScheduleUpdate) -> Result<bool, StoreError> {
        self.core.update_schedule(id, update).await
    }

    async fn queues(&self) -> Result<Vec<String>, StoreError> {
        self.core.count();
        self.core
            .conn
            .clone()
            .smembers(self.core.k(&["queues"]))
            .await
            .map_err(backend)
    }

    async fn queue_depths(&self, max: usize) -> Result<Vec<crate::QueueDepth>, StoreError> {
        let v = self.core.run_raw(&self.core.scripts.depth, vec![]).await?;
        let rows: Vec<(String, u64, u64, String)> = redis::from_redis_value(v).map_err(backend)?;
        let depths = rows
            .into_iter()
            .map(|(queue, waiting, delayed, head)| crate::QueueDepth {
                queue,
                waiting,
                delayed,
                head_since: head.parse().ok(),
            })
            .collect();
        Ok(crate::deepest(depths, max))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.core.conn.clone())
            .await
            .map_err(backend)?;
        Ok(())
    }
}
