//! [`Store::create_and_lease`] on every store: a creation hands its caller's
//! idle workers the queue's first due jobs, in the queue's order, and says
//! when it emptied the queue; a refused creation leases nothing.

use std::sync::Arc;

use serde_json::json;

use super::{LEASE, chain_task, events_since, leases_nothing};
use crate::clock::{Clock, ManualClock};
use crate::{Idempotency, NewTask, Store, StoreError};
use dwa_core::model::{StepStatus, TaskStatus};

/// A task of `n` independent steps on the `default` queue: a chain with
/// its links cut.
fn fan_task(n: u32) -> NewTask {
    let mut t = chain_task(n);
    for s in &mut t.steps {
        s.waiting_for = 0;
        s.dependants.clear();
    }
    t
}

fn default_woken(woke: &[String]) -> bool {
    woke.iter().any(|q| q == "default")
}

pub(super) async fn a_creation_hands_idle_workers_the_queues_first_jobs(
    s: Arc<dyn Store>,
    _c: Arc<ManualClock>,
) {
    let older = chain_task(1);
    let older_id = older.id.clone();
    s.create_task(older).await.unwrap();
    let fan = fan_task(3);
    let fan_id = fan.id.clone();
    let (t, jobs) = s
        .create_and_lease(fan, "default", "w", 2, LEASE)
        .await
        .unwrap();
    let got: Vec<(&str, u32)> = jobs.iter().map(|j| (j.task_id.as_str(), j.step)).collect();
    assert_eq!(
        got,
        vec![(older_id.as_str(), 0), (fan_id.as_str(), 0)],
        "the queue's order holds: the older task's job comes first"
    );
    assert!(
        default_woken(&t.woke),
        "jobs are left in the queue: its workers are woken ({:?})",
        t.woke
    );
    let rec = s.task(&fan_id).await.unwrap().unwrap();
    assert_eq!(rec.status, TaskStatus::Active);
    assert_eq!(rec.steps[0].status, StepStatus::Running);
    let starts = events_since(&s, &fan_id, 0).await;
    assert_eq!(
        starts.iter().filter(|e| e.kind == "step:start").count(),
        1,
        "the handed job's start is recorded once"
    );
    // The handed jobs are held: a lease finds only the rest.
    let rest = s.lease("default", "x", 10, LEASE).await.unwrap().jobs;
    let rest: Vec<u32> = rest.iter().map(|j| j.step).collect();
    assert_eq!(rest, vec![1, 2]);
    // And they are the caller's to complete.
    s.complete(&jobs[0], json!("done")).await.unwrap();
    assert_eq!(
        s.task(&older_id).await.unwrap().unwrap().status,
        TaskStatus::Completed
    );

    let last = chain_task(1);
    let last_id = last.id.clone();
    let (t, jobs) = s
        .create_and_lease(last, "default", "w", 3, LEASE)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].task_id, last_id);
    assert!(
        !default_woken(&t.woke),
        "a lease that emptied the queue leaves it out of woke ({:?})",
        t.woke
    );
    assert!(leases_nothing(&s, "default").await);
}

pub(super) async fn a_delayed_creation_leases_nothing_and_still_wakes(
    s: Arc<dyn Store>,
    c: Arc<ManualClock>,
) {
    let at = c.now_ms() + 5_000;
    let t = NewTask {
        run_at: Some(at),
        ..chain_task(1)
    };
    let (tr, jobs) = s
        .create_and_lease(t, "default", "w", 2, LEASE)
        .await
        .unwrap();
    assert!(jobs.is_empty(), "nothing before its time");
    assert!(
        default_woken(&tr.woke),
        "the workers must still learn the new due time ({:?})",
        tr.woke
    );
    c.advance(5_000);
    assert_eq!(
        s.lease("default", "w", 1, LEASE).await.unwrap().jobs.len(),
        1
    );
}

pub(super) async fn a_refused_creation_leases_nothing(s: Arc<dyn Store>, c: Arc<ManualClock>) {
    let keyed = || NewTask {
        idempotency: Some(Idempotency {
            key: "order-7".into(),
            body_hash: "h".into(),
            expires_at: c.now_ms() + 60_000,
        }),
        ..chain_task(1)
    };
    s.create_task(keyed()).await.unwrap();
    let again = s.create_and_lease(keyed(), "default", "w", 1, LEASE).await;
    assert!(
        matches!(again, Err(StoreError::Idempotent { .. })),
        "{again:?}"
    );
    let plain = chain_task(1);
    s.create_task(plain.clone()).await.unwrap();
    let twice = s.create_and_lease(plain, "default", "w", 1, LEASE).await;
    assert!(matches!(twice, Err(StoreError::Duplicate(_))), "{twice:?}");
    assert_eq!(
        s.lease("default", "w", 10, LEASE).await.unwrap().jobs.len(),
        2,
        "both tasks' jobs are still due"
    );
}
