//! `builtin.wait` steps (docs/tasks.md, "Waiting for a signal"): a step that
//! pauses its branch until `POST /api/tasks/:id/signal` names it, or fails
//! after its timeout. Its input is literal, so that a signal's name maps to
//! its step without running anything; it does not run over forEach items;
//! and no two wait steps of a task share a name.

use std::collections::HashMap;

use serde_json::Value;

use crate::template::Template;

use super::PlannedStep;
use super::checks::Checker;

/// The builtin task that waits for a signal.
pub const WAIT_TASK: &str = "builtin.wait";
/// How long a wait step waits without a `timeout` (a day), in ms.
pub const DEFAULT_WAIT_MS: u64 = 86_400_000;

/// The signal name a wait step answers to: its input's `name`, else its
/// step id (None for any other step).
pub fn wait_name(step: &PlannedStep) -> Option<String> {
    if step.task != WAIT_TASK {
        return None;
    }
    let named = match &step.input {
        Some(Template::Literal(v)) => v.get("name").and_then(Value::as_str),
        _ => None,
    };
    Some(named.unwrap_or(&step.key).to_owned())
}

/// How long a wait step with this (resolved) input waits, in ms.
pub fn wait_timeout(input: &Value) -> u64 {
    input
        .get("timeout")
        .and_then(Value::as_u64)
        .unwrap_or(DEFAULT_WAIT_MS)
}

/// The rules wait steps keep beyond their input schema.
pub(super) fn check_waits(c: &mut Checker<'_>, steps: &[PlannedStep], is_pipeline: bool) {
    let mut names: HashMap<String, &str> = HashMap::new();
    for s in steps.iter().filter(|s| s.task == WAIT_TASK) {
        let field = |f: &str| {
            if is_pipeline {
                format!("steps[{}].{f}", s.idx)
            } else {
                f.to_owned()
            }
        };
        let step = is_pipeline.then_some(s.key.as_str());
        if s.for_each.is_some() {
            c.err(
                step,
                field("forEach"),
                "a builtin.wait step cannot run over forEach items",
            );
        }
        if matches!(&s.input, Some(t) if !matches!(t, Template::Literal(_))) {
            c.err(
                step,
                field("input"),
                "a builtin.wait step's input must be literal (no templates): its name is known at submission",
            );
        }
        if let Some(name) = wait_name(s)
            && let Some(first) = names.insert(name.clone(), &s.key)
        {
            c.err(
                step,
                field("input.name"),
                format!("signal name {name:?} is already the name of step {first:?}"),
            );
        }
    }
}
