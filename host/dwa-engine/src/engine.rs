//! The engine: accepts validated tasks, runs one worker pool per queue that
//! leases step jobs from the store, runs them with timeout and cancellation,
//! retries with backoff, and records each outcome as one store transition.
//!
//! Leases are renewed while a step runs; a reaper returns expired leases (a
//! host that died) to their queues. On shutdown the pools stop leasing,
//! running steps get a grace period, and what is left is released.

pub mod effects;
mod gates;
mod outbox;
mod rerun;
mod run;
mod schedules;
mod submit;
mod subtask;
mod wait;

pub use submit::Submitted;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use dwa_core::catalog::Catalog;
use dwa_core::limits::Limits;
use dwa_core::model::{TaskList, TaskSpec, TaskStatus, TaskSummary, TaskView, rfc3339};
use dwa_core::plan::{FieldError, Placement, Plan};
use dwa_core::step::StepError;
use dwa_plugins::Plugins;
use dwa_store::{Feed, Job, ListFilter, Store, StoreError, Transition};

use crate::engine::effects::{Lifecycle, ProgressThrottle};
use crate::executor::Executor;
use crate::views::view;
use run::PrepError;

/// Errors the engine reports to the API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The body is not a task (bad JSON or wrong types): 400.
    #[error("invalid task: {}", .0.message)]
    Malformed(FieldError),
    /// The task is well-formed but cannot run: 422.
    #[error("invalid task: {} problem(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// No such task: 404.
    #[error("task {0} not found")]
    NotFound(String),
    /// The body is not a schedule, or its cron, time zone or policies are wrong: 400.
    #[error("invalid schedule: {}", .0.message)]
    BadSchedule(FieldError),
    /// No such schedule: 404.
    #[error("schedule {0} not found")]
    NoSchedule(String),
    /// The request does not fit the task's state: 409.
    #[error("{0}")]
    Conflict(String),
    /// The store failed: 503.
    #[error(transparent)]
    Store(StoreError),
    /// The host failed in a way that is not the request's fault: 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => EngineError::NotFound(id),
            StoreError::Conflict(m) => EngineError::Conflict(m),
            other => EngineError::Store(other),
        }
    }
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The limits tasks run within, and the queues they may name with each
    /// queue's workers on this host.
    pub limits: Limits,
    /// Lease length (ms).
    pub lease_ms: i64,
    /// This host's name in leases.
    pub owner: String,
    /// At most one `onProgress` firing per task in this window.
    pub progress_throttle: Duration,
    /// How long an idempotency key answers its first task (ms).
    pub idempotency_ttl_ms: i64,
    /// Test hook (`DWA_TEST_HOLD_EFFECTS`): this host delivers no lifecycle
    /// effects, as if it died before it could; another host delivers them.
    pub hold_effects: bool,
    /// Signs the links of `builtin.wait` steps (`DWA_SIGNAL_SECRET`, `DWA_PUBLIC_URL`).
    pub signals: crate::signals::Signals,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            lease_ms: 30_000,
            owner: format!("dwa-{}", uuid::Uuid::now_v7()),
            progress_throttle: effects::PROGRESS_THROTTLE,
            idempotency_ttl_ms: 24 * 3600 * 1000,
            hold_effects: false,
            signals: Default::default(),
        }
    }
}

/// The stored form of a task: its spec and where each step was placed.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSpec {
    spec: TaskSpec,
    placements: Vec<Placement>,
    /// How many `enqueue` effects led to this task (0: submitted by a client).
    #[serde(default)]
    lineage: u32,
    /// The `traceparent` of the span that queued it: its spans' parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace: Option<String>,
}

/// A task's plan plus the results this host has seen, so a step does not
/// re-read its inputs from the store.
pub(crate) struct TaskState {
    /// The validated plan.
    pub(crate) plan: Plan,
    results: Mutex<HashMap<usize, Arc<Value>>>,
    items: Mutex<HashMap<usize, Arc<Vec<Value>>>>,
    /// Its place in a chain of tasks made by `enqueue` effects.
    lineage: u32,
    /// Tasks its effects enqueued on this host.
    enqueued: std::sync::atomic::AtomicU32,
    /// Its trace context ([`crate::traces`]).
    pub(crate) trace: Option<String>,
}

impl TaskState {
    fn new(plan: Plan, lineage: u32, trace: Option<String>) -> Self {
        TaskState {
            plan,
            results: Mutex::new(HashMap::new()),
            items: Mutex::new(HashMap::new()),
            lineage,
            enqueued: Default::default(),
            trace,
        }
    }
}

struct Pool {
    queue: String,
    notify: Notify,
    /// Its idle workers: the dispatch loop takes them to lease, and so does
    /// a creation on this host that can hand them its first steps
    /// ([`Engine::idle_workers_for`]).
    idle: Arc<Semaphore>,
}

type JobKey = (String, u32, Option<u32>);

/// The running engine; cheap to share behind an `Arc`.
pub struct Engine {
    store: Arc<dyn Store>,
    catalog: RwLock<Arc<Catalog>>,
    executor: Executor,
    config: EngineConfig,
    states: Mutex<HashMap<String, Arc<TaskState>>>,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    running: Mutex<HashMap<JobKey, (Job, CancellationToken)>>,
    stop_leasing: CancellationToken,
    tracker: TaskTracker,
    plugins: Option<Arc<Plugins>>,
    throttle: ProgressThrottle,
    /// Large submissions planned at once, off the async workers.
    planners: Semaphore,
    /// Wakes the outbox loop when this host made lifecycle effects due.
    outbox_wake: Notify,
    /// Wakes the schedule loop when a schedule was created or resumed here.
    schedule_wake: Notify,
    /// Concurrency slots the jobs running here hold.
    slots: Mutex<HashMap<JobKey, gates::Held>>,
    /// Jobs whose wait for a slot or a rate was announced from this host.
    waits_noted: Mutex<std::collections::HashSet<JobKey>>,
    progress_tasks: Mutex<std::collections::HashSet<String>>,
    /// Set while [`Engine::forget_ended`] runs: lags under load come in
    /// bursts, and one sweep at a time is enough.
    forgetting: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// An engine on `store`; call [`Engine::start`] to run its pools.
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Catalog,
        executor: Executor,
        config: EngineConfig,
        plugins: Option<Arc<Plugins>>,
    ) -> Arc<Engine> {
        let throttle = ProgressThrottle::new(config.progress_throttle);
        Arc::new(Engine {
            store,
            catalog: RwLock::new(Arc::new(catalog)),
            executor,
            config,
            states: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            stop_leasing: CancellationToken::new(),
            tracker: TaskTracker::new(),
            plugins,
            throttle,
            progress_tasks: Mutex::new(std::collections::HashSet::new()),
            forgetting: std::sync::atomic::AtomicBool::new(false),
            planners: Semaphore::new(submit::planner_threads()),
            outbox_wake: Notify::new(),
            schedule_wake: Notify::new(),
            slots: Mutex::new(HashMap::new()),
            waits_noted: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// The plugin host, when plugins are enabled.
    pub fn plugins(&self) -> Option<&Arc<Plugins>> {
        self.plugins.as_ref()
    }

    /// A task's plan (cached, or rebuilt from the store).
    pub(crate) async fn plan_of(&self, task_id: &str) -> Result<Arc<TaskState>, StepError> {
        self.state(task_id).await.map_err(|e| match e {
            PrepError::Step(e) => e,
            PrepError::Store(m) => StepError::transient(m),
        })
    }

    /// The limits this engine enforces (the API's document states them).
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Appends events to a task's stream (effects', plugins'), within the
    /// task's event limit (`DWA_MAX_TASK_EVENTS`).
    pub async fn append_events(
        &self,
        task_id: &str,
        events: Vec<dwa_store::NewEvent>,
    ) -> Result<Vec<Arc<dwa_core::model::TaskEvent>>, StoreError> {
        self.store
            .append_events(task_id, events, self.config.limits.max_task_events)
            .await
    }

    /// The store the engine runs on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The HTTP backends it forwards to.
    pub(crate) fn executor(&self) -> &Executor {
        &self.executor
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Updates what plugins provide in the catalog: effects, functions and wasm tasks (after a reload).
    pub fn refresh_plugins(&self) {
        let Some(plugins) = &self.plugins else {
            return;
        };
        let mut next = (*self.catalog()).clone();
        next.set_plugins(plugins.provides());
        self.set_catalog(next);
    }

    /// Swaps in a new catalog (after a backend refresh).
    pub(crate) fn set_catalog(&self, catalog: Catalog) {
        match self.catalog.write() {
            Ok(mut c) => *c = Arc::new(catalog),
            Err(p) => *p.into_inner() = Arc::new(catalog),
        }
    }

    /// Starts the pools for the configured queues and any queue holding
    /// jobs, the lease renewer, the reaper and the cancellation listener.
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        let configured: Vec<String> = self.config.limits.queues.keys().cloned().collect();
        for q in configured {
            self.pool(&q);
        }
        for q in self.store.queues().await? {
            self.pool(&q);
        }
        let me = self.clone();
        self.tracker.spawn(async move { me.renew_loop().await });
        let me = self.clone();
        self.tracker.spawn(async move { me.reap_loop().await });
        let me = self.clone();
        self.tracker.spawn(async move { me.listen_loop().await });
        let me = self.clone();
        self.tracker.spawn(async move { me.schedule_loop().await });
        if self.plugins.is_some() && !self.config.hold_effects {
            let me = self.clone();
            self.tracker.spawn(async move { me.outbox_loop().await });
        }
        Ok(())
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pool(self: &Arc<Self>, queue: &str) -> Arc<Pool> {
        let mut pools = Self::lock(&self.pools);
        if let Some(p) = pools.get(queue) {
            return p.clone();
        }
        // A queue no longer configured still holds jobs accepted under an
        // earlier configuration: it gets the default queue's workers.
        let queues = &self.config.limits.queues;
        let concurrency = queues
            .get(queue)
            .or_else(|| queues.get("default"))
            .copied()
            .unwrap_or(1);
        crate::meters::workers(queue, concurrency);
        let pool = Arc::new(Pool {
            queue: queue.to_owned(),
            notify: Notify::new(),
            idle: Arc::new(Semaphore::new(concurrency)),
        });
        pools.insert(queue.to_owned(), pool.clone());
        let me = self.clone();
        let p = pool.clone();
        self.tracker.spawn(async move { me.dispatch(p).await });
        pool
    }

    fn wake(self: &Arc<Self>, t: &Transition) {
        self.wake_with(t, None);
    }

    /// Like [`Engine::wake`], with the task's plan when the caller has it:
    /// a task whose plan has no effect for how it ended spawns nothing (the
    /// plan cache may already have been cleared by the event listener, and
    /// reloading it from the store for every task was a tenth of the host's
    /// CPU under load).
    fn wake_with(self: &Arc<Self>, t: &Transition, known: Option<&TaskState>) {
        for q in &t.woke {
            self.pool(q).notify.notify_one();
        }
        if self.plugins.is_some() {
            self.lifecycle(t, known);
        }
        if let Some(status) = t.finished
            && let Some(id) = t.task.clone()
        {
            self.finished(&id, status);
            if status != TaskStatus::Completed {
                // The host that ended it cancels its sub-tasks.
                self.cancel_children(id);
            }
        }
    }

    /// Starts the effects a transition calls for (they run in their own tasks).
    fn lifecycle(self: &Arc<Self>, t: &Transition, known: Option<&TaskState>) {
        let Some(id) = t.task.clone() else {
            return;
        };
        let may_have =
            |pick: fn(&dwa_core::plan::Effects) -> &Vec<dwa_core::plan::PlannedEffect>| {
                known.is_none_or(|s| !pick(&s.plan.effects).is_empty())
            };
        // The store made the list due in this transition: deliver it now.
        match t.finished {
            Some(TaskStatus::Completed) if may_have(|e| &e.on_success) => {
                self.outbox_wake.notify_one()
            }
            Some(TaskStatus::Failed) if may_have(|e| &e.on_error) => self.outbox_wake.notify_one(),
            _ => {}
        }
        // Kept apart from the plan cache, which the event listener may clear
        // as the task finishes, before this worker gets here.
        let wants_progress = {
            let mut set = Self::lock(&self.progress_tasks);
            let wants = set.contains(&id);
            if t.finished.is_some() {
                set.remove(&id);
            }
            wants
        };
        if !wants_progress {
            return;
        }
        if let Some(p) = t.progress
            && self.throttle.admit(&id, p)
        {
            self.spawn_effects(id, Lifecycle::Progress, Some(p));
        }
    }

    fn spawn_effects(self: &Arc<Self>, id: String, lifecycle: Lifecycle, progress: Option<f64>) {
        let me = self.clone();
        tokio::spawn(crate::engine::effects::fire(me, id, lifecycle, progress));
    }

    fn finished(&self, task_id: &str, status: TaskStatus) {
        Self::lock(&self.states).remove(task_id);
        self.throttle.forget(task_id);
        if status != TaskStatus::Completed {
            for (key, (_, token)) in Self::lock(&self.running).iter() {
                if key.0 == task_id {
                    token.cancel();
                }
            }
        }
    }

    /// Cancels a task: pending steps never start, running ones are aborted.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<TaskView, EngineError> {
        let t = self.store.cancel(id).await?;
        self.finished(id, TaskStatus::Cancelled);
        self.wake(&t);
        let view = self.get(id).await?;
        crate::meters::task_finished(&view.queue, TaskStatus::Cancelled);
        Ok(view)
    }

    /// A task's plan: what it was submitted as and its steps' graph.
    pub async fn plan_view(&self, id: &str) -> Result<crate::views::PlanView, EngineError> {
        Ok(crate::views::plan_view(&self.stored_plan(id).await?))
    }

    /// A task's status, with the pipeline result for pipelines.
    pub async fn get(&self, id: &str) -> Result<TaskView, EngineError> {
        let rec = self
            .store
            .task(id)
            .await?
            .ok_or_else(|| EngineError::NotFound(id.to_owned()))?;
        Ok(view(rec))
    }

    /// Tasks, newest first, with a cursor for the next page.
    pub async fn list(&self, filter: ListFilter) -> Result<TaskList, EngineError> {
        let limit = filter.limit;
        let recs = self
            .store
            .list(&ListFilter {
                limit: limit + 1,
                ..filter
            })
            .await?;
        let more = recs.len() > limit;
        let tasks: Vec<TaskSummary> = recs
            .into_iter()
            .take(limit)
            .map(|r| TaskSummary {
                id: r.id,
                task_type: r.task_type,
                status: r.status,
                queue: r.queue,
                progress: r.progress,
                created_at: rfc3339(r.created_at),
                completed_at: r.completed_at.map(rfc3339),
                error: r.error,
            })
            .collect();
        let next_cursor = if more {
            tasks.last().map(|t| t.id.clone())
        } else {
            None
        };
        Ok(TaskList { tasks, next_cursor })
    }

    /// Stops leasing, lets running steps finish for `grace`, then aborts and
    /// releases what is left so another host (or the next start) takes it.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop_leasing.cancel();
        for p in Self::lock(&self.pools).values() {
            p.notify.notify_one();
        }
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            let left: Vec<Job> = Self::lock(&self.running)
                .values()
                .map(|(j, t)| {
                    t.cancel();
                    j.clone()
                })
                .collect();
            tracing::warn!(
                jobs = left.len(),
                "grace period over; releasing running steps"
            );
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
    }

    async fn dispatch(self: Arc<Self>, pool: Arc<Pool>) {
        let sem = pool.idle.clone();
        loop {
            let first = tokio::select! {
                p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = self.stop_leasing.cancelled() => return,
            };
            let mut permits = vec![first];
            while let Ok(p) = sem.clone().try_acquire_owned() {
                permits.push(p);
            }
            if self.stop_leasing.is_cancelled() {
                return;
            }
            let asked = std::time::Instant::now();
            let leased = self
                .store
                .lease(
                    &pool.queue,
                    &self.config.owner,
                    permits.len(),
                    self.config.lease_ms,
                )
                .await;
            crate::meters::store_took("lease", asked.elapsed());
            let leased = match leased {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(queue = %pool.queue, error = %e, "lease failed; retrying");
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = self.stop_leasing.cancelled() => return,
                    }
                    continue;
                }
            };
            let drained = leased.jobs.len() < permits.len();
            self.run_leased(&pool.queue, leased.jobs, permits);
            if drained {
                let wait = leased
                    .next_due
                    .map(|due| (due - self.store.now_ms()).clamp(1, 1000) as u64)
                    .unwrap_or(1000);
                tokio::select! {
                    _ = pool.notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = self.stop_leasing.cancelled() => return,
                }
            }
        }
    }

    /// Runs jobs leased from `queue`, each holding one of the idle workers
    /// taken for the lease (the lease asked for no more jobs than those);
    /// the workers left over go back.
    fn run_leased(
        self: &Arc<Self>,
        queue: &str,
        jobs: Vec<Job>,
        mut idle: Vec<OwnedSemaphorePermit>,
    ) {
        for job in jobs {
            let Some(worker) = idle.pop() else { break };
            let me = self.clone();
            let queue = queue.to_owned();
            self.tracker.spawn(async move {
                me.work(queue, job).await;
                drop(worker);
            });
        }
    }

    async fn renew_loop(self: Arc<Self>) {
        let every = Duration::from_millis((self.config.lease_ms / 3).max(50) as u64);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.stop_leasing.cancelled() => {
                    if Self::lock(&self.running).is_empty() { return; }
                    tokio::time::sleep(every).await;
                }
            }
            self.renew_slots().await;
            let jobs: Vec<Job> = Self::lock(&self.running)
                .values()
                .map(|(j, _)| j.clone())
                .collect();
            if jobs.is_empty() {
                if self.stop_leasing.is_cancelled() {
                    return;
                }
                continue;
            }
            match self.store.renew(&jobs, self.config.lease_ms).await {
                Ok(held) => {
                    let running = Self::lock(&self.running);
                    for (job, ok) in jobs.iter().zip(held) {
                        if !ok
                            && let Some((_, t)) =
                                running.get(&(job.task_id.clone(), job.step, job.item))
                        {
                            tracing::warn!(job = %job.name(), "lease lost; aborting the step");
                            t.cancel();
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "lease renewal failed"),
            }
        }
    }

    async fn reap_loop(self: Arc<Self>) {
        let every = Duration::from_millis((self.config.lease_ms / 2).clamp(50, 5_000) as u64);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.stop_leasing.cancelled() => return,
            }
            match self.store.reap_expired().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::warn!(jobs = n, "requeued jobs whose lease expired");
                    let pools: Vec<Arc<Pool>> = Self::lock(&self.pools).values().cloned().collect();
                    for p in pools {
                        p.notify.notify_one();
                    }
                }
                Err(e) => tracing::error!(error = %e, "reaping expired leases failed"),
            }
        }
    }

    /// Aborts local steps of tasks that another host cancelled or failed,
    /// and drops the plans of tasks that ended elsewhere.
    async fn listen_loop(self: Arc<Self>) {
        let mut rx = self.store.subscribe();
        loop {
            let ev = tokio::select! {
                e = rx.next() => e,
                _ = self.stop_leasing.cancelled() => return,
            };
            match ev {
                Feed::Event(e) if e.kind == "pipeline:complete" => {
                    let status = e
                        .data
                        .get("status")
                        .and_then(Value::as_str)
                        .and_then(TaskStatus::parse)
                        .unwrap_or(TaskStatus::Completed);
                    self.finished(&e.task_id, status);
                }
                Feed::Event(_) => {}
                Feed::Missed => self.clone().spawn_forget_ended(),
                Feed::Closed => return,
            }
        }
    }

    fn spawn_forget_ended(self: Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.forgetting.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            let n = self.forget_ended().await;
            self.forgetting.store(false, Ordering::Release);
            if n > 0 {
                tracing::debug!(tasks = n, "dropped the plans of tasks that ended unheard");
            }
        });
    }

    /// Drops the cached plans of tasks that ended without this host hearing
    /// of it (pub/sub dropped their last event while the host resubscribed,
    /// or the listener lagged): otherwise they stay cached for good. Asks the
    /// store about each cached task not running here; answers how many went.
    async fn forget_ended(&self) -> usize {
        let here = |id: &str| Self::lock(&self.running).keys().any(|k| k.0 == id);
        let cached: Vec<String> = Self::lock(&self.states).keys().cloned().collect();
        let mut dropped = 0;
        for id in cached.into_iter().filter(|id| !here(id)) {
            let ended = match self.store.task_summary(&id).await {
                Ok(Some(t)) => t.status.is_terminal(),
                Ok(None) => true,
                // The store is in trouble: the next reset or lag tries again.
                Err(_) => break,
            };
            // A job of an ended task is never leased again; one that ran
            // here until just now has had its effects started already.
            if ended && !here(&id) {
                Self::lock(&self.states).remove(&id);
                Self::lock(&self.progress_tasks).remove(&id);
                self.throttle.forget(&id);
                dropped += 1;
            }
        }
        dropped
    }

    async fn state(&self, task_id: &str) -> Result<Arc<TaskState>, PrepError> {
        if let Some(s) = Self::lock(&self.states).get(task_id) {
            return Ok(s.clone());
        }
        let text = self
            .store
            .spec(task_id)
            .await
            .map_err(|e| PrepError::Store(format!("cannot load task: {e}")))?
            .ok_or_else(|| StepError::permanent("task no longer exists"))?;
        let stored: StoredSpec = serde_json::from_str(&text)
            .map_err(|e| StepError::permanent(format!("stored task is unreadable: {e}")))?;
        let plan = Plan::restore(stored.spec, &stored.placements).map_err(|errs| {
            StepError::permanent(format!(
                "stored task no longer plans: {}",
                errs.first().map(|e| e.message.as_str()).unwrap_or("")
            ))
        })?;
        if !plan.effects.on_progress.is_empty() {
            Self::lock(&self.progress_tasks).insert(task_id.to_owned());
        }
        let state = Arc::new(TaskState::new(plan, stored.lineage, stored.trace));
        Self::lock(&self.states).insert(task_id.to_owned(), state.clone());
        Ok(state)
    }

    async fn results_for(
        &self,
        task_id: &str,
        state: &TaskState,
        needs: &[usize],
    ) -> Result<HashMap<usize, Arc<Value>>, PrepError> {
        let mut out = HashMap::with_capacity(needs.len());
        let mut missing = Vec::new();
        {
            let cache = Self::lock(&state.results);
            for &n in needs {
                match cache.get(&n) {
                    Some(v) => {
                        out.insert(n, v.clone());
                    }
                    None => missing.push(n as u32),
                }
            }
        }
        if !missing.is_empty() {
            let got = self
                .store
                .step_results(task_id, &missing)
                .await
                .map_err(|e| PrepError::Store(format!("cannot load step results: {e}")))?;
            let mut cache = Self::lock(&state.results);
            for (idx, v) in missing.into_iter().zip(got) {
                let v =
                    v.ok_or_else(|| StepError::permanent(format!("step {idx} has no result yet")))?;
                let v = Arc::new(v);
                cache.insert(idx as usize, v.clone());
                out.insert(idx as usize, v);
            }
        }
        Ok(out)
    }
}
