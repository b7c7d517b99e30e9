//! Lifecycle effects: at `onPending`, `onProgress` (throttled), `onSuccess`
//! and `onError` the engine resolves each effect's config templates and calls
//! the plugin that provides it, off the task's critical path. An effect that
//! fails is logged and recorded as an `effect:error` event; it never changes
//! the task's outcome. `onPending`, `onSuccess` and `onError` are delivered
//! through the store's outbox, at least once (see [`super::outbox`]);
//! `onProgress` is fired directly, best effort.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};
use tracing::Instrument;

use dwa_core::plan::PlannedEffect;
use dwa_core::template::{Root, Scope};
use dwa_plugins::runtime::{EffectCall, PluginHost, ServiceError};
use dwa_store::{NewEvent, StoreError};

use crate::engine::{Engine, TaskState};
use crate::views::status_body;

/// Shortest gap between two `onProgress` firings of one task.
pub const PROGRESS_THROTTLE: Duration = Duration::from_millis(250);

/// How often an effect's store reads are tried, 100 ms apart and doubling
/// (1.5 s in all): an effect skipped for a store blip is a webhook that
/// never comes.
const STORE_TRIES: u32 = 5;

/// Runs a store read for an effect, again while it fails with an error
/// `retryable` accepts; None (logged) when it never succeeds.
async fn read_for_effects<T, E: std::fmt::Display, F>(
    what: &str,
    task_id: &str,
    retryable: impl Fn(&E) -> bool,
    mut read: impl FnMut() -> F,
) -> Option<T>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let first = read().await;
    let describe = || format!("reading {what} of task {task_id} for its effects");
    match crate::transient::while_transient(first, STORE_TRIES, retryable, describe, read).await {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(task = %task_id, error = %e, "effects skipped: cannot read {what}");
            None
        }
    }
}

/// A lifecycle point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// The task was queued.
    Pending,
    /// Its progress moved.
    Progress,
    /// It completed.
    Success,
    /// It failed.
    Error,
}

impl Lifecycle {
    /// The lifecycle a list's name in the task JSON names.
    pub fn parse(name: &str) -> Option<Lifecycle> {
        Some(match name {
            "onPending" => Lifecycle::Pending,
            "onProgress" => Lifecycle::Progress,
            "onSuccess" => Lifecycle::Success,
            "onError" => Lifecycle::Error,
            _ => return None,
        })
    }

    /// The list's name in the task JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Pending => "onPending",
            Lifecycle::Progress => "onProgress",
            Lifecycle::Success => "onSuccess",
            Lifecycle::Error => "onError",
        }
    }
}

/// The engine's services as the effects of one task's list see them.
pub struct EngineServices {
    engine: Arc<Engine>,
    task_id: String,
    /// The task's state, held while its list is delivered: the engine drops
    /// its cached copy when the task ends, and a copy loaded again would
    /// count the task's enqueued tasks from zero.
    task: Arc<TaskState>,
}

impl EngineServices {
    /// The services for the effects of task `task_id`, whose state is `task`.
    pub(crate) fn new(engine: Arc<Engine>, task_id: String, task: Arc<TaskState>) -> Self {
        EngineServices {
            engine,
            task_id,
            task,
        }
    }
}

#[async_trait]
impl PluginHost for EngineServices {
    async fn emit(&self, task_id: &str, event: &str, data: Value) -> Result<(), ServiceError> {
        self.engine
            .append_events(
                task_id,
                vec![NewEvent {
                    kind: event.to_owned(),
                    step: None,
                    data,
                }],
            )
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::Backend(_) | StoreError::Closed => {
                    ServiceError::Unavailable(e.to_string())
                }
                _ => ServiceError::Refused(e.to_string()),
            })
    }

    async fn enqueue(&self, parent: &str, task: Value) -> Result<String, ServiceError> {
        let spec = serde_json::from_value(task)
            .map_err(|e| ServiceError::Refused(format!("not a task: {e}")))?;
        let state = if parent == self.task_id {
            self.task.clone()
        } else {
            self.engine
                .plan_of(parent)
                .await
                .map_err(|_| ServiceError::Refused(format!("no task {parent}")))?
        };
        match self.engine.submit_child(&state, spec).await {
            Ok(created) => Ok(created.id),
            Err(crate::engine::EngineError::Invalid(errs)) => Err(ServiceError::Refused(format!(
                "invalid task: {}",
                errs.iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
            Err(crate::engine::EngineError::Store(e)) => {
                Err(ServiceError::Unavailable(e.to_string()))
            }
            Err(e) => Err(ServiceError::Refused(e.to_string())),
        }
    }
}

/// Per-task time of the last `onProgress` firing: at most one firing per
/// window per task, and 100% always fires.
pub struct ProgressThrottle {
    window: Duration,
    last: std::sync::Mutex<HashMap<String, Instant>>,
}

impl Default for ProgressThrottle {
    fn default() -> Self {
        ProgressThrottle::new(PROGRESS_THROTTLE)
    }
}

impl ProgressThrottle {
    /// A throttle letting one firing per `window` through.
    pub fn new(window: Duration) -> Self {
        ProgressThrottle {
            window,
            last: Default::default(),
        }
    }

    /// Whether to fire now (and note it).
    pub fn admit(&self, task_id: &str, progress: f64) -> bool {
        self.admit_at(task_id, progress, Instant::now())
    }

    /// Whether to fire at `now` (and note it): the clock is the caller's.
    fn admit_at(&self, task_id: &str, progress: f64, now: Instant) -> bool {
        let mut m = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(task_id) {
            Some(last)
                if now.saturating_duration_since(*last) < self.window && progress < 100.0 =>
            {
                false
            }
            _ => {
                m.insert(task_id.to_owned(), now);
                true
            }
        }
    }

    /// Forgets a finished task.
    pub fn forget(&self, task_id: &str) {
        self.last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task_id);
    }
}

/// Fires one lifecycle list of a task; call it in a spawned task.
pub async fn fire(
    engine: Arc<Engine>,
    task_id: String,
    lifecycle: Lifecycle,
    progress: Option<f64>,
) {
    fire_list(engine, task_id, lifecycle, progress, Delivery::default()).await;
}

/// Which delivery of a list this is (the outbox's), for skipping what an
/// earlier try delivered and naming each effect's delivery.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Delivery {
    /// Effects delivered already (bit i: effect i).
    pub(crate) delivered: u64,
    /// Whether the calls carry a delivery id (`X-DWA-Delivery`).
    pub(crate) with_id: bool,
    /// The try, from 1 (0: not through the outbox).
    pub(crate) attempt: u32,
}

/// What firing a list did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fired {
    /// Effects delivered, this time or before.
    pub(crate) delivered: u64,
    /// Whether there is nothing left to deliver (all delivered, or nothing
    /// can be: no plugins, the task gone).
    pub(crate) finished: bool,
}

/// Fires the effects of one lifecycle list not yet delivered.
pub(crate) async fn fire_list(
    engine: Arc<Engine>,
    task_id: String,
    lifecycle: Lifecycle,
    progress: Option<f64>,
    delivery: Delivery,
) -> Fired {
    let nothing = Fired {
        delivered: delivery.delivered,
        finished: true,
    };
    let Some(plugins) = engine.plugins().cloned() else {
        return nothing;
    };
    let Some(state) = read_for_effects(
        "the task's plan",
        &task_id,
        |e: &dwa_core::step::StepError| e.retryable,
        || engine.plan_of(&task_id),
    )
    .await
    else {
        return nothing;
    };
    let plan = &state.plan;
    let effects: &[PlannedEffect] = match lifecycle {
        Lifecycle::Pending => &plan.effects.on_pending,
        Lifecycle::Progress => &plan.effects.on_progress,
        Lifecycle::Success => &plan.effects.on_success,
        Lifecycle::Error => &plan.effects.on_error,
    };
    if effects.is_empty() {
        return nothing;
    }
    let store_trouble = |e: &dwa_store::StoreError| matches!(e, dwa_store::StoreError::Backend(_));
    let view = match read_for_effects("the task", &task_id, store_trouble, || {
        engine.store().task_summary(&task_id)
    })
    .await
    {
        Some(Some(view)) => view,
        // Gone (purged): nothing left to deliver.
        Some(None) => return nothing,
        // The store is away: try again later.
        None => {
            return Fired {
                delivered: delivery.delivered,
                finished: false,
            };
        }
    };
    // Effects are seen outside: what they tell of must be on disk first.
    if let Err(e) = engine.store().settled().await {
        tracing::warn!(task = %task_id, error = %e, "effects wait: the store is not durable");
        return Fired {
            delivered: delivery.delivered,
            finished: false,
        };
    }
    let status = status_body(&view);
    let mut needs = Vec::new();
    for e in effects {
        e.config.exprs(&mut |x| {
            if let Root::Step { idx: Some(i), .. } = x.root
                && !needs.contains(&(i as u32))
            {
                needs.push(i as u32);
            }
        });
    }
    let mut steps = HashMap::new();
    if !needs.is_empty()
        && let Some(results) = read_for_effects("step results", &task_id, store_trouble, || {
            engine.store().step_results(&task_id, &needs)
        })
        .await
    {
        for (i, r) in needs.iter().zip(results) {
            if let Some(r) = r {
                steps.insert(*i as usize, Arc::new(r));
            }
        }
    }
    let progress = progress.unwrap_or(view.progress);
    let scope = Scope {
        payload: Some(&plan.spec.payload),
        steps: Some(&steps),
        progress: Some(progress),
        error: view.error.as_deref(),
        result: view.result.as_ref(),
        max_bytes: Some(engine.config.limits.max_input_bytes),
        ..Default::default()
    };
    let host: Arc<dyn PluginHost> = Arc::new(EngineServices::new(
        engine.clone(),
        task_id.clone(),
        state.clone(),
    ));
    let mut delivered = delivery.delivered;
    for (i, effect) in effects.iter().enumerate() {
        let bit = 1u64 << (i % 64);
        if delivered & bit != 0 {
            continue;
        }
        let id = delivery
            .with_id
            .then(|| format!("{task_id}:{}:{i}", lifecycle.as_str()));
        let fns = dwa_plugins::TaskFunctions {
            plugins: Some(&plugins),
            task_id: &task_id,
        };
        let span = tracing::info_span!(target: "dwa_otel", "effect",
            otel.name = %format_args!("effect {}", effect.event), effect = %effect.event,
            lifecycle = lifecycle.as_str(), task.id = %task_id, attempt = delivery.attempt,
            otel.status_code = tracing::field::Empty, error = tracing::field::Empty);
        crate::traces::adopt(&span, state.trace.as_deref());
        let delivering = async {
            match effect.config.resolve_with(&scope, &fns).await {
                Err(e) => Err(format!("config: {e}")),
                Ok(config) => {
                    let call = EffectCall {
                        effect: effect.event.clone(),
                        lifecycle: lifecycle.as_str().to_owned(),
                        task_id: task_id.clone(),
                        task: status.to_string(),
                        config: config.to_string(),
                    };
                    let started = std::time::Instant::now();
                    let r = plugins
                        .call_effect(&effect.event, call, &task_id, host.clone(), id.as_deref())
                        .await
                        .map_err(|e| e.to_string());
                    crate::meters::effect_took(&effect.event, started.elapsed());
                    r
                }
            }
        };
        let outcome = delivering.instrument(span.clone()).await;
        if let Err(error) = &outcome {
            span.record("otel.status_code", "ERROR");
            span.record("error", error.as_str());
        }
        crate::meters::effect_delivered(&effect.event, outcome.is_ok());
        match outcome {
            Ok(_) => delivered |= bit,
            Err(error) => {
                tracing::warn!(task = %task_id, effect = %effect.event, lifecycle = lifecycle.as_str(), attempt = delivery.attempt, %error, "effect failed");
                let mut data = json!({"effect": effect.event, "lifecycle": lifecycle.as_str(), "error": error});
                if delivery.attempt > 0 {
                    data["attempt"] = json!(delivery.attempt);
                }
                let _ = engine
                    .append_events(
                        &task_id,
                        vec![NewEvent {
                            kind: "effect:error".into(),
                            step: None,
                            data,
                        }],
                    )
                    .await;
            }
        }
    }
    let all = (0..effects.len()).all(|i| delivered & (1u64 << (i % 64)) != 0);
    Fired {
        delivered,
        finished: all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_admits_the_first_firing_then_one_per_window_and_always_completion() {
        let t = ProgressThrottle::new(Duration::from_millis(250));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(t.admit_at("a", 25.0, at(0)), "the first firing passes");
        assert!(!t.admit_at("a", 50.0, at(100)), "inside the window");
        assert!(!t.admit_at("a", 60.0, at(249)), "still inside the window");
        assert!(t.admit_at("a", 75.0, at(250)), "the window has passed");
        assert!(
            !t.admit_at("a", 80.0, at(300)),
            "a new window started at 250"
        );
        assert!(t.admit_at("a", 100.0, at(301)), "completion always fires");
        assert!(t.admit_at("b", 10.0, at(301)), "tasks are throttled apart");
        t.forget("a");
        assert!(
            t.admit_at("a", 5.0, at(302)),
            "a forgotten task starts over"
        );
    }
}
