//! Planning one step: place it on a backend (queue, GPU, timeout), check an
//! input known at submission against the task's schema, parse its input and
//! `forEach` templates and bind every `{{steps.X}}` to a step it depends on.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::catalog::TaskInfo;
use crate::limits;
use crate::model::{OnFailure, StepSpec, TaskSpec};
use crate::template::cond::Condition;
use crate::template::{Root, Template};

use super::checks::{
    Checker, check_gates, check_priority, check_queue, check_retry, check_timeout,
};
use super::graph::{DepGraph, StepIds};
use super::{
    DEFAULT_TIMEOUT_SECS, Gate, MAX_GATE_KEY_BYTES, MAX_RATE_PER_MS, Placement, PlannedStep,
};

/// Where a step is in the task, for naming it in errors.
struct At<'s> {
    i: usize,
    key: &'s str,
    /// A single task has no steps to name in errors.
    is_pipeline: bool,
}

impl At<'_> {
    fn step(&self) -> Option<&str> {
        self.is_pipeline.then_some(self.key)
    }

    fn field(&self, f: &str) -> String {
        if self.is_pipeline {
            format!("steps[{}].{f}", self.i)
        } else {
            f.to_owned()
        }
    }
}

/// Plans step `i`; its problems go to `c`.
pub(super) fn plan_step(
    c: &mut Checker<'_>,
    spec: &TaskSpec,
    ids: &StepIds,
    graph: &DepGraph,
    i: usize,
    s: &StepSpec,
) -> PlannedStep {
    let at = At {
        i,
        key: &ids.keys[i],
        is_pipeline: spec.steps.is_some(),
    };
    let deep = c.deep;
    super::subtask::check_subtask(c, at.step(), &|f| at.field(f), s, deep);
    let (info, placement) = place(c, spec, s, &at);
    if let Some(schema) = info.as_ref().and_then(|i| i.input_schema.as_ref()) {
        check_known_input(c, spec, s, &at, graph, schema);
    }
    let mut needs = BTreeSet::new();
    let input = s
        .input
        .as_ref()
        .and_then(|v| parse_bound(c, v, "input", &at, s, ids, graph, &mut needs, false));
    let for_each = s
        .for_each
        .as_ref()
        .and_then(|v| parse_bound(c, v, "forEach", &at, s, ids, graph, &mut needs, true));
    if let Some(Template::Literal(Value::Array(items))) = &for_each
        && items.len() > c.limits.max_items_per_step
    {
        let e = limits::Exceeded {
            what: "the number of forEach items",
            value: Some(items.len()),
            max: c.limits.max_items_per_step,
            var: "DWA_MAX_FOREACH_ITEMS",
        };
        c.err(at.step(), at.field("forEach"), e.to_string());
    }
    if let Some(n) = s.for_each_concurrency {
        if s.for_each.is_none() {
            c.err(
                at.step(),
                at.field("forEachConcurrency"),
                "is set but the step has no forEach",
            );
        } else if n == 0 {
            c.err(
                at.step(),
                at.field("forEachConcurrency"),
                "must be at least 1",
            );
        }
    }
    // The default input is the dependencies' results.
    if s.input.is_none() {
        needs.extend(graph.deps[i].iter().copied());
    }
    // The task's own settings were checked once with the task.
    let prefix = at.field("");
    check_gates(
        c,
        at.step(),
        &prefix,
        s.concurrency.as_deref(),
        s.rate_limit.as_deref(),
    );
    let concurrency = s
        .concurrency
        .as_ref()
        .or(spec.concurrency.as_ref())
        .and_then(|g| {
            gate(
                c,
                &g.key,
                "concurrency",
                &at,
                s,
                ids,
                graph,
                &mut needs,
                g.limit,
                None,
            )
        });
    let rate = s
        .rate_limit
        .as_ref()
        .or(spec.rate_limit.as_ref())
        .and_then(|r| {
            let per = parse_per(&r.per).ok()?;
            gate(
                c,
                &r.key,
                "rateLimit",
                &at,
                s,
                ids,
                graph,
                &mut needs,
                r.limit,
                Some(per),
            )
        });
    let condition = s.condition.as_deref().and_then(|text| {
        let field = at.field("if");
        match Condition::parse(text, c.catalog.filters()) {
            Ok(mut cond) => {
                cond.exprs_mut(&mut |e| {
                    bind_expr(c, e, &field, &at, ids, graph, &mut needs, false)
                });
                Some(cond)
            }
            Err(e) => {
                c.err(at.step(), field, e.to_string());
                None
            }
        }
    });
    PlannedStep {
        idx: i,
        key: at.key.to_owned(),
        task: s.task.clone(),
        placement,
        deps: graph.deps[i].clone(),
        dependants: Vec::new(),
        input,
        for_each,
        for_each_concurrency: s.for_each_concurrency,
        retry: s
            .retry
            .clone()
            .or_else(|| spec.retry.clone())
            .unwrap_or_default(),
        needs: needs.into_iter().collect(),
        condition: condition.map(Box::new),
        on_failure: s.on_failure.unwrap_or_default(),
        guards: Vec::new(),
        concurrency: concurrency.map(Box::new),
        rate: rate.map(Box::new),
        subtask: s.subtask.clone(),
    }
}

/// Parses a rate's window: ms, or a whole number with `ms`, `s`, `m`, `h` or `d`.
pub(super) fn parse_per(v: &Value) -> Result<u64, String> {
    let ms = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(t) => {
            let t = t.trim();
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (n, unit) = t.split_at(split);
            let unit_ms = match unit.trim() {
                "ms" => Some(1),
                "s" => Some(1_000),
                "m" => Some(60_000),
                "h" => Some(3_600_000),
                "d" => Some(86_400_000),
                _ => None,
            };
            n.parse::<u64>()
                .ok()
                .zip(unit_ms)
                .and_then(|(n, u)| n.checked_mul(u))
        }
        _ => None,
    };
    match ms {
        Some(ms) if (1..=MAX_RATE_PER_MS).contains(&ms) => Ok(ms),
        Some(ms) => Err(format!("{ms} ms is not within 1 ms and a day")),
        None => Err(format!(
            "{v} is not a window: ms, or a whole number with ms, s, m, h or d (\"1m\")"
        )),
    }
}

/// Gives each step its guards: the ancestors whose failure, under
/// `onFailure: "skipDependants"`, skips it. Their results join its `needs`
/// (a failed step's result says so). Linear in steps × such ancestors.
pub(super) fn bind_guards(planned: &mut [PlannedStep], graph: &DepGraph) {
    let skippers: Vec<usize> = planned
        .iter()
        .filter(|p| p.on_failure == OnFailure::SkipDependants)
        .map(|p| p.idx)
        .collect();
    if skippers.is_empty() {
        return;
    }
    for step in planned.iter_mut() {
        step.guards = skippers
            .iter()
            .copied()
            .filter(|&a| a != step.idx && graph.reaches(a, step.idx))
            .collect();
        for &g in &step.guards {
            if let Err(at) = step.needs.binary_search(&g) {
                step.needs.insert(at, g);
            }
        }
    }
}

/// The step's backend (from the catalog), queue (`gpu` for a task that
/// needs one) and timeout; step settings override the task's, which
/// override the catalog's.
fn place(
    c: &mut Checker<'_>,
    spec: &TaskSpec,
    s: &StepSpec,
    at: &At<'_>,
) -> (Option<TaskInfo>, Placement) {
    let backend = s.backend.as_deref().or(spec.backend.as_deref());
    let info = match c.catalog.lookup(&s.task, backend) {
        Ok(info) => Some(info.clone()),
        Err(e) => {
            let f = if at.is_pipeline {
                at.field("task")
            } else {
                "type".into()
            };
            c.err(at.step(), f, e.to_string());
            None
        }
    };
    if let Some(q) = &s.queue {
        check_queue(c, at.step(), &at.field("queue"), q);
    }
    if let Some(r) = &s.retry {
        check_retry(c, at.step(), &at.field("retry"), r);
    }
    if let Some(p) = s.priority {
        check_priority(c, at.step(), &at.field("priority"), p);
    }
    let step_timeout = s.resources.as_ref().and_then(|r| r.timeout);
    check_timeout(c, at.step(), &at.field("resources.timeout"), step_timeout);
    let task_resources = spec.resources.as_ref();
    let gpu = s
        .resources
        .as_ref()
        .and_then(|r| r.gpu.clone())
        .or_else(|| task_resources.and_then(|r| r.gpu.clone()))
        .or_else(|| info.as_ref().and_then(|i| i.gpu.clone()));
    let queue = s
        .queue
        .clone()
        .or_else(|| spec.queue.clone())
        .unwrap_or_else(|| if gpu.is_some() { "gpu" } else { "default" }.to_owned());
    let timeout = step_timeout
        .or_else(|| task_resources.and_then(|r| r.timeout))
        .or_else(|| info.as_ref().and_then(|i| i.timeout))
        .unwrap_or(DEFAULT_TIMEOUT_SECS);
    let placement = Placement {
        backend: info.as_ref().map(|i| i.backend.clone()).unwrap_or_default(),
        queue,
        priority: s.priority.or(spec.priority).unwrap_or(0),
        timeout_ms: (timeout * 1000.0).round().max(1.0) as u64,
    };
    (info, placement)
}

/// An input known at submission (the payload, or a literal input) is
/// checked against the schema the backend announces for the task.
fn check_known_input(
    c: &mut Checker<'_>,
    spec: &TaskSpec,
    s: &StepSpec,
    at: &At<'_>,
    graph: &DepGraph,
    schema: &Value,
) {
    let known = match &s.input {
        Some(v) => Template::parse_with(v, c.catalog.filters())
            .ok()
            .filter(Template::is_literal)
            .map(|_| (v, at.field("input"))),
        None if graph.deps[at.i].is_empty() && s.for_each.is_none() => {
            Some((&spec.payload, "payload".to_owned()))
        }
        None => None,
    };
    let Some((value, field)) = known else {
        return;
    };
    for (path, problem) in crate::schema::check(schema, value) {
        let rest = path.trim_start_matches('$');
        c.err(
            at.step(),
            format!("{field}{rest}"),
            format!("{problem} (input schema of {})", s.task),
        );
    }
}

/// Parses the template in field `name` (the `forEach` when `in_for_each`:
/// then it must be a list) and binds it: each `{{steps.X}}` must name a
/// step this one depends on (it joins `needs`); `item` and `index` exist
/// only in a forEach step's input; `progress`, `error` and `result` only in
/// effects.
#[allow(clippy::too_many_arguments)]
fn parse_bound(
    c: &mut Checker<'_>,
    value: &Value,
    name: &str,
    at: &At<'_>,
    s: &StepSpec,
    ids: &StepIds,
    graph: &DepGraph,
    needs: &mut BTreeSet<usize>,
    in_for_each: bool,
) -> Option<Template> {
    let field = at.field(name);
    let mut t = match Template::parse_with(value, c.catalog.filters()) {
        Ok(t) => t,
        Err(e) => {
            c.err(at.step(), format!("{field}{}", e.at), e.to_string());
            return None;
        }
    };
    let step = at.step();
    let is_list = matches!(
        &t,
        Template::Whole(_) | Template::Literal(Value::Array(_)) | Template::Array(_)
    );
    if in_for_each && !is_list {
        c.err(
            step,
            field.clone(),
            "must be an array or a whole template such as \"{{steps.frames.scenes}}\"",
        );
    }
    let items = !in_for_each && s.for_each.is_some();
    t.exprs_mut(&mut |e| bind_expr(c, e, &field, at, ids, graph, needs, items));
    Some(t)
}

/// Parses a concurrency key or a rate limit's key (field `name`.key): a
/// template bound as an input is (`item` allowed in a forEach step).
#[allow(clippy::too_many_arguments)]
fn gate(
    c: &mut Checker<'_>,
    key: &str,
    name: &str,
    at: &At<'_>,
    s: &StepSpec,
    ids: &StepIds,
    graph: &DepGraph,
    needs: &mut BTreeSet<usize>,
    limit: u32,
    per_ms: Option<u64>,
) -> Option<Gate> {
    if key.trim().is_empty() || key.len() > MAX_GATE_KEY_BYTES {
        let msg = format!("must be 1-{MAX_GATE_KEY_BYTES} bytes");
        c.err(at.step(), at.field(&format!("{name}.key")), msg);
        return None;
    }
    let value = Value::String(key.to_owned());
    let key = parse_bound(
        c,
        &value,
        &format!("{name}.key"),
        at,
        s,
        ids,
        graph,
        needs,
        false,
    )?;
    Some(Gate { key, limit, per_ms })
}

/// Binds an expression of field `field`: each `{{steps.X}}` must name a step
/// this one depends on (it joins `needs`); `item` and `index` exist only
/// where `items` says; `progress`, `error` and `result` only in effects.
#[allow(clippy::too_many_arguments)]
fn bind_expr(
    c: &mut Checker<'_>,
    e: &mut crate::template::Expr,
    field: &str,
    at: &At<'_>,
    ids: &StepIds,
    graph: &DepGraph,
    needs: &mut BTreeSet<usize>,
    items: bool,
) {
    match &mut e.root {
        Root::Step { key: sk, idx } => match ids.lookup(sk) {
            Some(target) => {
                *idx = Some(target);
                if !graph.reaches(target, at.i) {
                    c.err(
                        at.step(),
                        field.to_owned(),
                        format!(
                            "{{{{{}}}}} can never resolve: step {sk:?} is not a dependency of step {:?}",
                            e.source, at.key
                        ),
                    );
                } else {
                    needs.insert(target);
                }
            }
            None => c.err(
                at.step(),
                field.to_owned(),
                format!(
                    "{{{{{}}}}} can never resolve: unknown step {sk:?}; known ids: {}",
                    e.source,
                    ids.known()
                ),
            ),
        },
        Root::Item | Root::Index if !items => c.err(
            at.step(),
            field.to_owned(),
            format!(
                "{{{{{}}}}} can never resolve: item and index exist only in the input of a forEach step",
                e.source
            ),
        ),
        Root::Progress | Root::Error | Root::Result => c.err(
            at.step(),
            field.to_owned(),
            format!(
                "{{{{{}}}}} can never resolve in a step: progress, error and result exist only in effects",
                e.source
            ),
        ),
        _ => {}
    }
}
