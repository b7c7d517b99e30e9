//! The engine: accepts validated tasks, runs one worker pool per queue that
//! leases step jobs from the store, runs them with timeout and cancellation,
//! retries with backoff, and records each outcome as one store transition.
//!
//! Leases are renewed while a step runs; a reaper returns expired leases (a
//! host that died) to their queues. On shutdown the pools stop leasing,
//! running steps get a grace period, and what is left is released.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::effects::{Lifecycle, ProgressThrottle};
use crate::executor::{Executor, StepCall, StepError};
use crate::model::{
    CreatedTask, StepStatusView, TaskList, TaskSpec, TaskStatus, TaskSummary, TaskView, rfc3339,
};
use crate::plan::{FieldError, Placement, Plan};
use crate::plugins::{Plugins, TaskFunctions};
use crate::retry;
use crate::store::{
    Feed, Job, ListFilter, NewStep, NewTask, Store, StoreError, TaskRecord, Transition,
};
use crate::template::Scope;

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
    /// The request does not fit the task's state: 409.
    #[error("{0}")]
    Conflict(String),
    /// The store failed: 503.
    #[error(transparent)]
    Store(StoreError),
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
    /// Workers per queue other than `gpu`.
    pub worker_concurrency: usize,
    /// Workers on the `gpu` queue.
    pub gpu_worker_concurrency: usize,
    /// Lease length (ms).
    pub lease_ms: i64,
    /// This host's name in leases.
    pub owner: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            worker_concurrency: 5,
            gpu_worker_concurrency: 2,
            lease_ms: 30_000,
            owner: format!("dwa-{}", uuid::Uuid::now_v7()),
        }
    }
}

/// The stored form of a task: its spec and where each step was placed.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSpec {
    spec: TaskSpec,
    placements: Vec<Placement>,
}

/// A task's plan plus the results this host has seen, so a step does not
/// re-read its inputs from the store.
pub struct TaskState {
    /// The validated plan.
    pub plan: Plan,
    results: Mutex<HashMap<usize, Arc<Value>>>,
    items: Mutex<HashMap<usize, Arc<Vec<Value>>>>,
}

struct Pool {
    queue: String,
    notify: Notify,
    concurrency: usize,
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
    progress_tasks: Mutex<std::collections::HashSet<String>>,
    /// Set while [`Engine::forget_ended`] runs: lags under load come in
    /// bursts, and one sweep at a time is enough.
    forgetting: std::sync::atomic::AtomicBool,
}

enum Outcome {
    Done(Value),
    Failed(StepError),
    Aborted,
}

/// Why a job could not be prepared. A store failure is the host's trouble,
/// not the step's: the job goes back without costing it a try (a Redis
/// restart must not fail tasks that have no retries).
enum PrepError {
    Step(StepError),
    Store(String),
}

impl From<StepError> for PrepError {
    fn from(e: StepError) -> Self {
        PrepError::Step(e)
    }
}

/// How long a worker waits before giving back a job it could not prepare
/// because the store failed: long enough not to spin while the store is
/// down, short next to a lease.
const STORE_FAILURE_PAUSE: Duration = Duration::from_millis(250);

/// How often a step's outcome is sent to a failing store (100 ms apart,
/// doubling: 3.1 s in all) before it is left to the lease running out.
const RECORD_TRIES: u32 = 6;

impl Engine {
    /// An engine on `store`; call [`Engine::start`] to run its pools.
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Catalog,
        executor: Executor,
        config: EngineConfig,
        plugins: Option<Arc<Plugins>>,
    ) -> Arc<Engine> {
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
            throttle: ProgressThrottle::default(),
            progress_tasks: Mutex::new(std::collections::HashSet::new()),
            forgetting: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The plugin host, when plugins are enabled.
    pub fn plugins(&self) -> Option<&Arc<Plugins>> {
        self.plugins.as_ref()
    }

    /// A task's plan (cached, or rebuilt from the store).
    pub async fn plan_of(&self, task_id: &str) -> Result<Arc<TaskState>, StepError> {
        self.state(task_id).await.map_err(|e| match e {
            PrepError::Step(e) => e,
            PrepError::Store(m) => StepError::transient(m),
        })
    }

    /// The store the engine runs on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The HTTP backends it forwards to.
    pub fn executor(&self) -> &Executor {
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
        next.set_plugins(plugins);
        self.set_catalog(next);
    }

    /// Swaps in a new catalog (after a backend refresh).
    pub fn set_catalog(&self, catalog: Catalog) {
        match self.catalog.write() {
            Ok(mut c) => *c = Arc::new(catalog),
            Err(p) => *p.into_inner() = Arc::new(catalog),
        }
    }

    /// Starts the pools for `default`, `gpu` and any queue holding jobs, the
    /// lease renewer, the reaper and the cancellation listener.
    pub async fn start(self: &Arc<Self>) -> Result<(), StoreError> {
        self.pool("default");
        self.pool("gpu");
        for q in self.store.queues().await? {
            self.pool(&q);
        }
        let me = self.clone();
        self.tracker.spawn(async move { me.renew_loop().await });
        let me = self.clone();
        self.tracker.spawn(async move { me.reap_loop().await });
        let me = self.clone();
        self.tracker.spawn(async move { me.listen_loop().await });
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
        let concurrency = if queue == "gpu" {
            self.config.gpu_worker_concurrency
        } else {
            self.config.worker_concurrency
        };
        let pool = Arc::new(Pool {
            queue: queue.to_owned(),
            notify: Notify::new(),
            concurrency,
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
            && let Some(id) = t.events.first().map(|e| e.task_id.clone())
        {
            self.finished(&id, status);
        }
    }

    /// Starts the effects a transition calls for (they run in their own tasks).
    fn lifecycle(self: &Arc<Self>, t: &Transition, known: Option<&TaskState>) {
        let Some(first) = t.events.first() else {
            return;
        };
        let id = first.task_id.clone();
        let may_have = |pick: fn(&crate::plan::Effects) -> &Vec<crate::plan::PlannedEffect>| {
            known.is_none_or(|s| !pick(&s.plan.effects).is_empty())
        };
        match t.finished {
            Some(TaskStatus::Completed) if may_have(|e| &e.on_success) => {
                self.spawn_effects(id.clone(), Lifecycle::Success, None)
            }
            Some(TaskStatus::Failed) if may_have(|e| &e.on_error) => {
                self.spawn_effects(id.clone(), Lifecycle::Error, None)
            }
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
        let progress = t
            .events
            .iter()
            .rev()
            .filter(|e| e.kind == "step:complete" || e.kind == "step:progress")
            .find_map(|e| e.data.get("progress").and_then(Value::as_f64));
        if let Some(p) = progress
            && self.throttle.admit(&id, p)
        {
            self.spawn_effects(id, Lifecycle::Progress, Some(p));
        }
    }

    fn spawn_effects(self: &Arc<Self>, id: String, lifecycle: Lifecycle, progress: Option<f64>) {
        let me = self.clone();
        tokio::spawn(crate::effects::fire(me, id, lifecycle, progress));
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

    /// Validates, plans and queues a task given as a request body.
    pub async fn submit_json(self: &Arc<Self>, body: &[u8]) -> Result<CreatedTask, EngineError> {
        let spec = crate::plan::parse_spec(body).map_err(EngineError::Malformed)?;
        self.submit(spec).await
    }

    /// Validates, plans and queues a task.
    pub async fn submit(self: &Arc<Self>, spec: TaskSpec) -> Result<CreatedTask, EngineError> {
        let plan = crate::plan::plan(spec, &self.catalog()).map_err(EngineError::Invalid)?;
        let id = uuid::Uuid::now_v7().to_string();
        let stored = StoredSpec {
            spec: plan.spec.clone(),
            placements: plan.placements(),
        };
        let spec_json = serde_json::to_string(&stored)
            .map_err(|e| EngineError::Store(StoreError::Backend(e.to_string())))?;
        let queue = plan
            .spec
            .queue
            .clone()
            .or_else(|| plan.steps.first().map(|s| s.placement.queue.clone()))
            .unwrap_or_else(|| "default".into());
        let steps = plan
            .steps
            .iter()
            .map(|s| NewStep {
                key: s.key.clone(),
                task: s.task.clone(),
                queue: s.placement.queue.clone(),
                waiting_for: s.deps.len() as u32,
                dependants: s.dependants.iter().map(|d| *d as u32).collect(),
            })
            .collect();
        let new = NewTask {
            id: id.clone(),
            task_type: plan.spec.task_type.clone(),
            queue: queue.clone(),
            spec: spec_json,
            is_pipeline: plan.is_pipeline,
            steps,
            created_at: crate::model::now_ms(),
        };
        if !plan.effects.on_progress.is_empty() {
            Self::lock(&self.progress_tasks).insert(id.clone());
        }
        Self::lock(&self.states).insert(
            id.clone(),
            Arc::new(TaskState {
                plan,
                results: Mutex::new(HashMap::new()),
                items: Mutex::new(HashMap::new()),
            }),
        );
        match self.store.create_task(new).await {
            Ok(t) => {
                self.wake(&t);
                let has_pending_effects = Self::lock(&self.states)
                    .get(&id)
                    .is_some_and(|s| !s.plan.effects.on_pending.is_empty());
                if has_pending_effects {
                    self.spawn_effects(id.clone(), Lifecycle::Pending, None);
                }
            }
            Err(e) => {
                Self::lock(&self.states).remove(&id);
                Self::lock(&self.progress_tasks).remove(&id);
                return Err(e.into());
            }
        }
        Ok(CreatedTask {
            id,
            status: TaskStatus::Pending,
            queue,
        })
    }

    /// Cancels a task: pending steps never start, running ones are aborted.
    pub async fn cancel(self: &Arc<Self>, id: &str) -> Result<TaskView, EngineError> {
        let t = self.store.cancel(id).await?;
        self.finished(id, TaskStatus::Cancelled);
        self.wake(&t);
        self.get(id).await
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
        let sem = Arc::new(Semaphore::new(pool.concurrency));
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
            let leased = self
                .store
                .lease(
                    &pool.queue,
                    &self.config.owner,
                    permits.len(),
                    self.config.lease_ms,
                )
                .await;
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
            for job in leased.jobs {
                let Some(permit) = permits.pop() else { break };
                let me = self.clone();
                let queue = pool.queue.clone();
                self.tracker.spawn(async move {
                    me.work(queue, job).await;
                    drop(permit);
                });
            }
            drop(permits);
            if drained {
                let wait = leased
                    .next_due
                    .map(|due| (due - crate::model::now_ms()).clamp(1, 1000) as u64)
                    .unwrap_or(1000);
                tokio::select! {
                    _ = pool.notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = self.stop_leasing.cancelled() => return,
                }
            }
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
        let state = Arc::new(TaskState {
            plan,
            results: Mutex::new(HashMap::new()),
            items: Mutex::new(HashMap::new()),
        });
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

    /// Runs a job, then — while its results keep coming back clean — the next
    /// job of the same queue, leased in the same store call that records the
    /// result (one round trip per step instead of two).
    async fn work(self: Arc<Self>, queue: String, mut job: Job) {
        loop {
            let token = CancellationToken::new();
            let key = (job.task_id.clone(), job.step, job.item);
            Self::lock(&self.running).insert(key.clone(), (job.clone(), token.clone()));
            let next = self.clone().run_job(&queue, &job, &token).await;
            Self::lock(&self.running).remove(&key);
            match next {
                Some(n) => job = n,
                None => return,
            }
        }
    }

    /// Runs one job and records its outcome; answers the next job when one was leased.
    async fn run_job(
        self: Arc<Self>,
        queue: &str,
        job: &Job,
        token: &CancellationToken,
    ) -> Option<Job> {
        let outcome = match self.clone().prepare_and_run(job, token).await {
            Ok(Some(o)) => o,
            Ok(None) => return None,
            Err(PrepError::Step(e)) => Outcome::Failed(e),
            Err(PrepError::Store(message)) => {
                self.give_back_untried(job, &message).await;
                return None;
            }
        };
        // Taken before the outcome is recorded: once the task ends, the event
        // listener may drop it from the cache at any moment.
        let known = Self::lock(&self.states).get(&job.task_id).cloned();
        let mut next = None;
        let recorded = match outcome {
            Outcome::Done(v) => {
                let cached = Arc::new(v.clone());
                let first = if self.stop_leasing.is_cancelled() {
                    self.store.complete(job, v).await
                } else {
                    self.store
                        .complete_and_lease(job, v, queue, &self.config.owner, self.config.lease_ms)
                        .await
                        .map(|(t, n)| {
                            next = n;
                            t
                        })
                };
                let r = self
                    .record_again(job, first, || self.store.complete(job, (*cached).clone()))
                    .await;
                if job.item.is_none()
                    && let Some(s) = Self::lock(&self.states).get(&job.task_id)
                {
                    Self::lock(&s.results).insert(job.step as usize, cached);
                }
                r
            }
            Outcome::Failed(e) => {
                let policy = match self.state(&job.task_id).await {
                    Ok(s) => s
                        .plan
                        .steps
                        .get(job.step as usize)
                        .map(|st| st.retry.clone())
                        .unwrap_or_default(),
                    Err(_) => Default::default(),
                };
                if retry::may_retry(&policy, job.attempt, e.retryable) {
                    let wait = retry::delay_after(&policy, job.attempt, rand::random::<f64>());
                    let run_at = crate::model::now_ms() + wait.as_millis() as i64;
                    let first = self.store.retry(job, run_at, &e.message).await;
                    self.record_again(job, first, || self.store.retry(job, run_at, &e.message))
                        .await
                } else {
                    let first = self.store.fail(job, &e.message).await;
                    self.record_again(job, first, || self.store.fail(job, &e.message))
                        .await
                }
            }
            Outcome::Aborted => {
                if self.stop_leasing.is_cancelled()
                    && let Err(e) = self.store.release(std::slice::from_ref(job)).await
                {
                    tracing::error!(job = %job.name(), error = %e, "could not release job");
                }
                return None;
            }
        };
        match recorded {
            Ok(t) => self.wake_with(&t, known.as_deref()),
            Err(StoreError::LeaseLost(_)) => {
                tracing::debug!(job = %job.name(), "result dropped: lease lost (cancelled or expired)")
            }
            Err(e) => {
                tracing::error!(job = %job.name(), error = %e, "could not record step outcome")
            }
        }
        next
    }

    /// Sends a step's outcome again while the store fails: an outcome lost
    /// to a store blip would have the whole step run again once its lease
    /// ran out. The job is still in `running` meanwhile, so its lease keeps
    /// being renewed. A refusal (lease lost) is an answer, not a failure.
    async fn record_again<T, F>(
        &self,
        job: &Job,
        first: Result<T, StoreError>,
        again: impl FnMut() -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        retry::while_transient(
            first,
            RECORD_TRIES,
            |e| matches!(e, StoreError::Backend(_)),
            || format!("recording the outcome of job {}", job.name()),
            again,
        )
        .await
    }

    /// Puts back a job that could not be prepared because the store failed,
    /// at the same attempt. When the store is still down the release fails
    /// too; the lease then runs out and the reaper puts the job back.
    async fn give_back_untried(&self, job: &Job, message: &str) {
        tracing::warn!(job = %job.name(), error = %message, "store failed before the step ran; giving the job back");
        tokio::select! {
            _ = tokio::time::sleep(STORE_FAILURE_PAUSE) => {}
            _ = self.stop_leasing.cancelled() => {}
        }
        match self.store.release(std::slice::from_ref(job)).await {
            Ok(()) => {
                for p in Self::lock(&self.pools).values() {
                    p.notify.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(job = %job.name(), error = %e, "could not give the job back; its lease will expire")
            }
        }
    }

    /// Resolves the job's input and runs it; `None` when the job only fanned out.
    async fn prepare_and_run(
        self: Arc<Self>,
        job: &Job,
        token: &CancellationToken,
    ) -> Result<Option<Outcome>, PrepError> {
        let state = self.state(&job.task_id).await?;
        let step = state
            .plan
            .steps
            .get(job.step as usize)
            .ok_or_else(|| StepError::permanent(format!("step {} does not exist", job.step)))?;
        let results = self.results_for(&job.task_id, &state, &step.needs).await?;
        let payload = &state.plan.spec.payload;

        let items = match &step.for_each {
            Some(t) => {
                let cached = Self::lock(&state.items).get(&step.idx).cloned();
                let items = match cached {
                    Some(i) => i,
                    None => {
                        let scope = Scope {
                            payload: Some(payload),
                            steps: Some(&results),
                            ..Default::default()
                        };
                        let fns = TaskFunctions {
                            plugins: self.plugins.as_deref(),
                            task_id: &job.task_id,
                        };
                        let v = t
                            .resolve_with(&scope, &fns)
                            .await
                            .map_err(|e| StepError::permanent(format!("forEach: {e}")))?;
                        let Value::Array(list) = v else {
                            return Err(StepError::permanent(format!(
                                "forEach must resolve to an array, got {}",
                                short(&v)
                            ))
                            .into());
                        };
                        let list = Arc::new(list);
                        Self::lock(&state.items).insert(step.idx, list.clone());
                        list
                    }
                };
                Some(items)
            }
            None => None,
        };

        if let (Some(items), None) = (&items, job.item) {
            let n = u32::try_from(items.len())
                .map_err(|_| StepError::permanent("forEach has too many items"))?;
            let c = step.for_each_concurrency.unwrap_or(n).max(1);
            match self.store.start_items(job, n, c).await {
                Ok(t) => self.wake(&t),
                Err(StoreError::LeaseLost(_)) => {}
                Err(e) => return Err(PrepError::Store(format!("cannot fan out: {e}"))),
            }
            return Ok(None);
        }

        let item =
            match (&items, job.item) {
                (Some(items), Some(i)) => Some(items.get(i as usize).ok_or_else(|| {
                    StepError::permanent(format!("forEach item {i} does not exist"))
                })?),
                _ => None,
            };
        let input = match &step.input {
            Some(t) => {
                let scope = Scope {
                    payload: Some(payload),
                    steps: Some(&results),
                    item,
                    index: job.item.map(|i| i as usize),
                    ..Default::default()
                };
                let fns = TaskFunctions {
                    plugins: self.plugins.as_deref(),
                    task_id: &job.task_id,
                };
                t.resolve_with(&scope, &fns)
                    .await
                    .map_err(|e| StepError::permanent(format!("input: {e}")))?
            }
            None => match (item, step.deps.as_slice()) {
                (Some(item), _) => item.clone(),
                (None, []) => payload.clone(),
                (None, [one]) => results
                    .get(one)
                    .map(|v| (**v).clone())
                    .unwrap_or(Value::Null),
                (None, many) => {
                    let mut m = Map::new();
                    for d in many {
                        let key = state.plan.steps[*d].key.clone();
                        m.insert(
                            key,
                            results.get(d).map(|v| (**v).clone()).unwrap_or(Value::Null),
                        );
                    }
                    Value::Object(m)
                }
            },
        };

        // Inputs made of templates are only known now: check them as the
        // submission checked literal ones.
        let catalog = (step.placement.backend != "builtin").then(|| self.catalog());
        if let Some(catalog) = &catalog
            && let Ok(info) = catalog.lookup(&step.task, Some(&step.placement.backend))
            && let Some(schema) = &info.input_schema
        {
            let problems = crate::schema::check(schema, &input);
            if let Some((path, problem)) = problems.first() {
                return Err(StepError::permanent(format!(
                    "input does not match the input schema of {}: {path} {problem}",
                    step.task
                ))
                .into());
            }
        }
        let timeout = Duration::from_millis(step.placement.timeout_ms);
        // Streamed chunks become step:progress events, in order, off the
        // call's path (builtin tasks never stream).
        let streams = step.placement.backend != "builtin";
        let (progress, mut chunks) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let forward = streams.then(|| {
            let store = self.store.clone();
            let task_id = job.task_id.clone();
            let step_idx = job.step;
            let item = job.item;
            tokio::spawn(async move {
                while let Some(chunk) = chunks.recv().await {
                    let data = json!({"chunk": chunk, "item": item});
                    let event = crate::store::NewEvent {
                        kind: "step:progress".into(),
                        step: Some(step_idx),
                        data,
                    };
                    if let Err(e) = store.append_events(&task_id, vec![event]).await {
                        tracing::warn!(error = %e, "could not record a streamed chunk");
                    }
                }
            })
        });
        let call = StepCall {
            task_id: job.task_id.clone(),
            step_id: match job.item {
                Some(i) => format!("{}[{i}]", step.key),
                None => step.key.clone(),
            },
            task: step.task.clone(),
            input,
            attempt: job.attempt,
            timeout,
            progress: streams.then_some(progress),
        };
        let backend = step.placement.backend.clone();
        let run = self.executor.run(&backend, call);
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, run) => match r {
                Ok(Ok(v)) => Outcome::Done(v),
                Ok(Err(e)) => Outcome::Failed(e),
                Err(_) => Outcome::Failed(StepError::transient(format!(
                    "timed out after {}",
                    human_ms(step.placement.timeout_ms)
                ))),
            },
            _ = token.cancelled() => Outcome::Aborted,
        };
        // Every chunk is recorded before the step's completion is.
        if let Some(f) = forward {
            let _ = f.await;
        }
        Ok(Some(outcome))
    }
}

fn human_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(77).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// Builds the API's view of a stored task.
pub fn view(rec: TaskRecord) -> TaskView {
    let mut v = TaskView {
        id: rec.id,
        task_type: rec.task_type,
        status: rec.status,
        queue: rec.queue,
        progress: rec.progress,
        result: rec.result.clone(),
        error: rec.error,
        created_at: rfc3339(rec.created_at),
        started_at: rec.started_at.map(rfc3339),
        completed_at: rec.completed_at.map(rfc3339),
        steps: None,
        step_results: None,
        step_status: None,
        final_result: None,
        total_duration: None,
        parallel_groups: None,
    };
    if !rec.is_pipeline {
        return v;
    }
    let mut by_id = Map::new();
    let mut ordered = Vec::with_capacity(rec.steps.len());
    let mut status = Vec::with_capacity(rec.steps.len());
    for s in &rec.steps {
        let r = s.result.clone().unwrap_or(Value::Null);
        ordered.push(r.clone());
        by_id.insert(s.key.clone(), r);
        status.push(StepStatusView {
            id: s.key.clone(),
            task: s.task.clone(),
            status: s.status,
            started_at: s.started_at.map(rfc3339),
            completed_at: s.completed_at.map(rfc3339),
            duration: match (s.started_at, s.completed_at) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            error: s.error.clone(),
            attempts: s.attempts,
        });
    }
    let first = rec.steps.iter().filter_map(|s| s.started_at).min();
    let last = rec.steps.iter().filter_map(|s| s.completed_at).max();
    v.total_duration = match (first, last) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    v.parallel_groups = Some(parallel_groups(
        rec.steps
            .iter()
            .filter_map(|s| Some((s.key.clone(), s.started_at?, s.completed_at?)))
            .collect(),
    ));
    v.steps = Some(ordered);
    v.step_results = Some(by_id);
    v.step_status = Some(status);
    v.final_result = rec.result;
    v
}

/// Groups steps whose run intervals overlapped (transitively), in start order.
pub fn parallel_groups(mut spans: Vec<(String, i64, i64)>) -> Vec<Vec<String>> {
    spans.sort_by_key(|s| (s.1, s.2));
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut end = i64::MIN;
    for (key, start, stop) in spans {
        match groups.last_mut() {
            Some(g) if start < end => {
                g.push(key);
                end = end.max(stop);
            }
            _ => {
                groups.push(vec![key]);
                end = stop;
            }
        }
    }
    groups
}

/// The task's status JSON that effects receive (and a webhook sends by default).
pub fn status_body(t: &TaskRecord) -> Value {
    json!({"taskId": t.id, "status": t.status, "result": t.result, "error": t.error})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::testing::Flaky;

    fn engine_on(store: Arc<dyn Store>) -> Arc<Engine> {
        Engine::new(
            store,
            Catalog::with_builtins(),
            Executor::new(Vec::new()),
            EngineConfig {
                worker_concurrency: 2,
                gpu_worker_concurrency: 1,
                lease_ms: 400,
                owner: "test".into(),
            },
            None,
        )
    }

    /// Two engines on one embedded store behind a [`Flaky`] wrapper: one
    /// that only takes submissions, and a worker that has none of their
    /// plans cached (as another host would), so it loads them from the store.
    async fn flaky_hosts(dir: &std::path::Path) -> (Arc<Engine>, Arc<Engine>, Arc<Flaky>) {
        let inner = match SqliteStore::open(dir) {
            Ok(s) => Arc::new(s),
            Err(e) => panic!("cannot open the store: {e}"),
        };
        let flaky = Arc::new(Flaky::new(inner));
        let front = engine_on(flaky.clone());
        front.shutdown(Duration::ZERO).await;
        let worker = engine_on(flaky.clone());
        if let Err(e) = worker.start().await {
            panic!("engine did not start: {e}");
        }
        (front, worker, flaky)
    }

    /// Submits `spec` through `engine` and waits (bounded) for the task to end.
    async fn run_to_end(engine: &Arc<Engine>, spec: Value) -> TaskView {
        let mut events = engine.store().subscribe();
        let body = spec.to_string();
        let id = match engine.submit_json(body.as_bytes()).await {
            Ok(c) => c.id,
            Err(e) => panic!("submission refused: {e}"),
        };
        let ended = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match events.next().await {
                    Feed::Event(e) if e.task_id == id && e.kind == "pipeline:complete" => return,
                    Feed::Event(_) | Feed::Missed => {}
                    Feed::Closed => panic!("event stream ended"),
                }
            }
        })
        .await;
        match engine.get(&id).await {
            Ok(v) if ended.is_ok() => v,
            Ok(v) => panic!("task did not end within 20 s: {:?}", v.status),
            Err(e) => panic!("cannot read the task: {e}"),
        }
    }

    fn pipeline() -> Value {
        json!({"type": "p", "steps": [
            {"id": "a", "task": "builtin.echo", "input": {"n": 1}},
            {"id": "b", "task": "builtin.echo", "input": {"from": "{{steps.a.n}}"}}
        ]})
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_failure_before_a_step_runs_costs_it_no_attempt() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let (engine, worker, flaky) = flaky_hosts(dir.path()).await;
        // The first job cannot load its task: a step without retries must
        // not fail for it, and the try it never made is not counted.
        flaky.fail_next("spec", 1);
        let t = run_to_end(&engine, pipeline()).await;
        assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
        assert_eq!(t.final_result, Some(json!({"from": 1})));
        let steps = t.step_status.unwrap_or_default();
        assert!(steps.iter().all(|s| s.attempts == 1), "{steps:?}");
        assert_eq!(flaky.tripped(), vec!["spec"]);
        worker.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outcome_the_store_refused_is_sent_again_not_run_again() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let (front, worker, flaky) = flaky_hosts(dir.path()).await;
        // The first step's result is refused twice, the failure of the
        // last one once: each step still runs exactly once.
        flaky.fail_next("complete", 2);
        flaky.fail_next("fail", 1);
        let spec = json!({"type": "p", "steps": [
            {"id": "a", "task": "builtin.echo", "input": {"n": 1}},
            {"id": "b", "task": "builtin.fail", "input": {"message": "no"}, "dependsOn": ["a"]}
        ]});
        let t = run_to_end(&front, spec).await;
        assert_eq!(t.status, TaskStatus::Failed, "{:?}", t.error);
        let steps = t.step_status.unwrap_or_default();
        assert_eq!(
            steps[0].status,
            crate::model::StepStatus::Completed,
            "{steps:?}"
        );
        assert!(steps.iter().all(|s| s.attempts == 1), "{steps:?}");
        let events = match worker.store().events(&t.id, 0, 1000).await {
            Ok(e) => e,
            Err(e) => panic!("cannot read events: {e}"),
        };
        let starts = events.iter().filter(|e| e.kind == "step:start").count();
        assert_eq!(starts, 2, "a step ran again: {events:?}");
        assert_eq!(flaky.tripped(), ["complete", "complete", "fail"]);
        worker.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_of_tasks_that_ended_unheard_are_dropped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let (front, _worker, _flaky) = flaky_hosts(dir.path()).await;
        // The front host caches what it was given, and (its listener being
        // stopped, as when pub/sub drops the events) never hears the end.
        let t = run_to_end(&front, pipeline()).await;
        assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
        let waiting = json!({"type": "builtin.echo", "queue": "nobody-serves-this"}).to_string();
        if let Err(e) = front.submit_json(waiting.as_bytes()).await {
            panic!("submission refused: {e}");
        }
        let cached = || Engine::lock(&front.states).len();
        assert_eq!(cached(), 2);
        assert_eq!(front.forget_ended().await, 1);
        // The task still waiting keeps its plan.
        assert_eq!(cached(), 1);
        assert_eq!(front.forget_ended().await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_cannot_even_be_given_back_returns_when_its_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let (engine, worker, flaky) = flaky_hosts(dir.path()).await;
        flaky.fail_next("spec", 1);
        flaky.fail_next("release", 1);
        let t = run_to_end(&engine, pipeline()).await;
        assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
        assert_eq!(flaky.tripped(), vec!["spec", "release"]);
        worker.shutdown(Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_failure_while_fanning_out_costs_the_step_no_attempt() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let (engine, worker, flaky) = flaky_hosts(dir.path()).await;
        flaky.fail_next("start_items", 1);
        let t = run_to_end(
            &engine,
            json!({"type": "p", "steps": [
                {"id": "each", "task": "builtin.echo", "forEach": "{{payload.xs}}", "input": {"x": "{{item}}"}}
            ], "payload": {"xs": [1, 2, 3]}}),
        )
        .await;
        assert_eq!(t.status, TaskStatus::Completed, "{:?}", t.error);
        assert_eq!(t.final_result, Some(json!([{"x": 1}, {"x": 2}, {"x": 3}])));
        assert_eq!(flaky.tripped(), vec!["start_items"]);
        worker.shutdown(Duration::from_secs(1)).await;
    }

    #[test]
    fn groups_follow_overlap() {
        let g = parallel_groups(vec![
            ("download".into(), 0, 10),
            ("frames".into(), 10, 30),
            ("audio".into(), 11, 20),
            ("caps".into(), 30, 40),
            ("x".into(), 35, 36),
        ]);
        assert_eq!(
            g,
            vec![
                vec!["download".to_string()],
                vec!["frames".to_string(), "audio".to_string()],
                vec!["caps".to_string(), "x".to_string()],
            ]
        );
    }
}
