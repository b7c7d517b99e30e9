//! The API's views of stored tasks: the seed's status shape, with the
//! pipeline-result fields (steps, stepResults, stepStatus, finalResult,
//! totalDuration, parallelGroups) for pipelines (docs/api.md).

use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use dwa_core::model::{StepStatusView, TaskParent, TaskView, rfc3339};
use dwa_core::plan::Plan;
use dwa_store::TaskRecord;

/// Builds the API's view of a stored task.
pub(crate) fn view(rec: TaskRecord) -> TaskView {
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
        parent: rec.parent.map(|p| TaskParent {
            task_id: p.task_id,
            step: p.key,
            item: p.item,
        }),
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
pub(crate) fn parallel_groups(mut spans: Vec<(String, i64, i64)>) -> Vec<Vec<String>> {
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
pub(crate) fn status_body(t: &TaskRecord) -> Value {
    json!({"taskId": t.id, "status": t.status, "result": t.result, "error": t.error})
}

#[cfg(test)]
mod tests {
    use super::*;

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

/// A task's plan (`GET /api/tasks/:id/plan`, dwa): the task as submitted
/// and its planned steps, which the dashboard draws as a graph.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    /// The task JSON as it was submitted (normalised).
    #[schema(value_type = Object)]
    pub task: Value,
    /// The planned steps, in order (chunked steps expanded).
    pub steps: Vec<PlannedStepView>,
}

/// One planned step.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStepView {
    /// Its id (its index when it has none).
    pub id: String,
    /// The task it runs.
    pub task: String,
    /// Where it runs.
    pub backend: String,
    /// Its queue.
    pub queue: String,
    /// The steps it waits for, by id.
    pub depends_on: Vec<String>,
    /// Whether it fans out over `forEach` items.
    pub for_each: bool,
    /// Whether it runs a sub-task.
    pub subtask: bool,
    /// Whether an `if` decides whether it runs.
    pub conditional: bool,
}

/// The view of a plan.
pub(crate) fn plan_view(plan: &Plan) -> PlanView {
    let key = |i: &usize| {
        plan.steps
            .get(*i)
            .map(|s| s.key.clone())
            .unwrap_or_default()
    };
    PlanView {
        task: serde_json::to_value(&plan.spec).unwrap_or(Value::Null),
        steps: plan
            .steps
            .iter()
            .map(|s| PlannedStepView {
                id: s.key.clone(),
                task: s.task.clone(),
                backend: s.placement.backend.clone(),
                queue: s.placement.queue.clone(),
                depends_on: s.deps.iter().map(key).collect(),
                for_each: s.for_each.is_some(),
                subtask: s.subtask.is_some(),
                conditional: s.condition.is_some(),
            })
            .collect(),
    }
}
