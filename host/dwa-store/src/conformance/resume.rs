//! `Store::resume`: a failed or cancelled task runs again from where it
//! stopped, on every store.

use std::sync::Arc;

use serde_json::json;

use super::{LEASE, chain_task, events_since, leases_nothing, started_chain};
use crate::clock::ManualClock;
use crate::{Lifecycles, NewTask, Store, StoreError};
use dwa_core::model::{StepStatus, TaskStatus};

const NO_EFFECTS: Lifecycles = Lifecycles {
    on_pending: false,
    on_success: false,
    on_error: false,
};

pub(super) async fn a_failed_task_runs_again_from_its_failed_step(
    s: Arc<dyn Store>,
    _c: Arc<ManualClock>,
) {
    let (id, first) = started_chain(&s, 3).await;
    let j = [first];
    s.complete(&j[0], json!({"first": 1})).await.unwrap();
    let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    assert_eq!(j[0].step, 1);
    let failed = s.fail(&j[0], "boom").await.unwrap();
    assert_eq!(failed.finished, Some(TaskStatus::Failed));

    let tr = s
        .resume(&id, Some("{\"patched\":true}".into()), NO_EFFECTS)
        .await
        .unwrap();
    assert_eq!(tr.woke, vec!["default".to_string()]);
    let again = events_since(&s, &id, 0).await.pop().unwrap();
    assert_eq!(again.kind, "task:retry");
    assert_eq!(
        again.data,
        json!({"run": 2, "steps": ["1", "2"], "payloadChanged": true})
    );
    assert_eq!(
        s.spec(&id).await.unwrap().as_deref(),
        Some("{\"patched\":true}")
    );
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Pending);
    assert_eq!(rec.error, None);
    assert_eq!(rec.completed_at, None);
    let statuses: Vec<StepStatus> = rec.steps.iter().map(|st| st.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Completed,
            StepStatus::Pending,
            StepStatus::Pending
        ]
    );
    assert_eq!(rec.steps[0].result, Some(json!({"first": 1})), "kept");
    assert_eq!(rec.steps[1].error, None);

    // The failed step runs again (a fresh first try); the completed one does not.
    let j = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(
        j.iter().map(|j| (j.step, j.attempt)).collect::<Vec<_>>(),
        [(1, 1)]
    );
    s.complete(&j[0], json!(2)).await.unwrap();
    let j = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(j[0].step, 2);
    let done = s.complete(&j[0], json!(3)).await.unwrap();
    assert_eq!(done.finished, Some(TaskStatus::Completed));
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.result, Some(json!(3)));
    assert_eq!(rec.progress, 100.0);
    // A second retry of the same task is run 3 (after it fails again).
    let t = chain_task(1);
    let other = t.id.clone();
    s.create_task(t).await.unwrap();
    for run in [2, 3] {
        let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
        s.fail(&j[0], "again").await.unwrap();
        s.resume(&other, None, NO_EFFECTS).await.unwrap();
        let last = events_since(&s, &other, 0).await.pop().unwrap();
        assert_eq!(last.data["run"], json!(run));
        assert_eq!(last.data["payloadChanged"], json!(false));
    }
}

pub(super) async fn a_cancelled_task_resumes_with_each_job_leased_once(
    s: Arc<dyn Store>,
    _c: Arc<ManualClock>,
) {
    // Cancelled before its first step ran: that step's job of the first run
    // may still sit in a queue (Redis drops such jobs when it meets them).
    let t = chain_task(2);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    s.cancel(&id).await.unwrap();
    s.resume(&id, None, NO_EFFECTS).await.unwrap();
    let j = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(j.iter().map(|j| j.step).collect::<Vec<_>>(), [0]);
    assert!(leases_nothing(&s, "default").await);
    // Cancelled while a step ran: its old holder can no longer complete it.
    let held = j[0].clone();
    s.cancel(&id).await.unwrap();
    s.resume(&id, None, NO_EFFECTS).await.unwrap();
    assert!(
        matches!(
            s.complete(&held, json!("late")).await,
            Err(StoreError::LeaseLost(_))
        ),
        "the first run's holder is fenced off"
    );
    let j = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(j.len(), 1);
    s.complete(&j[0], json!(0)).await.unwrap();
    let j = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    let done = s.complete(&j[0], json!(1)).await.unwrap();
    assert_eq!(done.finished, Some(TaskStatus::Completed));
}

pub(super) async fn only_failed_or_cancelled_tasks_resume(s: Arc<dyn Store>, _c: Arc<ManualClock>) {
    assert!(matches!(
        s.resume("no-such-task", None, NO_EFFECTS).await,
        Err(StoreError::NotFound(_))
    ));
    let t = chain_task(1);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    assert!(matches!(
        s.resume(&id, None, NO_EFFECTS).await,
        Err(StoreError::Conflict(m)) if m.contains("pending")
    ));
    let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    s.complete(&j[0], json!(1)).await.unwrap();
    assert!(matches!(
        s.resume(&id, None, NO_EFFECTS).await,
        Err(StoreError::Conflict(m)) if m.contains("completed")
    ));
}

pub(super) async fn a_resumed_task_owes_its_on_error_effects_again(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let effects = Lifecycles {
        on_pending: false,
        on_success: true,
        on_error: true,
    };
    let t = NewTask {
        effects,
        ..chain_task(1)
    };
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    for run in 1..=2 {
        let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
        s.fail(&j[0], "boom").await.unwrap();
        let due = s.claim_effects(10, 1000).await.unwrap();
        let owed: Vec<&str> = due.iter().map(|d| d.lifecycle.as_str()).collect();
        assert_eq!(owed, ["onError"], "run {run}");
        assert_eq!(
            (due[0].attempt, due[0].delivered),
            (1, 0),
            "run {run}: a fresh delivery"
        );
        s.settle_effects(&due[0], crate::Settled::Done)
            .await
            .unwrap();
        c.advance(5000);
        s.resume(&id, None, effects).await.unwrap();
    }
    // The third run succeeds: onSuccess, never delivered before, is due once.
    let j = s.lease("default", "w", 1, LEASE).await.unwrap().jobs;
    s.complete(&j[0], json!(1)).await.unwrap();
    let due = s.claim_effects(10, 1000).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.lifecycle.as_str()).collect::<Vec<_>>(),
        ["onSuccess"]
    );
}
