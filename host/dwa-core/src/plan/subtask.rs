//! Steps that run a whole task (`subtask`; docs/tasks.md, "Sub-tasks"):
//! their shape, the bounds on nesting, and the child checked at submission
//! as a submission of its own would be.

use crate::model::{StepSpec, TaskSpec};

use super::FieldError;
use super::checks::Checker;

/// The task a step with `subtask` runs.
pub const SUBTASK_TASK: &str = "builtin.subtask";

/// Deepest nesting of sub-tasks (a sub-task's steps may have sub-tasks...).
pub const MAX_SUBTASK_DEPTH: usize = 4;

/// Names the task of steps that give `subtask` and no `task`, so that the
/// stored spec reads back as it ran.
pub(super) fn name_subtask_steps(spec: &mut TaskSpec) {
    for s in spec.steps.iter_mut().flatten() {
        if s.subtask.is_some() && s.task.is_empty() {
            s.task = SUBTASK_TASK.into();
        }
    }
}

/// Every step in a task and its sub-tasks, and how deep they nest;
/// iterative, so that the nesting checked cannot overflow the stack.
pub(super) fn tree_size(spec: &TaskSpec) -> (usize, usize) {
    let mut steps = 0;
    let mut deepest = 0;
    let mut stack = vec![(spec, 0usize)];
    while let Some((t, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let Some(list) = &t.steps else {
            steps += 1;
            continue;
        };
        steps += list.len();
        if depth < MAX_SUBTASK_DEPTH + 1 {
            stack.extend(
                list.iter()
                    .filter_map(|s| s.subtask.as_deref())
                    .map(|c| (c, depth + 1)),
            );
        }
    }
    (steps, deepest)
}

/// Checks a step's `task`/`subtask` pair and, when `deep`, plans the child
/// as a submission (its problems under `{field}.subtask`).
pub(super) fn check_subtask(
    c: &mut Checker<'_>,
    step: Option<&str>,
    field: &dyn Fn(&str) -> String,
    s: &StepSpec,
    deep: bool,
) {
    match (&s.subtask, s.task.as_str()) {
        (None, "") => c.err(step, field("task"), "is required (or give `subtask`)"),
        (None, SUBTASK_TASK) => c.err(
            step,
            field("subtask"),
            "is required by builtin.subtask: the task JSON to run",
        ),
        (Some(_), t) if t != SUBTASK_TASK => c.err(
            step,
            field("task"),
            format!("is {t:?}, but a step with `subtask` runs builtin.subtask (leave `task` out)"),
        ),
        (Some(child), _) if child.idempotency_key.is_some() => c.err(
            step,
            format!("{}.idempotencyKey", field("subtask")),
            "a sub-task is made once per run of its step; it takes no idempotency key",
        ),
        (Some(child), _) if deep => {
            let prefix = field("subtask");
            if let Err(errs) = super::plan(child.as_ref().clone(), c.catalog, c.limits) {
                for e in errs {
                    let FieldError {
                        field: f, message, ..
                    } = e;
                    c.err(step, format!("{prefix}.{f}"), message);
                }
            }
        }
        _ => {}
    }
}
