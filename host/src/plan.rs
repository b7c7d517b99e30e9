//! Validation and planning: turns a submitted [`TaskSpec`] into a [`Plan`] —
//! the steps with their dependency graph (petgraph), parsed templates, queue,
//! backend, timeout and retry policy — or into a list of errors that each name
//! the step and field at fault. Nothing is stored for a task that fails here.

use std::collections::{HashMap, HashSet};

use petgraph::algo::{DfsSpace, has_path_connecting, tarjan_scc};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::model::{Effect, RetryConfig, TaskSpec};
use crate::template::{Root, Template};

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
    /// Steps whose results its input needs.
    pub needs: Vec<usize>,
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

struct Checker<'a> {
    errors: Vec<FieldError>,
    catalog: &'a Catalog,
}

impl Checker<'_> {
    fn err(&mut self, step: Option<&str>, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError {
            step: step.map(str::to_owned),
            field: field.into(),
            message: message.into(),
        });
    }
}

fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !id.bytes().all(|b| b.is_ascii_digit())
}

fn check_retry(c: &mut Checker<'_>, step: Option<&str>, field: &str, r: &RetryConfig) {
    if r.attempts == 0 || r.attempts > MAX_ATTEMPTS {
        c.err(
            step,
            format!("{field}.attempts"),
            format!(
                "must be between 1 and {MAX_ATTEMPTS} (it counts every try, the first included)"
            ),
        );
    }
    if let Some(max) = r.max_delay
        && max < r.delay
    {
        c.err(
            step,
            format!("{field}.maxDelay"),
            format!("must be at least delay ({} ms)", r.delay),
        );
    }
    if r.delay > 24 * 3600 * 1000 {
        c.err(step, format!("{field}.delay"), "must be at most one day");
    }
}

fn check_timeout(c: &mut Checker<'_>, step: Option<&str>, field: &str, t: Option<f64>) {
    if let Some(t) = t
        && !(t.is_finite() && t > 0.0 && t <= 7.0 * 24.0 * 3600.0)
    {
        c.err(
            step,
            field.to_owned(),
            "must be a number of seconds above 0 and at most a week",
        );
    }
}

/// Validates `spec` against `catalog` and plans it; every problem is reported.
/// Chunked steps are first expanded into split, parts and merge steps.
pub fn plan(spec: TaskSpec, catalog: &Catalog) -> Result<Plan, Vec<FieldError>> {
    let spec = crate::chunking::expand(spec, catalog)?;
    let mut c = Checker {
        errors: Vec::new(),
        catalog,
    };
    if spec.task_type.trim().is_empty() {
        c.err(None, "type", "must not be empty");
    }
    if let Some(q) = &spec.queue
        && !is_valid_queue(q)
    {
        c.err(
            None,
            "queue",
            "must be 1-64 characters of letters, digits, '-', '_' or '.'",
        );
    }
    if let Some(r) = &spec.retry {
        check_retry(&mut c, None, "retry", r);
    }
    check_timeout(
        &mut c,
        None,
        "resources.timeout",
        spec.resources.as_ref().and_then(|r| r.timeout),
    );

    let is_pipeline = spec.steps.is_some();
    let steps: Vec<crate::model::StepSpec> = match &spec.steps {
        Some(s) if s.is_empty() => {
            c.err(None, "steps", "must hold at least one step");
            Vec::new()
        }
        Some(s) => s.clone(),
        None => vec![crate::model::StepSpec {
            id: None,
            task: spec.task_type.clone(),
            backend: spec.backend.clone(),
            queue: None,
            input: None,
            depends_on: None,
            for_each: None,
            for_each_concurrency: None,
            resources: None,
            retry: None,
            chunk: None,
        }],
    };

    // Keys and ids.
    let mut keys: HashMap<String, usize> = HashMap::new();
    let mut step_keys = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        let key = match &s.id {
            Some(id) => {
                if !is_valid_id(id) {
                    c.err(
                        Some(&i.to_string()),
                        format!("steps[{i}].id"),
                        format!("{id:?} is not a valid id: use letters, digits, '-' and '_', not a number alone"),
                    );
                }
                if let Some(prev) = keys.get(id) {
                    c.err(
                        Some(id),
                        format!("steps[{i}].id"),
                        format!("duplicate id {id:?} (also steps[{prev}])"),
                    );
                }
                id.clone()
            }
            None if is_pipeline => i.to_string(),
            None => spec.task_type.clone(),
        };
        keys.entry(key.clone()).or_insert(i);
        step_keys.push(key);
    }
    let lookup_step = |name: &str| -> Option<usize> {
        keys.get(name)
            .copied()
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < steps.len()))
    };

    // Dependencies.
    let dag_mode = steps.iter().any(|s| s.depends_on.is_some());
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); steps.len()];
    for (i, s) in steps.iter().enumerate() {
        let key = step_keys[i].as_str();
        if dag_mode {
            let mut seen = HashSet::new();
            for (j, d) in s.depends_on.iter().flatten().enumerate() {
                match lookup_step(d) {
                    Some(t) if t == i => c.err(
                        Some(key),
                        format!("steps[{i}].dependsOn[{j}]"),
                        format!("step {key:?} depends on itself"),
                    ),
                    Some(t) => {
                        if !seen.insert(t) {
                            c.err(
                                Some(key),
                                format!("steps[{i}].dependsOn[{j}]"),
                                format!("{d:?} is listed twice"),
                            );
                        } else {
                            deps[i].push(t);
                        }
                    }
                    None => c.err(
                        Some(key),
                        format!("steps[{i}].dependsOn[{j}]"),
                        format!("unknown step {d:?}; known ids: {}", known_ids(&step_keys)),
                    ),
                }
            }
        } else if i > 0 {
            deps[i].push(i - 1);
        }
    }

    // Cycles.
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(steps.len(), steps.len());
    let nodes: Vec<NodeIndex> = (0..steps.len()).map(|i| graph.add_node(i)).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            graph.add_edge(nodes[d], nodes[i], ());
        }
    }
    let mut cyclic = false;
    for scc in tarjan_scc(&graph) {
        if scc.len() > 1 {
            cyclic = true;
            let members: HashSet<usize> = scc.iter().map(|n| graph[*n]).collect();
            let cycle = describe_cycle(&members, &deps, &step_keys);
            let first = *members.iter().min().unwrap_or(&0);
            c.err(
                Some(&step_keys[first]),
                format!("steps[{first}].dependsOn"),
                format!("dependency cycle: {cycle}"),
            );
        }
    }

    // Steps proper.
    let mut planned = Vec::with_capacity(steps.len());
    let mut dfs = DfsSpace::new(&graph);
    for (i, s) in steps.iter().enumerate() {
        let key = step_keys[i].clone();
        // A single task has no steps to name in errors.
        let k = is_pipeline.then_some(key.as_str());
        let field = |f: &str| {
            if is_pipeline {
                format!("steps[{i}].{f}")
            } else {
                f.to_owned()
            }
        };
        let backend = s.backend.as_deref().or(spec.backend.as_deref());
        let info = match c.catalog.lookup(&s.task, backend) {
            Ok(info) => Some(info.clone()),
            Err(e) => {
                let f = if is_pipeline {
                    field("task")
                } else {
                    "type".into()
                };
                c.err(k, f, e.to_string());
                None
            }
        };
        if let Some(q) = &s.queue
            && !is_valid_queue(q)
        {
            c.err(
                k,
                field("queue"),
                "must be 1-64 characters of letters, digits, '-', '_' or '.'",
            );
        }
        if let Some(r) = &s.retry {
            check_retry(&mut c, k, &field("retry"), r);
        }
        check_timeout(
            &mut c,
            k,
            &field("resources.timeout"),
            s.resources.as_ref().and_then(|r| r.timeout),
        );
        let gpu = s
            .resources
            .as_ref()
            .and_then(|r| r.gpu.clone())
            .or_else(|| spec.resources.as_ref().and_then(|r| r.gpu.clone()))
            .or_else(|| info.as_ref().and_then(|i| i.gpu.clone()));
        let queue = s
            .queue
            .clone()
            .or_else(|| spec.queue.clone())
            .unwrap_or_else(|| if gpu.is_some() { "gpu" } else { "default" }.to_owned());
        let timeout = s
            .resources
            .as_ref()
            .and_then(|r| r.timeout)
            .or_else(|| spec.resources.as_ref().and_then(|r| r.timeout))
            .or_else(|| info.as_ref().and_then(|i| i.timeout))
            .unwrap_or(DEFAULT_TIMEOUT_SECS);
        // An input known at submission (the payload, or a literal input) is
        // checked against the schema the backend announces for the task.
        if let Some(schema) = info.as_ref().and_then(|i| i.input_schema.as_ref()) {
            let known = match &s.input {
                Some(v) => Template::parse_with(v, c.catalog.filters())
                    .ok()
                    .filter(Template::is_literal)
                    .map(|_| (v, field("input"))),
                None if deps[i].is_empty() && s.for_each.is_none() => {
                    Some((&spec.payload, "payload".to_owned()))
                }
                None => None,
            };
            if let Some((value, at)) = known {
                for (path, problem) in crate::schema::check(schema, value) {
                    let rest = path.trim_start_matches('$');
                    c.err(
                        k,
                        format!("{at}{rest}"),
                        format!("{problem} (input schema of {})", s.task),
                    );
                }
            }
        }
        let placement = Placement {
            backend: info.map(|i| i.backend).unwrap_or_default(),
            queue,
            timeout_ms: (timeout * 1000.0).round().max(1.0) as u64,
        };

        let mut needs: Vec<usize> = Vec::new();
        let mut bind = |t: &mut Template, f: String, c: &mut Checker<'_>, in_for_each: bool| {
            t.exprs_mut(&mut |e| match &mut e.root {
                Root::Step { key: sk, idx } => match lookup_step(sk) {
                    Some(target) => {
                        *idx = Some(target);
                        let reachable = !cyclic
                            && target != i
                            && has_path_connecting(&graph, nodes[target], nodes[i], Some(&mut dfs));
                        if !reachable {
                            c.err(
                                k,
                                f.clone(),
                                format!(
                                    "{{{{{}}}}} can never resolve: step {sk:?} is not a dependency of step {key:?}",
                                    e.source
                                ),
                            );
                        } else if !needs.contains(&target) {
                            needs.push(target);
                        }
                    }
                    None => c.err(
                        k,
                        f.clone(),
                        format!(
                            "{{{{{}}}}} can never resolve: unknown step {sk:?}; known ids: {}",
                            e.source,
                            known_ids(&step_keys)
                        ),
                    ),
                },
                Root::Item | Root::Index if in_for_each || s.for_each.is_none() => c.err(
                    k,
                    f.clone(),
                    format!(
                        "{{{{{}}}}} can never resolve: item and index exist only in the input of a forEach step",
                        e.source
                    ),
                ),
                Root::Progress | Root::Error | Root::Result => c.err(
                    k,
                    f.clone(),
                    format!(
                        "{{{{{}}}}} can never resolve in a step: progress, error and result exist only in effects",
                        e.source
                    ),
                ),
                _ => {}
            });
        };
        let input = match &s.input {
            Some(v) => match Template::parse_with(v, c.catalog.filters()) {
                Ok(mut t) => {
                    bind(&mut t, field("input"), &mut c, false);
                    Some(t)
                }
                Err(e) => {
                    c.err(k, format!("{}{}", field("input"), e.at), e.to_string());
                    None
                }
            },
            None => None,
        };
        let for_each = match &s.for_each {
            Some(v) => match Template::parse_with(v, c.catalog.filters()) {
                Ok(mut t) => {
                    match &t {
                        Template::Whole(_) => {}
                        Template::Literal(Value::Array(_)) | Template::Array(_) => {}
                        _ => c.err(
                            k,
                            field("forEach"),
                            "must be an array or a whole template such as \"{{steps.frames.scenes}}\"",
                        ),
                    }
                    bind(&mut t, field("forEach"), &mut c, true);
                    Some(t)
                }
                Err(e) => {
                    c.err(k, format!("{}{}", field("forEach"), e.at), e.to_string());
                    None
                }
            },
            None => None,
        };
        if let Some(n) = s.for_each_concurrency {
            if s.for_each.is_none() {
                c.err(
                    k,
                    field("forEachConcurrency"),
                    "is set but the step has no forEach",
                );
            } else if n == 0 {
                c.err(k, field("forEachConcurrency"), "must be at least 1");
            }
        }
        if s.input.is_none() {
            for &d in &deps[i] {
                if !needs.contains(&d) {
                    needs.push(d);
                }
            }
        }
        planned.push(PlannedStep {
            idx: i,
            key,
            task: s.task.clone(),
            placement,
            deps: deps[i].clone(),
            dependants: Vec::new(),
            input,
            for_each,
            for_each_concurrency: s.for_each_concurrency,
            retry: s
                .retry
                .clone()
                .or_else(|| spec.retry.clone())
                .unwrap_or_default(),
            needs,
        });
    }
    for i in 0..planned.len() {
        for d in planned[i].deps.clone() {
            planned[d].dependants.push(i);
        }
    }

    let effects = Effects {
        on_pending: plan_effects(
            &mut c,
            "onPending",
            &spec.on_pending,
            &lookup_step,
            &[Root::Payload],
        ),
        on_progress: plan_effects(
            &mut c,
            "onProgress",
            &spec.on_progress,
            &lookup_step,
            &[Root::Payload, Root::Progress],
        ),
        on_success: plan_effects(
            &mut c,
            "onSuccess",
            &spec.on_success,
            &lookup_step,
            &[Root::Payload, Root::Result],
        ),
        on_error: plan_effects(
            &mut c,
            "onError",
            &spec.on_error,
            &lookup_step,
            &[Root::Payload, Root::Error],
        ),
    };

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Plan {
        spec,
        is_pipeline,
        steps: planned,
        keys,
        effects,
    })
}

fn plan_effects(
    c: &mut Checker<'_>,
    list: &str,
    effects: &[Effect],
    lookup_step: &dyn Fn(&str) -> Option<usize>,
    allowed: &[Root],
) -> Vec<PlannedEffect> {
    let mut out = Vec::new();
    for (i, e) in effects.iter().enumerate() {
        let field = format!("{list}[{i}]");
        if !c.catalog.has_effect(&e.event) {
            let loaded = c.catalog.effects();
            let known = if loaded.is_empty() {
                "no effect plugins are loaded (run `just build-plugins`, or set DWA_PLUGIN_DIR)"
                    .to_owned()
            } else {
                format!("loaded effects: {}", loaded.join(", "))
            };
            c.err(
                None,
                format!("{field}.$event"),
                format!("unknown effect {:?}; {known}", e.event),
            );
            continue;
        }
        match Template::parse_with(&Value::Object(e.config.clone()), c.catalog.filters()) {
            Ok(mut t) => {
                let mut problems = Vec::new();
                t.exprs_mut(&mut |x| match &mut x.root {
                    Root::Step { key, idx } => match lookup_step(key) {
                        Some(s) => *idx = Some(s),
                        None => problems.push(format!(
                            "{{{{{}}}}} can never resolve: unknown step {key:?}",
                            x.source
                        )),
                    },
                    r => {
                        let ok = allowed
                            .iter()
                            .any(|a| std::mem::discriminant(a) == std::mem::discriminant(r));
                        if !ok {
                            problems
                                .push(format!("{{{{{}}}}} can never resolve in {list}", x.source));
                        }
                    }
                });
                for p in problems {
                    c.err(None, field.clone(), p);
                }
                out.push(PlannedEffect {
                    event: e.event.clone(),
                    config: t,
                });
            }
            Err(err) => c.err(None, format!("{field}{}", err.at), err.to_string()),
        }
    }
    out
}

fn is_valid_queue(q: &str) -> bool {
    !q.is_empty()
        && q.len() <= 64
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn known_ids(keys: &[String]) -> String {
    let shown: Vec<&str> = keys.iter().take(20).map(String::as_str).collect();
    let mut s = shown.join(", ");
    if keys.len() > 20 {
        s.push_str(&format!(", ... ({} steps)", keys.len()));
    }
    s
}

fn describe_cycle(members: &HashSet<usize>, deps: &[Vec<usize>], keys: &[String]) -> String {
    // Walk backwards along dependencies inside the component until a node repeats.
    let Some(&start) = members.iter().min() else {
        return String::new();
    };
    let mut path = vec![start];
    let mut seen = HashSet::from([start]);
    let mut cur = start;
    while let Some(&next) = deps[cur].iter().find(|d| members.contains(d)) {
        if !seen.insert(next) {
            let pos = path.iter().position(|p| *p == next).unwrap_or(0);
            path = path[pos..].to_vec();
            path.push(next);
            break;
        }
        path.push(next);
        cur = next;
    }
    // `path` follows "depends on"; show it in execution direction.
    path.reverse();
    path.iter()
        .map(|i| keys[*i].as_str())
        .collect::<Vec<_>>()
        .join(" → ")
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
        let mut plan = plan(spec, &catalog)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::TaskInfo;
    use serde_json::json;

    fn catalog() -> Catalog {
        let mut c = Catalog::with_builtins();
        c.set_effects(["toast", "webhook", "notify"].map(String::from));
        for (name, gpu) in [
            ("download.file", None),
            ("scenes.detect", None),
            ("florence.caption", Some("T4")),
            ("whisper.transcribe", Some("T4")),
        ] {
            c.insert(TaskInfo {
                gpu: gpu.map(str::to_owned),
                timeout: Some(120.0),
                ..TaskInfo::bare(name, "local")
            });
        }
        c
    }

    fn check(v: Value) -> Result<Plan, Vec<FieldError>> {
        let spec = parse_spec(v.to_string().as_bytes()).map_err(|e| vec![e])?;
        plan(spec, &catalog())
    }

    fn one_error(v: Value) -> FieldError {
        let errs = check(v).expect_err("should be invalid");
        assert_eq!(errs.len(), 1, "{errs:#?}");
        errs.into_iter().next().unwrap()
    }

    #[test]
    fn seed_video_dag_plans() {
        let p = check(json!({
            "type": "video-analysis",
            "payload": {"url": "https://x/v.mp4"},
            "steps": [
                {"id": "download", "task": "download.file", "input": {"url": "{{payload.url}}"}},
                {"id": "frames", "task": "scenes.detect", "dependsOn": ["download"]},
                {"id": "caps", "task": "florence.caption", "dependsOn": ["frames"],
                 "forEach": "{{steps.frames.scenes}}", "forEachConcurrency": 4,
                 "input": {"image_path": "{{item.keyframe}}", "scene_index": "{{index}}"}}
            ]
        }))
        .unwrap();
        assert!(p.is_pipeline);
        assert_eq!(p.steps[0].deps, Vec::<usize>::new());
        assert_eq!(p.steps[1].deps, vec![0]);
        assert_eq!(p.steps[1].needs, vec![0]);
        assert_eq!(p.steps[2].needs, vec![1]);
        assert_eq!(p.steps[0].dependants, vec![1]);
        assert_eq!(p.steps[2].placement.queue, "gpu");
        assert_eq!(p.steps[0].placement.queue, "default");
        assert_eq!(p.steps[0].placement.timeout_ms, 120_000);
        assert_eq!(p.steps[0].placement.backend, "local");
    }

    #[test]
    fn sequential_pipeline_chains_and_refers_by_index() {
        let p = check(json!({
            "type": "podcast",
            "steps": [
                {"task": "builtin.echo"},
                {"task": "builtin.echo", "input": {"a": "{{steps.0.x}}"}},
                {"task": "builtin.echo"}
            ]
        }))
        .unwrap();
        assert_eq!(p.steps[1].deps, vec![0]);
        assert_eq!(p.steps[2].deps, vec![1]);
        assert_eq!(p.steps[2].key, "2");
    }

    #[test]
    fn forward_reference_in_sequence_is_rejected() {
        let e = one_error(json!({
            "type": "p",
            "steps": [
                {"task": "builtin.echo", "input": {"a": "{{steps.1.x}}"}},
                {"task": "builtin.echo"}
            ]
        }));
        assert_eq!(e.step.as_deref(), Some("0"));
        assert_eq!(e.field, "steps[0].input");
        assert!(e.message.contains("not a dependency"), "{}", e.message);
    }

    #[test]
    fn unknown_step_reference() {
        let e = one_error(json!({
            "type": "p",
            "steps": [{"id": "a", "task": "builtin.echo", "input": "{{steps.nope.x}}"}]
        }));
        assert!(e.message.contains("unknown step \"nope\""), "{}", e.message);
        assert!(e.message.contains("known ids: a"));
    }

    #[test]
    fn unknown_task_names_step_and_field() {
        let e = one_error(json!({
            "type": "p",
            "steps": [{"id": "a", "task": "builtin.echo"}, {"id": "b", "task": "no.such"}]
        }));
        assert_eq!(e.step.as_deref(), Some("b"));
        assert_eq!(e.field, "steps[1].task");
        assert!(e.message.contains("unknown task \"no.such\""));
        let e = one_error(json!({"type": "no.such"}));
        assert_eq!(e.field, "type");
    }

    #[test]
    fn dependency_errors() {
        let e = one_error(json!({
            "type": "p",
            "steps": [{"id": "a", "task": "builtin.echo", "dependsOn": ["ghost"]}]
        }));
        assert_eq!(e.field, "steps[0].dependsOn[0]");
        assert!(e.message.contains("unknown step \"ghost\""));

        let e = one_error(json!({
            "type": "p",
            "steps": [
                {"id": "a", "task": "builtin.echo"},
                {"id": "a", "task": "builtin.echo"}
            ]
        }));
        assert_eq!(e.field, "steps[1].id");
        assert!(e.message.contains("duplicate id"));

        let errs = check(json!({
            "type": "p",
            "steps": [
                {"id": "a", "task": "builtin.echo", "dependsOn": ["c"]},
                {"id": "b", "task": "builtin.echo", "dependsOn": ["a"]},
                {"id": "c", "task": "builtin.echo", "dependsOn": ["b"]},
                {"id": "d", "task": "builtin.echo", "dependsOn": ["d"]}
            ]
        }))
        .unwrap_err();
        let cycle = errs.iter().find(|e| e.message.contains("cycle")).unwrap();
        assert_eq!(cycle.message, "dependency cycle: a → b → c → a");
        assert!(errs.iter().any(|e| e.message.contains("depends on itself")));
    }

    #[test]
    fn for_each_rules() {
        let e = one_error(json!({
            "type": "p",
            "steps": [{"id": "a", "task": "builtin.echo", "forEach": "x {{payload.list}}"}]
        }));
        assert_eq!(e.field, "steps[0].forEach");
        let e = one_error(json!({
            "type": "p",
            "steps": [{"id": "a", "task": "builtin.echo", "forEach": 5}]
        }));
        assert_eq!(e.field, "steps[0].forEach");
        let e = one_error(json!({
            "type": "p",
            "steps": [{"id": "a", "task": "builtin.echo", "input": "{{item}}"}]
        }));
        assert!(e.message.contains("only in the input of a forEach step"));
        let e = one_error(json!({
            "type": "p",
            "steps": [{"id": "a", "task": "builtin.echo", "forEach": [1], "forEachConcurrency": 0}]
        }));
        assert_eq!(e.field, "steps[0].forEachConcurrency");
        assert!(check(json!({
            "type": "p",
            "steps": [{"id": "a", "task": "builtin.echo", "forEach": [1, 2], "input": {"i": "{{index}}", "v": "{{item}}"}}]
        }))
        .is_ok());
    }

    #[test]
    fn type_errors_name_the_path() {
        let e = parse_spec(br#"{"type":"p","steps":[{"task":"builtin.echo","dependsOn":"a"}]}"#)
            .unwrap_err();
        assert_eq!(e.field, "steps[0].dependsOn");
        assert_eq!(e.step.as_deref(), Some("0"));
        let e = parse_spec(br#"{"type":"p","retry":{"attempts":"3"}}"#).unwrap_err();
        assert_eq!(e.field, "retry.attempts");
        let e = parse_spec(br#"{"type":"p","dependOn":[]}"#).unwrap_err();
        assert!(
            e.message.contains("unknown field `dependOn`"),
            "{}",
            e.message
        );
        let e = parse_spec(br#"{"payload":{}}"#).unwrap_err();
        assert!(e.message.contains("missing field `type`"));
        let e = parse_spec(b"{nope").unwrap_err();
        assert_eq!(e.field, "(body)");
    }

    #[test]
    fn retry_and_timeout_bounds() {
        let errs = check(json!({
            "type": "builtin.echo",
            "retry": {"attempts": 0, "delay": 100, "maxDelay": 10},
            "resources": {"timeout": -1}
        }))
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["retry.attempts", "retry.maxDelay", "resources.timeout"]
        );
    }

    #[test]
    fn effects_are_checked() {
        let e = one_error(json!({
            "type": "builtin.echo",
            "onSuccess": [{"$event": "fireworks"}]
        }));
        assert_eq!(e.field, "onSuccess[0].$event");
        assert!(
            e.message.contains("loaded effects: notify, toast, webhook"),
            "{}",
            e.message
        );
        let e = one_error(json!({
            "type": "builtin.echo",
            "onPending": [{"$event": "toast", "text": "{{result.x}}"}]
        }));
        assert_eq!(e.field, "onPending[0]");
        assert!(check(json!({
            "type": "builtin.echo",
            "onError": [{"$event": "notify", "channel": "slack", "message": "failed: {{error}}"}],
            "onSuccess": [{"$event": "webhook", "url": "https://x/{{result.id}}"}]
        }))
        .is_ok());
    }

    #[test]
    fn explicit_queue_and_gpu() {
        let p = check(json!({
            "type": "p",
            "queue": "video",
            "steps": [{"task": "builtin.echo"}, {"task": "builtin.echo", "queue": "fast", "resources": {"gpu": "A10G"}}]
        }))
        .unwrap();
        assert_eq!(p.steps[0].placement.queue, "video");
        assert_eq!(p.steps[1].placement.queue, "fast");
        let p = check(
            json!({"type": "p", "steps": [{"task": "builtin.echo", "resources": {"gpu": "A10G"}}]}),
        )
        .unwrap();
        assert_eq!(p.steps[0].placement.queue, "gpu");
    }

    #[test]
    fn restore_keeps_placements() {
        let p =
            check(json!({"type": "p", "steps": [{"id": "a", "task": "download.file"}]})).unwrap();
        let placements = p.placements();
        let restored = Plan::restore(p.spec.clone(), &placements).unwrap();
        assert_eq!(restored.placements(), placements);
    }
}
