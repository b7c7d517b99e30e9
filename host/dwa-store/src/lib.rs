//! # dwa-store — durable queue and state
//!
//! One trait, [`Store`], that every backing store implements: [`sqlite`]
//! (embedded, the default) and [`redis`] (when `REDIS_URL` is set, shared by
//! many hosts). [`clock`] makes "now" injectable. With the `test-support`
//! feature, [`conformance`] is the suite every store passes and [`testing`]
//! holds a failure-injecting wrapper and a throwaway `redis-server`
//! (docs/architecture.md).
//!
//! The store, not the engine, owns every multi-record transition: "record this
//! step's result and release the dependants that now have all their inputs" is
//! one atomic call, so two workers finishing sibling steps at once can neither
//! lose nor double-release a dependant. Jobs are leased with a fencing token;
//! a completion whose lease was lost (expired, cancelled) is refused.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::{broadcast, watch};

use dwa_core::model::{StepStatus, TaskEvent, TaskStatus};

/// What a subscription to the store's events yields next.
#[derive(Debug)]
pub enum Feed {
    /// The next event recorded, by any host sharing the store.
    Event(Arc<TaskEvent>),
    /// Events may have been missed (this subscriber lagged, or the shared
    /// channel was reconnected and kept nothing meanwhile): re-read the store.
    Missed,
    /// The store is gone.
    Closed,
}

/// A subscription to the store's events. Lagging and a reconnected channel
/// both come out as [`Feed::Missed`], so that every follower catches up
/// from the store in one place and none can forget one of the two.
pub struct EventFeed {
    events: broadcast::Receiver<Arc<TaskEvent>>,
    resets: Option<watch::Receiver<u64>>,
}

impl EventFeed {
    /// A feed of `events`; `resets` changes whenever the channel behind them
    /// may have dropped some (None: an in-process channel, which never does).
    pub fn new(
        events: broadcast::Receiver<Arc<TaskEvent>>,
        resets: Option<watch::Receiver<u64>>,
    ) -> EventFeed {
        EventFeed { events, resets }
    }

    /// Waits for the next event, or for word that some were missed.
    pub async fn next(&mut self) -> Feed {
        loop {
            let reset = async {
                match &mut self.resets {
                    Some(r) => r.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.events.recv() => return match r {
                    Ok(e) => Feed::Event(e),
                    Err(broadcast::error::RecvError::Lagged(_)) => Feed::Missed,
                    Err(broadcast::error::RecvError::Closed) => Feed::Closed,
                },
                open = reset => {
                    if open {
                        return Feed::Missed;
                    }
                    // The store stopped announcing resets: only events remain.
                    self.resets = None;
                }
            }
        }
    }
}

pub mod clock;
#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod redis;
pub mod sqlite;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;

/// The event that ends a task's appended events once it has `cap` of them
/// (`DWA_MAX_TASK_EVENTS`); its data is `{"limit": cap}`.
pub const EVENTS_CAPPED: &str = "events:capped";

/// What waits on one queue (`Store::queue_depths`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The queue.
    pub queue: String,
    /// Jobs due now that no worker holds yet.
    pub waiting: u64,
    /// Jobs due later: `runAt`, retry backoff, parked waits and sub-tasks.
    pub delayed: u64,
    /// The place of the job at the head of the queue (ms): when it became
    /// due, less `PRIORITY_AGING_MS` per priority level (docs/tasks.md,
    /// "Priorities"); `None` when nothing waits.
    pub head_since: Option<i64>,
}

/// Keeps the `max` deepest queues, deepest first (ties by name).
pub fn deepest(mut depths: Vec<QueueDepth>, max: usize) -> Vec<QueueDepth> {
    depths.sort_by(|a, b| {
        (b.waiting + b.delayed)
            .cmp(&(a.waiting + a.delayed))
            .then_with(|| a.queue.cmp(&b.queue))
    });
    depths.truncate(max);
    depths
}

/// Errors of the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The job is no longer leased by the caller (expired, cancelled, or the task ended).
    #[error("lease lost for job {0}")]
    LeaseLost(String),
    /// No such task.
    #[error("task {0} not found")]
    NotFound(String),
    /// A task with that id exists already.
    #[error("task {0} exists already")]
    Duplicate(String),
    /// The idempotency key was used, within its time to live, by `task_id`
    /// (`same_body`: with the same task body, so that is the answer).
    #[error("idempotency key already used by task {task_id}")]
    Idempotent {
        /// The task the key was first used for.
        task_id: String,
        /// Whether that submission had the same body.
        same_body: bool,
    },
    /// The operation does not fit the task's state.
    #[error("{0}")]
    Conflict(String),
    /// The backing database failed.
    #[error("store failure: {0}")]
    Backend(String),
    /// The store is shutting down.
    #[error("store is closed")]
    Closed,
}

/// A step to create with its task.
#[derive(Debug, Clone)]
pub struct NewStep {
    /// Its id or index.
    pub key: String,
    /// The task it runs.
    pub task: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// Its jobs' priority in the queue (higher first; see [`rank`]).
    pub priority: i32,
    /// How many steps it waits for.
    pub waiting_for: u32,
    /// The steps that wait for it.
    pub dependants: Vec<u32>,
}

/// How long a queued job waits to gain one priority level: the aging that
/// keeps low priorities from starving (docs/tasks.md, "Priorities").
pub const PRIORITY_AGING_MS: i64 = 10_000;

/// The order in which due jobs of a queue are leased, lowest first: the
/// time the job became due, less `PRIORITY_AGING_MS` per priority level.
/// A job of priority `p` goes ahead of equal ones that became due up to
/// `p × PRIORITY_AGING_MS` before it, and no further: a waiting job's place
/// never moves back, so every job is leased once the newer ones ahead of it
/// have been (aging without rewriting the queue).
pub fn rank(due_at: i64, priority: i32) -> i64 {
    due_at.saturating_sub(i64::from(priority).saturating_mul(PRIORITY_AGING_MS))
}

/// A task to create: its record and its steps; steps waiting for nothing are queued at once.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Its id (UUID v7: sorts by creation time).
    pub id: String,
    /// Its `type`.
    pub task_type: String,
    /// The queue it was submitted to.
    pub queue: String,
    /// The stored spec (JSON), from which the engine rebuilds the plan.
    pub spec: String,
    /// Whether it was submitted with `steps`.
    pub is_pipeline: bool,
    /// Its steps, in order.
    pub steps: Vec<NewStep>,
    /// Submission time (ms).
    pub created_at: i64,
    /// The client's idempotency key, if it gave one.
    pub idempotency: Option<Idempotency>,
    /// Which lifecycle lists the task has effects in: each becomes due in
    /// the outbox in the transition that makes it so.
    pub effects: Lifecycles,
    /// When its first steps may start (ms; `runAt`/`delay`); `None`: now.
    pub run_at: Option<i64>,
}

/// Which lifecycle lists a task has effects in (the outbox's part: onProgress
/// is best effort, throttled, and fired directly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lifecycles {
    /// `onPending`: due when the task is created.
    pub on_pending: bool,
    /// `onSuccess`: due when it completes.
    pub on_success: bool,
    /// `onError`: due when it fails.
    pub on_error: bool,
}

impl Lifecycles {
    /// Whether any list is set.
    pub fn any(&self) -> bool {
        self.on_pending || self.on_success || self.on_error
    }
}

/// A task's lifecycle effects that are due, claimed from the outbox for a
/// lease: delivered by whichever host claims them, again after the lease
/// if that host dies first (at least once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEffects {
    /// The task.
    pub task_id: String,
    /// `onPending`, `onSuccess` or `onError`.
    pub lifecycle: String,
    /// This delivery's try, from 1.
    pub attempt: u32,
    /// Fences a claim that expired and was taken again.
    pub token: i64,
    /// The effects of the list already delivered (bit i: effect i).
    pub delivered: u64,
}

/// How a claimed delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Done (or given up): the outbox forgets it.
    Done,
    /// Some effects still owe a delivery: try again at `at` (ms).
    Retry {
        /// When.
        at: i64,
        /// The effects delivered so far.
        delivered: u64,
    },
}

/// A submission's idempotency key: another submission under the same key
/// before `expires_at` is answered with the first task, not a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The key, as the client gave it.
    pub key: String,
    /// A digest of the task body, to tell a retry from a different task.
    pub body_hash: String,
    /// Until when (ms) the key holds.
    pub expires_at: i64,
}

/// A leased job: one step, or one item of a forEach step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The task it belongs to.
    pub task_id: String,
    /// The step's index.
    pub step: u32,
    /// The forEach item, or `None` for the step itself.
    pub item: Option<u32>,
    /// 1 for the first try.
    pub attempt: u32,
    /// Fencing token of this lease.
    pub token: u64,
}

impl Job {
    /// A readable name for logs and errors.
    pub fn name(&self) -> String {
        match self.item {
            Some(i) => format!("{}/{}[{}]", self.task_id, self.step, i),
            None => format!("{}/{}", self.task_id, self.step),
        }
    }
}

/// What a lease call handed out.
#[derive(Debug, Clone, Default)]
pub struct Leased {
    /// The jobs now leased to the caller.
    pub jobs: Vec<Job>,
    /// When the next delayed job on that queue becomes due (ms), if any.
    pub next_due: Option<i64>,
}

/// How a step ends without a result of its own (docs/tasks.md, "Branches").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepEnd {
    /// It did not run: its `if` was false, or an ancestor failed under
    /// `onFailure: "skipDependants"`. Why, for its `step:skip` event.
    Skipped(String),
    /// It failed for good under `onFailure: "continue"` or
    /// `"skipDependants"`: the error.
    Failed(String),
}

/// What a transition did, so the engine can wake workers and fire effects.
#[derive(Debug, Clone, Default)]
pub struct Transition {
    /// Queues that received new ready jobs (less a queue that a lease made
    /// in the same call emptied: [`Transition::leased_dry`]).
    pub woke: Vec<String>,
    /// The task's new status, when the transition ended it.
    pub finished: Option<TaskStatus>,
    /// The task it changed, when it recorded an event of it (the first
    /// one's): the engine fires that task's effects and drops its plan.
    pub task: Option<String>,
    /// The progress its last `step:complete` or `step:progress` event
    /// reported, for `onProgress` effects. The events themselves reach the
    /// engine once, through [`Store::subscribe`], not in every transition.
    pub progress: Option<f64>,
}

impl Transition {
    /// Leaves `queue` out of `woke` when a lease made with this transition
    /// asked it for `asked` jobs and got fewer: the queue is empty, unless
    /// the task created with it starts later (`delayed`), when its workers
    /// must still learn the new due time.
    pub fn leased_dry(&mut self, queue: &str, asked: usize, got: usize, delayed: bool) {
        if got < asked && !delayed {
            self.woke.retain(|q| q != queue);
        }
    }

    /// Notes what the engine needs of the events a transition recorded.
    pub fn note(&mut self, events: &[Arc<TaskEvent>]) {
        if let Some(first) = events.first() {
            self.task = Some(first.task_id.clone());
        }
        self.progress = events
            .iter()
            .rev()
            .filter(|e| e.kind == "step:complete" || e.kind == "step:progress")
            .find_map(|e| e.data.get("progress").and_then(Value::as_f64));
    }
}

/// A step as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// Its index.
    pub idx: u32,
    /// Its id or index.
    pub key: String,
    /// The task it runs.
    pub task: String,
    /// Where it stands.
    pub status: StepStatus,
    /// Its result once completed.
    pub result: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Tries started.
    pub attempts: u32,
    /// First start (ms).
    pub started_at: Option<i64>,
    /// End (ms).
    pub completed_at: Option<i64>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Its id.
    pub id: String,
    /// Its `type`.
    pub task_type: String,
    /// Its queue.
    pub queue: String,
    /// Where it stands.
    pub status: TaskStatus,
    /// The stored spec (JSON).
    pub spec: String,
    /// Whether it was submitted with `steps`.
    pub is_pipeline: bool,
    /// 0..=100.
    pub progress: f64,
    /// The final step's result, once completed.
    pub result: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// Submission time (ms).
    pub created_at: i64,
    /// First step start (ms).
    pub started_at: Option<i64>,
    /// End (ms).
    pub completed_at: Option<i64>,
    /// Its steps (empty when only the summary was asked for).
    pub steps: Vec<StepRecord>,
    /// The job that runs it as a sub-task, if one does.
    pub parent: Option<ParentLink>,
}

/// Where a sub-task belongs: the job of its parent that waits for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentLink {
    /// The parent task.
    pub task_id: String,
    /// The step's index.
    pub step: u32,
    /// The step's id.
    pub key: String,
    /// The forEach item, if an item spawned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<u32>,
}

/// A schedule as stored. The store keeps its definition and what it has
/// done as opaque JSON (the engine reads them) and guards one thing: that
/// of two hosts firing the same tick, one alone moves `next_at` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// Its id.
    pub id: String,
    /// Its definition (JSON).
    pub spec: String,
    /// Paused: never due.
    pub paused: bool,
    /// When its next tick is due (ms); [`NEVER`] when none will come.
    pub next_at: i64,
    /// What it has done (JSON: runs, skips, its last error, recent runs).
    pub state: String,
    /// When it was created (ms).
    pub created_at: i64,
}

/// The `next_at` of a schedule that has no tick left.
pub const NEVER: i64 = i64::MAX;

/// A change to a schedule, applied only if its `next_at` is still `expect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleUpdate {
    /// The `next_at` the caller read.
    pub expect: i64,
    /// Its new `next_at`.
    pub next_at: i64,
    /// Its new paused flag.
    pub paused: bool,
    /// Its new state (JSON).
    pub state: String,
}

/// Filters of `GET /api/tasks`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this status.
    pub status: Option<TaskStatus>,
    /// Only tasks older than this id (the previous page's last).
    pub before: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// An event to record on a task's stream.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Its type (`step:progress`, `toast`, ...).
    pub kind: String,
    /// The step it concerns.
    pub step: Option<u32>,
    /// Its data.
    pub data: Value,
}

/// The durable queue and state of tasks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which implementation this is, for `/health`.
    fn kind(&self) -> &'static str;

    /// The store's "now" (ms since the Unix epoch): the clock its due times
    /// and leases are kept by, which the engine's retry times must share.
    fn now_ms(&self) -> i64 {
        dwa_core::model::now_ms()
    }

    /// Stores a task and queues its first steps, atomically.
    async fn create_task(&self, task: NewTask) -> Result<Transition, StoreError>;

    /// Stores a task as [`Store::create_task`] does and, in the same call,
    /// leases up to `max` due jobs of `queue` to `owner` (the queue's first,
    /// which are the new task's own first steps unless older jobs wait), so
    /// that a task reaching a host with idle workers starts without a second
    /// round trip. A queue the lease emptied is left out of the transition's
    /// `woke`: its workers have nothing more to look for. Nothing is leased
    /// when the task is refused. A store that cannot do both at once leases
    /// nothing, and its caller wakes its workers as after `create_task`.
    async fn create_and_lease(
        &self,
        task: NewTask,
        queue: &str,
        owner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<(Transition, Vec<Job>), StoreError> {
        let _ = (queue, owner, max, lease_ms);
        Ok((self.create_task(task).await?, Vec::new()))
    }

    /// Leases up to `max` due jobs of `queue` to `owner` for `lease_ms`; marks their steps running.
    async fn lease(
        &self,
        queue: &str,
        owner: &str,
        max: usize,
        lease_ms: i64,
    ) -> Result<Leased, StoreError>;

    /// Extends leases; answers, per job, whether it is still held.
    async fn renew(&self, jobs: &[Job], lease_ms: i64) -> Result<Vec<bool>, StoreError>;

    /// Turns a forEach step's job into its first `min(concurrency, items)` item jobs.
    async fn start_items(
        &self,
        job: &Job,
        items: u32,
        concurrency: u32,
    ) -> Result<Transition, StoreError>;

    /// Records a job's result; finishes the step and releases dependants when due.
    async fn complete(&self, job: &Job, result: Value) -> Result<Transition, StoreError>;

    /// Records a job's result and, in the same call, leases the next due job
    /// of `queue` to `owner` (so a busy worker needs one round trip per step).
    async fn complete_and_lease(
        &self,
        job: &Job,
        result: Value,
        queue: &str,
        owner: &str,
        lease_ms: i64,
    ) -> Result<(Transition, Option<Job>), StoreError> {
        let t = self.complete(job, result).await?;
        let mut next = self.lease(queue, owner, 1, lease_ms).await?;
        Ok((t, next.jobs.pop()))
    }

    /// Puts a job back with `attempt + 1`, due at `run_at` (ms).
    async fn retry(&self, job: &Job, run_at: i64, error: &str) -> Result<Transition, StoreError>;

    /// Ends the job's step without a result of its own, as `end` says: it
    /// is `skipped` (result `null`) or `failed` (result `{"$error":
    /// message}`), and its dependants are released as a completion would
    /// release them; the task completes when its last step has ended. An
    /// item's job ends its whole step (the other items are dropped).
    async fn end_step(&self, job: &Job, end: StepEnd) -> Result<Transition, StoreError>;

    /// Takes a slot of concurrency key `key` (at most `limit` holders at
    /// once) for `holder` until `until` (ms); a holder that has one keeps
    /// it, until the new time (renewal). Slots past their time are free.
    /// Answers whether the holder has a slot.
    async fn acquire_slot(
        &self,
        key: &str,
        limit: u32,
        holder: &str,
        until: i64,
    ) -> Result<bool, StoreError>;

    /// Gives a slot back (nothing if the holder has none).
    async fn release_slot(&self, key: &str, holder: &str) -> Result<(), StoreError>;

    /// Takes one start of rate key `key` (`limit` per `per_ms`, as a
    /// generic cell rate: bursts up to `limit`, then one per `per_ms /
    /// limit`). Answers `None` when taken, else when (ms) one can be.
    async fn take_rate(
        &self,
        key: &str,
        limit: u32,
        per_ms: u64,
    ) -> Result<Option<i64>, StoreError>;

    /// Gives a held job back due at `until`, its attempt unchanged: it waits
    /// for a concurrency slot or a rate. A step's job marks the step
    /// `waiting`; with `reason`, a `step:waiting` event says why.
    async fn defer(
        &self,
        job: &Job,
        until: i64,
        reason: Option<&str>,
    ) -> Result<Transition, StoreError>;

    /// Creates `child` as a sub-task of the held `job` (its step's id is
    /// `key`) and parks the job until `until` waiting for it, in one
    /// transition: the step is `waiting`, a `step:subtask` event names the
    /// child, the job's attempt is unchanged and it remembers the child
    /// ([`Store::child_of`]). When the child ends, however it ends, the job
    /// is due again at once.
    async fn spawn(
        &self,
        job: &Job,
        key: &str,
        child: NewTask,
        until: i64,
    ) -> Result<Transition, StoreError>;

    /// The sub-task `job` spawned, if it did (and was not run again since).
    async fn child_of(&self, job: &Job) -> Result<Option<String>, StoreError>;

    /// The sub-tasks of `task_id` that have not ended (to cancel with it).
    async fn live_children(&self, task_id: &str) -> Result<Vec<String>, StoreError>;

    /// Fails the job's step for good: the task fails and its other steps are skipped.
    async fn fail(&self, job: &Job, error: &str) -> Result<Transition, StoreError>;

    /// Gives leased jobs back to the queue untouched (graceful shutdown).
    async fn release(&self, jobs: &[Job]) -> Result<(), StoreError>;

    /// Cancels a task: pending steps never start, running ones lose their lease.
    async fn cancel(&self, task_id: &str) -> Result<Transition, StoreError>;

    /// Parks a held step job until `until` (a `builtin.wait` step): the
    /// step is `waiting`, its job given back due then (its next attempt:
    /// the timeout), and a `step:wait` event carries `data`.
    async fn park(&self, job: &Job, until: i64, data: Value) -> Result<Transition, StoreError>;

    /// Completes a waiting step of task `task_id` with `result` (its
    /// signal) and releases its dependants. With `until`, only the wait
    /// that was parked until then (a signed link names one). A step not
    /// waiting, or whose wait timed out, is a conflict.
    async fn signal(
        &self,
        task_id: &str,
        step: u32,
        result: Value,
        until: Option<i64>,
    ) -> Result<Transition, StoreError>;

    /// Runs a failed or cancelled task again from where it stopped: its
    /// completed steps keep their results, the others are pending again
    /// (the ready ones queued), its onError effects owed again (when
    /// `effects.on_error`), `spec` (when given) replaces its stored spec,
    /// and a `task:retry` event gives the run's number. Any other status is
    /// a conflict.
    async fn resume(
        &self,
        task_id: &str,
        spec: Option<String>,
        effects: Lifecycles,
    ) -> Result<Transition, StoreError>;

    /// Puts jobs whose lease expired back to waiting; answers how many.
    async fn reap_expired(&self) -> Result<usize, StoreError>;

    /// A task with its steps.
    async fn task(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;

    /// A task without its steps: cheap whatever the pipeline's size (for
    /// effects and event streams, which need only its status).
    async fn task_summary(&self, id: &str) -> Result<Option<TaskRecord>, StoreError>;

    /// The stored spec of a task, to rebuild its plan.
    async fn spec(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Results of some steps of a task (None where not completed).
    async fn step_results(&self, id: &str, steps: &[u32])
    -> Result<Vec<Option<Value>>, StoreError>;

    /// Tasks, newest first (steps not loaded).
    async fn list(&self, filter: &ListFilter) -> Result<Vec<TaskRecord>, StoreError>;

    /// A task's events with `seq > after`, in order.
    async fn events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<TaskEvent>, StoreError>;

    /// Records events on a task's stream (progress, effects), while the
    /// task has fewer than `cap` events: the first event that would pass
    /// it is recorded as one [`EVENTS_CAPPED`] event instead, and later
    /// ones are dropped (the task's own transitions are always recorded;
    /// their number is bounded by its steps). Answers what was recorded.
    async fn append_events(
        &self,
        id: &str,
        events: Vec<NewEvent>,
        cap: u64,
    ) -> Result<Vec<Arc<TaskEvent>>, StoreError>;

    /// Every event recorded from now on, by any host sharing the store.
    fn subscribe(&self) -> EventFeed;

    /// Deletes up to `limit` finished tasks that ended before `ended_before`
    /// (ms), with their steps and events: the retention policy. Answers how many.
    async fn purge_finished(&self, ended_before: i64, limit: usize) -> Result<usize, StoreError>;

    /// Claims up to `max` due lifecycle deliveries for `lease_ms`; a claim
    /// not settled by then is due again (another host may take it).
    async fn claim_effects(&self, max: usize, lease_ms: i64)
    -> Result<Vec<DueEffects>, StoreError>;

    /// Settles a claimed delivery; a claim whose lease was taken over
    /// answers [`StoreError::LeaseLost`].
    async fn settle_effects(&self, due: &DueEffects, how: Settled) -> Result<(), StoreError>;

    /// Stores a new schedule, unless one has its id ([`StoreError::Duplicate`])
    /// or the store holds `max` already ([`StoreError::Conflict`]).
    async fn create_schedule(&self, s: ScheduleRecord, max: usize) -> Result<(), StoreError>;

    /// A schedule.
    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError>;

    /// Up to `limit` schedules in id order, after `after` (the previous page's last).
    async fn schedules(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Deletes a schedule; answers whether it existed.
    async fn delete_schedule(&self, id: &str) -> Result<bool, StoreError>;

    /// Up to `max` unpaused schedules due now (`next_at <= now` by the
    /// store's clock), earliest first, and the earliest `next_at` after
    /// now, if any.
    async fn due_schedules(
        &self,
        max: usize,
    ) -> Result<(Vec<ScheduleRecord>, Option<i64>), StoreError>;

    /// Applies `update` if the schedule's `next_at` is still `update.expect`
    /// (compare-and-set: of hosts firing one tick, one records it); answers
    /// whether it did. A schedule deleted meanwhile is not recreated.
    async fn update_schedule(&self, id: &str, update: ScheduleUpdate) -> Result<bool, StoreError>;

    /// Queues that hold jobs now (so a restarted host serves named queues too).
    async fn queues(&self) -> Result<Vec<String>, StoreError>;

    /// How many jobs wait on each queue that holds any, for `GET /metrics`;
    /// at most `max` queues, the deepest first.
    async fn queue_depths(&self, max: usize) -> Result<Vec<QueueDepth>, StoreError>;

    /// Waits until every write answered before the call survives a power
    /// cut: the host's outside edges (HTTP answers, effects, backend calls)
    /// wait here, so that nothing leaves the process about a write that
    /// could still be lost. A store whose writes are durable when answered
    /// has nothing to wait for.
    async fn settled(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}
