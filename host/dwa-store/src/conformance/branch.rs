//! Steps that end without a result of their own (`Store::end_step`) on
//! every store: skipped or tolerated, their dependants go on.

use std::sync::Arc;

use serde_json::json;

use super::{LEASE, chain_task, diamond_task, events_since, last_seq, leases_nothing};
use crate::clock::ManualClock;
use crate::{StepEnd, Store, StoreError};
use dwa_core::model::{StepStatus, TaskStatus};

pub(super) async fn a_skipped_or_tolerated_step_releases_its_dependants(
    s: Arc<dyn Store>,
    _c: Arc<ManualClock>,
) {
    let t = diamond_task();
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let a = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    let tr = s
        .end_step(&a[0], StepEnd::Failed("boom".into()))
        .await
        .unwrap();
    assert_eq!(tr.woke, vec!["default".to_string()]);
    assert_eq!(tr.finished, None);
    let recorded = events_since(&s, &id, 0).await;
    let tolerated = recorded.iter().find(|e| e.kind == "step:error").unwrap();
    assert_eq!(tolerated.data["tolerated"], true, "{tolerated:?}");
    let bc = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(
        bc.len(),
        2,
        "a failed step under a tolerant policy releases its dependants"
    );
    let (b, c) = if bc[0].step == 1 {
        (&bc[0], &bc[1])
    } else {
        (&bc[1], &bc[0])
    };
    let before = last_seq(&s, &id).await;
    let tr = s
        .end_step(b, StepEnd::Skipped("its condition is false".into()))
        .await
        .unwrap();
    let recorded = events_since(&s, &id, before).await;
    assert_eq!(recorded[0].kind, "step:skip");
    assert_eq!(recorded[0].data["reason"], "its condition is false");
    assert!(tr.woke.is_empty(), "d still waits for c");
    s.complete(c, json!({"c": 1})).await.unwrap();
    let d = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(d.len(), 1);
    let tr = s.complete(&d[0], json!("end")).await.unwrap();
    assert_eq!(tr.finished, Some(TaskStatus::Completed));
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Completed);
    let statuses: Vec<StepStatus> = rec.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        vec![
            StepStatus::Failed,
            StepStatus::Skipped,
            StepStatus::Completed,
            StepStatus::Completed
        ]
    );
    assert_eq!(rec.steps[0].result, Some(json!({"$error": "boom"})));
    assert_eq!(rec.steps[0].error.as_deref(), Some("boom"));
    assert_eq!(rec.steps[1].result, Some(json!(null)));
    assert_eq!(
        s.step_results(&id, &[0, 1]).await.unwrap(),
        vec![Some(json!({"$error": "boom"})), Some(json!(null))],
        "later steps read what the ended steps left"
    );
}

pub(super) async fn ending_an_item_ends_its_step_and_drops_its_other_items(
    s: Arc<dyn Store>,
    _c: Arc<ManualClock>,
) {
    let t = chain_task(2);
    let id = t.id.clone();
    s.create_task(t).await.unwrap();
    let step = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    s.start_items(&step[0], 4, 2).await.unwrap();
    let items = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(items.len(), 2);
    let tr = s
        .end_step(&items[1], StepEnd::Failed("item 1 failed".into()))
        .await
        .unwrap();
    assert_eq!(tr.finished, None);
    assert!(
        matches!(
            s.complete(&items[0], json!("r0")).await,
            Err(StoreError::LeaseLost(_))
        ),
        "an item of an ended step holds no lease"
    );
    let next = s.lease("default", "w", 10, LEASE).await.unwrap().jobs;
    assert_eq!(
        next.iter().map(|j| (j.step, j.item)).collect::<Vec<_>>(),
        vec![(1, None)],
        "the next step runs; no item of the ended one is queued"
    );
    s.complete(&next[0], json!("done")).await.unwrap();
    assert!(leases_nothing(&s, "default").await);
    let rec = s.task(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Completed);
    assert_eq!(rec.steps[0].status, StepStatus::Failed);
}
