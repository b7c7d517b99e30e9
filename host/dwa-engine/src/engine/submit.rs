//! Submission: a request body becomes a plan within the host's limits
//! (docs/configuration.md, "Limits"), and the plan becomes a stored task,
//! with its idempotency key, its start time (`runAt`/`delay`) and the
//! lifecycle lists its outbox will owe (docs/tasks.md). Tasks that effects
//! enqueue carry their lineage, so that a task which enqueues itself stops
//! at `DWA_MAX_LINEAGE_DEPTH`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dwa_core::catalog::Catalog;
use dwa_core::limits::{Exceeded, Limits};
use dwa_core::model::{CreatedTask, TaskSpec, TaskStatus};
use dwa_core::plan::{FieldError, MAX_DELAY_MS, Plan, StartAfter};
use dwa_core::visualize::Sketch;
use dwa_store::{Idempotency, NewStep, NewTask, StoreError};

use super::{Engine, EngineError, StoredSpec, TaskState};

/// Bodies up to this size are parsed and planned on the async worker that
/// received them; larger ones on the blocking pool, so that a task at the
/// limits cannot hold up `/health` or other requests (planning is linear
/// in the body: ~1 ms per 100 KB).
const PLAN_INLINE_BYTES: usize = 64 * 1024;

/// How many large submissions are parsed and planned at once: all cores
/// but one, so that a burst of them leaves a core for everything else.
pub(super) fn planner_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// Parses and plans a request body.
fn plan_body(body: &[u8], catalog: &Catalog, limits: &Limits) -> Result<Plan, EngineError> {
    let spec = dwa_core::plan::parse_spec(body).map_err(EngineError::Malformed)?;
    dwa_core::plan::plan(spec, catalog, limits).map_err(EngineError::Invalid)
}

/// A body for drawing: the seed's `{"steps": [...]}` needs no `type`.
fn sketch_body(body: &[u8], catalog: &Catalog, limits: &Limits) -> Result<Sketch, EngineError> {
    let malformed = |e: serde_json::Error| {
        EngineError::Malformed(FieldError {
            step: None,
            field: "(body)".into(),
            message: e.to_string(),
        })
    };
    let mut value: serde_json::Value = serde_json::from_slice(body).map_err(malformed)?;
    if let Some(fields) = value.as_object_mut() {
        fields
            .entry("type")
            .or_insert_with(|| serde_json::Value::String("pipeline".into()));
    }
    let body = serde_json::to_vec(&value).map_err(malformed)?;
    let spec = dwa_core::plan::parse_spec(&body).map_err(EngineError::Malformed)?;
    dwa_core::visualize::sketch(spec, catalog, limits).map_err(EngineError::Invalid)
}

/// A planned task with its stored form, which is as large as the request.
pub(super) struct Prepared {
    plan: Plan,
    spec_json: String,
    lineage: u32,
    /// Its trace context ([`crate::traces`]).
    trace: Option<String>,
    /// The idempotency key and the digest of the body it covers.
    idempotency: Option<(String, String)>,
}

/// What a submission answered: the task, and whether it is one an earlier
/// submission under the same idempotency key made (200, not 201).
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The task.
    pub task: CreatedTask,
    /// Whether it existed already.
    pub replayed: bool,
}

/// Longest idempotency key, in bytes.
const MAX_KEY_LEN: usize = 255;

/// The submission's idempotency key (the header, or the `idempotencyKey`
/// field; both must then agree) and the digest of the task it covers.
fn idempotency(
    header: Option<String>,
    spec: &TaskSpec,
) -> Result<Option<(String, String)>, EngineError> {
    let malformed = |message: String| {
        EngineError::Malformed(FieldError {
            step: None,
            field: "idempotencyKey".into(),
            message,
        })
    };
    let key = match (header, &spec.idempotency_key) {
        (Some(h), Some(f)) if h != *f => {
            return Err(malformed(format!(
                "{f:?} differs from the Idempotency-Key header {h:?}"
            )));
        }
        (Some(h), _) => h,
        (None, Some(f)) => f.clone(),
        (None, None) => return Ok(None),
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(format!(
            "{key:?} is not an idempotency key: 1-{MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    // The task as planned, without the key: a retry that reformats its JSON
    // is the same task; one that changes a field is not.
    let mut body = spec.clone();
    body.idempotency_key = None;
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| EngineError::Internal(format!("cannot digest the task: {e}")))?;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    Ok(Some((key, digest)))
}

/// A planned task's stored form; `trace`: the span it joins ([`crate::traces`]).
pub(super) fn prepare(
    plan: Plan,
    lineage: u32,
    trace: Option<String>,
) -> Result<Prepared, EngineError> {
    let stored = StoredSpec {
        spec: plan.spec.clone(),
        placements: plan.placements(),
        lineage,
        trace: trace.clone(),
    };
    let spec_json = serde_json::to_string(&stored)
        .map_err(|e| EngineError::Internal(format!("cannot serialise the task: {e}")))?;
    Ok(Prepared {
        plan,
        spec_json,
        lineage,
        trace,
        idempotency: None,
    })
}

/// A refusal of a task that an effect tried to enqueue, naming the limit.
fn refused(field: &str, e: Exceeded) -> EngineError {
    EngineError::Invalid(vec![FieldError {
        step: None,
        field: field.into(),
        message: e.to_string(),
    }])
}

impl Engine {
    /// Validates, plans and queues a task given as a request body.
    pub async fn submit_json(self: &Arc<Self>, body: &[u8]) -> Result<CreatedTask, EngineError> {
        Ok(self.submit_request(body, None).await?.task)
    }

    /// Like [`Engine::submit_json`], with the request's `Idempotency-Key`
    /// header: a repeated submission under a key answers its first task.
    pub async fn submit_request(
        self: &Arc<Self>,
        body: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, EngineError> {
        let header = idempotency_key.map(str::to_owned);
        let trace = crate::traces::current();
        let planning = tracing::info_span!(target: "dwa_otel", "plan", bytes = body.len());
        let prepared = self
            .off_workers(body, move |body, catalog, limits| {
                let plan = planning.in_scope(|| plan_body(body, catalog, limits))?;
                let key = idempotency(header, &plan.spec)?;
                let mut prepared = prepare(plan, 0, trace)?;
                prepared.idempotency = key;
                Ok(prepared)
            })
            .await?;
        self.queue_once(prepared).await
    }

    /// Plans a request body for `POST /api/visualize`: tasks no backend
    /// serves are drawn and listed, not refused; nothing is stored.
    pub async fn sketch_json(&self, body: &[u8]) -> Result<Sketch, EngineError> {
        self.off_workers(body, sketch_body).await
    }

    /// Queues a task planned here, under the `idempotencyKey` its spec names.
    async fn queue_keyed(
        self: &Arc<Self>,
        plan: Plan,
        lineage: u32,
    ) -> Result<Submitted, EngineError> {
        let key = idempotency(None, &plan.spec)?;
        let mut prepared = prepare(plan, lineage, crate::traces::current())?;
        prepared.idempotency = key;
        self.queue_once(prepared).await
    }

    /// Queues a prepared task; under an idempotency key already used, answers
    /// the first task (same body) or a conflict (another body).
    async fn queue_once(self: &Arc<Self>, prepared: Prepared) -> Result<Submitted, EngineError> {
        let key = prepared.idempotency.as_ref().map(|(k, _)| k.clone());
        match self.queue(prepared).await {
            Ok(task) => Ok(Submitted {
                task,
                replayed: false,
            }),
            Err(EngineError::Store(StoreError::Idempotent { task_id, same_body })) => {
                let key = key.unwrap_or_default();
                if !same_body {
                    return Err(EngineError::Conflict(format!(
                        "idempotency key {key:?} was used for another task body (task {task_id})"
                    )));
                }
                let first = self.store.task_summary(&task_id).await?.ok_or_else(|| {
                    EngineError::Conflict(format!(
                        "idempotency key {key:?} was used for task {task_id}, which is no longer kept"
                    ))
                })?;
                Ok(Submitted {
                    task: CreatedTask {
                        id: first.id,
                        status: first.status,
                        queue: first.queue,
                    },
                    replayed: true,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `work` on a request body: inline when the body is small, on the
    /// blocking pool (at most [`planner_threads`] at once) when it is large,
    /// so that tasks at the limits cannot hold up `/health` or other requests.
    async fn off_workers<T: Send + 'static>(
        &self,
        body: &[u8],
        work: impl FnOnce(&[u8], &Catalog, &Limits) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        if body.len() <= PLAN_INLINE_BYTES {
            return work(body, &self.catalog(), &self.config.limits);
        }
        let _turn = self
            .planners
            .acquire()
            .await
            .map_err(|e| EngineError::Internal(format!("planning stopped: {e}")))?;
        let (body, catalog, limits) = (body.to_vec(), self.catalog(), self.config.limits.clone());
        tokio::task::spawn_blocking(move || work(&body, &catalog, &limits))
            .await
            .map_err(|e| EngineError::Internal(format!("planning stopped: {e}")))?
    }

    /// Validates, plans and queues a task.
    pub async fn submit(self: &Arc<Self>, spec: TaskSpec) -> Result<CreatedTask, EngineError> {
        let plan = dwa_core::plan::plan(spec, &self.catalog(), &self.config.limits)
            .map_err(EngineError::Invalid)?;
        Ok(self.queue_keyed(plan, 0).await?.task)
    }

    /// Queues a task that an effect of the task whose state is `state`
    /// enqueues, one link further down its lineage; refused past the lineage
    /// and fan-out limits (counted in `state`).
    pub(crate) async fn submit_child(
        self: &Arc<Self>,
        state: &TaskState,
        spec: TaskSpec,
    ) -> Result<CreatedTask, EngineError> {
        let limits = &self.config.limits;
        let lineage = state.lineage.saturating_add(1);
        if lineage > limits.max_lineage_depth {
            return Err(refused(
                "(lineage)",
                Exceeded {
                    what: "the chain of tasks enqueued by effects",
                    value: Some(lineage as usize),
                    max: limits.max_lineage_depth as usize,
                    var: "DWA_MAX_LINEAGE_DEPTH",
                },
            ));
        }
        let before = state.enqueued.fetch_add(1, Ordering::Relaxed);
        if before >= limits.max_enqueues_per_task {
            return Err(refused(
                "(enqueue)",
                Exceeded {
                    what: "the number of tasks this task's effects enqueued",
                    value: Some(before as usize + 1),
                    max: limits.max_enqueues_per_task as usize,
                    var: "DWA_MAX_ENQUEUES_PER_TASK",
                },
            ));
        }
        let plan =
            dwa_core::plan::plan(spec, &self.catalog(), limits).map_err(EngineError::Invalid)?;
        // An `idempotencyKey` in the enqueued task makes a redelivered
        // effect (delivery is at least once) answer the first task.
        Ok(self.queue_keyed(plan, lineage).await?.task)
    }

    /// Stores a planned task and wakes the workers of its first steps.
    async fn queue(self: &Arc<Self>, prepared: Prepared) -> Result<CreatedTask, EngineError> {
        let Built {
            new,
            plan,
            lineage,
            trace,
            created,
        } = self.build(prepared)?;
        let has_pending_effects = self.adopt(&created.id, plan, lineage, trace);
        let idle = self.idle_workers_for(&new);
        let stored = match &idle {
            Some((queue, workers)) => {
                let (owner, lease_ms) = (&self.config.owner, self.config.lease_ms);
                self.store
                    .create_and_lease(new, queue, owner, workers.len(), lease_ms)
                    .await
            }
            None => self.store.create_task(new).await.map(|t| (t, Vec::new())),
        };
        match stored {
            Ok((t, jobs)) => {
                crate::meters::task_submitted(&created.queue);
                if let Some((queue, workers)) = idle {
                    self.run_leased(&queue, jobs, workers);
                }
                self.wake(&t);
                if has_pending_effects {
                    // Due in the outbox with the task: deliver it now.
                    self.outbox_wake.notify_one();
                }
                Ok(created)
            }
            Err(e) => {
                self.forget(&created.id);
                Err(e.into())
            }
        }
    }

    /// Idle workers of this host for the queue of `task`'s first steps, at
    /// most one per step that starts at once there: the creation leases
    /// for them in the same store call, so a task reaching an idle host
    /// starts without a second round trip (docs/architecture.md). None for
    /// a task that starts later, or once this host stops leasing.
    fn idle_workers_for(
        self: &Arc<Self>,
        task: &NewTask,
    ) -> Option<(String, Vec<tokio::sync::OwnedSemaphorePermit>)> {
        if task.run_at.is_some() || self.stop_leasing.is_cancelled() {
            return None;
        }
        let queue = &task.steps.iter().find(|s| s.waiting_for == 0)?.queue;
        let starting = task
            .steps
            .iter()
            .filter(|s| s.waiting_for == 0 && &s.queue == queue)
            .count();
        let pool = self.pool(queue);
        let workers: Vec<_> = std::iter::from_fn(|| pool.idle.clone().try_acquire_owned().ok())
            .take(starting)
            .collect();
        (!workers.is_empty()).then(|| (queue.clone(), workers))
    }

    /// Makes the store's record of a prepared task: its id, start time,
    /// idempotency key, queue and steps.
    pub(super) fn build(&self, prepared: Prepared) -> Result<Built, EngineError> {
        let Prepared {
            plan,
            spec_json,
            lineage,
            trace,
            idempotency,
        } = prepared;
        let id = uuid::Uuid::now_v7().to_string();
        let now = self.store.now_ms();
        let run_at = match plan.start_after {
            None => None,
            Some(StartAfter::Delay(ms)) => Some(now.saturating_add(ms as i64)),
            Some(StartAfter::At(at)) if at > now.saturating_add(MAX_DELAY_MS as i64) => {
                return Err(EngineError::Invalid(vec![FieldError {
                    step: None,
                    field: "runAt".into(),
                    message: format!(
                        "{} is more than a year ahead",
                        plan.spec.run_at.as_deref().unwrap_or("")
                    ),
                }]));
            }
            Some(StartAfter::At(at)) => Some(at),
        };
        let idempotency = idempotency.map(|(key, body_hash)| Idempotency {
            key,
            body_hash,
            expires_at: now + self.config.idempotency_ttl_ms,
        });
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
                priority: s.placement.priority,
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
            created_at: now,
            idempotency,
            effects: dwa_store::Lifecycles {
                on_pending: !plan.effects.on_pending.is_empty(),
                on_success: !plan.effects.on_success.is_empty(),
                on_error: !plan.effects.on_error.is_empty(),
            },
            run_at,
        };
        Ok(Built {
            new,
            plan,
            lineage,
            trace,
            created: CreatedTask {
                id,
                status: TaskStatus::Pending,
                queue,
            },
        })
    }

    /// Caches a built task's plan ahead of its creation (its first steps
    /// may be leased before the store answers); answers whether it has
    /// onPending effects to deliver.
    pub(super) fn adopt(&self, id: &str, plan: Plan, lineage: u32, trace: Option<String>) -> bool {
        if !plan.effects.on_progress.is_empty() {
            Self::lock(&self.progress_tasks).insert(id.to_owned());
        }
        let pending = !plan.effects.on_pending.is_empty();
        Self::lock(&self.states).insert(
            id.to_owned(),
            Arc::new(TaskState::new(plan, lineage, trace)),
        );
        pending
    }

    /// Drops what [`Engine::adopt`] cached for a task that was not created.
    pub(super) fn forget(&self, id: &str) {
        Self::lock(&self.states).remove(id);
        Self::lock(&self.progress_tasks).remove(id);
    }
}

/// A task ready for the store, with what the engine caches of it.
pub(super) struct Built {
    /// The store's record.
    pub(super) new: NewTask,
    /// Its plan.
    pub(super) plan: Plan,
    /// Its place in a chain of tasks made by other tasks.
    pub(super) lineage: u32,
    /// Its trace context.
    pub(super) trace: Option<String>,
    /// What a submission answers.
    pub(super) created: CreatedTask,
}
