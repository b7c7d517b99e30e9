//! `Store::park` and `Store::signal` (builtin.wait steps) on every store.

use std::sync::Arc;

use serde_json::json;

use super::{LEASE, events_since, leases_nothing, started_chain};
use crate::clock::{Clock, ManualClock};
use crate::{Store, StoreError};
use dwa_core::model::{StepStatus, TaskStatus};

pub(super) async fn a_parked_step_completes_with_its_signal(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let (id, first) = started_chain(&s, 2).await;
    let j = [first];
    let until = c.now_ms() + 5_000;
    let tr = s
        .park(&j[0], until, json!({"name": "approve"}))
        .await
        .unwrap();
    assert_eq!(tr.task.as_deref(), Some(id.as_str()));
    let ev = events_since(&s, &id, 0).await.pop().unwrap();
    assert_eq!(
        (ev.kind.as_str(), ev.data.value()),
        ("step:wait", &json!({"name": "approve"}))
    );
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Waiting);
    assert_eq!(rec.status, TaskStatus::Active);
    assert!(
        leases_nothing(&s, "default").await,
        "not before its timeout"
    );
    assert!(
        matches!(
            s.complete(&j[0], json!(1)).await,
            Err(StoreError::LeaseLost(_))
        ),
        "the worker that parked it holds it no longer"
    );
    assert!(matches!(
        s.signal(&id, 0, json!(1), Some(until - 1)).await,
        Err(StoreError::Conflict(m)) if m.contains("earlier wait")
    ));
    let tr = s
        .signal(&id, 0, json!({"ok": true}), Some(until))
        .await
        .unwrap();
    assert_eq!(tr.woke, vec!["default".to_string()]);
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Completed);
    assert_eq!(rec.steps[0].result, Some(json!({"ok": true})));
    assert!(matches!(
        s.signal(&id, 0, json!(2), None).await,
        Err(StoreError::Conflict(m)) if m.contains("not waiting")
    ));
    // Its timeout job is gone: only step 1 is ever leased.
    c.advance(10_000);
    let j = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(
        j.iter().map(|j| (j.step, j.attempt)).collect::<Vec<_>>(),
        [(1, 1)]
    );
    let done = s.complete(&j[0], json!(2)).await.unwrap();
    assert_eq!(done.finished, Some(TaskStatus::Completed));
    assert!(matches!(
        s.signal("no-such-task", 0, json!(1), None).await,
        Err(StoreError::NotFound(_))
    ));
}

pub(super) async fn a_wait_that_timed_out_takes_no_signal(s: Arc<dyn Store>, c: Arc<ManualClock>) {
    let (id, first) = started_chain(&s, 1).await;
    let j = [first];
    s.park(&j[0], c.now_ms() + 1_000, json!({})).await.unwrap();
    c.advance(1_001);
    assert!(matches!(
        s.signal(&id, 0, json!(1), None).await,
        Err(StoreError::Conflict(m)) if m.contains("timed out")
    ));
    // The timeout is the step's next attempt.
    let j = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(
        j.iter().map(|j| (j.step, j.attempt)).collect::<Vec<_>>(),
        [(0, 2)]
    );
}

pub(super) async fn cancelling_a_task_ends_its_wait(s: Arc<dyn Store>, c: Arc<ManualClock>) {
    let (id, first) = started_chain(&s, 1).await;
    let j = [first];
    s.park(&j[0], c.now_ms() + 1_000, json!({})).await.unwrap();
    s.cancel(&id).await.unwrap();
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.steps[0].status, StepStatus::Skipped);
    assert!(matches!(
        s.signal(&id, 0, json!(1), None).await,
        Err(StoreError::Conflict(_))
    ));
    c.advance(2_000);
    assert!(leases_nothing(&s, "default").await);
}
