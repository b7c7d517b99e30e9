//! Validation and planning: turns a submitted [`TaskSpec`] into a [`Plan`] —
//! the steps with their dependency graph (petgraph), parsed templates, queue,
//! backend, timeout and retry policy — or into a list of errors that each name
//! the step and field at fault. Nothing is stored for a task that fails here.
//!
//! [`plan`] runs in named phases: expand chunked steps ([`crate::chunking`]),
//! check the task's own fields ([`checks`]), name the steps and build their
//! dependency graph ([`graph`]), place and bind each step ([`step`]), and
//! plan the lifecycle effects ([`effects`]).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::limits::{self, Limits};
use crate::model::{RetryConfig, StepSpec, TaskSpec};
use crate::template::Template;

mod checks;
mod effects;
mod graph;
mod step;
mod subtask;
#[cfg(test)]
mod tests;
mod wait;

use checks::Checker;
pub use checks::{MAX_DELAY_MS, MAX_PRIORITY, is_valid_queue};
use graph::{DepGraph, StepIds};
pub use subtask::{MAX_SUBTASK_DEPTH, SUBTASK_TASK};
pub use wait::{DEFAULT_WAIT_MS, WAIT_TASK, wait_name, wait_timeout};

/// Default per-try timeout when neither the task nor the catalog sets one.
pub const DEFAULT_TIMEOUT_SECS: f64 = 3600.0;
/// Most tries a retry policy may ask for.
pub const MAX_ATTEMPTS: u32 = 100;

/// One problem found at submission.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FieldError {
    /// The step (id or index) at fault, if the problem is in a step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The field at fault, as a JSON path (`steps[2].dependsOn`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Where and how each step runs, decided once at submission and stored with
/// the task so that a restart does not depend on the catalog of the moment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Backend name.
    pub backend: String,
    /// Queue name.
    pub queue: String,
    /// Place in the queue (docs/tasks.md, "Priorities"); absent in plans
    /// stored before priorities.
    #[serde(default)]
    pub priority: i32,
    /// Per-try timeout in ms.
    pub timeout_ms: u64,
}

/// One step, ready to run.
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// Position in the pipeline.
    pub idx: usize,
    /// Its id, or its index as a string.
    pub key: String,
    /// The task it runs.
    pub task: String,
    /// Where and with what timeout.
    pub placement: Placement,
    /// Indices of the steps it waits for.
    pub deps: Vec<usize>,
    /// Indices of the steps that wait for it.
    pub dependants: Vec<usize>,
    /// Its input template; `None` means the default input.
    pub input: Option<Template>,
    /// The `forEach` template.
    pub for_each: Option<Template>,
    /// Items in flight at most.
    pub for_each_concurrency: Option<u32>,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Steps whose results its input, its condition or its guards need.
    pub needs: Vec<usize>,
    /// Its `if`, parsed and bound.
    pub condition: Option<Box<crate::template::cond::Condition>>,
    /// What its failing for good does.
    pub on_failure: crate::model::OnFailure,
    /// Its ancestors under `onFailure: "skipDependants"`: if one of them
    /// failed, this step is skipped (their results are in `needs`).
    pub guards: Vec<usize>,
    /// Its concurrency key (its own, else its task's).
    pub concurrency: Option<Box<Gate>>,
    /// Its rate limit (its own, else its task's).
    pub rate: Option<Box<Gate>>,
    /// The task it runs as a sub-task, when it is a `builtin.subtask` step.
    pub subtask: Option<Box<TaskSpec>>,
}

/// A concurrency key or a rate limit, parsed: jobs whose `key` resolves to
/// the same name share `limit` (docs/tasks.md, "Concurrency keys and rate
/// limits").
#[derive(Debug, Clone)]
pub struct Gate {
    /// The key's template.
    pub key: Template,
    /// Jobs at once (concurrency) or starts per window (rate).
    pub limit: u32,
    /// The rate's window in ms; `None` for a concurrency key.
    pub per_ms: Option<u64>,
}

/// One start under a rate of `limit` per `per_ms` (the generic cell rate
/// algorithm: bursts up to `limit`, then one per `per_ms / limit`), given
/// the key's theoretical arrival time `tat` (ms; `None`: never used).
/// Answers the new `tat` and, when the start must wait, when it may go —
/// the stores keep `tat`, this keeps them computing the same thing.
pub fn gcra(tat: Option<f64>, now: i64, limit: u32, per_ms: u64) -> (f64, Option<i64>) {
    let now = now as f64;
    let interval = per_ms as f64 / f64::from(limit.max(1));
    let next = tat.unwrap_or(now).max(now) + interval;
    if next - now <= per_ms as f64 {
        (next, None)
    } else {
        (
            tat.unwrap_or(now),
            Some((next - per_ms as f64).ceil() as i64),
        )
    }
}

/// Largest `concurrency.limit`.
pub const MAX_CONCURRENCY_LIMIT: u32 = 10_000;
/// Largest `rateLimit.limit`.
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// Longest `rateLimit.per`: a day.
pub const MAX_RATE_PER_MS: u64 = 86_400_000;
/// Longest resolved key, in bytes.
pub const MAX_GATE_KEY_BYTES: usize = 256;

/// When a task may start (`runAt` or `delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAfter {
    /// This many ms after submission.
    Delay(u64),
    /// At this time (ms since the epoch).
    At(i64),
}

/// A validated task: its steps and effects.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The task as submitted.
    pub spec: TaskSpec,
    /// Whether it was submitted with `steps`.
    pub is_pipeline: bool,
    /// The steps in submission order.
    pub steps: Vec<PlannedStep>,
    /// Step index by key.
    pub keys: HashMap<String, usize>,
    /// Parsed effect configs: onPending, onProgress, onSuccess, onError.
    pub effects: Effects,
    /// When it may start; `None`: at once.
    pub start_after: Option<StartAfter>,
}

/// An effect with its config parsed.
#[derive(Debug, Clone)]
pub struct PlannedEffect {
    /// The effect's name.
    pub event: String,
    /// Its config, templates parsed.
    pub config: Template,
}

/// The four lifecycle lists, parsed.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    /// When queued.
    pub on_pending: Vec<PlannedEffect>,
    /// On progress.
    pub on_progress: Vec<PlannedEffect>,
    /// On success.
    pub on_success: Vec<PlannedEffect>,
    /// On failure.
    pub on_error: Vec<PlannedEffect>,
}

/// Parses a request body into a [`TaskSpec`], naming the JSON path of a type error.
pub fn parse_spec(body: &[u8]) -> Result<TaskSpec, FieldError> {
    parse_json(body)
}

/// Parses a request body into `T`; a problem names its JSON path (and its
/// step, when it is in `steps`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let step = step_of_path(&path);
        FieldError {
            step,
            field: if path == "." || path == "?" {
                "(body)".into()
            } else {
                path
            },
            message: inner.to_string(),
        }
    })
}

fn step_of_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("steps[")?;
    let end = rest.find(']')?;
    Some(rest[..end].to_owned())
}

/// Validates `spec` against `catalog` and plans it within `limits`; every
/// problem is reported. Chunked steps are first expanded into split, parts
/// and merge steps. The work is linear in the steps, their dependencies and
/// their template references (docs/configuration.md, "Limits").
pub fn plan(spec: TaskSpec, catalog: &Catalog, limits: &Limits) -> Result<Plan, Vec<FieldError>> {
    plan_checked(spec, catalog, limits, true)
}

/// [`plan`]; `deep`: sub-tasks are planned too.
fn plan_checked(
    mut spec: TaskSpec,
    catalog: &Catalog,
    limits: &Limits,
    deep: bool,
) -> Result<Plan, Vec<FieldError>> {
    subtask::name_subtask_steps(&mut spec);
    // Refused before anything is copied or expanded; expansion changes the
    // steps, not the payload, so only the steps are counted again.
    check_size_limits(&spec, limits, true)?;
    let spec = crate::chunking::expand(spec, catalog)?;
    check_size_limits(&spec, limits, false)?;
    let mut c = Checker::new(catalog, limits);
    c.deep = deep;
    checks::check_task(&mut c, &spec);
    let start_after = checks::check_start(&mut c, &spec);
    let steps = steps_of(&mut c, &spec);
    let ids = StepIds::new(&mut c, &steps, &spec);
    let graph = DepGraph::build(&mut c, &steps, &ids);
    let mut planned: Vec<PlannedStep> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| step::plan_step(&mut c, &spec, &ids, &graph, i, s))
        .collect();
    for i in 0..planned.len() {
        for d in planned[i].deps.clone() {
            planned[d].dependants.push(i);
        }
    }
    step::bind_guards(&mut planned, &graph);
    wait::check_waits(&mut c, &planned, spec.steps.is_some());
    let effects = effects::plan_effects(&mut c, &spec, &ids);
    if !c.errors.is_empty() {
        return Err(c.into_errors());
    }
    Ok(Plan {
        is_pipeline: spec.steps.is_some(),
        spec,
        steps: planned,
        keys: ids.by_key,
        effects,
        start_after,
    })
}

/// The limits that make the rest of planning cheap: the number of steps
/// and (with `payload`) the payload's nesting.
fn check_size_limits(
    spec: &TaskSpec,
    limits: &Limits,
    payload: bool,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    let (steps, depth) = subtask::tree_size(spec);
    if depth > subtask::MAX_SUBTASK_DEPTH {
        errors.push(FieldError {
            step: None,
            field: "steps".into(),
            message: format!(
                "sub-tasks nest {depth} deep; at most {}",
                subtask::MAX_SUBTASK_DEPTH
            ),
        });
    }
    if steps > limits.max_steps {
        errors.push(FieldError {
            step: None,
            field: "steps".into(),
            message: limits::Exceeded {
                what: "the number of steps (chunked steps count three, sub-tasks' steps count)",
                value: Some(steps),
                max: limits.max_steps,
                var: "DWA_MAX_STEPS",
            }
            .to_string(),
        });
    }
    if payload && let Err(e) = limits::check_depth(&spec.payload, limits.max_json_depth) {
        errors.push(FieldError {
            step: None,
            field: "payload".into(),
            message: e.to_string(),
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The steps to plan: a pipeline's, or the single task as one step.
fn steps_of(c: &mut Checker<'_>, spec: &TaskSpec) -> Vec<StepSpec> {
    match &spec.steps {
        Some(s) if s.is_empty() => {
            c.err(None, "steps", "must hold at least one step");
            Vec::new()
        }
        Some(s) => s.clone(),
        None => vec![StepSpec {
            id: None,
            task: spec.task_type.clone(),
            backend: spec.backend.clone(),
            queue: None,
            priority: None,
            concurrency: None,
            rate_limit: None,
            input: None,
            depends_on: None,
            for_each: None,
            for_each_concurrency: None,
            resources: None,
            retry: None,
            chunk: None,
            condition: None,
            on_failure: None,
            subtask: None,
        }],
    }
}

impl Plan {
    /// Rebuilds a plan from a stored spec and its placements, without the catalog.
    pub fn restore(spec: TaskSpec, placements: &[Placement]) -> Result<Plan, Vec<FieldError>> {
        let mut catalog = Catalog::default();
        let steps: Vec<(String, Option<String>)> = match &spec.steps {
            Some(s) => s
                .iter()
                .map(|s| (s.task.clone(), s.backend.clone()))
                .collect(),
            None => vec![(spec.task_type.clone(), spec.backend.clone())],
        };
        for ((task, _), p) in steps.iter().zip(placements) {
            catalog.insert(crate::catalog::TaskInfo::bare(task, &p.backend));
        }
        for b in crate::catalog::BACKEND_PRECEDENCE {
            catalog.add_backend(b);
        }
        // Effects and functions were checked at submission; a plugin unloaded
        // since must not make the stored task unreadable.
        catalog.allow_any_function();
        catalog.set_effects(
            [
                &spec.on_pending,
                &spec.on_progress,
                &spec.on_success,
                &spec.on_error,
            ]
            .into_iter()
            .flatten()
            .map(|e| e.event.clone()),
        );
        let mut plan = plan_checked(spec, &catalog, &Limits::unbounded(), false)?;
        for (s, p) in plan.steps.iter_mut().zip(placements) {
            s.placement = p.clone();
        }
        Ok(plan)
    }

    /// Placements to store with the task.
    pub fn placements(&self) -> Vec<Placement> {
        self.steps.iter().map(|s| s.placement.clone()).collect()
    }

    /// The step whose result is the task's result: the last one.
    pub fn final_step(&self) -> usize {
        self.steps.len().saturating_sub(1)
    }
}
