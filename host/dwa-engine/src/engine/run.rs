//! Running one job: prepare it (the task's plan and the results its step
//! needs, forEach items, the input), call the executor, and record the
//! outcome as one store transition — sending it again while the store is
//! briefly away, so that a step is not run twice for a lost write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use dwa_core::limits::{self, Exceeded};
use dwa_core::model::OnFailure;
use dwa_core::plan::PlannedStep;
use dwa_core::retry;
use dwa_core::step::{StepCall, StepError};
use dwa_core::template::Scope;
use dwa_plugins::TaskFunctions;
use dwa_store::{Job, NewEvent, StepEnd, StoreError, Transition};

use super::gates::Gated;
use super::{Engine, TaskState};

pub(super) enum Outcome {
    Done(Value),
    Failed(StepError),
    /// Not run: its `if` is false or a guard ancestor failed (why).
    Skipped(String),
    /// Not yet: it waits for a concurrency slot, a rate or a saturated
    /// backend until then (ms), for this reason.
    Deferred(i64, String),
    Aborted,
}

/// Why a job could not be prepared. A store failure is the host's trouble,
/// not the step's: the job goes back without costing it a try (a Redis
/// restart must not fail tasks that have no retries).
pub(super) enum PrepError {
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
pub(super) const STORE_FAILURE_PAUSE: Duration = Duration::from_millis(250);

/// Item jobs of one `forEach` step queued at once: a fan-out at the item
/// limit is written in windows, never in one transaction that holds the
/// store's writer (or Redis) for seconds.
pub(super) const FAN_OUT_WINDOW: u32 = 1000;

/// How often a step's outcome is sent to a failing store (100 ms apart,
/// doubling: 3.1 s in all) before it is left to the lease running out.
pub(super) const RECORD_TRIES: u32 = 6;

impl Engine {
    /// Runs a job, then — while its results keep coming back clean — the next
    /// job of the same queue, leased in the same store call that records the
    /// result (one round trip per step instead of two).
    pub(super) async fn work(self: Arc<Self>, queue: String, mut job: Job) {
        loop {
            let token = CancellationToken::new();
            let key = (job.task_id.clone(), job.step, job.item);
            Self::lock(&self.running).insert(key.clone(), (job.clone(), token.clone()));
            crate::meters::running(&queue, 1.0);
            let span = self.step_span(&job).await;
            let next = self
                .clone()
                .run_job(&queue, &job, &token)
                .instrument(span)
                .await;
            crate::meters::running(&queue, -1.0);
            Self::lock(&self.running).remove(&key);
            self.release_slot_of(&job).await;
            match next {
                Some(n) => job = n,
                None => return,
            }
        }
    }

    /// The span of one try of a job, a child of its task's trace
    /// ([`crate::traces`]); disabled, and nothing is looked up, when no
    /// OpenTelemetry layer records it.
    async fn step_span(&self, job: &Job) -> tracing::Span {
        let span = tracing::info_span!(target: "dwa_otel", "step",
            otel.name = Empty, task.id = %job.task_id, step = Empty, item = Empty,
            task = Empty, backend = Empty, attempt = job.attempt, outcome = Empty,
            otel.status_code = Empty, error = Empty);
        if span.is_disabled() {
            return span;
        }
        if let Some(i) = job.item {
            span.record("item", i);
        }
        if let Ok(state) = self.state(&job.task_id).await {
            if let Some(step) = state.plan.steps.get(job.step as usize) {
                span.record("otel.name", format!("step {}", step.key));
                span.record("step", step.key.as_str());
                span.record("task", step.task.as_str());
                span.record("backend", step.placement.backend.as_str());
            }
            crate::traces::adopt(&span, state.trace.as_deref());
        }
        span
    }

    /// Runs one job and records its outcome; answers the next job when one was leased.
    async fn run_job(
        self: Arc<Self>,
        queue: &str,
        job: &Job,
        token: &CancellationToken,
    ) -> Option<Job> {
        let outcome = match self.clone().prepare_and_run(job, token).await {
            Ok(Some(Outcome::Done(v))) => match self.check_result(&v) {
                Ok(()) => Outcome::Done(v),
                Err(e) => Outcome::Failed(e),
            },
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
        let recorded_at = std::time::Instant::now();
        let mut ended = match &outcome {
            Outcome::Done(_) => "completed",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped(_) => "skipped",
            Outcome::Deferred(..) => "deferred",
            Outcome::Aborted => "aborted",
        };
        let span = tracing::Span::current();
        if let Outcome::Failed(e) = &outcome {
            span.record("otel.status_code", "ERROR");
            span.record("error", e.message.as_str());
        }
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
                // Its retry policy, and whether its failure lets the task go on.
                let (policy, tolerated) = match self.state(&job.task_id).await {
                    Ok(s) => s
                        .plan
                        .steps
                        .get(job.step as usize)
                        .map(|st| (st.retry.clone(), st.on_failure != OnFailure::Fail))
                        .unwrap_or_default(),
                    Err(_) => Default::default(),
                };
                if retry::may_retry(&policy, job.attempt, e.retryable) {
                    ended = "retried";
                    if let Some(st) = known
                        .as_deref()
                        .and_then(|s| s.plan.steps.get(job.step as usize))
                    {
                        crate::meters::retried(&st.task);
                    }
                    let wait = retry::delay_after(&policy, job.attempt, rand::random::<f64>());
                    let run_at = self.store.now_ms() + wait.as_millis() as i64;
                    let first = self.store.retry(job, run_at, &e.message).await;
                    self.record_again(job, first, || self.store.retry(job, run_at, &e.message))
                        .await
                } else if tolerated {
                    ended = "tolerated";
                    self.end_step(job, StepEnd::Failed(e.message)).await
                } else {
                    let first = self.store.fail(job, &e.message).await;
                    self.record_again(job, first, || self.store.fail(job, &e.message))
                        .await
                }
            }
            Outcome::Skipped(why) => self.end_step(job, StepEnd::Skipped(why)).await,
            Outcome::Deferred(until, why) => {
                let announce = self.first_wait(job).then_some(why.as_str());
                let first = self.store.defer(job, until, announce).await;
                self.record_again(job, first, || self.store.defer(job, until, announce))
                    .await
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
        crate::meters::store_took("record", recorded_at.elapsed());
        span.record("outcome", ended);
        if recorded.is_ok() {
            crate::meters::step_ended(queue, ended);
        }
        if let Ok(t) = &recorded
            && let Some(status) = t.finished
        {
            let task_queue = known
                .as_deref()
                .and_then(|s| {
                    s.plan
                        .spec
                        .queue
                        .clone()
                        .or_else(|| s.plan.steps.first().map(|f| f.placement.queue.clone()))
                })
                .unwrap_or_else(|| queue.to_owned());
            crate::meters::task_finished(&task_queue, status);
        }
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
        crate::transient::while_transient(
            first,
            RECORD_TRIES,
            |e| matches!(e, StoreError::Backend(_)),
            || format!("recording the outcome of job {}", job.name()),
            again,
        )
        .await
    }

    /// Ends a job's step without a result of its own (sent again while the store fails).
    async fn end_step(&self, job: &Job, end: StepEnd) -> Result<Transition, StoreError> {
        let first = self.store.end_step(job, end.clone()).await;
        self.record_again(job, first, || self.store.end_step(job, end.clone()))
            .await
    }

    /// Why a step is skipped, if it is: an ancestor under `onFailure:
    /// "skipDependants"` failed (its result says so), or its `if` is false.
    async fn skip_reason(
        &self,
        job: &Job,
        state: &TaskState,
        step: &PlannedStep,
        results: &HashMap<usize, Arc<Value>>,
    ) -> Result<Option<String>, StepError> {
        for g in &step.guards {
            let failed = results.get(g).is_some_and(|r| r.get("$error").is_some());
            if failed && let Some(a) = state.plan.steps.get(*g) {
                return Ok(Some(format!(
                    "step {:?} failed and skips its dependants",
                    a.key
                )));
            }
        }
        let Some(cond) = &step.condition else {
            return Ok(None);
        };
        let scope = Scope {
            payload: Some(&state.plan.spec.payload),
            steps: Some(results),
            max_bytes: Some(self.config.limits.max_input_bytes),
            ..Default::default()
        };
        let holds = cond
            .holds(&scope, Some(&self.functions_for(&job.task_id)))
            .await
            .map_err(|e| StepError::permanent(format!("if: {e}")))?;
        Ok((!holds).then(|| format!("its condition {{{{ {} }}}} is false", cond.source)))
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

    /// Prepares a job and runs it, in named phases: load the task's state
    /// and the results its step needs, resolve `forEach` items (the parent
    /// job of a forEach only fans out: `None`), resolve and check the input,
    /// call the executor.
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
        if job.item.is_none()
            && let Some(why) = self.skip_reason(job, &state, step, &results).await?
        {
            return Ok(Some(Outcome::Skipped(why)));
        }
        let items = self.resolve_items(job, &state, step, &results).await?;
        let item =
            match (&items, job.item) {
                (Some(items), None) => {
                    self.fan_out(job, step, items.len()).await?;
                    return Ok(None);
                }
                (Some(items), Some(i)) => Some(items.get(i as usize).ok_or_else(|| {
                    StepError::permanent(format!("forEach item {i} does not exist"))
                })?),
                (None, _) => None,
            };
        let input = self
            .resolve_input(job, &state, step, &results, item)
            .await?;
        limits::check_depth(&input, self.config.limits.max_json_depth)
            .map_err(|e| StepError::permanent(format!("input: {e}")))?;
        self.check_input(step, &input)?;
        if step.task == dwa_core::plan::WAIT_TASK {
            return self.wait(job, step, &input).await;
        }
        if step.task == dwa_core::plan::SUBTASK_TASK {
            return self.subtask(job, step, &state, input).await;
        }
        match self.pass_gates(job, step, &state, &results, item).await? {
            Gated::Open => {}
            Gated::Wait { until, reason } => return Ok(Some(Outcome::Deferred(until, reason))),
            Gated::Go(held) => {
                self.waited(job);
                if let Some(h) = held {
                    self.hold_slot(job, h);
                }
            }
        }
        Ok(Some(self.call(job, step, input, token).await))
    }

    /// The items of a `forEach` step, resolved once per task on this host.
    async fn resolve_items(
        &self,
        job: &Job,
        state: &TaskState,
        step: &PlannedStep,
        results: &HashMap<usize, Arc<Value>>,
    ) -> Result<Option<Arc<Vec<Value>>>, StepError> {
        let Some(t) = &step.for_each else {
            return Ok(None);
        };
        if let Some(cached) = Self::lock(&state.items).get(&step.idx).cloned() {
            return Ok(Some(cached));
        }
        let scope = Scope {
            payload: Some(&state.plan.spec.payload),
            steps: Some(results),
            max_bytes: Some(self.config.limits.max_input_bytes),
            ..Default::default()
        };
        let v = t
            .resolve_with(&scope, &self.functions_for(&job.task_id))
            .await
            .map_err(|e| StepError::permanent(format!("forEach: {e}")))?;
        let Value::Array(list) = v else {
            return Err(StepError::permanent(format!(
                "forEach must resolve to an array, got {}",
                short(&v)
            )));
        };
        let limits = &self.config.limits;
        let over = |what, value, max, var| {
            StepError::permanent(format!(
                "forEach: {}",
                Exceeded {
                    what,
                    value: Some(value),
                    max,
                    var
                }
            ))
        };
        if list.len() > limits.max_items_per_step {
            return Err(over(
                "the number of items",
                list.len(),
                limits.max_items_per_step,
                "DWA_MAX_FOREACH_ITEMS",
            ));
        }
        let list = Arc::new(list);
        let mut items = Self::lock(&state.items);
        let task_items = list.len() + items.values().map(|l| l.len()).sum::<usize>();
        if task_items > limits.max_items_per_task {
            return Err(over(
                "the number of items over the task's steps",
                task_items,
                limits.max_items_per_task,
                "DWA_MAX_TASK_ITEMS",
            ));
        }
        items.insert(step.idx, list.clone());
        Ok(Some(list))
    }

    /// Turns a `forEach` step's job into one job per item, at most
    /// `forEachConcurrency` (and at most [`FAN_OUT_WINDOW`]) of them queued
    /// at a time; the store queues the next as each one finishes.
    async fn fan_out(
        self: &Arc<Self>,
        job: &Job,
        step: &PlannedStep,
        count: usize,
    ) -> Result<(), PrepError> {
        let n =
            u32::try_from(count).map_err(|_| StepError::permanent("forEach has too many items"))?;
        let c = queued_at_once(step.for_each_concurrency, n);
        match self.store.start_items(job, n, c).await {
            Ok(t) => self.wake(&t),
            Err(StoreError::LeaseLost(_)) => {}
            Err(e) => return Err(PrepError::Store(format!("cannot fan out: {e}"))),
        }
        Ok(())
    }

    /// The step's input: its template resolved, or the default input (the
    /// forEach item, the payload, its only dependency's result through the
    /// task's pipe, or an object of its dependencies' results keyed by
    /// their ids).
    async fn resolve_input(
        &self,
        job: &Job,
        state: &TaskState,
        step: &PlannedStep,
        results: &HashMap<usize, Arc<Value>>,
        item: Option<&Value>,
    ) -> Result<Value, StepError> {
        let payload = &state.plan.spec.payload;
        if let Some(t) = &step.input {
            let scope = Scope {
                payload: Some(payload),
                steps: Some(results),
                item,
                index: job.item.map(|i| i as usize),
                max_bytes: Some(self.config.limits.max_input_bytes),
                ..Default::default()
            };
            return t
                .resolve_with(&scope, &self.functions_for(&job.task_id))
                .await
                .map_err(|e| StepError::permanent(format!("input: {e}")));
        }
        let result_of = |d: &usize| results.get(d).map(|v| (**v).clone()).unwrap_or(Value::Null);
        Ok(match (item, step.deps.as_slice()) {
            (Some(item), _) => item.clone(),
            (None, []) => payload.clone(),
            (None, [one]) => match self
                .catalog()
                .lookup(&step.task, Some(&step.placement.backend))
            {
                Ok(info) => info.piped(result_of(one)),
                Err(_) => result_of(one),
            },
            (None, many) => {
                // Each result is within the result limit; together they
                // may not be: counted before anything is copied.
                let mut left = self.config.limits.max_input_bytes;
                for d in many {
                    let size = results
                        .get(d)
                        .map_or(Some(4), |v| limits::size_within(v, left));
                    left = size.and_then(|n| left.checked_sub(n)).ok_or_else(|| {
                        StepError::permanent(format!(
                            "input: {}",
                            Exceeded {
                                what: "the dependencies' results together, in bytes,",
                                value: None,
                                max: self.config.limits.max_input_bytes,
                                var: "DWA_MAX_INPUT_BYTES",
                            }
                        ))
                    })?;
                }
                Value::Object(
                    many.iter()
                        .map(|d| (state.plan.steps[*d].key.clone(), result_of(d)))
                        .collect::<Map<_, _>>(),
                )
            }
        })
    }

    /// A result is stored, copied into later steps' inputs and sent to
    /// followers: its nesting and size are held to the limits here, for
    /// every executor (backends' answers are also read with a cap).
    fn check_result(&self, v: &Value) -> Result<(), StepError> {
        let limits = &self.config.limits;
        limits::check_shape(
            v,
            limits.max_json_depth,
            limits.max_result_bytes,
            "the result's size in bytes",
            "DWA_MAX_RESULT_BYTES",
        )
        .map_err(|e| StepError::permanent(format!("result: {e}")))
    }

    /// Inputs made of templates are only known now: checks them against the
    /// task's input schema as the submission checked literal ones.
    fn check_input(&self, step: &PlannedStep, input: &Value) -> Result<(), StepError> {
        if step.placement.backend == "builtin" {
            return Ok(());
        }
        let catalog = self.catalog();
        if let Ok(info) = catalog.lookup(&step.task, Some(&step.placement.backend))
            && let Some(schema) = &info.input_schema
            && let Some((path, problem)) = dwa_core::schema::check(schema, input).first()
        {
            return Err(StepError::permanent(format!(
                "input does not match the input schema of {}: {path} {problem}",
                step.task
            )));
        }
        Ok(())
    }

    /// Template functions of the plugins, on behalf of one task.
    pub(super) fn functions_for<'a>(&'a self, task_id: &'a str) -> TaskFunctions<'a> {
        TaskFunctions {
            plugins: self.plugins.as_deref(),
            task_id,
        }
    }

    /// One try through the executor, bounded by the step's timeout and the
    /// job's cancellation. A streaming step's chunks become `step:progress`
    /// events, in order, off the call's path, all recorded before the
    /// step's completion is.
    async fn call(
        &self,
        job: &Job,
        step: &PlannedStep,
        input: Value,
        token: &CancellationToken,
    ) -> Outcome {
        let timeout = Duration::from_millis(step.placement.timeout_ms);
        let streams = step.placement.backend != "builtin";
        let (progress, chunks) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let forward = streams.then(|| self.forward_chunks(job, chunks));
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
        // A builtin runs in this process; anything else is seen outside it,
        // with its input from results that must be on disk first.
        if streams && let Err(e) = self.store.settled().await {
            return Outcome::Failed(StepError::transient(e.to_string()));
        }
        let run = self.executor.run(&step.placement.backend, call);
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            r = tokio::time::timeout(timeout, run) => match r {
                Ok(Ok(v)) => Outcome::Done(v),
                // A saturated backend: wait as it asked, without a try spent.
                Ok(Err(StepError { busy_for: Some(wait), message, .. })) => Outcome::Deferred(
                    self.store.now_ms().saturating_add(wait.as_millis() as i64),
                    format!("backend saturated: {message}"),
                ),
                Ok(Err(e)) => Outcome::Failed(e),
                Err(_) => {
                    crate::meters::timed_out(&step.task);
                    Outcome::Failed(StepError::transient(format!(
                        "timed out after {}",
                        human_ms(step.placement.timeout_ms)
                    )))
                }
            },
            _ = token.cancelled() => Outcome::Aborted,
        };
        crate::meters::step_took(&step.task, &step.placement.backend, started.elapsed());
        if let Some(f) = forward {
            let _ = f.await;
        }
        outcome
    }

    /// Records a streaming step's chunks as `step:progress` events, in order.
    fn forward_chunks(
        &self,
        job: &Job,
        mut chunks: tokio::sync::mpsc::UnboundedReceiver<Value>,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let cap = self.config.limits.max_task_events;
        let task_id = job.task_id.clone();
        let (step, item) = (job.step, job.item);
        tokio::spawn(async move {
            while let Some(chunk) = chunks.recv().await {
                let event = NewEvent {
                    kind: "step:progress".into(),
                    step: Some(step),
                    data: json!({"chunk": chunk, "item": item}),
                };
                if let Err(e) = store.append_events(&task_id, vec![event], cap).await {
                    tracing::warn!(error = %e, "could not record a streamed chunk");
                }
            }
        })
    }
}

/// Item jobs queued at once for a fan-out of `n` items.
pub(super) fn queued_at_once(for_each_concurrency: Option<u32>, n: u32) -> u32 {
    for_each_concurrency.unwrap_or(n).clamp(1, FAN_OUT_WINDOW)
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
